"""docs/results.md sections of a reproduction run: Table 1 layout, ordering check, λ sweep, what did not run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from skdd.reproduce.paper import CLAIMED_ORDER, METHOD_ROWS, PAPER, PROTOCOL_LABELS


# ----------------------------------------------------------------------------------------------- markdown
def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s"


def compare_pair(better: tuple[float, float], worse: tuple[float, float]) -> str:
    """Does `better` (mean, std) beat `worse`? "holds", "reversed", or "within noise" when the means differ by no
    more than the larger of the two stds."""
    diff = better[0] - worse[0]
    if abs(diff) <= max(better[1], worse[1]):
        return "within noise"
    return "holds" if diff > 0 else "reversed"


def ordering_verdict(chain: list[tuple[str, float, float]]) -> dict:
    """The claimed order (best first) checked pair by pair on (name, mean, std): a summary and one line per pair."""
    if len(chain) < 2:
        return {"summary": "not measured", "pairs": []}
    pairs = [(a[0], b[0], compare_pair((a[1], a[2]), (b[1], b[2]))) for a, b in zip(chain, chain[1:])]
    verdicts = [v for _, _, v in pairs]
    means_in_order = all(a[1] > b[1] for a, b in zip(chain, chain[1:]))
    if all(v == "holds" for v in verdicts):
        summary = "holds"
    elif "reversed" in verdicts:
        bad = "; ".join(f"{a} < {b}" for a, b, v in pairs if v == "reversed")
        summary = f"does not hold ({bad}, beyond noise)"
    else:
        noisy = "; ".join(f"{a} vs {b}" for a, b, v in pairs if v == "within noise")
        summary = (f"within noise ({noisy}); the means are "
                   + ("in the claimed order" if means_in_order else "not in the claimed order"))
    return {"summary": summary, "pairs": pairs}


def _num(value: float | None, spec: str, missing: str = "—") -> str:
    return missing if value is None else format(value, spec)


def _fmt(cell: dict) -> str:
    return f"{cell['mean']:.1f} ± {cell['std']:.1f} ({cell['trials']})"


def _paper_value(method: str, dataset_name: str, ipc: int | None) -> tuple[float, float] | None:
    return (PAPER["table1"].get(method) or {}).get(dataset_name, {}).get("full" if ipc is None else ipc)


def _paper_text(paper: tuple[float, float] | None, measured: dict | None) -> str:
    if paper is None:
        return "—"
    if measured is None or measured.get("status") != "done":
        return f"{paper[0]:.1f}"
    return f"{paper[0]:.1f} ({measured['mean'] - paper[0]:+.1f})"


def _status_text(cell: dict | None) -> str:
    if cell is None:
        return "n/a"
    return _fmt(cell) if cell["status"] == "done" else ("failed" if cell["status"] == "failed" else "not run")


def _table1(results: dict, protocol: str, arch: str) -> list[str]:
    cells = [c for c in results["cells"] if c["protocol"] == protocol and c["architecture"] == arch
             and c["lambda_multiplier"] in (None, 1)]
    if not cells:
        return []
    columns = [(k, ipc) for k in results["datasets"] for ipc in results["ipc"]
               if any(c["dataset"] == k for c in cells)]
    head = "| method | " + " | ".join(
        f"{results['datasets'][k]['label']} IPC {ipc} | paper (Δ)" for k, ipc in columns) + " |"
    lines = [head, "|---|" + "---:|---:|" * len(columns)]
    for method, label in METHOD_ROWS:
        row_cells = [c for c in cells if c["method"] == method]
        if not row_cells:
            continue
        parts = []
        for k, ipc in columns:
            found = next((c for c in row_cells if c["dataset"] == k and c["ipc"] in (ipc, None)), None)
            paper = _paper_value(method, results["datasets"][k]["name"], None if method == "full" else ipc) \
                if arch == "convnet3" else None
            parts += [_status_text(found), _paper_text(paper, found)]
        lines.append(f"| {label} | " + " | ".join(parts) + " |")
    return lines


def _lookup(results: dict, **where: Any) -> dict | None:
    for c in results["cells"]:
        if all(c.get(k) == v for k, v in where.items()):
            return c
    return None


def render_section(results: dict) -> str:
    ds = results["datasets"]
    runs = results.get("runs") or []
    last = runs[-1] if runs else {}
    out = [f"## Preset `{results['preset']}`", ""]
    if results.get("description"):
        out += [" ".join(str(results["description"]).split()), ""]
    s = results.get("settings") or {}
    budget = "; ".join(f"{k}: " + ", ".join(f"{a} {b}" for a, b in v.items()) for k, v in s.items())
    done = [c for c in results["cells"] if c["status"] == "done"]
    out += ["| | |", "|---|---|",
            f"| command | `{results['command']}` |",
            f"| device | {last.get('device') or results.get('device')} |",
            f"| torch | {results.get('torch')} |",
            f"| commit | `{results.get('commit')}` |",
            f"| date | {results.get('updated')} (last run) |",
            f"| total wall time | {_duration(results.get('total_wall_seconds') or 0)} over {len(runs)} run(s) "
            f"({'; '.join(r.get('stopped', '?') for r in runs)}) |",
            "| data | " + "; ".join(f"{d['label']}: {d['data_copy']}" + (f" — **{d['missing']}**" if d["missing"]
                                                                           else "") for d in ds.values()) + " |",
            f"| budget | {budget} |",
            f"| cells measured | {len(done)} of {len(results['cells'])} |", ""]
    archs = results["architectures"]
    for protocol in results["protocols"]:
        for arch in archs[:1]:
            lines = _table1(results, protocol, arch)
            if not lines:
                continue
            out += [f"### Table 1 layout: {PROTOCOL_LABELS[protocol]}, {arch}", "",
                    "Test accuracy (%), mean ± population std (trials). *paper (Δ)*: the paper's Table 1 number "
                    "and measured − paper. The paper's generative rows used the DiM protocol and its full schedule"
                    + (", so a strict number is not expected to match them." if protocol == "strict" else
                       "; baselines have no generator, so they appear in the strict table only.") + "", ""]
            out += lines + [""]
        if len(archs) > 1:
            out += _table2(results, protocol)
    out += _ordering_section(results)
    out += _lambda_section(results)
    missing = [c for c in results["cells"] if c["status"] != "done"]
    out += ["### What did not run", ""]
    if not missing:
        out += ["Every planned cell ran.", ""]
    else:
        by_reason: dict[str, list[str]] = {}
        for c in missing:
            by_reason.setdefault(c.get("reason") or "?", [])
            name = f"{c['id']} [{c['architecture']}]"
            if name not in by_reason[c.get("reason") or "?"]:
                by_reason[c.get("reason") or "?"].append(name)
        for reason, ids in by_reason.items():
            out.append(f"- {reason}: {', '.join(ids)}")
        out.append("")
    out += ["### Every measured cell", "",
            "| cell | arch | accuracies (%) | mean ± std (n) | epochs | device | commit | wall s (stage: seconds) | "
            "data copy |", "|---|---|---|---|---:|---|---|---|---|"]
    for c in done:
        walls = ", ".join(f"{k} {v['wall_seconds']:.0f}" if v.get("wall_seconds") is not None else f"{k} ?"
                          for k, v in c["stages"].items())
        accs = ", ".join(f"{a:.2f}" for a in c["accuracies"])
        out.append(f"| {c['id']} | {c['architecture']} | {accs} | {_fmt(c)} | {c.get('epochs')} | {c['device']} | "
                   f"`{c['commit']}` | {walls} | {c['data_copy']} |")
    out.append("")
    return "\n".join(out)


def _table2(results: dict, protocol: str) -> list[str]:
    out: list[str] = []
    archs = results["architectures"]
    for k, d in results["datasets"].items():
        for ipc in results["ipc"]:
            cells = [c for c in results["cells"] if c["dataset"] == k and c["ipc"] == ipc
                     and c["protocol"] == protocol and c["lambda_multiplier"] in (None, 1)]
            if not cells:
                continue
            paper_ok = d["name"] == "cifar10" and ipc == 10
            out += [f"### Table 2 layout (cross-architecture): {d['label']}, IPC {ipc}, {PROTOCOL_LABELS[protocol]}",
                    "", "| method | " + " | ".join(f"{a} | paper (Δ)" for a in archs) + " |",
                    "|---|" + "---:|---:|" * len(archs)]
            for method, label in METHOD_ROWS:
                parts = []
                if not any(c["method"] == method for c in cells):
                    continue
                for a in archs:
                    found = next((c for c in cells if c["method"] == method and c["architecture"] == a), None)
                    paper = (PAPER["table2"].get(method) or {}).get(a) if paper_ok else None
                    parts += [_status_text(found), _paper_text(paper, found)]
                out.append(f"| {label} | " + " | ".join(parts) + " |")
            out.append("")
    return out


def _ordering_section(results: dict) -> list[str]:
    out = ["### Ordering check: skd > skd-nostand > dim-mse > cgan-only?", "",
           "Adjacent pairs: *holds* when the better mean exceeds the other by more than the larger std, *within "
           "noise* when they differ by no more than that, *reversed* otherwise.", ""]
    any_line = False
    for protocol in results["protocols"]:
        for arch in results["architectures"]:
            for k, d in results["datasets"].items():
                for ipc in results["ipc"]:
                    where = dict(dataset=k, ipc=ipc, protocol=protocol, architecture=arch, status="done")
                    chain = []
                    for m in CLAIMED_ORDER:
                        c = _lookup(results, method=m, lambda_multiplier=None if m == "cgan-only" else 1, **where)
                        if c is not None:
                            chain.append((m, c["mean"], c["std"]))
                    if not chain:
                        continue
                    any_line = True
                    v = ordering_verdict(chain)
                    means = ", ".join(f"{n} {m:.2f} ± {s:.2f}" for n, m, s in chain)
                    missing = [m for m in CLAIMED_ORDER if m not in [n for n, _, _ in chain]]
                    line = f"- **{d['label']} IPC {ipc}, {protocol}, {arch}**: {v['summary']}. Measured: {means}"
                    if missing:
                        line += f" (not measured: {', '.join(missing)})"
                    pair_text = "; ".join(f"{a} vs {b}: {x}" for a, b, x in v["pairs"])
                    if pair_text:
                        line += f". Pairs: {pair_text}"
                    paper = [(m, *_paper_value(m, d["name"], ipc)) for m in CLAIMED_ORDER
                             if _paper_value(m, d["name"], ipc) and arch == "convnet3"]
                    if len(paper) == len(CLAIMED_ORDER):
                        ok = all(a[1] > b[1] for a, b in zip(paper, paper[1:]))
                        line += (". The paper's own Table 1 here: " + " / ".join(f"{m} {x:.1f}" for m, x, _ in paper)
                                 + (" (in the claimed order)" if ok else " (NOT in the claimed order)"))
                    gan = _lookup(results, method="gan-only", **where)
                    skd = _lookup(results, method="skd", lambda_multiplier=1, **where)
                    if gan is not None and skd is not None:
                        line += (f". SKD vs the GAN-only control at equal generator steps: {skd['mean']:.2f} vs "
                                 f"{gan['mean']:.2f} ({compare_pair((skd['mean'], skd['std']), (gan['mean'], gan['std']))})")
                    out.append(line + ".")
    if not any_line:
        out.append("No loss-mode cell has been measured yet.")
    out.append("")
    return out


def _lambda_section(results: dict) -> list[str]:
    out = ["### Does the SKD term matter? λ sweep and gradient-norm ratio", "",
           "Ratio = |∇ of λ·τ²·L_match| / |∇ of the adversarial loss| at G's output, median over the logged "
           "distillation steps (`grad_norm_every`). The GAN-only control is λ = 0.", ""]
    sweep = [c for c in results["cells"] if c["method"] == "skd" and c["lambda_multiplier"] is not None]
    mults = sorted({c["lambda_multiplier"] for c in sweep})
    if len(mults) > 1:
        out += ["| dataset | IPC | protocol | arch | λ multiplier | λ | accuracy | median grad ratio |",
                "|---|---:|---|---|---:|---:|---:|---:|"]
        for k, d in results["datasets"].items():
            for ipc in results["ipc"]:
                for protocol in results["lambda_protocols"]:
                    for arch in results["architectures"]:
                        where = dict(dataset=k, ipc=ipc, protocol=protocol, architecture=arch)
                        gan = _lookup(results, method="gan-only", **where)
                        if gan is not None:
                            out.append(f"| {d['label']} | {ipc} | {protocol} | {arch} | 0 (GAN-only control) | 0 | "
                                       f"{_status_text(gan)} | — |")
                        for m in mults:
                            c = _lookup(results, method="skd", lambda_multiplier=m, **where)
                            if c is None:
                                continue
                            lam = f"{c['lambda']:g}" if c.get("lambda") is not None else "—"
                            out.append(f"| {d['label']} | {ipc} | {protocol} | {arch} | ×{m:g}"
                                       f"{' (paper)' if m == 1 else ''} | {lam} | {_status_text(c)} | "
                                       f"{_num(c.get('grad_ratio_median'), '.3g')} |")
        out.append("")
    if results.get("distills"):
        out += ["Every distillation run:", "", "| output | loss | λ | steps | median grad ratio | final L_match | "
                "wall s |", "|---|---|---:|---:|---:|---:|---:|"]
        for r in results["distills"]:
            lam, ratio, lm, wall = r["lambda"], r.get("grad_ratio_median"), r.get("final_loss_match"), \
                r.get("wall_seconds")
            out.append(f"| {r['output']} | {r['loss']} | {_num(lam, 'g')} | {r['steps']} | {_num(ratio, '.3g')} | "
                       f"{_num(lm, '.4g')} | {_num(wall, '.0f', '?')} |")
        out.append("")
    elif len(mults) <= 1:
        out += ["No distillation has finished yet.", ""]
    return out


RESULTS_HEADER = """# Reproduction results

Written by `benchmarks/reproduce.py`: one section per preset, each replaced whole when its preset runs again.
Every number below was measured by the command in its section's header; the paper's numbers are quoted beside
them for comparison only. See `benchmarks/presets/` for what each preset runs.
"""


def write_section(path: Path, name: str, body: str) -> None:
    """Replace (or append) the preset's section between its markers; every other byte of the file is kept."""
    begin, end = f"<!-- reproduce:{name} begin -->", f"<!-- reproduce:{name} end -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else RESULTS_HEADER
    if begin in text and end in text and text.index(begin) < text.index(end):
        i, j = text.index(begin), text.index(end) + len(end)
        text = text[:i] + block + text[j:]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


