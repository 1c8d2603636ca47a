"""`skdd lineage show|verify` on a real chain: source → dataset → GAN → synthetic set."""

from __future__ import annotations

import json
import shutil

import pytest

from skdd.cli import main
from skdd.stages.registry import run_stage

from helpers import TINY_PRETRAIN, ingest_tiny

pytestmark = pytest.mark.integration


@pytest.fixture
def chain(tmp_path):
    data = ingest_tiny(tmp_path)
    gan = tmp_path / "gan"
    run_stage("pretrain", output=str(gan), inputs={"dataset": str(data)}, overrides=TINY_PRETRAIN + ["steps=1"])
    syn = tmp_path / "syn"
    run_stage("sample", output=str(syn), inputs={"gan": str(gan)}, overrides=["ipc=2", "device=cpu"])
    return {"data": data, "gan": gan, "syn": syn, "npz": tmp_path / "tiny.npz"}


def flip_byte(path):
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))


def test_show_and_verify_pass_on_an_untouched_chain(chain, capsys):
    assert main(["lineage", "verify", str(chain["syn"])]) == 0
    out = capsys.readouterr().out
    assert "every file and every ancestor matches" in out
    assert main(["lineage", "show", str(chain["syn"]), "--json"]) == 0
    tree = json.loads(capsys.readouterr().out)
    assert tree["stage"] == "sample"
    gan = tree["parents"][0]
    assert gan["stage"] == "pretrain" and gan["name"] == "gan"
    data = gan["parents"][0]
    assert data["stage"] == "ingest"
    source = data["parents"][0]
    assert source["kind"] == "source" and source["uri"].endswith("tiny.npz") and source["problems"] == []


@pytest.mark.parametrize("victim", ["shard", "weights", "parent_manifest", "source"])
def test_verify_catches_each_change(chain, capsys, victim):
    if victim == "shard":
        path = next((chain["data"] / "train").glob("*.parquet"))
        flip_byte(path)
        expected = str(path)
    elif victim == "weights":
        path = chain["gan"] / "generator.safetensors"
        flip_byte(path)
        expected = str(path)
    elif victim == "parent_manifest":
        path = chain["gan"] / "manifest.json"
        manifest = json.loads(path.read_text())
        manifest["params"]["steps"] = 999           # a plausible-looking edit of the record itself
        path.write_text(json.dumps(manifest, indent=2))
        expected = f"{path}: changed since the child artifact recorded it"
    else:
        flip_byte(chain["npz"])
        expected = f"{chain['npz']}: source file changed since ingest"
    assert main(["lineage", "verify", str(chain["syn"])]) == 1
    out = capsys.readouterr().out
    assert expected in out and "FAIL" in out


def test_missing_parent_and_missing_artifact(chain, capsys):
    shutil.rmtree(chain["gan"])
    assert main(["lineage", "verify", str(chain["syn"])]) == 1
    assert "missing (artifact absent or incomplete)" in capsys.readouterr().out
    assert main(["lineage", "verify", str(chain["gan"])]) == 2
    assert "input artifact not found" in capsys.readouterr().err


def test_manifest_digest_is_sha256_of_the_canonical_json_without_digest_and_signature():
    from skdd.lineage import manifest_digest

    # by hand: sorted keys, no whitespace, digest and signature left out -> '{"a":[1,2],"kind":"x"}'
    expected = "sha256:" + __import__("hashlib").sha256(b'{"a":[1,2],"kind":"x"}').hexdigest()
    assert manifest_digest({"kind": "x", "a": [1, 2], "manifest_digest": "old", "signature": {"v": 1}}) == expected


@pytest.mark.parametrize("edit", ["params", "metrics", "created", "schema_1"])
def test_an_edited_root_manifest_is_caught_by_verify_and_refused_by_readers(chain, capsys, edit):
    path = chain["data"] / "manifest.json"          # the root: no manifest records its hash
    manifest = json.loads(path.read_text())
    if edit == "params":
        manifest["params"]["val_per_class"] = 0
    elif edit == "metrics":
        manifest["metrics"]["note"] = "looks fine"
    elif edit == "created":
        manifest["created"] = "2020-01-01T00:00:00+00:00"
    else:                                            # a downgrade that drops the digest is no way around it
        manifest["schema_version"] = 1
        del manifest["manifest_digest"]
    path.write_text(json.dumps(manifest, indent=2))
    assert main(["lineage", "verify", str(chain["data"])]) == 1
    out = capsys.readouterr().out
    reason = "manifest schema 1 has no digest" if edit == "schema_1" else "manifest edited since it was written"
    assert f"{path}: {reason}" in out and "FAIL" in out
    one = ["pretrain", "--dataset", str(chain["data"]), "--out", str(chain["gan"].parent / "gan2"),
           *[a for item in TINY_PRETRAIN + ["steps=1"] for a in ("--set", item)]]
    assert main(one) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and reason in err[0]
    assert not (chain["gan"].parent / "gan2").exists()


def test_signed_chain_verifies_with_the_key_and_only_with_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SKDD_SIGNING_KEY", "correct horse battery staple")
    data = ingest_tiny(tmp_path)
    gan = tmp_path / "gan"
    run_stage("pretrain", output=str(gan), inputs={"dataset": str(data)}, overrides=TINY_PRETRAIN + ["steps=1"])
    text = (gan / "manifest.json").read_text()
    assert "correct horse" not in text and json.loads(text)["signature"]["alg"] == "hmac-sha256"
    assert main(["lineage", "verify", "--key", str(gan)]) == 0
    assert "every manifest is signed with your key" in capsys.readouterr().out
    assert main(["lineage", "show", str(gan)]) == 0 and ", signed]" in capsys.readouterr().out

    monkeypatch.setenv("SKDD_SIGNING_KEY", "another key")
    assert main(["lineage", "verify", "--key", str(gan)]) == 1
    out = capsys.readouterr().out
    flagged = [line for line in out.splitlines() if line.lstrip().startswith("! ")]
    assert len(flagged) == 2 and all("signed with another key" in line for line in flagged)   # GAN and dataset
    assert main(["lineage", "verify", str(gan)]) == 0              # without --key only the digests are checked
    capsys.readouterr()

    # a forger who recomputes the digest after an edit still cannot recompute the signature
    from skdd.lineage import manifest_digest

    monkeypatch.setenv("SKDD_SIGNING_KEY", "correct horse battery staple")
    manifest = json.loads(text)
    manifest["params"]["steps"] = 999
    manifest["manifest_digest"] = manifest_digest(manifest)
    (gan / "manifest.json").write_text(json.dumps(manifest))
    assert main(["lineage", "verify", "--key", str(gan)]) == 1
    assert "signature does not match its content" in capsys.readouterr().out

    monkeypatch.delenv("SKDD_SIGNING_KEY")
    assert main(["lineage", "verify", "--key", str(gan)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--key: set SKDD_SIGNING_KEY" in err[0]


def test_unsigned_artifacts_fail_verify_key(chain, capsys, monkeypatch):
    monkeypatch.setenv("SKDD_SIGNING_KEY", "k")
    assert main(["lineage", "verify", "--key", str(chain["gan"])]) == 1
    assert "manifest.json: not signed" in capsys.readouterr().out
