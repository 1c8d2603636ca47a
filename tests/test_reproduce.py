"""benchmarks/reproduce.py, the driver of the `skdd-reproduce` pipeline: the presets plan and validate; the smoke
preset (on a tiny dataset) runs end to end under kfp.local, stopped by SIGTERM and resumed without re-running finished
stages; its numbers and page equal those of the same stages called directly in this process; a missing data copy is
listed as not run; the markdown section replaces only itself, and the ordering check words its verdicts as documented.

CPU results are compared bit for bit, and they are bit-identical only at equal intra-op thread counts: the pipeline's
steps get OMP_NUM_THREADS=1 and the in-process reference runs `torch.set_num_threads(1)` (fixture `one_thread`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers import presets_run_by, tiny_npz

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "reproduce.py"
PRESETS = ROOT / "benchmarks" / "presets"

_spec = importlib.util.spec_from_file_location("reproduce", SCRIPT)
reproduce = importlib.util.module_from_spec(_spec)
sys.modules["reproduce"] = reproduce
_spec.loader.exec_module(reproduce)
from skdd.reproduce import page as results_md, paper as paper_tables  # noqa: E402 - the planner and page reproduce.py reads


# ------------------------------------------------------------------------------------------- wording and markdown
def test_pair_wording():
    assert results_md.compare_pair((90.0, 1.0), (89.5, 1.0)) == "within noise"
    assert results_md.compare_pair((90.0, 0.1), (85.0, 0.1)) == "holds"
    assert results_md.compare_pair((85.0, 0.1), (90.0, 0.1)) == "reversed"
    assert results_md.compare_pair((90.0, 0.2), (89.0, 1.0)) == "within noise"   # the larger std decides
    assert results_md.compare_pair((90.0, 0.0), (90.0, 0.0)) == "within noise"


def test_ordering_verdicts():
    holds = results_md.ordering_verdict([("skd", 90, 0.1), ("skd-nostand", 85, 0.1), ("dim-mse", 80, 0.1),
                                        ("cgan-only", 75, 0.1)])
    assert holds["summary"] == "holds"
    assert [v for _, _, v in holds["pairs"]] == ["holds"] * 3
    noisy = results_md.ordering_verdict([("skd", 90, 1), ("skd-nostand", 89.5, 1), ("dim-mse", 80, 0.1)])
    assert noisy["summary"].startswith("within noise (skd vs skd-nostand)")
    assert "in the claimed order" in noisy["summary"] and "not in" not in noisy["summary"]
    broken = results_md.ordering_verdict([("skd", 80, 0.1), ("skd-nostand", 85, 0.1), ("dim-mse", 84.9, 1)])
    assert broken["summary"] == "does not hold (skd < skd-nostand, beyond noise)"
    assert results_md.ordering_verdict([("skd", 80, 0.1)])["summary"] == "not measured"


def test_section_replaces_only_itself(tmp_path):
    md = tmp_path / "results.md"
    md.write_text("# Results\n\nhand-written intro\n\n<!-- reproduce:other begin -->\nother body\n"
                  "<!-- reproduce:other end -->\n\ntrailing notes\n")
    reproduce.write_section(md, "mine", "first")
    reproduce.write_section(md, "mine", "second")
    text = md.read_text()
    assert text.count("<!-- reproduce:mine begin -->") == 1 and "second" in text and "first" not in text
    assert "hand-written intro" in text and "other body" in text and "trailing notes" in text
    reproduce.write_section(md, "other", "other replaced")
    text = md.read_text()
    assert "other body" not in text and "other replaced" in text and "second" in text
    assert text.index("other replaced") < text.index("trailing notes") < text.index("second")


def test_paper_numbers():
    t1, t2 = paper_tables.PAPER["table1"], paper_tables.PAPER["table2"]
    assert [t1["skd"][d][i][0] for d in ("mnist", "fashion-mnist", "cifar10") for i in (1, 10, 50)] == \
        [97.9, 98.7, 99.1, 85.5, 89.0, 89.8, 51.6, 68.2, 74.0]
    assert [t2["skd"][a][0] for a in ("convnet3", "resnet18", "alexnet", "vgg11")] == [68.2, 69.9, 69.6, 69.2]
    assert {m for m, _ in paper_tables.METHOD_ROWS} - {"gan-only"} <= set(t1)


# ------------------------------------------------------------------------------------------- presets
@pytest.mark.parametrize("name", presets_run_by("reproduce.py"))
def test_presets_plan_with_valid_params(name, tmp_path):
    args = reproduce._parser().parse_args(["--preset", str(PRESETS / f"{name}.yaml"), "--work", str(tmp_path)])
    matrix = reproduce.load(args)                # every stage's params validate (typos fail here)
    cells = matrix.plan.cells
    assert len({c.id for c in cells}) == len(cells)
    preset = matrix.preset
    assert preset["order"][0].startswith("skd/")   # the headline cell first
    assert cells[0].method == "skd" and cells[0].lambda_multiplier == 1

    def params(key):
        return reproduce.node_params(matrix.plan.nodes[key], matrix.base)

    if name == "cpu-budget":
        assert set(preset["datasets"]) == {"mnist", "fashion-mnist"} and preset["ipc"] == [10]
        assert preset["losses"] == ["skd", "skd-nostand", "dim-mse", "cgan-only"] and preset["gan_only_control"]
        assert set(preset["protocols"]) == {"strict", "dim"} and preset["baselines"] == ["random"]
        assert params("mnist/eval-distill-skd-ipc10-strict").trials >= 3
        assert params("mnist/eval-distill-skd-ipc10-dim").trials >= 3
        est = reproduce.estimate(matrix)
        assert est["cells"] == 26 and est["total_seconds"] < 2 * 3600
        assert f"{est['stages']} stages" in " ".join(preset["description"].split())
        assert f"{est['total_seconds'] / 60:.0f} min" in preset["description"]


def test_bad_preset_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ndatasets: {mnist: {source: offline}}\nlosses: [skd, mse]\n")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--preset", str(bad), "--work", str(tmp_path / "w"),
                           "--plan"], capture_output=True, text=True, env=_env())
    assert proc.returncode == 2
    assert proc.stderr.strip() == "reproduce: error: losses: unknown item 'mse' (allowed: skd, skd-nostand, " \
                                  "dim-mse, cgan-only)"


# ------------------------------------------------------------------------------------------- end to end
def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """In-process runs at one intra-op thread, like the OMP_NUM_THREADS=1 subprocesses they are compared with
    (on a 2-core machine torch defaults to 2 threads, and a reduction's float order follows the thread count)."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_preset(tmp_path_factory) -> Path:
    """smoke.yaml with its dataset swapped for a tiny npz made here (seconds instead of minutes), and a second
    dataset whose copy is missing (its cells must be listed as not run, the others must still run)."""
    folder = tmp_path_factory.mktemp("preset")
    npz = tiny_npz(folder / "tiny.npz")
    preset = yaml.safe_load((PRESETS / "smoke.yaml").read_text())
    preset["datasets"] = {"tiny": {"source": "npz", "location": str(npz), "name": "tiny"},
                          "gone": {"source": "npz", "location": str(folder / "absent.npz"), "name": "gone"}}
    preset["base"] = str(ROOT / preset["base"])
    path = folder / "smoke-tiny.yaml"
    path.write_text(yaml.safe_dump(preset, sort_keys=False))
    return path


def _accuracies(results: dict) -> dict:
    return {(c["id"], c["architecture"]): c.get("accuracies") for c in results["cells"]}


def _manifest_times(work: Path) -> dict:
    return {p.parent.relative_to(work).as_posix(): p.stat().st_mtime_ns for p in work.rglob("manifest.json")}


@pytest.fixture(scope="module")
def reference(tiny_preset, tmp_path_factory):
    """The same matrix without Kubeflow: every stage of the plan called in this process (run_stage, in
    dependency order), the records read back from the manifests, assembled into the results document."""
    from skdd.reproduce.results import assemble, evaluation_record
    from skdd.stages.registry import run_stage

    work = tmp_path_factory.mktemp("reference")
    args = reproduce._parser().parse_args(["--preset", str(tiny_preset), "--work", str(work)])
    matrix = reproduce.load(args)
    records = []
    for cell in matrix.plan.cells:
        if matrix.plan.datasets[cell.dataset].missing:
            continue
        for key in cell.chain:
            node = matrix.plan.nodes[key]
            if not (work / key / "manifest.json").is_file():
                run_stage(node.stage, output=str(work / key), params_file=matrix.base, overrides=node.overrides,
                          inputs={name: str(work / parent) for name, parent in node.inputs.items()})
        metrics = json.loads((work / cell.eval_key / "metrics.json").read_text())
        records.append(evaluation_record(cell.dataset, str(work / cell.eval_key), metrics))
    return assemble(matrix.spec, records)


@pytest.fixture(scope="module")
def stopped_then_resumed(tiny_preset, tmp_path_factory):
    """The driver (kfp.local) stopped by SIGTERM once a few stages finished, then the same command again."""
    folder = tmp_path_factory.mktemp("kfp")
    work, md = folder / "work", folder / "results.md"
    md.write_text("# Results\n\n<!-- reproduce:other begin -->\nkeep me\n<!-- reproduce:other end -->\n")
    cmd = [sys.executable, str(SCRIPT), "--preset", str(tiny_preset), "--work", str(work), "--results-md", str(md)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            if len(list(work.glob("artifacts/*/*/manifest.json"))) >= 3:
                break
            assert proc.poll() is None, "finished before it could be stopped"
            time.sleep(0.05)
        else:
            pytest.fail("no stage finished in time")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    stopped = {"returncode": proc.returncode, "stderr": err, "manifests": _manifest_times(work / "artifacts"),
               "results_written": (work / "results.json").exists()}
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    return {"stopped": stopped, "work": work, "md": md, "stderr": rerun.stderr,
            "results": json.loads((work / "results.json").read_text())}


@pytest.mark.integration
def test_stopped_run_resumes(stopped_then_resumed):
    stopped, work = stopped_then_resumed["stopped"], stopped_then_resumed["work"]
    assert stopped["returncode"] == 143, stopped["stderr"][-2000:]
    assert "terminated; re-run the same command to resume" in stopped["stderr"]
    assert not stopped["results_written"]                       # no half page that looks complete
    after = _manifest_times(work / "artifacts")
    assert {k: after[k] for k in stopped["manifests"]} == stopped["manifests"]   # finished stages were reused
    assert len(after) > len(stopped["manifests"])


@pytest.mark.integration
def test_smoke_end_to_end(stopped_then_resumed, tiny_preset):
    results, md, work = stopped_then_resumed["results"], stopped_then_resumed["md"], stopped_then_resumed["work"]
    expected = {f"tiny/ipc2/{m}/{p}" for m in ("skd", "skd-nostand", "dim-mse", "cgan-only", "gan-only")
                for p in ("strict", "dim")} | {"tiny/ipc2/random/strict", "tiny/ipc2/skd@10x/strict"}
    tiny = [c for c in results["cells"] if c["dataset"] == "tiny"]
    assert {c["id"] for c in tiny} == expected
    for cell in tiny:
        assert cell["status"] == "done", cell
        assert cell["trials"] == 2 and len(cell["accuracies"]) == 2
        assert isinstance(cell["mean"], float) and isinstance(cell["std"], float)
        assert cell["command"].startswith("python benchmarks/reproduce.py --preset ")
        assert cell["device"].startswith("cpu") and cell["commit"] and cell["torch"]
        assert cell["data_copy"].startswith("npz (")
        assert set(cell["stages"]) >= {"ingest", "evaluate"}
        assert cell["evaluation"].startswith(str(work / "artifacts" / "evaluate"))
    gone = [c for c in results["cells"] if c["dataset"] == "gone"]
    assert gone and all(c["status"] == "not_run" and c["reason"] == f"data copy not found: "
                        f"{tiny_preset.parent / 'absent.npz'}" for c in gone)
    assert "data copy not found" in stopped_then_resumed["stderr"]
    lam = {c["id"]: c for c in tiny}
    assert lam["tiny/ipc2/skd@10x/strict"]["lambda"] == pytest.approx(10 * lam["tiny/ipc2/skd/strict"]["lambda"])
    assert lam["tiny/ipc2/skd/strict"]["grad_ratio_median"] > 0
    assert lam["tiny/ipc2/gan-only/strict"]["lambda"] is None
    assert {d["loss"] for d in results["distills"]} == {"skd", "skd-nostand", "dim-mse", "gan-only"}
    assert results["runs"][0]["wall_seconds"] > 0 and results["total_wall_seconds"] > 0

    text = md.read_text()
    begin, end = "<!-- reproduce:smoke begin -->", "<!-- reproduce:smoke end -->"
    assert text.count(begin) == 1 and text.count(end) == 1 and "keep me" in text
    section = text[text.index(begin):text.index(end)]
    for needle in ("Table 1 layout: strict (DC/DSA, last epoch)", "Table 1 layout: DiM protocol (best test "
                   "checkpoint)", "Ordering check", "λ sweep", "| ×10 |", "data copy not found"):
        assert needle in section, needle

    # --render-only rebuilds the same section from results.json alone
    other = md.with_name("render.md")
    assert reproduce.main(["--render-only", "--work", str(work), "--results-md", str(other)]) == 0
    rendered = other.read_text()
    assert rendered[rendered.index(begin):].strip() == text[text.index(begin):text.index(end) + len(end)].strip()


def _page_without_run_facts(results: dict) -> str:
    """The page from its first table to the measured-cell list, without the distillation runs' table (artifact
    paths and wall times differ between two runs of the same measurements)."""
    text = results_md.render_section(results)
    body = text[text.index("### Table 1 layout"):text.index("### Every measured cell")]
    if "Every distillation run:" in body:
        head, tail = body.split("Every distillation run:", 1)
        body = head + tail[tail.index("\n\n", tail.index("|")):]
    return body


@pytest.mark.integration
def test_kfp_pipeline_gives_what_the_stages_give_in_process(stopped_then_resumed, reference):
    """Through Kubeflow (kfp.local, each step a subprocess) or called directly, the same stages give the same
    numbers: every cell's accuracies, λ and gradient ratio, and the same page."""
    ours = stopped_then_resumed["results"]
    assert _accuracies(ours) == _accuracies(reference)
    for field in ("method", "protocol", "ipc", "loss", "lambda", "lambda_multiplier", "grad_ratio_median", "epochs",
                  "width", "data_copy", "trials", "mean", "std", "status"):
        assert {c["id"]: c.get(field) for c in ours["cells"]} == {c["id"]: c.get(field) for c in reference["cells"]}, \
            field
    assert sorted((d["loss"], d["lambda"]) for d in ours["distills"]) == \
        sorted((d["loss"], d["lambda"]) for d in reference["distills"])
    assert _page_without_run_facts(ours) == _page_without_run_facts(reference)


@pytest.mark.integration
def test_max_minutes_zero_stops_before_anything_runs(tiny_preset, tmp_path):
    work = tmp_path / "work"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--preset", str(tiny_preset), "--work", str(work),
                           "--no-md", "--max-minutes", "0"], capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "--max-minutes 0 reached; re-run the same command to resume" in proc.stderr
    assert not list(work.rglob("manifest.json")) and not (work / "results.json").exists()


def test_host_submits_the_compiled_matrix(tmp_path):
    """`--host` compiles the preset and goes through `skdd pipeline submit` (checked parameters; dry run: no network)."""
    base = [sys.executable, str(SCRIPT), "--preset", str(PRESETS / "smoke.yaml"), "--host", "http://kfp.invalid:8080",
            "--dry-run"]
    proc = subprocess.run(base + ["--param", "artifact_root=s3://bucket/skdd", "--param", "data_mnist=s3://bucket/mnist"],
                          capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["dry_run"] and plan["experiment"] == "skdd-reproduce"
    assert plan["arguments"] == {"artifact_root": "s3://bucket/skdd", "data_mnist": "s3://bucket/mnist"}
    bad = subprocess.run(base + ["--param", "bogus=1"], capture_output=True, text=True, env=_env(), cwd=ROOT,
                         timeout=300)
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("reproduce: error: --param bogus: not a parameter of the pipeline (parameters: "
                                  "artifact_root, data_mnist, s3_endpoint_url)")
