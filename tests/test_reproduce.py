"""benchmarks/reproduce.py: the presets plan and validate, the smoke preset runs end to end on a tiny dataset, a
stopped or SIGTERMed run resumes without re-running finished stages and ends with the numbers of an uninterrupted run,
the markdown section replaces only itself, and the ordering check words its verdicts as documented.

CPU results are compared bit for bit between runs, and they are bit-identical only at equal intra-op thread counts:
the subprocesses get OMP_NUM_THREADS=1 and the in-process runs `torch.set_num_threads(1)` (fixture `one_thread`).
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

from helpers import tiny_npz

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
@pytest.mark.parametrize("name", ["smoke", "cpu-budget", "gpu-short", "gpu-mnist", "gpu-cifar10"])
def test_presets_plan_with_valid_params(name, tmp_path):
    args = reproduce._parser().parse_args(["--preset", str(PRESETS / f"{name}.yaml"), "--work", str(tmp_path)])
    runner = reproduce.build(args)
    for node in runner.plan.nodes.values():
        runner.params(node)                      # every stage's params validate (typos fail here)
    cells = runner.plan.cells
    assert len({c.id for c in cells}) == len(cells)
    preset = runner.preset
    assert preset["order"][0].startswith("skd/")   # the headline cell first
    assert cells[0].method == "skd" and cells[0].lambda_multiplier == 1
    if name == "cpu-budget":
        assert set(preset["datasets"]) == {"mnist", "fashion-mnist"} and preset["ipc"] == [10]
        assert preset["losses"] == ["skd", "skd-nostand", "dim-mse", "cgan-only"] and preset["gan_only_control"]
        assert set(preset["protocols"]) == {"strict", "dim"} and preset["baselines"] == ["random"]
        assert runner.params(runner.plan.nodes["mnist/eval-distill-skd-ipc10-strict"]).trials >= 3
        assert runner.params(runner.plan.nodes["mnist/eval-distill-skd-ipc10-dim"]).trials >= 3
        est = reproduce.estimate(runner)
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
    """smoke.yaml with its dataset swapped for a tiny npz made here (seconds instead of minutes)."""
    folder = tmp_path_factory.mktemp("preset")
    npz = tiny_npz(folder / "tiny.npz")
    preset = yaml.safe_load((PRESETS / "smoke.yaml").read_text())
    preset["datasets"] = {"tiny": {"source": "npz", "location": str(npz), "name": "tiny"}}
    preset["base"] = str(ROOT / preset["base"])
    path = folder / "smoke-tiny.yaml"
    path.write_text(yaml.safe_dump(preset, sort_keys=False))
    return path


def _run(preset: Path, work: Path, md: Path, *extra: str) -> int:
    return reproduce.main(["--preset", str(preset), "--work", str(work), "--results-md", str(md), *extra])


def _accuracies(work: Path) -> dict:
    results = json.loads((work / "results.json").read_text())
    return {(c["id"], c["architecture"]): c.get("accuracies") for c in results["cells"]}


def _manifest_times(work: Path) -> dict:
    return {p.parent.relative_to(work).as_posix(): p.stat().st_mtime_ns for p in work.rglob("manifest.json")}


@pytest.fixture(scope="module")
def full_run(tiny_preset, tmp_path_factory):
    """One uninterrupted run of the smoke preset (the reference for the resume tests)."""
    folder = tmp_path_factory.mktemp("full")
    md = folder / "results.md"
    md.write_text("# Results\n\n<!-- reproduce:other begin -->\nkeep me\n<!-- reproduce:other end -->\n")
    assert _run(tiny_preset, folder / "work", md) == 0
    return folder / "work", md


@pytest.mark.integration
def test_smoke_end_to_end(full_run, tiny_preset):
    work, md = full_run
    results = json.loads((work / "results.json").read_text())
    args = reproduce._parser().parse_args(["--preset", str(tiny_preset), "--work", str(work)])
    planned = {c.id for c in reproduce.build(args).plan.cells}
    assert {c["id"] for c in results["cells"]} == planned
    expected = {f"tiny/ipc2/{m}/{p}" for m in ("skd", "skd-nostand", "dim-mse", "cgan-only", "gan-only")
                for p in ("strict", "dim")} | {"tiny/ipc2/random/strict", "tiny/ipc2/skd@10x/strict"}
    assert planned == expected
    for cell in results["cells"]:
        assert cell["status"] == "done", cell
        assert cell["trials"] == 2 and len(cell["accuracies"]) == 2
        assert isinstance(cell["mean"], float) and isinstance(cell["std"], float)
        assert cell["command"].startswith("python benchmarks/reproduce.py --preset ")
        assert cell["device"].startswith("cpu") and cell["commit"] and cell["torch"]
        assert cell["data_copy"].startswith("npz (")
        assert set(cell["stages"]) >= {"ingest", "evaluate"}
        assert all(s["wall_seconds"] is not None for s in cell["stages"].values())
    lam = {c["id"]: c for c in results["cells"]}
    assert lam["tiny/ipc2/skd@10x/strict"]["lambda"] == pytest.approx(10 * lam["tiny/ipc2/skd/strict"]["lambda"])
    assert lam["tiny/ipc2/skd/strict"]["grad_ratio_median"] > 0
    assert lam["tiny/ipc2/gan-only/strict"]["lambda"] is None
    assert {d["loss"] for d in results["distills"]} == {"skd", "skd-nostand", "dim-mse", "gan-only"}

    text = md.read_text()
    begin, end = "<!-- reproduce:smoke begin -->", "<!-- reproduce:smoke end -->"
    assert text.count(begin) == 1 and text.count(end) == 1 and "keep me" in text
    section = text[text.index(begin):text.index(end)]
    for needle in ("Table 1 layout: strict (DC/DSA, last epoch)", "Table 1 layout: DiM protocol (best test "
                   "checkpoint)", "Ordering check", "λ sweep", "| ×10 |", "Every planned cell ran."):
        assert needle in section, needle

    # a second run: nothing re-runs, the other section survives an edit, only this section is rewritten
    md.write_text(text.replace("keep me", "keep me, edited"))
    before = _manifest_times(work)
    assert _run(tiny_preset, work, md) == 0
    assert _manifest_times(work) == before
    ledger = json.loads((work / "ledger.json").read_text())
    assert all(e["attempts"] == 1 for e in ledger["stages"].values())
    assert [r["stages_run"] for r in ledger["runs"]] == [len(before), 0]
    text2 = md.read_text()
    assert "keep me, edited" in text2 and text2.count(begin) == 1

    # --render-only rebuilds the same section from results.json alone
    other = md.with_name("render.md")
    assert reproduce.main(["--render-only", "--work", str(work), "--results-md", str(other)]) == 0
    rendered = other.read_text()
    assert rendered[rendered.index(begin):] .strip() == text2[text2.index(begin):text2.index(end) + len(end)].strip()


@pytest.mark.integration
def test_stopped_run_resumes_to_the_same_numbers(full_run, tiny_preset, tmp_path):
    work, md = tmp_path / "work", tmp_path / "results.md"
    assert _run(tiny_preset, work, md, "--max-stages", "6") == 0
    partial = json.loads((work / "results.json").read_text())
    states = [c["status"] for c in partial["cells"]]
    assert states.count("done") >= 1 and "not_run" in states
    assert all("--max-stages 6" in c["reason"] for c in partial["cells"] if c["status"] == "not_run")
    assert "--max-stages 6 reached" in md.read_text()       # what did not fit is listed
    first = _manifest_times(work)
    assert len(first) == 6

    assert _run(tiny_preset, work, md) == 0
    after = _manifest_times(work)
    assert {k: after[k] for k in first} == first              # finished stages were not re-run
    ledger = json.loads((work / "ledger.json").read_text())
    assert all(e["attempts"] == 1 for e in ledger["stages"].values())
    assert _accuracies(work) == _accuracies(full_run[0])


@pytest.mark.integration
def test_sigterm_mid_run_resumes(full_run, tiny_preset, tmp_path):
    work, md = tmp_path / "work", tmp_path / "results.md"
    cmd = [sys.executable, str(SCRIPT), "--preset", str(tiny_preset), "--work", str(work), "--results-md", str(md)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            ledger = reproduce._read_json(work / "ledger.json") or {}
            if sum(1 for e in ledger.get("stages", {}).values() if e.get("completed")) >= 3:
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
    assert proc.returncode == 143, err
    assert "re-run the same command to resume" in err
    ledger = json.loads((work / "ledger.json").read_text())
    assert ledger["runs"][-1]["stopped"] == "interrupted"
    done_before = {k for k, e in ledger["stages"].items() if e.get("completed")}
    assert (work / "results.json").is_file()

    rerun = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    ledger = json.loads((work / "ledger.json").read_text())
    assert all(ledger["stages"][k]["attempts"] == 1 for k in done_before)
    assert _accuracies(work) == _accuracies(full_run[0])


@pytest.mark.integration
def test_max_minutes_zero_and_missing_copy_are_recorded(tiny_preset, tmp_path):
    preset = yaml.safe_load(tiny_preset.read_text())
    preset["datasets"]["gone"] = {"source": "npz", "location": str(tmp_path / "absent.npz"), "name": "gone"}
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump(preset))
    work, md = tmp_path / "work", tmp_path / "results.md"
    assert _run(path, work, md, "--max-minutes", "0") == 0
    results = json.loads((work / "results.json").read_text())
    assert results["cells"] and all(c["status"] == "not_run" for c in results["cells"])
    reasons = {c["dataset"]: c["reason"] for c in results["cells"]}
    assert reasons["tiny"].startswith("did not fit: --max-minutes 0 reached")
    assert reasons["gone"] == f"data copy not found: {tmp_path / 'absent.npz'}"
    assert not list(work.rglob("manifest.json"))
    text = md.read_text()
    assert "data copy not found" in text and "did not fit" in text and "0 of 24" in text


# ------------------------------------------------------------------------------------------- on Kubeflow
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
def test_kfp_local_pipeline_reproduces_the_same_results(full_run, tiny_preset, tmp_path, monkeypatch):
    """The preset compiled to `skdd-reproduce` and run under kfp.local (`--engine kfp-local`): every planned
    cell measured, with the same accuracies, λ and gradient ratios as the in-process run, and the same page."""
    pytest.importorskip("kfp.kubernetes")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")    # the steps are subprocesses: bit-identical at equal threads
    work, md = tmp_path / "work", tmp_path / "results.md"
    assert _run(tiny_preset, work, md, "--engine", "kfp-local") == 0
    ours, theirs = (json.loads((w / "results.json").read_text()) for w in (work, full_run[0]))
    assert all(c["status"] == "done" for c in ours["cells"])
    assert _accuracies(work) == _accuracies(full_run[0])
    for field in ("method", "protocol", "ipc", "loss", "lambda", "lambda_multiplier", "grad_ratio_median", "epochs",
                  "width", "data_copy", "trials", "mean", "std"):
        assert {c["id"]: c.get(field) for c in ours["cells"]} == {c["id"]: c.get(field) for c in theirs["cells"]}, field
    assert sorted((d["loss"], d["lambda"]) for d in ours["distills"]) == \
        sorted((d["loss"], d["lambda"]) for d in theirs["distills"])
    assert ours["command"].endswith("--engine kfp-local")
    assert _page_without_run_facts(ours) == _page_without_run_facts(theirs)
    assert "<!-- reproduce:smoke begin -->" in md.read_text()
    # resubmitted: every artifact is found by its content key and reused, the numbers do not move
    before = {p: p.stat().st_mtime_ns for p in (work / "artifacts").rglob("manifest.json")}
    assert _run(tiny_preset, work, md, "--engine", "kfp-local") == 0
    assert {p: p.stat().st_mtime_ns for p in (work / "artifacts").rglob("manifest.json")} == before
    assert _accuracies(work) == _accuracies(full_run[0])
