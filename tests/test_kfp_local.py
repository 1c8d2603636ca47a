"""The Kubeflow pipeline, end to end under `kfp.local` (SubprocessRunner, no venv) on the smoke profile.

Its final evaluation must match the real `dvc repro` of the same profile: the session's `dvc_smoke` fixture
(tests/conftest.py, shared with tests/test_dvc.py) keeps a snapshot of that run's evaluation chain.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from skdd.cli import main

from helpers import MNIST

pytest.importorskip("kfp.kubernetes")
pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "params" / "smoke.yaml"
COUNT_KEYS = ("dataset", "num_classes", "ipc", "protocol", "label", "train_images", "test_images", "epochs",
              "batch_size", "trials", "seeds", "width", "augment", "device")


@pytest.fixture
def smoke_env(monkeypatch):
    if not MNIST.is_dir():
        pytest.skip("../shared/datasets/mnist not present")
    monkeypatch.setenv("SKDD_DATA_SOURCE", "idx")        # as test_dvc.py / `make run` point ingest at the copy
    monkeypatch.setenv("SKDD_DATA_LOCATION", str(MNIST))
    for name in ("SKDD_PUSHGATEWAY", "SKDD_RUN_ID", "SKDD_IMAGE", "SKDD_S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_pipeline_under_kfp_local_matches_dvc_repro(tmp_path, monkeypatch, smoke_env, capsys, dvc_smoke):
    from kfp import local

    from skdd import pipeline_cli

    pipeline_cli.pipeline_module()   # puts the checkout (components/, pipelines/) on sys.path
    from pipelines.skdd_pipeline import PipelineOptions, build_pipeline

    # the reference: the evaluation of the session's real `dvc repro` of the smoke profile, as first made
    snapshot = dvc_smoke[3]
    reference = snapshot / "eval-skd"

    # the pipeline, compiled for the default image, run by kfp.local in subprocesses of this interpreter
    monkeypatch.chdir(tmp_path)
    smoke = SMOKE.read_text()
    pipeline = build_pipeline(PipelineOptions(image=f"ghcr.io/skdd/skdd:{__import__('skdd').__version__}",
                                              params_yaml=smoke))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp-root"),
               workspace_root=str(tmp_path / "kfp-workspace"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # "non-Python base image": it is the project's image
        warnings.filterwarnings("ignore", message=".*no effect in the current local runner")   # GPU request
        task = pipeline(artifact_root=str(tmp_path / "artifacts"))
    capsys.readouterr()

    # the final artifact: the report over the per-IPC evaluations, with the manifests' facts as KFP metadata
    report_meta = task.output.metadata
    report_uri = Path(report_meta["uri"])
    assert report_uri.parent == tmp_path / "artifacts" / "report"
    assert Path(task.output.path).read_text() == (report_uri / "report.md").read_text()
    (evaluation,) = read(report_uri / "manifest.json")["inputs"]
    eval_uri = Path(evaluation["uri"])
    assert eval_uri.parent == tmp_path / "artifacts" / "evaluate"

    # the auditor's check passes on what the pipeline made, down to the source files
    for uri in (report_uri, eval_uri):
        assert main(["lineage", "verify", str(uri)]) == 0
        assert "every file and every ancestor matches" in capsys.readouterr().out

    # same params, same counts as the dvc chain's evaluation; on CPU even the same accuracies, bit for bit
    ours, ref = read(eval_uri / "manifest.json"), read(reference / "manifest.json")
    assert ours["params"] == ref["params"] and ours["params_hash"] == ref["params_hash"]
    assert ours["params"]["label"] == "skd"
    m_ours, m_ref = read(eval_uri / "metrics.json"), read(reference / "metrics.json")
    assert {k: m_ours[k] for k in COUNT_KEYS} == {k: m_ref[k] for k in COUNT_KEYS}
    assert m_ours["train_images"] == 100 and m_ours["test_images"] == 10000
    assert set(m_ours["architectures"]) == set(m_ref["architectures"]) == {"convnet3"}
    for arch, result in m_ref["architectures"].items():
        assert m_ours["architectures"][arch]["accuracies"] == result["accuracies"]
    # every parent: the same params as its dvc counterpart, and the same data counts
    parents = {r["name"]: read(Path(r["uri"]) / "manifest.json") for r in ours["inputs"]}
    ref_parents = {r["name"]: read(snapshot / Path(r["uri"]).name / "manifest.json") for r in ref["inputs"]}
    assert parents["dataset"]["metrics"] == ref_parents["dataset"]["metrics"] == {
        "counts": {"train": 59980, "val": 20, "test": 10000}}
    assert parents["dataset"]["params"] == ref_parents["dataset"]["params"]
    assert parents["synthetic"]["params"] == ref_parents["synthetic"]["params"]
    assert parents["synthetic"]["stage"] == "refine"          # evaluate reads the refined set, as in dvc.yaml
    assert parents["synthetic"]["dataset"]["counts"] == ref_parents["synthetic"]["dataset"]["counts"]
    grand = {r["name"]: read(Path(r["uri"]) / "manifest.json") for r in parents["synthetic"]["inputs"]}
    assert set(grand) == {"dataset", "synthetic", "gan"}
    assert {r["name"] for r in grand["synthetic"]["inputs"]} == {"gan", "teacher"}     # sample kept by the teacher
