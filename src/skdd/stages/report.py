"""`skdd report`: several evaluation artifacts merged into one comparison table.

    skdd report --out artifacts/report --set 'evaluations=[artifacts/eval-skd, artifacts/eval-gan-only,
                                                          artifacts/eval-random]'

(or an `evaluations:` list in the `report` section of params.yaml). Each evaluation is verified against its
manifest and recorded as an input. The rows are the evaluations' labels (`evaluate.label`), the columns IPC
(and architecture when several are present); there is one table per (dataset, protocol), so strict and
DiM-protocol numbers never share a column.

Output (kind "report"): `report.md`, `comparison.json` (the same tables, machine-readable: per cell mean, std,
per-trial accuracies), `accuracy_vs_ipc.png` for every (dataset, protocol, architecture) with more than one
IPC (file name `accuracy_vs_ipc[-<dataset>-<protocol>-<arch>].png`, the suffix only when there are several),
and the manifest.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from skdd import lineage, storage
from skdd.config import as_dict, param, params_hash
from skdd.errors import SkddError
from skdd.evaluation.report import arch_title, comparison, comparison_markdown, plot_ipc
from skdd.stages.common import open_input


@dataclass
class ReportParams:
    evaluations: list[str] = param([], help="evaluation artifacts to merge (paths), in row order")


def _load(uri: str) -> tuple[dict, dict]:
    path, _ = open_input(uri, "evaluation")
    try:
        metrics = json.loads((path / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SkddError(f"{path / 'metrics.json'}: unreadable ({exc.__class__.__name__})") from None
    if not isinstance(metrics, dict) or "architectures" not in metrics or "protocol" not in metrics:
        raise SkddError(f"{path / 'metrics.json'}: not an evaluation metrics file")
    return metrics, lineage.input_record("evaluation", uri, path)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "x"


def run(params: ReportParams, inputs: dict[str, str], output: str) -> dict:
    if not params.evaluations:
        raise SkddError("report.evaluations: list at least one evaluation artifact")
    loaded = [_load(uri) for uri in params.evaluations]
    all_metrics = [m for m, _ in loaded]
    try:
        comp = comparison(all_metrics)
    except ValueError as exc:
        raise SkddError(f"report: {exc}") from None
    plots = []
    for t in comp["tables"]:
        for arch in sorted({c["arch"] for c in t["columns"]}):
            ipcs = {c["ipc"] for c in t["columns"] if c["arch"] == arch and c["ipc"] is not None}
            if len(ipcs) < 2:
                continue
            series: dict[str, list] = {}
            for row in t["rows"]:
                for c in (c for c in t["columns"] if c["arch"] == arch):
                    cell = row["cells"].get(f"{arch}@{'full' if c['ipc'] is None else c['ipc']}")
                    if cell is not None:
                        series.setdefault(row["label"], []).append((c["ipc"], cell["mean"], cell["std"]))
            plots.append((t, arch, series))
    with storage.staged_output(output) as stage:
        (stage / "report.md").write_text(comparison_markdown(comp))
        (stage / "comparison.json").write_text(json.dumps(comp, indent=2) + "\n")
        for t, arch, series in plots:
            name = "accuracy_vs_ipc.png" if len(plots) == 1 else \
                f"accuracy_vs_ipc-{_slug(t['dataset'])}-{_slug(t['protocol'])}-{_slug(arch)}.png"
            plot_ipc(series, f"{t['dataset']}, {arch_title(arch)}: {t['protocol_label']}", stage / name)
        summary = {f"{t['dataset']}/{t['protocol']}/{row['label']}/{cell}": round(v["mean"], 4)
                   for t in comp["tables"] for row in t["rows"] for cell, v in row["cells"].items()}
        return lineage.write_manifest(
            stage, kind="report", stage="report", params=as_dict(params), params_hash=params_hash(params),
            inputs=[rec for _, rec in loaded], metrics={"accuracy_mean": summary},
            extra={"report": {"tables": len(comp["tables"]), "plots": len(plots)}})
