"""The `skdd-reproduce` pipeline compiled from the shipped presets: each committed YAML is a fresh, deterministic
compile with no credential in it, loads with kfp's loader, requests GPUs where the main pipeline does, holds a
task chain for every planned cell and the matrix the results step reports against; `compile --preset` errors are
one line. (The smoke preset's run under kfp.local, against reproduce.py's numbers: tests/test_reproduce.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("kfp.kubernetes")

from skdd.cli import main  # noqa: E402

from test_pipeline import FAKE_KEY_ID, FAKE_SECRET, load_docs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ROOT / "benchmarks" / "presets"
SHIPPED = ("smoke", "cpu-budget", "gpu-short", "gpu-mnist", "gpu-cifar10")


def compile_preset(name: str, out: Path, *flags: str) -> int:
    return main(["pipeline", "compile", "--preset", str(PRESETS / f"{name}.yaml"), "--output", str(out), *flags])


@pytest.fixture
def fake_credentials(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)


@pytest.fixture(autouse=True)
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)   # a preset's relative paths (its base file, the data copies) are read from here


def test_shipped_list_matches_the_pipeline_module():
    from pipelines.reproduce_pipeline import SHIPPED_PRESETS

    assert SHIPPED_PRESETS == SHIPPED
    assert sorted(p.name for p in (ROOT / "pipelines").glob("reproduce-*.yaml")) == sorted(f"reproduce-{n}.yaml" for n in SHIPPED)
    line = next(x for x in (ROOT / "Makefile").read_text().splitlines() if x.startswith("REPRODUCE_PRESETS"))
    assert tuple(line.split(":=", 1)[1].split()) == SHIPPED, "`make pipelines` compiles another list"


@pytest.mark.parametrize("name", SHIPPED)
def test_committed_yaml_is_a_fresh_compile_without_credentials(name, tmp_path, fake_credentials, capsys):
    fresh = tmp_path / "fresh.yaml"
    assert compile_preset(name, fresh) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["gpu_stages"] == ["distill", "refine"]
    text = fresh.read_text()
    assert FAKE_KEY_ID not in text and FAKE_SECRET not in text
    assert str(ROOT.parent) not in text and str(ROOT.resolve().parent) not in text, \
        "the compiled YAML names a path of this machine (the checkout, or the data copies beside it)"
    committed = ROOT / "pipelines" / f"reproduce-{name}.yaml"
    assert committed.read_text() == text, (
        f"pipelines/reproduce-{name}.yaml differs from a fresh compile: regenerate it with `make pipelines`")
    assert compile_preset(name, tmp_path / "again.yaml") == 0
    assert (tmp_path / "again.yaml").read_bytes() == fresh.read_bytes(), "compilation is not deterministic"


@pytest.mark.parametrize("name", ["cpu-budget", "gpu-cifar10"])
def test_wiring_of_the_committed_yaml(name):
    from pipelines.reproduce_pipeline import load_matrix

    spec, k8s = load_docs(ROOT / "pipelines" / f"reproduce-{name}.yaml")
    assert spec["pipelineInfo"]["name"] == "skdd-reproduce"
    executors = spec["deploymentSpec"]["executors"]
    distills = [e for e in executors if e.startswith("exec-distill")]
    assert distills
    for e in executors:
        accelerator = executors[e]["container"].get("resources", {}).get("accelerator")
        if e.startswith(("exec-distill", "exec-refine")):
            assert accelerator["resourceType"] == "nvidia.com/gpu" and accelerator["resourceCount"] == "1"
            assert k8s[e]["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
        else:
            assert accelerator is None, e
        env = {kv["envVar"] for v in k8s[e].get("secretAsEnv", []) for kv in v["keyToEnv"]}
        assert env == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}, e   # from the Secret, never a parameter
    params = spec["root"]["inputDefinitions"]["parameters"]
    matrix = load_matrix(PRESETS / f"{name}.yaml", ROOT)
    assert set(params) == {"artifact_root", "s3_endpoint_url"} | {f"data_{k.replace('-', '_')}"
                                                                 for k in matrix.preset["datasets"]}
    # the fan-out runs one evaluation per evaluation node of the plan (a loop body's evaluate tasks run once per
    # item), and the results step reports against every planned cell
    evaluates = [n for n in matrix.plan.nodes.values() if n.stage == "evaluate"]
    tasks = [t for comp in spec["components"].values() for t in (comp.get("dag") or {}).get("tasks", {}).values()]
    tasks += list(spec["root"]["dag"]["tasks"].values())
    runs = 0
    for loop in (t for t in tasks if "parameterIterator" in t):
        body = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"].values()
        items = json.loads(loop["parameterIterator"]["items"]["raw"])
        runs += len(items) * sum(1 for t in body if t["componentRef"]["name"].startswith("comp-evaluate"))
    assert runs == len(evaluates)
    results = next(t for t in tasks if t["componentRef"]["name"] == "comp-reproduce-results")
    cells = json.loads(results["inputs"]["parameters"]["matrix"]["runtimeValue"]["constant"])["cells"]
    assert [c["id"] for c in cells] == [c.id for c in matrix.plan.cells]


def test_compile_preset_errors_are_one_line(tmp_path, capsys):
    assert main(["pipeline", "compile", "--preset", str(tmp_path / "absent.yaml")]) == 2
    assert capsys.readouterr().err.strip() == f"skdd pipeline compile: error: --preset: {tmp_path / 'absent.yaml'} not found"
    out = tmp_path / "x.yaml"
    assert compile_preset("smoke", out, "--data", "cifar10=/data/cifar") == 2
    assert capsys.readouterr().err.strip() == ("skdd pipeline compile: error: --data cifar10: not a dataset of the "
                                               "preset (mnist)")
    assert compile_preset("smoke", out, "--params", "params.yaml") == 2
    assert "give one" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ndatasets: {mnist: {}}\nlosses: [mse]\n")
    assert main(["pipeline", "compile", "--preset", str(bad), "--output", str(out)]) == 2
    assert capsys.readouterr().err.strip() == ("skdd pipeline compile: error: losses: unknown item 'mse' (allowed: "
                                               "skd, skd-nostand, dim-mse, cgan-only)")
    assert not out.exists()


def test_data_override_sets_the_parameter_default(tmp_path):
    from pipelines.reproduce_pipeline import load_matrix

    matrix = load_matrix(PRESETS / "smoke.yaml", ROOT, ["mnist=idx:s3://bucket/mnist"])
    assert matrix.locations == {"mnist": "s3://bucket/mnist"}
    assert load_matrix(PRESETS / "smoke.yaml", ROOT).locations == {"mnist": "../shared/datasets/mnist"}
