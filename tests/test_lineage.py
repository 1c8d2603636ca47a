"""`skdd lineage show|verify` on a real chain: source → dataset → GAN → synthetic set."""

from __future__ import annotations

import json
import shutil

import pytest

from skdd.cli import main, run_stage

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
