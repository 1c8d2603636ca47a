"""The Kubeflow pipeline, end to end under `kfp.local` (SubprocessRunner, no venv) on the smoke profile.

Its final evaluation must match the `dvc repro` chain on the same profile: the reference is made by running
dvc.yaml's own `cmd` lines for ingest → pretrain → distill@skd → sample@skd → evaluate@skd through the skdd
CLI (what `dvc repro` executes; running DVC itself again costs minutes and is tests/test_dvc.py's job).
"""

from __future__ import annotations

import json
import shlex
import shutil
import warnings
from pathlib import Path

import pytest
import yaml

from skdd.cli import main

from helpers import MNIST

pytest.importorskip("kfp.kubernetes")
pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "params" / "smoke.yaml"
COUNT_KEYS = ("dataset", "num_classes", "ipc", "protocol", "label", "train_images", "test_images", "epochs",
              "batch_size", "trials", "seeds", "width", "augment", "device")


def dvc_chain_commands() -> list[list[str]]:
    """dvc.yaml's cmd lines for the SKD chain, with its matrix / foreach items filled in."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert "skd" in stages["distill"]["matrix"]["loss"] and "skd" in stages["sample"]["matrix"]["loss"]
    evaluate = stages["evaluate"]
    cmds = [stages["ingest"]["cmd"], stages["pretrain"]["cmd"],
            stages["distill"]["cmd"].replace("${item.loss}", "skd"),
            stages["sample"]["cmd"].replace("${item.loss}", "skd"),
            evaluate["do"]["cmd"].replace("${item}", evaluate["foreach"]["skd"]).replace("${key}", "skd")]
    parsed = [shlex.split(c) for c in cmds]
    assert all(c[0] == "skdd" for c in parsed)
    return [c[1:] for c in parsed]


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


def test_pipeline_under_kfp_local_matches_the_dvc_chain(tmp_path, monkeypatch, smoke_env, capsys):
    from kfp import local

    from skdd import pipeline_cli

    pipeline_cli.pipeline_module()   # puts the checkout (components/, pipelines/) on sys.path
    from pipelines.skdd_pipeline import PipelineOptions, build_pipeline

    # the reference: dvc.yaml's commands on the smoke profile, in a project folder of their own
    project = tmp_path / "dvc-project"
    project.mkdir()
    shutil.copy(SMOKE, project / "params.yaml")
    monkeypatch.chdir(project)
    for args in dvc_chain_commands():
        assert main(args) == 0, args
    reference = project / "artifacts" / "eval-skd"

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
    ref_parents = {r["name"]: read(Path(project, r["uri"]) / "manifest.json") for r in ref["inputs"]}
    assert parents["dataset"]["metrics"] == ref_parents["dataset"]["metrics"] == {"counts": {"train": 60000,
                                                                                             "test": 10000}}
    assert parents["dataset"]["params"] == ref_parents["dataset"]["params"]
    assert parents["synthetic"]["params"] == ref_parents["synthetic"]["params"]
    assert parents["synthetic"]["dataset"]["counts"] == ref_parents["synthetic"]["dataset"]["counts"]
