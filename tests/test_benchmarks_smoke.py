"""The benchmark scripts run end to end at tiny settings and report every figure they promise.

Timings themselves are not checked (CPU timings on a shared machine mean little); only that each script runs,
and that its output is complete and sane. One thread per process, as the figures in the README were taken.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from helpers import BENCHMARKS, preset_runners, presets_run_by, run_script, tiny_npz

pytestmark = pytest.mark.integration


def test_speed_quick(tmp_path):
    data = tiny_npz(tmp_path / "tiny.npz")
    out = tmp_path / "speed.json"
    stdout = run_script("speed.py", "--quick", "--device", "cpu", "--data", str(data), "--json", str(out))
    result = json.loads(out.read_text())

    rows = result["rows"]
    assert {r["phase"] for r in rows} == {"pretrain", "distill", "reference", "evaluate"}
    pool = {"convnet3", "resnet10", "resnet18"}
    for source in ("online", "trajectories"):   # both pool sources timed for every architecture
        assert {r["pool_arch"] for r in rows if r["phase"] == "distill" and r["pool_source"] == source} == pool
    assert all(r["pool_steps"] == 0 for r in rows if r.get("pool_source") == "trajectories")
    assert {r["pool_arch"] for r in rows if r["phase"] == "reference"} == pool
    for r in rows:
        assert r["bf16"] == "n/a"                       # skdd's autocast is CUDA-only
        assert r["images_per_s"] > 0 and r["ms_per_step"] > 0, r
        assert r["peak_mem_mib"] > 0, r
    for r in rows:
        if r["phase"] in ("distill", "reference"):
            assert r["model_gflops_per_step"] > 0

    ratios = result["ratios"]
    assert {(q["pool_source"], q["pool_arch"]) for q in ratios} == {
        (s, a) for s in ("online", "trajectories") for a in pool | {"pool mean"}}
    for q in ratios:
        assert q["ratio"] > 0 and q["target"] == 3.0
        assert q["target_met"] == (q["ratio"] >= 3.0)
        # online: the reference does exactly skdd's model work; trajectories skip the pool's SGD steps
        assert q["same_model_flops"] == (q["pool_source"] == "online"), q
    assert result["ratio"] == next(q["ratio"] for q in ratios
                                   if q["pool_arch"] == "pool mean" and q["pool_source"] == "online")
    assert result["conv_peak"].startswith("n/a")
    meta = result["meta"]
    assert meta["torch"] and meta["device"] == "cpu" and "--quick" in meta["command"]
    assert meta["train_images"] == 120
    assert "ratio = " in stdout and "pool mean" in stdout


def test_throughput_tiny():
    stdout = run_script("throughput.py", "--device", "cpu", "--g-width", "8", "--d-width", "8", "--pool-width", "4",
                        "--pool", "convnet3", "--pool-steps", "2", "--batch", "16", "--pretrain-batch", "16",
                        "--steps", "1", "--repeats", "1")
    result = json.loads(stdout)
    assert result["pretrain"]["images_per_s"] > 0
    assert result["distill[convnet3]"]["images_per_s"] > 0
    assert 0 <= result["distill[convnet3]"]["overhead_fraction"] < 1
    assert result["peak_memory_mb"] > 0


def test_eval_speed_tiny():
    stdout = run_script("eval_speed.py", "--device", "cpu", "--epochs", "2", "--width", "8", "--ipc", "2",
                        "--test-size", "50", "--repeats", "1", "--checkpoint-every", "1")
    result = json.loads(stdout)
    assert result["plain_images_per_s"] > 0 and result["skdd_images_per_s"] > 0
    assert result["ratio"] > 0
    assert result["same_accuracy"] is True


def test_paired_difference_and_verdict_by_hand():
    sys.path.insert(0, str(BENCHMARKS))
    from fixed_set import paired, verdict

    def row(**per_seed):
        return {"seeds": {s: {"convnet3": accs} for s, accs in per_seed.items()}}

    # per-seed means 91, 80 (row) against 90, 82 (control); seed "3" has no control and is left out
    d = paired(row(a=[90.0, 92.0], b=[80.0], c=[50.0]), row(a=[90.0], b=[82.0]))
    assert d["per_seed"] == [1.0, -2.0] and d["mean"] == -0.5 and d["std"] == 1.5 and d["n"] == 2
    assert verdict(d) == "no effect"                                    # |−0.5| ≤ 1.5
    assert verdict(paired(row(a=[95.0], b=[96.0]), row(a=[90.0], b=[90.0]))) == "better"   # +5.5 ± 0.5
    assert verdict(paired(row(a=[85.0]), row(a=[90.0]))) == "no effect"                     # one seed only
    assert paired(row(a=[1.0]), row(b=[1.0])) is None and verdict(None) == "—"


def test_cross_architecture_table_spread_and_paper_rows_by_hand():
    sys.path.insert(0, str(BENCHMARKS))
    from fixed_set import cross_arch_table

    rows = {"random": {"convnet3": [26.0, 28.0], "resnet18": [20.0, 20.0]},
            "gan+refine": {"convnet3": [40.0, 40.0], "resnet18": [38.5, 39.5]}}
    lines = cross_arch_table("cifar10", 10, rows)
    assert "| random | 27.0 ± 1.0 | 20.0 ± 0.0 | 7.0 |" in lines          # spread 27 - 20
    assert "| gan+refine | 40.0 ± 0.0 | 39.0 ± 0.5 | 1.0 |" in lines
    assert "| paper: skd (reported) | 68.2 ± 0.4 | 69.9 ± 0.3 | 1.7 |" in lines   # the paper's Table 2
    assert not any("paper" in line for line in cross_arch_table("mnist", 10, rows))  # Table 2 is CIFAR-10 only
    assert not any("paper" in line for line in cross_arch_table("cifar10", 1, rows))


def test_every_preset_names_the_one_runner_that_validates_it():
    """The preset validation tests are parametrized by the runner each preset's header names: a preset that names
    none (or two) would escape every one of them, hours before its typo surfaces."""
    runners = preset_runners()
    assert {n for n, r in runners.items() if r not in ("fixed_set.py", "generator.py", "reproduce.py")} == set()
    assert {"cpu-cifar10", "cpu-acr-sweep", "gpu-mnist"} <= set(runners)    # the scan sees the folder


def test_fixed_set_refuses_an_unknown_preset_key_in_one_line(tmp_path):
    """`refine_transfer` became `refine_variants`: an old preset must stop at once, not skip its rows in silence."""
    preset = tmp_path / "old.yaml"
    preset.write_text((BENCHMARKS / "presets" / "fixed-set-smoke.yaml").read_text()
                      .replace("refine_variants: {transfer: {", "refine_transfer: {").replace("}}", "}"))
    out = subprocess.run([sys.executable, str(BENCHMARKS / "fixed_set.py"), "--preset", str(preset), "--work",
                          str(tmp_path / "work"), "--no-docs"], capture_output=True, text=True)
    assert out.returncode == 2 and "unknown keys ['refine_transfer']" in out.stderr, out.stderr
    assert not (tmp_path / "work").exists()


def test_fixed_set_ablation_runs_only_the_preset_selections_and_refuses_an_unknown_one(tmp_path):
    """`selections` cuts the ablation to the modes a question needs (each mode is an evaluation per GAN seed); a
    misspelt mode must stop before any compute, not be skipped."""
    import yaml

    preset = yaml.safe_load((BENCHMARKS / "presets" / "fixed-set-smoke.yaml").read_text())
    preset["datasets"] = {"tiny": {"source": "npz", "location": str(tiny_npz(tmp_path / "tiny.npz"))}}
    preset["selections"] = ["coverage"]
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump(preset))
    run_script("fixed_set.py", "--preset", str(path), "--work", str(tmp_path / "work"), "--no-docs",
               "--phases", "ablation")
    rows = json.loads((tmp_path / "work" / "results.json").read_text())["datasets"]["tiny"]["2"]
    assert set(rows) == {"gan+coverage"} and set(rows["gan+coverage"]["seeds"]) == {"1", "2"}
    preset["selections"] = ["coverage", "confidense"]
    path.write_text(yaml.safe_dump(preset))
    bad = subprocess.run([sys.executable, str(BENCHMARKS / "fixed_set.py"), "--preset", str(path), "--work",
                          str(tmp_path / "other"), "--no-docs"], capture_output=True, text=True)
    assert bad.returncode == 2 and "selections: unknown ['confidense']" in bad.stderr, bad.stderr
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("name", presets_run_by("fixed_set.py"))
def test_fixed_set_presets_validate_before_hours_of_compute(name):
    """A typo in a long preset would surface hours in, at the stage it reaches: each stage section, over its
    base file, must validate now, and every offline dataset must be one the offline copies know."""
    from skdd.config import load_stage_params
    from skdd.data.offline import COPIES
    from skdd.stages.registry import STAGES

    sys.path.insert(0, str(BENCHMARKS))
    from fixed_set import _ov, read_fixed_set_preset

    preset = read_fixed_set_preset(argparse.ArgumentParser(), str(BENCHMARKS / "presets" / f"{name}.yaml"))
    base = BENCHMARKS.parent / preset["base"]
    for stage in ("teacher", "pretrain", "refine", "evaluate", "distill"):
        load_stage_params(STAGES[stage].params_class(), stage, base, _ov(preset.get(stage)))
    for stage in ("sample", "select"):                 # the runner sets ipc per cell
        for ipc in preset["ipc"]:
            load_stage_params(STAGES[stage].params_class(), stage, base, _ov(preset.get(stage)) + [f"ipc={ipc}"])
        for psi in preset.get("truncations") or []:
            load_stage_params(STAGES["sample"].params_class(), "sample", base,
                              _ov(preset.get("sample")) + [f"ipc={ipc}", "selection=none", "candidates_per_class=null",
                                                           f"truncation={'null' if psi is None else psi}"])
    load_stage_params(STAGES["refine"].params_class(), "refine", base, ["space=pixel"] + _ov(preset.get("refine_pixel")))
    for overrides in (preset.get("refine_variants") or {}).values():
        load_stage_params(STAGES["refine"].params_class(), "refine", base,
                          ["space=latent"] + _ov(preset.get("refine")) + _ov(overrides))
    for dataset, where in preset["datasets"].items():
        assert (where or {}).get("source", "offline") != "offline" or dataset in COPIES, dataset
    assert preset["gan_seeds"] and preset["ipc"]


@pytest.mark.parametrize("name", presets_run_by("generator.py"))
def test_generator_presets_validate_before_hours_of_compute(name):
    """The same guard for `benchmarks/generator.py`'s presets: every recipe over the base pretrain section, every
    loss mode over the base distill section (as the runner builds them), and the pairings name existing rows."""
    from skdd.config import load_stage_params
    from skdd.data.offline import COPIES
    from skdd.stages.registry import STAGES

    sys.path.insert(0, str(BENCHMARKS))
    from fixed_set import _ov, read_preset
    from generator import PRESET_KEYS

    preset = read_preset(argparse.ArgumentParser(), str(BENCHMARKS / "presets" / f"{name}.yaml"), PRESET_KEYS)
    base = BENCHMARKS.parent / preset["base"]
    load = lambda stage, ov: load_stage_params(STAGES[stage].params_class(), stage, base, ov)  # noqa: E731
    for recipe in preset["recipes"].values():
        load("pretrain", _ov(preset.get("pretrain")) + _ov(recipe))
    modes = preset.get("skd_modes") or {}
    assert not modes or (preset["skd_recipe"] in preset["recipes"] and preset["control"] in modes)
    for mode in modes.values():
        mode = {k: v for k, v in mode.items() if k != "paired_with"}
        if "lambda_x" in mode:
            mode = {k: v for k, v in mode.items() if k != "lambda_x"} | {"lambda_skd": mode["lambda_x"] * 0.01}
        load("distill", _ov(preset.get("distill")) + _ov(mode))
    for name_, mode in modes.items():
        assert mode.get("paired_with", name_) in modes, f"{name_}: paired_with names no mode"
    load("pool", _ov(preset.get("pool")))
    load("sample", _ov(preset.get("sample")) + [f"ipc={preset['ipc']}", "selection=none", "candidates_per_class=null"])
    load("select", _ov(preset.get("select")) + [f"ipc={preset['ipc']}", "method=random"])
    load("evaluate", _ov(preset.get("evaluate")))
    for dataset, where in preset["datasets"].items():
        assert (where or {}).get("source", "offline") != "offline" or dataset in COPIES, dataset
    assert preset["gan_seeds"]


def test_fixed_set_benchmark_smoke(tmp_path):
    import yaml

    preset = yaml.safe_load((BENCHMARKS / "presets" / "fixed-set-smoke.yaml").read_text())
    preset["datasets"] = {"tiny": {"source": "npz", "location": str(tiny_npz(tmp_path / "tiny.npz"))}}
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump(preset))
    stdout = run_script("fixed_set.py", "--preset", str(path), "--work", str(tmp_path / "work"), "--no-docs")
    results = json.loads((tmp_path / "work" / "results.json").read_text())
    row = results["datasets"]["tiny"]["2"]
    assert set(row) == {"random", "kcenter", "herding", "dm-pixel", "herding+dm-pixel", "gan", "gan+confidence",
                        "gan+coverage", "gan+confidence+coverage", "gan+refine", "gan+refine+dm-pixel",
                        "gan-only+refine", "skd+refine", "gan+truncation", "gan+refine-transfer"}
    # truncation: every ψ on val for both seeds, the best val mean chosen, only the chosen one tested
    val = results["datasets"]["tiny"]["val"]["2"]
    assert set(val) == {"gan", "gan@psi=0.5"} and all(set(v["seeds"]) == {"1", "2"} for v in val.values())
    means = {r: sum(sum(a["convnet3"]) / 2 for a in v["seeds"].values()) / 2 for r, v in val.items()}
    chosen = results["datasets"]["tiny"]["truncation"]["2"]
    assert means["gan" if chosen is None else f"gan@psi={chosen}"] == max(means.values())
    val_eval = tmp_path / "work" / "tiny" / "ipc2" / "seed1" / "eval-val-sample-gan-psi0.5"
    assert json.loads((val_eval / "metrics.json").read_text())["split"] == "val"
    assert "on the **validation** split" in stdout and f"chosen ψ = {'null (untruncated)' if chosen is None else chosen}" in stdout
    assert set(row["gan+refine+dm-pixel"]["seeds"]) == {"1", "2"}
    assert set(row["gan+refine"]["seeds"]) == {"1", "2"}                   # one evaluation per GAN seed
    for name, cells in row.items():
        for accs in cells["seeds"].values():
            assert len(accs["convnet3"]) == 2 and all(0 <= a <= 100 for a in accs["convnet3"]), name
    assert "| gan+refine |" in stdout and "(2 GAN seeds; Δ random" in stdout and "(2 trials)" in stdout
    cross = results["datasets"]["tiny"]["cross_arch"]["2"]
    assert set(cross) == {"random", "dm-pixel", "gan+confidence+coverage", "gan+refine", "gan+refine-transfer"}
    transfer = json.loads((tmp_path / "work" / "tiny" / "ipc2" / "seed1" / "refine-gan-transfer" / "manifest.json")
                          .read_text())
    assert transfer["params"]["embed_arch"] == ["convnet3", "alexnet"]     # the preset's overrides reached refine
    assert "- IPC 2, gan+refine-transfer against gan+refine on the same GAN seed: " in stdout
    assert all(set(accs) == {"convnet3", "alexnet"} and len(accs["alexnet"]) == 2 for accs in cross.values())
    assert "Cross-architecture, IPC 2" in stdout
    xtab = stdout.split("Cross-architecture, IPC 2", 1)[1]
    assert (xtab.index("| random |") < xtab.index("| gan+confidence+coverage |") < xtab.index("| gan+refine |")
            < xtab.index("| gan+refine-transfer |"))
    assert "- IPC 2, skd+refine against gan-only+refine on the same GAN seed: " in stdout
    # a second run reuses every stage (nothing re-runs) and reports the same numbers
    again = run_script("fixed_set.py", "--preset", str(path), "--work", str(tmp_path / "work"), "--no-docs")
    assert "fixed-set: " not in again and json.loads((tmp_path / "work" / "results.json").read_text())["datasets"] \
        == results["datasets"]
    # an output whose manifest no longer reads (here: edited) is recomputed, not reused
    teacher = tmp_path / "work" / "tiny" / "teacher" / "manifest.json"
    teacher.write_text(teacher.read_text().replace('"stage": "teacher"', '"stage": "edited"'))
    third = run_script("fixed_set.py", "--preset", str(path), "--work", str(tmp_path / "work"), "--no-docs")
    assert "tiny/teacher: not reused" in third and "manifest edited since it was written" in third
    assert "fixed-set: teacher -> tiny/teacher" in third
    # a partial run (one phase) keeps the rows it did not touch; an unknown phase is refused in one line
    before = json.loads((tmp_path / "work" / "results.json").read_text())["datasets"]
    run_script("fixed_set.py", "--preset", str(path), "--work", str(tmp_path / "work"), "--no-docs",
               "--phases", "cross_arch", "--ipc", "2")
    assert json.loads((tmp_path / "work" / "results.json").read_text())["datasets"] == before
    bad = subprocess.run([sys.executable, str(BENCHMARKS / "fixed_set.py"), "--preset", str(path), "--work",
                          str(tmp_path / "work"), "--no-docs", "--phases", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--phases: unknown ['nope']" in bad.stderr


def test_generator_benchmark_smoke(tmp_path):
    import yaml

    preset = yaml.safe_load((BENCHMARKS / "presets" / "generator-smoke.yaml").read_text())
    preset["datasets"] = {"tiny": {"source": "npz", "location": str(tiny_npz(tmp_path / "tiny.npz"))}}
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump(preset, sort_keys=False))    # the recipes' order is the preset's
    work = tmp_path / "work"
    stdout = run_script("generator.py", "--preset", str(path), "--work", str(work), "--no-docs")
    results = json.loads((work / "results.json").read_text())
    rows = results["datasets"]["tiny"]["2"]
    assert set(rows) == {"random", "wgan-gp-ac", "hinge-proj+ema", "hinge-proj+ema → gan-only",
                         "hinge-proj+ema → skd-x100", "hinge-proj+ema → skd-x100-traj"}
    for name, row in rows.items():
        assert set(row["seeds"]) == ({"-"} if name == "random" else {"1", "2"}), name
        assert all(len(a["convnet3"]) == 2 for a in row["seeds"].values())
    # the recipe's overrides reached the stage; λ = 100 × the paper's for the dataset (tiny: 0.01)
    gan = json.loads((work / "tiny" / "hinge-proj+ema" / "seed1" / "gan" / "manifest.json").read_text())
    assert (gan["params"]["gan_loss"], gan["params"]["ema_decay"], gan["params"]["seed"]) == ("hinge-proj", 0.9, 1)
    dist = json.loads((work / "tiny" / "hinge-proj+ema" / "seed2" / "distill-skd-x100" / "gan" / "manifest.json")
                      .read_text())
    assert dist["params"]["lambda_skd"] == pytest.approx(1.0) and dist["metrics"]["lambda"] == pytest.approx(1.0)
    assert "| hinge-proj+ema → skd-x100 |" in stdout and "vs hinge-proj+ema → gan-only" in stdout
    assert "vs wgan-gp-ac" in stdout                      # recipes paired against the first recipe
    # the trajectories mode read the dataset's pool artifact and is paired with the online mode it names
    traj = json.loads((work / "tiny" / "hinge-proj+ema" / "seed1" / "distill-skd-x100-traj" / "gan" / "manifest.json")
                      .read_text())
    assert traj["params"]["pool_source"] == "trajectories" and "paired_with" not in traj["params"]
    assert any(i["name"] == "pool" and i["uri"].endswith("tiny/pool") for i in traj["inputs"])
    line = next(x for x in stdout.splitlines() if x.startswith("| hinge-proj+ema → skd-x100-traj |"))
    assert "vs hinge-proj+ema → skd-x100 |" in line
    again = run_script("generator.py", "--preset", str(path), "--work", str(work), "--no-docs")
    assert "fixed-set: " not in again and json.loads((work / "results.json").read_text())["datasets"] \
        == results["datasets"]


def test_a_results_section_is_written_with_the_numbers_behind_it(tmp_path, monkeypatch):
    """docs/results/<preset>.json beside each section, and --render-only falls back to it when the (unversioned)
    work folder is gone: the page can be re-rendered and audited on another machine."""
    sys.path.insert(0, str(BENCHMARKS))
    import fixed_set

    monkeypatch.setattr(fixed_set, "RESULTS_MD", tmp_path / "results.md")
    monkeypatch.setattr(fixed_set, "RESULTS_JSON", tmp_path / "results")
    (tmp_path / "results.md").write_text("# Results\n\n<!-- fixed-set:p begin -->\nold\n<!-- fixed-set:p end -->\ntail\n")
    fixed_set.write_section("<!-- fixed-set:p begin -->\nnew\n<!-- fixed-set:p end -->\n", "p", results={"a": 1})
    assert (tmp_path / "results.md").read_text() == \
        "# Results\n\n<!-- fixed-set:p begin -->\nnew\n<!-- fixed-set:p end -->\ntail\n"
    assert json.loads((tmp_path / "results" / "p.json").read_text()) == {"a": 1}
    work = tmp_path / "work" / "results.json"
    assert fixed_set.committed_results(work, "p") == tmp_path / "results" / "p.json"
    work.parent.mkdir()
    work.write_text("{}")
    assert fixed_set.committed_results(work, "p") == work          # the work folder's own numbers come first
    with pytest.raises(SystemExit, match="neither"):
        fixed_set.committed_results(tmp_path / "none.json", "q")


def test_dim_own_refuses_a_missing_checkout_and_unpacks_mnist_for_torchvision(tmp_path):
    """DiM's code is not shipped, so the DiM timing script must say so in one line; and its MNIST root must hold
    the unpacked idx files where torchvision looks, or torchvision would try to download them."""
    import gzip

    proc = subprocess.run([sys.executable, str(BENCHMARKS / "dim_own.py"), "--dim", str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "no pool_match.py" in proc.stderr and "Traceback" not in proc.stderr

    sys.path.insert(0, str(BENCHMARKS))
    from dim_own import MNIST_FILES, _unpack_mnist

    src = tmp_path / "idx"
    src.mkdir()
    for i, name in enumerate(MNIST_FILES):
        payload = bytes([i]) * 16
        if i % 2:
            (src / name).write_bytes(payload)
        else:
            with gzip.open(src / f"{name}.gz", "wb") as f:
                f.write(payload)
    _unpack_mnist(src, tmp_path / "root" / "MNIST" / "raw")
    for i, name in enumerate(MNIST_FILES):
        assert (tmp_path / "root" / "MNIST" / "raw" / name).read_bytes() == bytes([i]) * 16
    with pytest.raises(SystemExit, match="not found"):
        _unpack_mnist(tmp_path / "empty", tmp_path / "root2")


def test_bn_recalibration_replaces_running_statistics_by_the_images_average():
    """Two equal batches through `recalibrate`: the cumulative average must be the plain mean and (population-
    corrected) variance of all images, not an exponential average that forgets the first batch."""
    from torch import nn

    sys.path.insert(0, str(BENCHMARKS))
    import torch
    from bn_recalibration import recalibrate

    from skdd.data.batches import Pixels

    model = nn.Sequential(nn.BatchNorm2d(1))
    images = torch.cat([torch.full((2, 1, 2, 2), 0, dtype=torch.uint8), torch.full((2, 1, 2, 2), 255, dtype=torch.uint8)])
    recalibrate(model, images, Pixels([0.0], [1.0], "cpu"), batch=2)
    bn = model[0]
    assert bn.running_mean.item() == pytest.approx(0.5)          # batch means 0 and 1 averaged
    assert bn.running_var.item() == pytest.approx(0.0, abs=1e-6)  # each batch is constant: unbiased variance 0
    assert not model.training


def test_bn_recalibration_and_matching_scale_run_on_tiny_artifacts(tmp_path):
    from helpers import ingest_tiny

    from skdd.stages.registry import run_stage

    data = ingest_tiny(tmp_path)
    subset = tmp_path / "subset"
    run_stage("select", output=str(subset), inputs={"dataset": str(data)}, overrides=["method=random", "ipc=2"])
    out = run_script("bn_recalibration.py", "--data", str(data), "--set", f"sub={subset}", "--arch", "resnet18",
                     "--width", "8", "--epochs", "2", "--trials", "1", "--real-images", "20", "--device", "cpu")
    report = json.loads(out[out.index("{\n"):])
    cells = report["sets"]["sub"]
    assert set(cells) == {"path", "as_trained", "bn_on_set", "bn_on_real"}
    assert all(0 <= cells[k]["mean"] <= 100 and len(cells[k]["trials"]) == 1 for k in cells if k != "path")
    scale = json.loads(run_script("matching_scale.py", "--data", str(data), "--set", str(subset), "--width", "4",
                                  "--nets", "2", "--real-per-class", "3"))
    assert len(scale["nets"]) == 2 and all(r["grad_dm"] > 0 and r["grad_attention"] > 0 for r in scale["nets"])
    assert scale["median_ratio"] == pytest.approx(sorted(r["ratio"] for r in scale["nets"])[0] / 2
                                                  + sorted(r["ratio"] for r in scale["nets"])[1] / 2)
