"""Reproduce the paper's tables from a preset: a resumable matrix of skdd stages, written to docs/results.md.

    python benchmarks/reproduce.py --preset benchmarks/presets/cpu-budget.yaml --work runs/cpu-budget
    python benchmarks/reproduce.py --preset benchmarks/presets/cpu-budget.yaml --work runs/cpu-budget --estimate
    python benchmarks/reproduce.py --preset benchmarks/presets/gpu-short.yaml --work /tmp/g --max-minutes 5 \\
        --data mnist=idx:data/mnist --json-out $OUT/results.json --results-md $OUT/results.md
    python benchmarks/reproduce.py --preset benchmarks/presets/cpu-budget.yaml --work runs/cpu-budget --render-only

A preset (benchmarks/presets/*.yaml) names datasets × IPC × loss mode {skd, skd-nostand, dim-mse, cgan-only} ×
protocol {strict, dim} × architectures, the GAN-only control, baselines {random, herding, kcenter, full} and a λ
sweep; every stage's params are the preset's `base` params file, then the preset's section for that stage, then
what the cell needs. What runs:

* loss modes skd / skd-nostand / dim-mse: `distill loss=<mode>`; cgan-only: the pretrained GAN itself, no distill;
  the GAN-only control: `distill loss=gan-only` (same generator steps, no matching); λ sweep: `distill loss=skd
  lambda_skd=<multiplier × the paper's λ>` (×1 is the skd cell itself);
* protocol strict: `sample ipc=K` (or `select method=M ipc=K` for a baseline, or the dataset itself for `full`) then
  `evaluate protocol=strict`; protocol dim: `evaluate protocol=dim ipc=K` on the GAN artifact (baselines have no
  generator, so they are strict only).

Stages run in-process through `skdd.stages.registry.run_stage` with outputs under `<work>/<dataset>/`, shared
between cells (ingest and pretrain once per dataset, distill once per (loss, λ), ...). A stage whose output has a manifest with the
same params hash and the same input manifests is not run again; an interrupted stage resumes from its own
checkpoints when this script is re-run with the same preset and work folder (Ctrl-C, SIGTERM, a kill, or
`--max-minutes`, which stops starting new stages after M minutes). Cells run in the preset's `order` (most
important first), so a time-limited run reports the most useful subset and lists what did not fit.

After every finished evaluation it writes `<work>/results.json` (every planned cell: accuracies, mean, std, trials,
wall seconds of every stage of its chain, device, torch, commit, data copy, the command) and replaces this preset's
section of docs/results.md (between `<!-- reproduce:<name> begin -->` and `... end -->`): Table 1 layout per
protocol beside the paper's numbers, the ordering check, the λ sweep with gradient-norm ratios, and what did not run.
Nothing in it is a number that was not measured in the work folder.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


from skdd.reproduce.matrix import (ENV_SOURCE, SCHEMA, Cell, Node, Plan, PresetError, load_preset,  # noqa: F401
                                   node_params, plan_settings, resolve_dataset)
from skdd.reproduce.page import _duration, render_section, write_section
from skdd.reproduce.paper import PROTOCOL_LABELS

REPO = Path(__file__).resolve().parents[1]


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


def _sha(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


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


# ----------------------------------------------------------------------------------------------- runner
class Runner:
    """Runs the plan's cells in order, each as the chain of stages it needs; records everything in the work folder."""

    def __init__(self, preset: dict, preset_path: Path, plan: Plan, work: Path, command: str, *,
                 max_minutes: float | None = None, max_stages: int | None = None, argv: list[str] | None = None):
        self.preset, self.preset_path, self.plan, self.work, self.command = preset, preset_path, plan, work, command
        self.base = str((REPO / preset["base"]).resolve()) if not Path(preset["base"]).is_absolute() \
            else preset["base"]
        self.max_minutes, self.max_stages = max_minutes, max_stages
        self.t0 = time.monotonic()
        self.started = _now()
        self.argv = argv or []
        self.stages_run = 0
        self.stop_reason: str | None = None
        self.failed: dict[str, str] = {}      # node key -> one-line reason
        self.skipped: dict[str, str] = {}     # node key -> why it did not start in this run
        self.commit = git_commit()
        self.ledger_path = work / "ledger.json"
        self.ledger = _read_json(self.ledger_path) or {"schema": SCHEMA, "stages": {}, "runs": []}
        self._hash: dict[str, str] = {}
        self.json_outs: list[Path] = []
        self.results_md: Path | None = None

    # ------------------------------------------------------------------ params and completeness
    def params(self, node: Node):
        return node_params(node, self.base)

    def params_hash(self, node: Node) -> str:
        if node.key not in self._hash:
            from skdd.config import params_hash

            self._hash[node.key] = params_hash(self.params(node))
        return self._hash[node.key]

    def manifest(self, key: str) -> dict | None:
        """The output's manifest when it reads as one (an older schema or an edited one is not reused)."""
        from skdd.errors import SkddError
        from skdd.lineage import read_manifest

        if not (self.work / key / "manifest.json").is_file():
            return None
        try:
            return read_manifest(self.work / key)
        except SkddError as exc:
            print(f"reproduce: {key}: not reused ({exc})", flush=True)
            return None

    def complete(self, key: str) -> bool:
        """The output exists with a manifest made with these params from the current input manifests."""
        node = self.plan.nodes[key]
        m = self.manifest(key)
        if not isinstance(m, dict) or m.get("params_hash") != self.params_hash(node):
            return False
        recorded = {r.get("name"): r.get("manifest_sha256") for r in m.get("inputs", []) if isinstance(r, dict)}
        return all(recorded.get(name) == _sha(self.work / parent / "manifest.json")
                   for name, parent in node.inputs.items())

    def chain_complete(self, cell: Cell) -> bool:
        return all(self.complete(k) for k in cell.chain)

    # ------------------------------------------------------------------ running
    def _out_of_budget(self) -> str | None:
        if self.max_minutes is not None and time.monotonic() - self.t0 >= self.max_minutes * 60:
            return f"did not fit: --max-minutes {self.max_minutes:g} reached, no new stage started"
        if self.max_stages is not None and self.stages_run >= self.max_stages:
            return f"not started: --max-stages {self.max_stages} reached"
        return None

    def ensure(self, key: str) -> bool:
        """Make node `key` complete (running its missing parents first); False when it could not be."""
        if key in self.failed:
            return False
        node = self.plan.nodes[key]
        for parent in node.inputs.values():
            if not self.ensure(parent):
                self.skipped.setdefault(key, self.failed.get(parent) or self.skipped.get(parent) or "blocked")
                return False
        if self.complete(key):
            return True
        ds = self.plan.datasets[node.dataset]
        if node.stage == "ingest" and ds.missing:
            self.skipped[key] = ds.missing
            return False
        self.stop_reason = self.stop_reason or self._out_of_budget()
        if self.stop_reason:
            self.skipped[key] = self.stop_reason
            return False
        return self._run(node)

    def _run(self, node: Node) -> bool:
        from skdd.stages.registry import run_stage
        from skdd.errors import SkddError

        entry = self.ledger["stages"].get(node.key)
        phash = self.params_hash(node)
        if not entry or entry.get("params_hash") != phash:
            entry = {"stage": node.stage, "params_hash": phash, "attempts": 0, "wall_seconds": 0.0}
        entry["attempts"] += 1
        entry["completed"] = False
        self.ledger["stages"][node.key] = entry
        inputs = {name: str(self.work / parent) for name, parent in node.inputs.items()}
        print(f"reproduce: [{self.elapsed_text()}] {node.stage} -> {node.key}"
              f"{' (resuming)' if entry['attempts'] > 1 else ''}", flush=True)
        self.stages_run += 1
        t = time.monotonic()
        ok = False
        try:
            manifest = run_stage(node.stage, output=str(self.work / node.key), inputs=inputs,
                                 params_file=self.base, overrides=node.overrides, section=node.section)
            ok = True
        except SkddError as exc:
            self.failed[node.key] = f"{node.stage} failed: {exc}"
            print(f"reproduce: {node.key}: {exc}", file=sys.stderr, flush=True)
        except Exception as exc:   # noqa: BLE001 - a crash (e.g. out of memory) fails this chain, not the matrix
            import traceback

            traceback.print_exc()
            self.failed[node.key] = f"{node.stage} crashed: {type(exc).__name__}: {' '.join(str(exc).split())}"
        finally:
            entry["wall_seconds"] = round(entry["wall_seconds"] + time.monotonic() - t, 3)
            if ok:
                kind = (manifest.get("environment") or {}).get("device") or "cpu"
                entry.update(completed=True, finished=_now(), device=kind, device_name=device_name(kind),
                             torch=_torch_version(), commit=self.commit)
            _write_json(self.ledger_path, self.ledger)
        return ok

    def elapsed_text(self) -> str:
        return _duration(time.monotonic() - self.t0)

    def run(self) -> str:
        """Every cell in order; results are rewritten after every finished evaluation. Returns the stop reason."""
        self.work.mkdir(parents=True, exist_ok=True)
        status = "interrupted"
        try:
            for cell in self.plan.cells:
                before = self.complete(cell.eval_key)
                for key in cell.chain:
                    if not self.ensure(key):
                        break
                if not before and self.chain_complete(cell):
                    self.write_results()
            status = self.stop_reason or ("failed stages" if self.failed else "complete")
        finally:
            self.ledger["runs"].append({"started": self.started, "finished": _now(),
                                        "wall_seconds": round(time.monotonic() - self.t0, 3), "argv": self.argv,
                                        "stages_run": self.stages_run, "stopped": status,
                                        "device": device_name("cuda" if _cuda() else "cpu"),
                                        "torch": _torch_version(), "commit": self.commit})
            _write_json(self.ledger_path, self.ledger)
            self.write_results()
        return status

    # ------------------------------------------------------------------ results
    def _stage_info(self, key: str) -> dict:
        m = self.manifest(key) or {}
        entry = self.ledger["stages"].get(key) or {}
        kind = entry.get("device") or (m.get("environment") or {}).get("device") or "cpu"
        return {"output": key, "stage": self.plan.nodes[key].stage,
                "wall_seconds": entry.get("wall_seconds"), "attempts": entry.get("attempts"),
                "device": entry.get("device_name") or device_name(kind),
                "torch": entry.get("torch") or (m.get("environment") or {}).get("torch"),
                "commit": entry.get("commit") or ((m.get("code") or {}).get("git_commit") or "")[:12] or None,
                "finished": entry.get("finished") or m.get("created")}

    def _reason(self, cell: Cell) -> str:
        for key in cell.chain:
            if key in self.failed:
                return self.failed[key]
        for key in cell.chain:
            if key in self.skipped:
                return self.skipped[key]
        return "not run yet"

    def collect(self) -> dict:
        ds_info = {k: {"name": d.name, "label": d.label, "data_copy": d.data_copy, "source": d.source,
                       "location": d.location, "missing": d.missing} for k, d in self.plan.datasets.items()}
        cells, distills = [], []
        for cell in self.plan.cells:
            ds = self.plan.datasets[cell.dataset]
            distill_key = next((k for k in cell.chain if self.plan.nodes[k].stage == "distill"), None)
            base = {"id": cell.id, "dataset": cell.dataset, "dataset_name": ds.name, "dataset_label": ds.label,
                    "data_copy": ds.data_copy, "ipc": cell.ipc, "method": cell.method,
                    "loss": None, "lambda_multiplier": cell.lambda_multiplier, "lambda": None,
                    "protocol": cell.protocol, "protocol_label": PROTOCOL_LABELS[cell.protocol],
                    "evaluation": cell.eval_key, "command": self.command}
            if distill_key:
                base["loss"] = next((o.split("=", 1)[1].strip('"') for o in self.plan.nodes[distill_key].overrides
                                     if o.startswith("loss=")), None)
            if not self.chain_complete(cell):
                for arch in self.preset["architectures"]:
                    cells.append({**base, "architecture": arch, "status": "failed" if any(
                        k in self.failed for k in cell.chain) else "not_run", "reason": self._reason(cell)})
                continue
            metrics = _read_json(self.work / cell.eval_key / "metrics.json") or {}
            stages = {self.plan.nodes[k].stage: self._stage_info(k) for k in cell.chain}
            walls = [s["wall_seconds"] for s in stages.values()]
            if distill_key:
                dm = (self.manifest(distill_key) or {})
                if base["loss"] != "gan-only":
                    base["lambda"] = (dm.get("resolved") or {}).get("lambda")
                base["grad_ratio_median"] = (dm.get("metrics") or {}).get("grad_ratio_median")
            ev = stages["evaluate"]
            for arch, r in (metrics.get("architectures") or {}).items():
                cells.append({**base, "architecture": arch, "status": "done", "accuracies": r["accuracies"],
                              "mean": r["mean"], "std": r["std"], "trials": len(r["accuracies"]),
                              "epochs": metrics.get("epochs"), "width": metrics.get("width"),
                              "eval_wall_seconds": r.get("wall_seconds"), "stages": stages,
                              "chain_wall_seconds": round(sum(w for w in walls if w is not None), 3)
                              if all(w is not None for w in walls) else None,
                              "device": ev["device"], "torch": ev["torch"], "commit": ev["commit"]})
        for key, node in self.plan.nodes.items():
            if node.stage != "distill" or not self.complete(key):
                continue
            m = self.manifest(key) or {}
            params, met = m.get("params") or {}, m.get("metrics") or {}
            distills.append({"output": key, "dataset": node.dataset, "loss": params.get("loss"),
                             "lambda": None if params.get("loss") == "gan-only" else (m.get("resolved") or {}).get(
                                 "lambda"),
                             "steps": params.get("steps"), "grad_norm_every": params.get("grad_norm_every"),
                             "grad_ratio_median": met.get("grad_ratio_median"),
                             "final_loss_match": met.get("final_loss_match"),
                             "wall_seconds": (self.ledger["stages"].get(key) or {}).get("wall_seconds")})
        runs = self.ledger.get("runs", [])
        return {"schema": SCHEMA, "preset": self.preset["name"], "preset_file": _rel(self.preset_path),
                "description": self.preset.get("description", ""), "base": self.preset["base"],
                "command": self.command, "work": str(self.work), "updated": _now(), "commit": self.commit,
                "torch": _torch_version(), "device": device_name("cuda" if _cuda() else "cpu"),
                "runs": runs, "total_wall_seconds": round(sum(r.get("wall_seconds", 0) for r in runs), 3),
                "settings": plan_settings(self.plan, self.base), "datasets": ds_info, "architectures": self.preset["architectures"],
                "ipc": self.preset["ipc"], "protocols": self.preset["protocols"],
                "lambda_protocols": self.preset["lambda_protocols"], "cells": cells, "distills": distills}

    def write_results(self) -> dict:
        results = self.collect()
        _write_json(self.work / "results.json", results)
        for target in self.json_outs:
            _write_json(target, results)
        if self.results_md is not None:
            write_section(self.results_md, results["preset"], render_section(results))
        return results


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _torch_version() -> str:
    import torch

    return torch.__version__


# ----------------------------------------------------------------------------------------------- estimate
def estimate(runner: Runner) -> dict:
    """Seconds for every planned stage from the preset's `cost_model` (measured per-unit costs)."""
    cm = runner.preset.get("cost_model") or {}
    if not cm:
        raise PresetError("--estimate: the preset has no cost_model")
    per_stage: dict[str, float] = {}
    for key, node in runner.plan.nodes.items():
        p = runner.params(node)
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
        node = runner.plan.nodes[key]
        kind = node.stage
        if node.stage == "evaluate":
            kind += "[" + next(o.split("=", 1)[1].strip('"') for o in node.overrides if o.startswith("protocol=")) + "]"
        by_kind[kind] = round(by_kind.get(kind, 0.0) + s, 1)
    total = round(sum(per_stage.values()), 1)
    return {"stages": len(per_stage), "cells": len(runner.plan.cells), "seconds_by_stage": by_kind,
            "total_seconds": total, "total": _duration(total)}


# ----------------------------------------------------------------------------------------------- main
def _command(preset_path: Path, work: Path, data: list[str]) -> str:
    parts = ["python", "benchmarks/reproduce.py", "--preset", _rel(preset_path), "--work", str(work)]
    for d in data:
        parts += ["--data", d]
    return " ".join(shlex.quote(p) for p in parts)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", type=Path, help="benchmarks/presets/<name>.yaml (required unless --render-only)")
    ap.add_argument("--work", type=Path, help="folder for every artifact, ledger.json and results.json")
    ap.add_argument("--data", action="append", default=[], metavar="DATASET=[SOURCE:]LOCATION",
                    help="where a dataset's copy is on this machine (overrides the preset; repeatable)")
    ap.add_argument("--max-minutes", type=float, default=None, help="start no new stage after M minutes")
    ap.add_argument("--max-stages", type=int, default=None, help="start at most N stages (for tests)")
    ap.add_argument("--results-md", type=Path, default=REPO / "docs" / "results.md",
                    help="markdown file whose section for this preset is replaced (default: docs/results.md)")
    ap.add_argument("--no-md", action="store_true", help="do not write the markdown")
    ap.add_argument("--json-out", type=Path, action="append", default=[], help="also copy results.json here")
    ap.add_argument("--render-only", action="store_true",
                    help="rebuild the markdown from results.json (--results-json, default <work>/results.json)")
    ap.add_argument("--results-json", type=Path, default=None)
    ap.add_argument("--estimate", action="store_true", help="print the cost-model estimate of the plan and exit")
    ap.add_argument("--plan", action="store_true", help="print the planned cells and stages and exit")
    ap.add_argument("--engine", choices=("local", "kfp-local"), default="local",
                    help="local: the stages in this process, one cell after another (default); kfp-local: the "
                         "Kubeflow pipeline skdd-reproduce compiled from the preset, under kfp.local")
    return ap


def build(args: argparse.Namespace) -> Runner:
    preset_path = args.preset if args.preset.is_absolute() or args.preset.exists() else REPO / args.preset
    preset = load_preset(preset_path)
    overrides: dict[str, str] = {}
    for item in args.data:
        key, sep, value = item.partition("=")
        if not sep or key not in preset["datasets"]:
            raise PresetError(f"--data {item!r}: expected DATASET=[SOURCE:]LOCATION with DATASET one of "
                              f"{', '.join(preset['datasets'])}")
        overrides[key] = value
    datasets = {k: resolve_dataset(k, v, overrides.get(k), REPO) for k, v in preset["datasets"].items()}
    plan = Plan(preset, datasets, REPO)
    work = args.work.resolve()
    runner = Runner(preset, preset_path, plan, work, _command(preset_path, args.work, args.data),
                    max_minutes=args.max_minutes, max_stages=args.max_stages, argv=sys.argv[1:])
    runner.json_outs = list(args.json_out)
    runner.results_md = None if args.no_md else args.results_md
    return runner


def run_kfp_local(runner: Runner, args: argparse.Namespace) -> int:
    """The preset as the Kubeflow pipeline `skdd-reproduce` under kfp.local (each step a subprocess of this
    environment): artifacts content-keyed under <work>/artifacts, kfp.local's files under <work>/kfp. Writes the
    pipeline's results JSON and page where the in-process engine writes them."""
    import warnings

    from kfp import local
    from pipelines.reproduce_pipeline import build_reproduce_pipeline, data_param, load_matrix
    from pipelines.skdd_pipeline import PipelineOptions
    from skdd.errors import SkddError, one_line
    from skdd.image import default_image
    from skdd.pipeline_local import ANSI_ESCAPE

    data = {k: v for k, v in (item.partition("=")[::2] for item in args.data)}
    matrix = load_matrix(runner.preset_path, REPO, data, command=runner.command + " --engine kfp-local")
    work = runner.work
    (work / "kfp").mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(work / "kfp"))
    options = PipelineOptions(image=default_image(), params_yaml="", retries=0)
    locations = {data_param(k): d.location for k, d in runner.plan.datasets.items()}
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*no effect in the current local runner")   # GPU requests
            task = build_reproduce_pipeline(options, matrix)(artifact_root=str(work / "artifacts"), **locations)
    except RuntimeError as exc:   # kfp.local: "Pipeline ... finished with status FAILURE. Inner task failed: ..."
        raise SkddError(ANSI_ESCAPE.sub("", one_line(exc))) from None
    results = json.loads(Path(task.outputs["results"].path).read_text())
    _write_json(work / "results.json", results)
    for target in args.json_out:
        _write_json(target, results)
    if not args.no_md:
        write_section(args.results_md, results["preset"], render_section(results))
    done = sum(1 for c in results["cells"] if c["status"] == "done")
    print(f"reproduce: kfp-local; {done} of {len(results['cells'])} cells measured; {work / 'results.json'}")
    return 0 if done == len(results["cells"]) else 1


class _Terminated(KeyboardInterrupt):
    pass


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
    if args.preset is None or args.work is None:
        parser.error("--preset and --work are required")
    from skdd.errors import SkddError

    try:
        for var in ENV_SOURCE:   # the preset names each dataset's copy; one env location cannot serve several
            if os.environ.pop(var, None):
                print(f"reproduce: ignoring ${var} (use --data DATASET=[SOURCE:]LOCATION)", file=sys.stderr)
        runner = build(args)
        for d in runner.plan.datasets.values():
            if d.missing:
                print(f"reproduce: {d.label}: {d.missing}; its cells are recorded as not run", file=sys.stderr)
        try:
            for node in runner.plan.nodes.values():   # every stage's params, before anything runs
                runner.params(node)
        except SkddError as exc:
            raise PresetError(str(exc)) from None
        if args.plan or args.estimate:
            for cell in runner.plan.cells:
                print(f"{cell.pattern_key:28s} {cell.id}")
            print(f"{len(runner.plan.cells)} cells, {len(runner.plan.nodes)} stages")
            if args.estimate:
                print(json.dumps(estimate(runner), indent=2))
            return 0
    except PresetError as exc:
        print(f"reproduce: error: {exc}", file=sys.stderr)
        return 2

    if args.engine == "kfp-local":
        try:
            return run_kfp_local(runner, args)
        except SkddError as exc:
            print(f"reproduce: error: {exc}", file=sys.stderr)
            return 1

    def on_term(signum, frame):   # SIGTERM (timeout, kill): stop like Ctrl-C; stages resume from checkpoints
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        status = runner.run()
    except _Terminated:
        print("reproduce: terminated; re-run the same command to resume", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("reproduce: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except SkddError as exc:
        print(f"reproduce: error: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)
    results = _read_json(runner.work / "results.json") or {}
    done = sum(1 for c in results.get("cells", []) if c["status"] == "done")
    print(f"reproduce: {status}; {done} of {len(results.get('cells', []))} cells measured; "
          f"{runner.work / 'results.json'}" + (f", {runner.results_md}" if runner.results_md else ""))
    return 0 if status in ("complete",) or status.startswith(("did not fit", "not started")) else 1


if __name__ == "__main__":
    sys.exit(main())
