"""Where ingest reads from: params, the environment's overrides, and the offline copies `make run` uses."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from helpers import tiny_npz
from skdd.stages.registry import run_stage
from skdd.data.offline import offline_source
from skdd.errors import SkddError
from skdd.lineage import read_manifest
from skdd.stages.ingest import IngestParams, effective_params

ROOT = Path(__file__).resolve().parents[1]


def test_default_source_is_the_torchvision_download():
    assert (IngestParams().source, IngestParams().location) == ("torchvision", "data/downloads")
    for profile in ("params.yaml", "params/mnist-paper.yaml", "params/fashion-mnist-paper.yaml",
                    "params/cifar10-paper.yaml"):
        assert yaml.safe_load((ROOT / profile).read_text())["ingest"]["source"] == "torchvision", profile


def test_environment_overrides_are_what_the_manifest_records(tmp_path, monkeypatch):
    npz = tiny_npz(tmp_path / "tiny.npz")
    monkeypatch.setenv("SKDD_DATA_SOURCE", "npz")
    monkeypatch.setenv("SKDD_DATA_LOCATION", str(npz))
    manifest = run_stage("ingest", output=str(tmp_path / "d"), inputs={}, overrides=["name=tiny", "val_per_class=2"])
    assert manifest["params"]["source"] == "npz" and manifest["params"]["location"] == str(npz)
    assert manifest["inputs"][0] == {**manifest["inputs"][0], "uri": str(npz), "kind": "npz"}
    assert read_manifest(tmp_path / "d")["sources"][0]["path"] == str(npz)


def test_bad_environment_source_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("SKDD_DATA_SOURCE", "ftp")
    with pytest.raises(SkddError, match=r"^\$SKDD_DATA_SOURCE='ftp': expected one of idx, cifar-python, imagefolder, npz, torchvision"):
        effective_params(IngestParams())


def test_torchvision_source_cannot_read_s3():
    with pytest.raises(SkddError, match=r"s3://b/p: the torchvision source downloads from the internet"):
        run_stage("ingest", output="/nonexistent/never", inputs={},
                  overrides=["source=torchvision", "location=s3://b/p"])


def _params(tmp_path: Path, **ingest) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"ingest": ingest}))
    return path


def test_offline_copy_is_used_only_when_nothing_else_is_chosen(tmp_path):
    (tmp_path / "shared" / "datasets" / "mnist").mkdir(parents=True)
    root = tmp_path / "repo"
    root.mkdir()
    params = _params(tmp_path, name="mnist", source="torchvision", location="data/downloads")
    kind, path, _ = offline_source(params, {}, root)
    assert (kind, path) == ("idx", (tmp_path / "shared" / "datasets" / "mnist").resolve())
    assert offline_source(params, {"SKDD_DATA_LOCATION": "/x"}, root) is None      # the user's choice wins
    assert offline_source(params, {"SKDD_DATA_SOURCE": "npz"}, root) is None
    assert offline_source(_params(tmp_path, name="mnist", source="idx", location="/y"), {}, root) is None
    assert offline_source(_params(tmp_path, name="svhn", source="torchvision"), {}, root) is None
    assert offline_source(params, {}, tmp_path / "elsewhere") is None                 # no copy: download
