"""The results JSON of a reproduction, built from what its stages recorded (for the `skdd-reproduce` pipeline).

The pipeline knows its matrix when it is compiled (`matrix_spec`: every planned cell, the datasets, the budget)
and learns the measurements when it runs: each evaluation artifact's metrics.json, and, through the manifests'
lineage, the chain of stages behind it (`evaluation_record`). `assemble` joins the two into the same document
`benchmarks/reproduce.py` writes (schema `skdd.reproduce/1`), so `skdd.reproduce.page` renders either one.
A planned cell without a measurement is listed as not run, never dropped.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from skdd.reproduce.matrix import SCHEMA, Plan, override, plan_settings
from skdd.reproduce.paper import PROTOCOL_LABELS


def matrix_spec(preset: dict, plan: Plan, base: str, command: str, preset_file: str) -> dict:
    """Everything static about the run (JSON): the cells in the preset's order and what the page's header needs."""
    cells = []
    for cell in plan.cells:
        ev = plan.nodes[cell.eval_key]
        distill = next((plan.nodes[k] for k in cell.chain if plan.nodes[k].stage == "distill"), None)
        cells.append({"id": cell.id, "dataset": cell.dataset, "ipc": cell.ipc, "method": cell.method,
                      "protocol": cell.protocol, "lambda_multiplier": cell.lambda_multiplier,
                      "label": override(ev.overrides, "label"),
                      "loss": override(distill.overrides, "loss") if distill else None})
    datasets = {k: {"name": d.name, "label": d.label, "data_copy": d.data_copy, "source": d.source,
                    "location": d.written or d.location, "missing": d.missing} for k, d in plan.datasets.items()}
    return {"schema": SCHEMA, "preset": preset["name"], "preset_file": preset_file,
            "description": preset.get("description", ""), "base": preset["base"], "command": command,
            "settings": plan_settings(plan, base), "datasets": datasets, "architectures": preset["architectures"],
            "ipc": preset["ipc"], "protocols": preset["protocols"], "lambda_protocols": preset["lambda_protocols"],
            "cells": cells}


def _stage_info(uri: str, manifest: dict) -> dict:
    env, metrics = manifest.get("environment") or {}, manifest.get("metrics") or {}
    code = manifest.get("code") or {}
    return {"output": uri, "stage": manifest.get("stage"), "wall_seconds": metrics.get("wall_seconds_this_run"),
            "attempts": None, "device": env.get("device"), "torch": env.get("torch"),
            "commit": (code.get("git_commit") or "")[:12] or code.get("image") or code.get("skdd"),
            "finished": manifest.get("created")}


def evaluation_record(dataset: str, uri: str, metrics: dict) -> dict:
    """One measurement: the evaluation's metrics and the stages behind it, read from the (verified) manifests of
    its lineage; the distillation's λ and gradient-norm ratio when a distill stage is in the chain."""
    from skdd.lineage import existing_artifact

    stages: dict[str, dict] = {}
    distill: dict | None = None
    todo, seen = [uri], set()
    while todo:
        current = todo.pop(0)
        if current in seen:      # shared ancestors (the dataset, the teacher) are verified once, not per path
            continue
        seen.add(current)
        manifest = existing_artifact(current)
        if manifest is None:
            continue
        stage = manifest.get("stage")
        if stage not in stages:
            stages[stage] = _stage_info(current, manifest)
        if stage == "distill" and distill is None:
            params, met = manifest.get("params") or {}, manifest.get("metrics") or {}
            distill = {"output": current, "dataset": dataset, "loss": params.get("loss"),
                       "lambda": None if params.get("loss") == "gan-only" else (manifest.get("resolved") or {}).get(
                           "lambda"),
                       "steps": params.get("steps"), "grad_norm_every": params.get("grad_norm_every"),
                       "grad_ratio_median": met.get("grad_ratio_median"),
                       "final_loss_match": met.get("final_loss_match"), "wall_seconds": met.get("wall_seconds_this_run")}
        todo += [r["uri"] for r in manifest.get("inputs", []) if isinstance(r, dict) and r.get("uri")]
    if "evaluate" in stages:
        stages["evaluate"]["wall_seconds"] = metrics.get("wall_seconds")
    return {"dataset": dataset, "uri": uri, "metrics": metrics, "stages": stages, "distill": distill}


def _key(dataset: str, label: str | None, ipc: int | None, protocol: str) -> tuple:
    return dataset, label, ipc, protocol


def assemble(spec: dict, records: list[dict]) -> dict:
    """The results document: every planned cell, measured (status done) or not (not_run)."""
    found = {_key(r["dataset"], r["metrics"].get("label"), r["metrics"].get("ipc"), r["metrics"].get("protocol")): r
             for r in records}
    cells, distills = [], {}
    for c in spec["cells"]:
        ds = spec["datasets"][c["dataset"]]
        base = {"id": c["id"], "dataset": c["dataset"], "dataset_name": ds["name"], "dataset_label": ds["label"],
                "data_copy": ds["data_copy"], "ipc": c["ipc"], "method": c["method"], "loss": c["loss"],
                "lambda_multiplier": c["lambda_multiplier"], "lambda": None, "protocol": c["protocol"],
                "protocol_label": PROTOCOL_LABELS[c["protocol"]], "evaluation": None, "command": spec["command"]}
        rec = found.get(_key(c["dataset"], c["label"], c["ipc"], c["protocol"]))
        if rec is None:
            reason = ds["missing"] or "not measured by this run"
            cells += [{**base, "architecture": a, "status": "not_run", "reason": reason}
                      for a in spec["architectures"]]
            continue
        base["evaluation"] = rec["uri"]
        if rec["distill"]:
            distills[rec["distill"]["output"]] = rec["distill"]
            if base["loss"] != "gan-only":
                base["lambda"] = rec["distill"]["lambda"]
            base["grad_ratio_median"] = rec["distill"]["grad_ratio_median"]
        metrics, stages, ev = rec["metrics"], rec["stages"], rec["stages"].get("evaluate") or {}
        walls = [s["wall_seconds"] for s in stages.values()]
        for arch, r in (metrics.get("architectures") or {}).items():
            cells.append({**base, "architecture": arch, "status": "done", "accuracies": r["accuracies"],
                          "mean": r["mean"], "std": r["std"], "trials": len(r["accuracies"]),
                          "epochs": metrics.get("epochs"), "width": metrics.get("width"),
                          "eval_wall_seconds": r.get("wall_seconds"), "stages": stages,
                          "chain_wall_seconds": round(sum(walls), 3) if all(w is not None for w in walls) else None,
                          "device": ev.get("device"), "torch": ev.get("torch"), "commit": ev.get("commit")})
    done = [c for c in cells if c["status"] == "done"]
    first = done[0] if done else {}
    return {**{k: v for k, v in spec.items() if k != "cells"}, "work": None,
            "updated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "commit": first.get("commit"), "torch": first.get("torch"), "device": first.get("device"),
            "runs": [], "total_wall_seconds": None, "cells": cells,
            "distills": sorted(distills.values(), key=lambda d: d["output"])}


def records_of(evaluations: list[Any], dataset: str) -> list[dict]:
    """Records of KFP evaluation artifacts (each a copy of metrics.json, its skdd URI in the metadata)."""
    import json
    from pathlib import Path

    from skdd.kfp_steps import artifact_uri

    return [evaluation_record(dataset, artifact_uri(e, f"evaluations[{i}]"), json.loads(Path(e.path).read_text()))
            for i, e in enumerate(evaluations)]
