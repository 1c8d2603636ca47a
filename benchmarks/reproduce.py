"""Reproduce the paper's tables from a preset: the Kubeflow pipeline `skdd-reproduce`, on this machine or a cluster.

    python benchmarks/reproduce.py --preset benchmarks/presets/cpu-budget.yaml --work runs/cpu-budget
    python benchmarks/reproduce.py --preset benchmarks/presets/cpu-budget.yaml --work runs/cpu-budget --estimate
    timeout 540 python benchmarks/reproduce.py --preset benchmarks/presets/gpu-short.yaml --work /tmp/g \\
        --data mnist=idx:data/mnist --json-out $OUT/results.json --results-md $OUT/results.md
    python benchmarks/reproduce.py --preset P --host https://kfp.example.com --param artifact_root=s3://b/skdd
    python benchmarks/reproduce.py --preset benchmarks/presets/cpu-budget.yaml --work runs/cpu-budget --render-only

A thin driver: preset → matrix (`skdd.reproduce.matrix`: datasets × IPC × loss mode × protocol × architectures,
the GAN-only control, baselines, a λ sweep) → the pipeline `pipelines/reproduce_pipeline.py` compiles from it →
either a run under kfp.local here (each step a subprocess of this environment; artifacts content-keyed under
`<work>/artifacts`, kfp.local's own files under `<work>/kfp`) or, with `--host`, a submission to Kubeflow
Pipelines (`skdd pipeline submit`'s checks and one-line errors).

Resuming is the pipeline's, not this script's: every artifact sits at `{artifact_root}/{stage}/{content key}`, so
re-running the same command reuses every finished stage and a stage cut off mid-way (Ctrl-C, SIGTERM from
`timeout`, `--max-minutes`, a kill) resumes from its own checkpoints. A stopped run stops its running step too.

When the run completes it writes `<work>/results.json` (every planned cell: accuracies, mean, std, trials, the
stages of its chain, device, torch, commit, data copy, the command; this run's wall time) and replaces the preset's
section of docs/results.md (between `<!-- reproduce:<name> begin -->` and `... end -->`): Table 1 layout per
protocol beside the paper's numbers, the ordering check, the λ sweep with gradient-norm ratios, and what did not
run. Datasets whose copy is missing here are left out and listed as not run. Nothing in it is a number that was
not measured in the work folder. A stage that fails stops the run (kfp.local runs the fan-in only after every
task succeeded): its error is printed, the results are not rewritten, and a re-run resumes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from skdd.reproduce.matrix import ENV_SOURCE, SCHEMA, PresetError, node_params
from skdd.reproduce.page import _duration, render_section, write_section

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))   # pipelines/ and components/ from this checkout


# ----------------------------------------------------------------------------------------------- environment
def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_commit() -> str:
    head = _git("rev-parse", "--short=12", "HEAD") or "unknown"
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return f"{head}+dirty" if dirty else head


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(kind: str | None) -> str:
    import torch

    if kind and str(kind).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    n = torch.get_num_threads()
    return f"cpu: {cpu_model()} ({n} thread{'s' if n != 1 else ''})"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)




def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _torch_version() -> str:
    import torch

    return torch.__version__


# ----------------------------------------------------------------------------------------------- estimate
def estimate(matrix) -> dict:
    """Seconds for every planned stage from the preset's `cost_model` (measured per-unit costs)."""
    cm = matrix.preset.get("cost_model") or {}
    if not cm:
        raise PresetError("--estimate: the preset has no cost_model")
    per_stage: dict[str, float] = {}
    for key, node in matrix.plan.nodes.items():
        p = node_params(node, matrix.base)
        over = cm.get("stage_overhead", 0.0)
        if node.stage == "ingest":
            s = cm.get("ingest", 0.0)
        elif node.stage == "pretrain":
            s = p.steps * cm["pretrain_step"]
        elif node.stage == "distill":
            s = p.steps * (cm["distill_step_none"] if p.loss == "gan-only" else cm["distill_step"])
            if p.loss != "gan-only" and p.grad_norm_every:
                s *= 1 + cm.get("grad_norm_extra", 0.0) / p.grad_norm_every
        elif node.stage in ("sample", "select", "teacher"):
            s = cm.get(node.stage, 0.0)
        else:
            units = len(p.architectures) * p.trials
            scale = (p.ipc or cm.get("full_ipc", 6000)) / 10   # per-epoch cost grows with the images per epoch
            if p.protocol == "strict":
                s = units * (p.epochs * cm["strict_epoch"] * max(scale, 1.0) + cm["test_pass"])
            else:
                s = units * (p.epochs * cm["dim_epoch"] * max(scale, 1.0) + p.checks * cm["test_pass"])
        if node.stage in ("pretrain", "distill") and p.probe_every:   # probes: every N steps and at the last
            s += -(-p.steps // p.probe_every) * cm.get("probe", 0.0)
        per_stage[key] = round(s + over, 1)
    by_kind: dict[str, float] = {}
    for key, s in per_stage.items():
        node = matrix.plan.nodes[key]
        kind = node.stage
        if node.stage == "evaluate":
            kind += "[" + next(o.split("=", 1)[1].strip('"') for o in node.overrides if o.startswith("protocol=")) + "]"
        by_kind[kind] = round(by_kind.get(kind, 0.0) + s, 1)
    total = round(sum(per_stage.values()), 1)
    return {"stages": len(per_stage), "cells": len(matrix.plan.cells), "seconds_by_stage": by_kind,
            "total_seconds": total, "total": _duration(total)}


# ----------------------------------------------------------------------------------------------- main
def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def _command(preset_path: Path, work: Path | None, data: list[str]) -> str:
    parts = ["python", "benchmarks/reproduce.py", "--preset", _rel(preset_path)]
    parts += ["--work", str(work)] if work is not None else []
    for d in data:
        parts += ["--data", d]
    return " ".join(shlex.quote(p) for p in parts)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", type=Path, help="benchmarks/presets/<name>.yaml (required unless --render-only)")
    ap.add_argument("--work", type=Path, help="folder for the artifacts, kfp.local's files and results.json")
    ap.add_argument("--data", action="append", default=[], metavar="DATASET=[SOURCE:]LOCATION",
                    help="where a dataset's copy is (overrides the preset; repeatable)")
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="stop the run after M minutes (a re-run resumes; stages keep their checkpoints)")
    ap.add_argument("--results-md", type=Path, default=REPO / "docs" / "results.md",
                    help="markdown file whose section for this preset is replaced (default: docs/results.md)")
    ap.add_argument("--no-md", action="store_true", help="do not write the markdown")
    ap.add_argument("--json-out", type=Path, action="append", default=[], help="also copy results.json here")
    ap.add_argument("--render-only", action="store_true",
                    help="rebuild the markdown from results.json (--results-json, default <work>/results.json)")
    ap.add_argument("--results-json", type=Path, default=None)
    ap.add_argument("--estimate", action="store_true", help="print the cost-model estimate of the plan and exit")
    ap.add_argument("--plan", action="store_true", help="print the planned cells and stages and exit")
    ap.add_argument("--host", default=None, help="submit to this Kubeflow Pipelines API instead of running here")
    ap.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                    help="with --host: a pipeline parameter (artifact_root, s3_endpoint_url, data_<dataset>)")
    ap.add_argument("--dry-run", action="store_true", help="with --host: print what would be submitted")
    return ap


def load(args: argparse.Namespace):
    """The preset's matrix (pipelines.reproduce_pipeline.Matrix), every stage's params validated."""
    from pipelines.reproduce_pipeline import load_matrix
    from skdd.errors import SkddError

    preset_path = args.preset if args.preset.is_absolute() or args.preset.exists() else REPO / args.preset
    if not preset_path.is_file():
        raise PresetError(f"{preset_path}: cannot read preset (not found)")
    try:
        return load_matrix(preset_path, REPO, args.data, command=_command(preset_path, args.work, args.data),
                           local=not args.host)
    except SkddError as exc:
        raise PresetError(str(exc)) from None


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _stop_steps() -> None:
    """Stop the step kfp.local is running (and what it started): it resumes from its checkpoints next time."""
    todo, seen = _children(os.getpid()), set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo += _children(pid)
    for pid in seen:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


class _Stopped(KeyboardInterrupt):
    def __init__(self, why: str, code: int):
        super().__init__(why)
        self.why, self.code = why, code


def run_local(matrix, args: argparse.Namespace) -> dict:
    """The pipeline under kfp.local; returns the results document (this run's wall time and device added)."""
    import warnings

    from kfp import local

    from pipelines.reproduce_pipeline import build_reproduce_pipeline, data_param
    from pipelines.skdd_pipeline import PipelineOptions
    from skdd.errors import SkddError, one_line
    from skdd.image import default_image
    from skdd.pipeline_local import ANSI_ESCAPE

    work = args.work.resolve()
    (work / "kfp").mkdir(parents=True, exist_ok=True)
    started, t0 = _now(), time.monotonic()
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(work / "kfp"))
    options = PipelineOptions(image=default_image(), params_yaml="", retries=0)
    present = {k: d for k, d in matrix.plan.datasets.items() if not d.missing}
    for d in matrix.plan.datasets.values():
        if d.missing:
            print(f"reproduce: {d.label}: {d.missing}; its cells are recorded as not run", file=sys.stderr)
    if not present:
        raise SkddError("no dataset copy of the preset is on this machine")
    pipeline = build_reproduce_pipeline(options, matrix, datasets=list(present))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*no effect in the current local runner")   # GPU requests
            task = pipeline(artifact_root=str(work / "artifacts"),
                            **{data_param(k): d.location for k, d in present.items()})
    except RuntimeError as exc:   # kfp.local: "Pipeline ... finished with status FAILURE. Inner task failed: ..."
        raise SkddError(ANSI_ESCAPE.sub("", one_line(exc)) + "; re-run the same command to resume") from None
    results = json.loads(Path(task.outputs["results"].path).read_text())
    wall = round(time.monotonic() - t0, 3)
    device = device_name("cuda" if _cuda() else "cpu")
    results.update(work=str(args.work), device=device, runs=[{
        "started": started, "finished": _now(), "wall_seconds": wall, "argv": sys.argv[1:], "stopped": "complete",
        "device": device, "torch": _torch_version(), "commit": git_commit()}], total_wall_seconds=wall)
    for c in results["cells"]:
        if c["status"] == "done" and c.get("device") in ("cpu", "cuda"):
            c["device"] = device_name(c["device"])   # the steps ran here: name the machine
    return results


def submit(matrix, args: argparse.Namespace) -> int:
    """Compile the matrix and submit it through `skdd pipeline submit` (its checks, one-line errors)."""
    from pipelines.reproduce_pipeline import compile_reproduce
    from pipelines.skdd_pipeline import PipelineOptions
    from skdd.image import default_image
    from skdd.pipeline_cli import submit_command

    with tempfile.TemporaryDirectory() as tmp:
        package = compile_reproduce(PipelineOptions(image=default_image(), params_yaml=""), matrix,
                                    Path(tmp) / "skdd-reproduce.yaml")
        ns = argparse.Namespace(host=args.host, package=str(package), experiment="skdd-reproduce",
                                run_name=f"skdd-reproduce {matrix.preset['name']} {dt.datetime.now():%Y-%m-%d %H-%M-%S}",
                                param=args.param, preset=None, namespace=None, no_cache=False, dry_run=args.dry_run)
        return submit_command(ns)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.render_only:
        if args.results_json is None and args.work is None:
            parser.error("--render-only needs --work or --results-json")
        source = args.results_json or args.work / "results.json"
        results = _read_json(source)
        if not isinstance(results, dict) or results.get("schema") != SCHEMA:
            print(f"reproduce: {source}: not a results.json written by this script", file=sys.stderr)
            return 2
        if not args.no_md:
            write_section(args.results_md, results["preset"], render_section(results))
        for target in args.json_out:
            _write_json(target, results)
        print(f"reproduce: wrote the `{results['preset']}` section of {args.results_md}")
        return 0
    if args.preset is None or (args.work is None and not (args.host or args.plan or args.estimate)):
        parser.error("--preset and --work are required (--work not with --host, --plan or --estimate)")
    from skdd.errors import SkddError

    try:
        for var in ENV_SOURCE:   # the preset names each dataset's copy; one env location cannot serve several
            if os.environ.pop(var, None):
                print(f"reproduce: ignoring ${var} (use --data DATASET=[SOURCE:]LOCATION)", file=sys.stderr)
        matrix = load(args)
        if args.plan or args.estimate:
            for cell in matrix.plan.cells:
                print(f"{cell.pattern_key:28s} {cell.id}")
            print(f"{len(matrix.plan.cells)} cells, {len(matrix.plan.nodes)} stages")
            if args.estimate:
                print(json.dumps(estimate(matrix), indent=2))
            return 0
    except PresetError as exc:
        print(f"reproduce: error: {exc}", file=sys.stderr)
        return 2
    if args.host:
        try:
            return submit(matrix, args)
        except SkddError as exc:
            print(f"reproduce: error: {exc}", file=sys.stderr)
            return 2

    def stop(why: str, code: int):
        def handler(signum, frame):
            raise _Stopped(why, code)
        return handler

    previous = {s: signal.signal(s, stop("terminated" if s == signal.SIGTERM else "interrupted",
                                         143 if s == signal.SIGTERM else 130)) for s in (signal.SIGTERM, signal.SIGINT)}
    timer = None
    if args.max_minutes is not None:   # the same path as SIGTERM, after M minutes
        previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, stop(f"--max-minutes {args.max_minutes:g} reached", 3))
        timer = threading.Timer(max(args.max_minutes, 0) * 60, os.kill, (os.getpid(), signal.SIGUSR1))
        timer.daemon = True
    try:
        if timer is not None:
            timer.start()
        results = run_local(matrix, args)
    except _Stopped as exc:
        _stop_steps()
        print(f"reproduce: {exc.why}; re-run the same command to resume (finished stages are reused)",
              file=sys.stderr)
        return exc.code
    except SkddError as exc:
        print(f"reproduce: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if timer is not None:
            timer.cancel()
        for s, h in previous.items():
            signal.signal(s, h)
    _write_json(args.work.resolve() / "results.json", results)
    for target in args.json_out:
        _write_json(target, results)
    if not args.no_md:
        write_section(args.results_md, results["preset"], render_section(results))
    done = sum(1 for c in results["cells"] if c["status"] == "done")
    print(f"reproduce: complete; {done} of {len(results['cells'])} cells measured; "
          f"{args.work.resolve() / 'results.json'}" + ("" if args.no_md else f", {args.results_md}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
