"""The Kubeflow pipeline, end to end under `kfp.local` (SubprocessRunner, no venv) on the smoke profile.

Its final evaluation must match the real `dvc repro` of the same profile: the session's `dvc_smoke` fixture
(tests/conftest.py, shared with tests/test_dvc.py) keeps a snapshot of that run's evaluation chain.
"""

from __future__ import annotations

import json
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
    # the reference: the evaluation of the session's real `dvc repro` of the smoke profile, as first made
    snapshot = dvc_smoke[3]
    reference = snapshot / "eval-skd"

    # the pipeline through the user's command: compiled for the default image with the smoke preset, then run by
    # kfp.local in subprocesses of this interpreter (`--runner subprocess`; tests/test_image.py runs `docker`)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    code = main(["pipeline", "run-local", "--runner", "subprocess", "--preset", str(SMOKE),
                 "--pipeline-root", str(tmp_path / "kfp-root"), "--param", f"artifact_root={tmp_path / 'artifacts'}"])
    out = capsys.readouterr().out
    assert code == 0, out
    printed = json.loads(out.strip().splitlines()[-1])
    assert printed["runner"] == "subprocess" and printed["pipeline_root"] == str(tmp_path / "kfp-root")

    # the final artifact: the report over the per-IPC evaluations, its URI from the manifests' facts (KFP metadata)
    report_uri = Path(printed["report_uri"])
    assert report_uri.parent == tmp_path / "artifacts" / "report"
    assert Path(printed["report"]).read_text() == (report_uri / "report.md").read_text()
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
    assert parents["dataset"]["metrics"] == ref_parents["dataset"]["metrics"] == {   # smoke: 100 per class
        "counts": {"train": 1000, "val": 20, "test": 10000}}
    assert parents["dataset"]["params"] == ref_parents["dataset"]["params"]
    assert parents["synthetic"]["params"] == ref_parents["synthetic"]["params"]
    assert parents["synthetic"]["stage"] == "refine"          # evaluate reads the refined set, as in dvc.yaml
    assert parents["synthetic"]["dataset"]["counts"] == ref_parents["synthetic"]["dataset"]["counts"]
    grand = {r["name"]: read(Path(r["uri"]) / "manifest.json") for r in parents["synthetic"]["inputs"]}
    assert set(grand) == {"dataset", "synthetic", "gan"}
    assert {r["name"] for r in grand["synthetic"]["inputs"]} == {"gan", "teacher"}     # sample kept by the teacher
