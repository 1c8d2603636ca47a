"""Atomic outputs, manifests written last, tampered inputs refused, checkpoints kept and restored."""

import json
import shutil

import pytest
import torch

from skdd import lineage, storage
from skdd.checkpoint import Checkpointer, restore
from skdd.errors import SkddError


def make_artifact(tmp_path, name="art"):
    out = tmp_path / name
    with storage.staged_output(out) as stage:
        (stage / "a.bin").write_bytes(b"hello")
        (stage / "sub").mkdir()
        (stage / "sub" / "b.txt").write_text("world")
        lineage.write_manifest(stage, kind="dataset", stage="test", params={"x": 1}, params_hash="h")
    return out


def test_output_appears_complete_with_manifest(tmp_path):
    out = make_artifact(tmp_path)
    manifest = lineage.verify_artifact(out)
    assert {f["path"] for f in manifest["files"]} == {"a.bin", "sub/b.txt"}
    assert not storage.staging_dir(out).exists()
    assert manifest["params"] == {"x": 1} and manifest["schema_version"] == 2


def test_failed_stage_leaves_no_output(tmp_path):
    out = tmp_path / "art"
    with pytest.raises(RuntimeError):
        with storage.staged_output(out) as stage:
            (stage / "a.bin").write_bytes(b"half")
            raise RuntimeError("crash")
    assert not out.exists()
    with pytest.raises(SkddError, match="input artifact not found"):
        storage.input_dir(out)


def test_failed_rerun_keeps_previous_complete_output(tmp_path):
    out = make_artifact(tmp_path)
    with pytest.raises(RuntimeError):
        with storage.staged_output(out) as stage:
            (stage / "a.bin").write_bytes(b"new but unfinished")
            raise RuntimeError("crash")
    assert (out / "a.bin").read_bytes() == b"hello"
    lineage.verify_artifact(out)


def test_stage_without_manifest_is_not_published(tmp_path):
    out = tmp_path / "art"
    with pytest.raises(RuntimeError, match="without writing manifest.json"):
        with storage.staged_output(out) as stage:
            (stage / "a.bin").write_bytes(b"x")
    assert not out.exists()


def test_incomplete_artifact_refused(tmp_path):
    (tmp_path / "half").mkdir()
    with pytest.raises(SkddError, match=r"incomplete artifact \(no manifest.json\)"):
        storage.input_dir(tmp_path / "half")


@pytest.mark.parametrize("victim", ["a.bin", "sub/b.txt"])
def test_tampered_or_missing_file_is_named(tmp_path, victim):
    out = make_artifact(tmp_path)
    path = out / victim
    data = bytearray(path.read_bytes())
    data[0] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(SkddError) as err:
        lineage.verify_artifact(out)
    assert str(path) in str(err.value) and "sha256" in str(err.value)
    path.unlink()
    with pytest.raises(SkddError, match="missing"):
        lineage.verify_artifact(out)


def test_wrong_kind_and_corrupt_manifest(tmp_path):
    out = make_artifact(tmp_path)
    with pytest.raises(SkddError, match="expected a gan artifact"):
        lineage.verify_artifact(out, expect_kind="gan")
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(SkddError, match="not valid JSON"):
        lineage.verify_artifact(out)


def test_manifest_has_no_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "supersecretvalue123")
    out = make_artifact(tmp_path)
    assert "supersecretvalue123" not in (out / "manifest.json").read_text()


def test_unsupported_scheme_is_clear():
    with pytest.raises(SkddError, match="not supported"):
        storage.input_dir("gs://bucket/x")


def _model():
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))


def test_checkpoint_round_trip_keeps_last_two(tmp_path):
    torch.manual_seed(0)
    model, opt = _model(), None
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    ck = Checkpointer(tmp_path / "ck", params_hash="p1")
    for step in (2, 4, 6):
        ck.save(step, {"m": model}, {"m": opt}, tensors={"perm": torch.arange(5)}, meta={"curves": [step]})
    names = sorted(p.name for p in (tmp_path / "ck").iterdir())
    assert names == ["step-00000004", "step-00000006"]
    expected_next = torch.rand(3)
    latest = ck.latest()
    assert latest.step == 6 and latest.meta["curves"] == [6] and torch.equal(latest.tensors["perm"], torch.arange(5))
    fresh, fresh_opt = _model(), None
    fresh_opt = torch.optim.Adam(fresh.parameters())
    restore(latest, {"m": fresh}, {"m": fresh_opt})
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
    assert json.dumps(fresh_opt.state_dict()["param_groups"]) == json.dumps(opt.state_dict()["param_groups"])
    assert torch.equal(torch.rand(3), expected_next)   # RNG restored to the state at save time


def test_checkpoint_with_other_params_is_not_resumed(tmp_path):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    Checkpointer(tmp_path / "ck", params_hash="p1").save(2, {"m": model}, {"m": opt})
    other = Checkpointer(tmp_path / "ck", params_hash="p2")
    assert other.latest() is None and other.stale()


def test_damaged_newest_checkpoint_falls_back(tmp_path):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ck = Checkpointer(tmp_path / "ck", params_hash="p1")
    ck.save(2, {"m": model}, {"m": opt})
    ck.save(4, {"m": model}, {"m": opt})
    (tmp_path / "ck" / "step-00000004" / "modules.safetensors").write_bytes(b"garbage")
    assert ck.latest().step == 2


class FolderMirror:
    """A mirror in another local folder (the S3 one is tested against SeaweedFS in test_s3_checkpoints.py)."""

    def __init__(self, root, fail_push: bool = False):
        self.root, self.fail_push, self.pulls = root, fail_push, 0

    def __str__(self) -> str:
        return str(self.root)

    def push(self, folder) -> None:
        if self.fail_push:
            raise SkddError("s3://b/x.partial/checkpoints: S3 checkpoint upload failed: cannot reach S3 endpoint")
        shutil.copytree(folder, self.root / folder.name, dirs_exist_ok=True)

    def prune(self, keep: set[str]) -> None:
        for path in list(self.root.iterdir()) if self.root.is_dir() else []:
            if path.name not in keep:
                shutil.rmtree(path)

    def clear(self) -> None:
        self.prune(set())

    def pull_newest(self, local_root, newer_than):
        self.pulls += 1
        names = sorted(p.name for p in self.root.iterdir()) if self.root.is_dir() else []
        if not names or (newer_than is not None and names[-1] <= newer_than):
            return None
        shutil.copytree(self.root / names[-1], local_root / names[-1])
        return names[-1]


def test_checkpoints_mirror_prunes_and_a_new_machine_resumes_from_it(tmp_path, capsys):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mirror = FolderMirror(tmp_path / "remote")
    ck = Checkpointer(tmp_path / "disk-1", params_hash="p1", mirror=mirror)
    for step in (2, 4, 6):
        ck.save(step, {"m": model}, {"m": opt})
    assert sorted(p.name for p in mirror.root.iterdir()) == ["step-00000004", "step-00000006"]
    shutil.rmtree(tmp_path / "disk-1")                      # the machine is gone
    again = Checkpointer(tmp_path / "disk-2", params_hash="p1", mirror=mirror)
    assert again.latest().step == 6 and again.latest().step == 6 and mirror.pulls == 1   # pulled once
    assert "fetched checkpoint step-00000006 from" in capsys.readouterr().out
    other = Checkpointer(tmp_path / "disk-3", params_hash="p2", mirror=mirror)
    assert other.latest() is None and other.stale()
    other.clear()                                            # other params: the mirror goes too
    assert list(mirror.root.iterdir()) == []


def test_a_failed_mirror_upload_warns_and_keeps_the_local_checkpoint(tmp_path, capsys):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ck = Checkpointer(tmp_path / "ck", params_hash="p1", mirror=FolderMirror(tmp_path / "remote", fail_push=True))
    ck.save(2, {"m": model}, {"m": opt})
    err = capsys.readouterr().err.strip()
    assert err.startswith("skdd: warning: checkpoint at step 2 kept locally only: s3://") and len(err.splitlines()) == 1
    assert ck.latest().step == 2
