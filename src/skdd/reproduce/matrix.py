"""A reproduction preset as a matrix: its cells (dataset × IPC × method × protocol) and the stage graph they need.

One planner for both engines: `benchmarks/reproduce.py` (in this process, one cell after another) and the
`skdd-reproduce` Kubeflow pipeline (`pipelines/reproduce_pipeline.py`, the same stages fanned out). A preset
(benchmarks/presets/*.yaml) names datasets × IPC × loss mode {skd, skd-nostand, dim-mse, cgan-only} × protocol
{strict, dim} × architectures, the GAN-only control, baselines {random, herding, kcenter, full} and a λ sweep;
every stage's params are the preset's `base` params file, then the preset's section for that stage, then what the
cell needs. Relative paths in a preset (its base file, a dataset's location) are read from `root`: the
repository when a checkout runs it, the current folder otherwise.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from skdd.reproduce.paper import BASELINES, DATASET_LABELS, LOSSES, PROTOCOLS

SCHEMA = "skdd.reproduce/1"

STAGE_SECTIONS = ("ingest", "teacher", "pretrain", "distill", "sample", "select", "evaluate", "evaluate_dim",
                  "evaluate_full")
PRESET_KEYS = {"name", "description", "base", "datasets", "ipc", "losses", "gan_only_control", "protocols",
               "architectures", "baselines", "lambda_sweep", "lambda_protocols", "order", "cost_model",
               *STAGE_SECTIONS}
DEFAULT_ORDER = ["skd/strict", "cgan-only/strict", "skd-nostand/strict", "dim-mse/strict", "gan-only/strict",
                 "random/strict", "skd/dim", "cgan-only/dim", "skd-nostand/dim", "dim-mse/dim", "gan-only/dim",
                 "skd@*", "*"]
ENV_SOURCE = ("SKDD_DATA_SOURCE", "SKDD_DATA_LOCATION")


class PresetError(Exception):
    """A preset that cannot be planned; printed as one line."""


# ----------------------------------------------------------------------------------------------- presets
def _list(preset: dict, key: str, default: list, allowed: tuple | None = None) -> list:
    value = preset.get(key, default)
    if not isinstance(value, list):
        raise PresetError(f"{key}: expected a list, got {value!r}")
    if allowed is not None:
        for v in value:
            if v not in allowed:
                raise PresetError(f"{key}: unknown item {v!r} (allowed: {', '.join(allowed)})")
    return value


def load_preset(path: Path) -> dict:
    try:
        preset = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PresetError(f"{path}: cannot read preset ({exc.__class__.__name__})") from None
    if not isinstance(preset, dict) or not preset.get("name"):
        raise PresetError(f"{path}: a preset is a mapping with at least a `name`")
    unknown = sorted(set(preset) - PRESET_KEYS)
    if unknown:
        raise PresetError(f"{path}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(PRESET_KEYS))})")
    if not isinstance(preset.get("datasets"), dict) or not preset["datasets"]:
        raise PresetError(f"{path}: datasets: give at least one dataset")
    for key in STAGE_SECTIONS:
        if not isinstance(preset.get(key) or {}, dict):
            raise PresetError(f"{path}: {key}: expected a mapping of params")
    preset.setdefault("base", "params.yaml")
    preset["ipc"] = _list(preset, "ipc", [10])
    if not preset["ipc"] or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 1 for i in preset["ipc"]):
        raise PresetError(f"{path}: ipc: expected a list of positive integers")
    preset["losses"] = _list(preset, "losses", list(LOSSES), LOSSES)
    preset["protocols"] = _list(preset, "protocols", ["strict"], PROTOCOLS)
    preset["architectures"] = _list(preset, "architectures", ["convnet3"])
    preset["baselines"] = _list(preset, "baselines", ["random"], BASELINES)
    preset["lambda_sweep"] = _list(preset, "lambda_sweep", [])
    preset["lambda_protocols"] = _list(preset, "lambda_protocols", ["strict"], PROTOCOLS)
    preset["order"] = _list(preset, "order", DEFAULT_ORDER)
    preset["gan_only_control"] = bool(preset.get("gan_only_control", True))
    for m in preset["lambda_sweep"]:
        if isinstance(m, bool) or not isinstance(m, (int, float)) or m <= 0:
            raise PresetError(f"{path}: lambda_sweep: multipliers must be positive numbers, got {m!r}")
    return preset


@dataclass
class DatasetPlan:
    key: str
    name: str
    label: str
    source: str
    location: str
    data_copy: str
    missing: str | None = None   # why it cannot be ingested (a copy that is not there)
    written: str = ""            # the location as the preset, the offline copies table or --data writes it


def resolve_dataset(key: str, spec: dict | None, data_override: str | None, root: Path) -> DatasetPlan:
    """Where a dataset's data comes from: `source: offline` uses skdd.data.offline.COPIES; `--data` overrides."""
    from skdd.data.offline import COPIES

    spec = dict(spec or {})
    unknown = sorted(set(spec) - {"name", "source", "location", "label"})
    if unknown:
        raise PresetError(f"datasets.{key}.{unknown[0]}: unknown key (allowed: name, source, location, label)")
    name = spec.get("name", key)
    source, location = spec.get("source", "offline"), spec.get("location")
    note = None
    if data_override:
        from skdd.data.sources import KINDS

        prefix, sep, rest = data_override.partition(":")
        source, location = (prefix, rest) if sep and prefix in KINDS else ("", data_override)
        source = source or (COPIES[name][0] if name in COPIES else spec.get("source", "offline"))
        if source == "offline":
            raise PresetError(f"--data {key}={data_override}: name the source kind, e.g. idx:{data_override}")
        note = f"{source} copy given by --data"
    elif source == "offline":
        if name not in COPIES:
            raise PresetError(f"datasets.{key}: no offline copy is known for {name!r} (known: {', '.join(COPIES)})")
        source, location, note = COPIES[name]
    if not location:
        raise PresetError(f"datasets.{key}: give a location for source {source!r}")
    shown = str(location)
    if "://" not in str(location):
        location = str((root / location).resolve()) if not Path(location).is_absolute() else str(location)
    label = spec.get("label") or DATASET_LABELS.get(name, name)
    if name == "cifar10" and "jpeg" in str(location).lower() and "label" not in spec:
        label = "CIFAR-10 (JPEG copy)"
    data_copy = f"{note} ({shown})" if note else f"{source} ({shown})"
    missing = None
    if source != "torchvision" and "://" not in location and not Path(location).exists():
        missing = f"data copy not found: {location}"
    return DatasetPlan(key, name, label, source, location, data_copy, missing, shown)


# ----------------------------------------------------------------------------------------------- plan
def _ov(section: dict) -> list[str]:
    """Preset params as `key=value` overrides for run_stage (JSON is YAML, so every type round-trips)."""
    return [f"{k}={json.dumps(v)}" for k, v in (section or {}).items()]


def override(overrides: list[str], key: str) -> Any:
    """The value an override list (as `_ov` writes it) sets for `key`, or None."""
    for o in overrides:
        name, _, value = o.partition("=")
        if name == key:
            return json.loads(value)
    return None


def parse_data(items: list[str], datasets: dict) -> dict[str, str]:
    """`--data DATASET=[SOURCE:]LOCATION` items as {dataset key: location}, each naming one of `datasets`."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise PresetError(f"--data {item!r}: expected DATASET=[SOURCE:]LOCATION")
        if key not in datasets:
            raise PresetError(f"--data {key}: not a dataset of the preset ({', '.join(datasets)})")
        out[key] = value
    return out


@dataclass
class Node:
    key: str                  # output folder, relative to the work folder
    stage: str
    dataset: str
    inputs: dict[str, str]    # input name -> key of the parent node
    overrides: list[str]
    section: str | None = None


@dataclass
class Cell:
    id: str
    dataset: str
    ipc: int | None
    method: str               # skd, skd-nostand, dim-mse, cgan-only, gan-only, random, herding, kcenter, full
    protocol: str
    eval_key: str
    lambda_multiplier: float | None = None
    chain: list[str] = field(default_factory=list)

    @property
    def pattern_key(self) -> str:
        method = self.method if self.lambda_multiplier in (None, 1) else f"{self.method}@{self.lambda_multiplier:g}x"
        return f"{method}/{self.protocol}"


def base_file(preset: dict, root: Path) -> Path:
    """The preset's base params file (relative paths from `root`)."""
    return Path(preset["base"]) if Path(preset["base"]).is_absolute() else (root / preset["base"]).resolve()


def _sample_selection(preset: dict, root: Path) -> str:
    """The selection `sample` will run with: the preset's sample section over its base params file's."""
    from skdd.config import read_params_file

    base = base_file(preset, root)
    section = {**(read_params_file(base).get("sample") or {}), **(preset.get("sample") or {})}
    return section.get("selection", "none")


def _mult_tag(m: float) -> str:
    return f"{m:g}".replace(".", "p")


class Plan:
    def __init__(self, preset: dict, datasets: dict[str, DatasetPlan], root: Path):
        self.preset, self.datasets, self.root = preset, datasets, root
        self.nodes: dict[str, Node] = {}
        self.cells: list[Cell] = []
        for ds in datasets.values():
            self._plan_dataset(ds)
        order = preset["order"]

        def priority(cell: Cell) -> int:
            return next((i for i, pat in enumerate(order) if fnmatch.fnmatchcase(cell.pattern_key, pat)), len(order))

        keys = list(datasets)
        ipcs = preset["ipc"]
        self.cells.sort(key=lambda c: (priority(c), keys.index(c.dataset), ipcs.index(c.ipc) if c.ipc in ipcs else -1))
        for cell in self.cells:
            cell.chain = self.chain(cell.eval_key)

    def add(self, node: Node) -> str:
        self.nodes.setdefault(node.key, node)
        return node.key

    def chain(self, key: str) -> list[str]:
        out: list[str] = []

        def visit(k: str) -> None:
            for parent in self.nodes[k].inputs.values():
                visit(parent)
            if k not in out:
                out.append(k)

        visit(key)
        return out

    def _plan_dataset(self, ds: DatasetPlan) -> None:
        p, d = self.preset, ds.key
        ingest = self.add(Node(f"{d}/dataset", "ingest", d, {}, _ov(p.get("ingest")) + _ov(
            {"name": ds.name, "source": ds.source, "location": ds.location})))

        def teacher() -> str:   # the generator's quality probe, selections and feature-space baselines read it
            return self.add(Node(f"{d}/teacher", "teacher", d, {"dataset": ingest}, _ov(p.get("teacher"))))

        gan = self.add(Node(f"{d}/gan", "pretrain", d, {"dataset": ingest, "teacher": teacher()},
                            _ov(p.get("pretrain"))))

        def distill(loss: str, mult: float | None = None) -> str:
            extra: dict[str, Any] = {"loss": loss}
            tag = f"distill-{loss}"
            if mult is not None and mult != 1:
                from skdd.stages.distill import default_lambda

                extra["lambda_skd"] = round(mult * default_lambda(loss, ds.name), 12)
                tag += f"-lam{_mult_tag(mult)}x"
            return self.add(Node(f"{d}/{tag}", "distill", d, {"dataset": ingest, "gan": gan, "teacher": teacher()},
                                 _ov(p.get("distill")) + _ov(extra)))

        def evaluate(src_key: str, tag: str, ipc: int | None, protocol: str, label: str) -> str:
            section = dict(p.get("evaluate") or {})
            if protocol == "dim":
                section.update(p.get("evaluate_dim") or {})
            if ipc is None:
                section.update(p.get("evaluate_full") or {})
            extra: dict[str, Any] = {"protocol": protocol, "architectures": p["architectures"], "label": label}
            if ipc is not None:
                extra["ipc"] = ipc
            name = f"eval-{tag}-ipc{ipc}-{protocol}" if ipc is not None else f"eval-{tag}-{protocol}"
            return self.add(Node(f"{d}/{name}", "evaluate", d, {"dataset": ingest, "synthetic": src_key},
                                 _ov(section) + _ov(extra)))

        generators: list[tuple[str, float | None, str]] = []   # (method, λ multiplier, GAN node)
        for loss in p["losses"]:
            generators.append((loss, None if loss == "cgan-only" else 1,
                               gan if loss == "cgan-only" else distill(loss)))
        if p["gan_only_control"]:
            generators.append(("gan-only", None, distill("gan-only")))
        sweep = [m for m in p["lambda_sweep"] if m != 1]
        for ipc in p["ipc"]:
            def sampled(gan_key: str) -> str:
                name = gan_key.split("/", 1)[1]
                inputs = {"gan": gan_key}
                if _sample_selection(p, self.root) != "none":
                    inputs["teacher"] = teacher()
                return self.add(Node(f"{d}/sample-{name}-ipc{ipc}", "sample", d, inputs,
                                     _ov(p.get("sample")) + _ov({"ipc": ipc})))

            runs = [(m, mult, g, p["protocols"]) for m, mult, g in generators]
            runs += [("skd", mult, distill("skd", mult), p["lambda_protocols"]) for mult in sweep]
            for method, mult, gkey, protocols in runs:
                for protocol in protocols:
                    src = sampled(gkey) if protocol == "strict" else gkey
                    label = method if mult in (None, 1) else f"{method} lambda x{mult:g}"
                    ekey = evaluate(src, gkey.split("/", 1)[1], ipc, protocol, label)
                    cid = f"{d}/ipc{ipc}/{method if mult in (None, 1) else f'{method}@{mult:g}x'}/{protocol}"
                    self.cells.append(Cell(cid, d, ipc, method, protocol, ekey, mult))
            for method in p["baselines"]:
                if method == "full":
                    continue
                inputs = {"dataset": ingest} if method == "random" else {"dataset": ingest, "teacher": teacher()}
                skey = self.add(Node(f"{d}/select-{method}-ipc{ipc}", "select", d, inputs,
                                     _ov(p.get("select")) + _ov({"method": method, "ipc": ipc})))
                ekey = evaluate(skey, f"select-{method}", ipc, "strict", method)
                self.cells.append(Cell(f"{d}/ipc{ipc}/{method}/strict", d, ipc, method, "strict", ekey))
        if "full" in p["baselines"]:
            ekey = evaluate(ingest, "full", None, "strict", "full")
            self.cells.append(Cell(f"{d}/full/strict", d, None, "full", "strict", ekey))




# ----------------------------------------------------------------------------------------------- params
def node_params(node: Node, base: str | Path):
    """A node's validated stage params: the base file, the preset's section, the cell's overrides (ingest with
    its source resolved as ingest resolves it)."""
    from skdd.config import load_stage_params
    from skdd.stages.ingest import effective_params
    from skdd.stages.registry import STAGES

    params = load_stage_params(STAGES[node.stage].params_class(), node.section or node.stage, str(base),
                               node.overrides)
    return effective_params(params) if node.stage == "ingest" else params


def eval_section(node: Node) -> str:
    """Which budget an evaluate node reports under: evaluate_strict, evaluate_dim or evaluate_full."""
    if "/eval-full-" in node.key:
        return "evaluate_full"
    return "evaluate_" + override(node.overrides, "protocol")


SETTINGS_KEYS = {"pretrain": ("steps", "batch_size", "g_width", "d_width"),
                 "distill": ("steps", "batch_size", "pool", "pool_width", "pool_steps", "grad_norm_every"),
                 "evaluate_strict": ("epochs", "trials", "width", "batch_size"),
                 "evaluate_dim": ("epochs", "trials", "width", "checks", "dim_batch_size"),
                 "evaluate_full": ("epochs", "trials", "width")}


def plan_settings(plan: Plan, base: str | Path) -> dict:
    """The resolved budget (steps, widths, epochs, trials) for the page's header, from the plan's params."""
    out: dict[str, dict] = {}
    for node in plan.nodes.values():
        section = eval_section(node) if node.stage == "evaluate" else node.stage
        if section in out or section not in SETTINGS_KEYS:
            continue
        try:
            p = node_params(node, base)
        except Exception:   # noqa: BLE001 - a bad param is reported by the stage itself
            continue
        out[section] = {k: getattr(p, k) for k in SETTINGS_KEYS[section]}
    return out
