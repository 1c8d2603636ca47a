"""Accuracy tables and plots for evaluation results: one evaluation's `report.md`/`accuracy.png`, and the
comparison table `skdd report` builds from several evaluations.

Conventions, held everywhere a number is shown:

* accuracies are top-1 percentages on the real test set;
* "mean ± std" over trials, one decimal; std is the POPULATION std (ddof=0, `numpy.std`, as DC/DSA report it);
* the protocol is part of every table's heading, and a table only ever holds one protocol: strict numbers
  (fixed set, last epoch) and DiM-protocol numbers (fresh generator samples, best test checkpoint) are never
  put in one column, since the second selects on the test set and trains on far more images.

Plots are drawn with Pillow (already a dependency), so no plotting library is needed and the PNG bytes are a
deterministic function of the numbers.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Sequence

from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "PROTOCOL_LABELS", "STD_KIND", "arch_title", "comparison", "comparison_markdown", "evaluation_markdown",
    "format_mean_std", "mean_std", "plot_architectures", "plot_ipc",
]

PROTOCOL_LABELS = {
    "strict": "strict (DC/DSA, last epoch)",
    "dim": "DiM protocol (best test checkpoint)",
}
PROTOCOL_NOTES = {
    "strict": "trained from scratch on the fixed set with DSA augmentation, lr x0.1 half-way, "
              "tested once after the last epoch in eval() mode",
    "dim": "fresh generator samples every iteration, colour+crop augmentation, no lr decay, tested every "
           "epochs/5 epochs; the best of those test checks is reported, which selects on the test set "
           "(optimistic; not comparable with strict numbers)",
}
STD_KIND = "population (ddof=0, numpy.std, as DC/DSA)"

_ARCH_TITLES = {"convnet3": "ConvNet-3", "resnet10": "ResNet-10", "resnet18": "ResNet-18", "alexnet": "AlexNet",
                "vgg11": "VGG-11", "resnet10_dc": "ResNet-10 (DC)", "resnet18_dc": "ResNet-18 (DC)"}


def arch_title(name: str) -> str:
    return _ARCH_TITLES.get(name, name)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population std (ddof=0)."""
    if not values:
        raise ValueError("mean_std of no values")
    n = len(values)
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / n
    return mean, math.sqrt(var)


def format_mean_std(mean: float, std: float) -> str:
    return f"{mean:.1f} ± {std:.1f}"


def _ipc_text(ipc: Any) -> str:
    return "full" if ipc is None else str(ipc)


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# ------------------------------------------------------------------------------------------- one evaluation
def split_words(metrics: dict) -> str:
    """'test', or 'validation' for an evaluation made to choose a setting (metrics from before `split`: test)."""
    return "validation" if metrics.get("split", "test") == "val" else "test"


def evaluation_markdown(metrics: dict) -> str:
    """`report.md` of one evaluation: the protocol in the heading, one row (its label), one column per
    architecture, in the paper's layout."""
    archs = list(metrics["architectures"])
    protocol = metrics["protocol_label"]
    seeds = metrics["seeds"]
    lines = [
        f"# {metrics['dataset']}, IPC {_ipc_text(metrics['ipc'])}: {protocol}",
        "",
        f"Top-1 {split_words(metrics)} accuracy (%) on the real {metrics['dataset']} {split_words(metrics)} set "
        f"({metrics['test_images']} images), "
        f"mean ± std ({STD_KIND}) over {metrics['trials']} trials (seeds {', '.join(map(str, seeds))}); "
        f"{metrics['epochs']} epochs per trial.",
        "",
        "| Method | IPC | " + " | ".join(arch_title(a) for a in archs) + " |",
        "|---|---|" + "---|" * len(archs),
        f"| {_md_escape(metrics['label'])} | {_ipc_text(metrics['ipc'])} | "
        + " | ".join(format_mean_std(metrics["architectures"][a]["mean"], metrics["architectures"][a]["std"])
                     for a in archs) + " |",
        "",
        f"Protocol: **{protocol}**: {PROTOCOL_NOTES[metrics['protocol']]}.",
        f"Training data: {metrics['training_set']} ({metrics['train_images_per_epoch_note']}).",
        f"Settings: batch {metrics['batch_size']}, lr {metrics['lr']}, momentum {metrics['momentum']}, "
        f"weight decay {metrics['weight_decay']}, augmentation `{metrics['augment']}`, "
        f"model width {metrics['width'] if metrics['width'] is not None else 'default'}, device {metrics['device']}.",
        "",
        "Per-trial accuracies (%):",
        "",
    ]
    for a in archs:
        accs = ", ".join(f"{v:.2f}" for v in metrics["architectures"][a]["accuracies"])
        lines.append(f"- {arch_title(a)}: {accs}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- comparison
def _entry_rows(all_metrics: Iterable[dict]) -> list[dict]:
    rows = []
    for m in all_metrics:
        for arch, r in m["architectures"].items():
            val = m.get("split", "test") == "val"    # never in one table with test figures
            rows.append({"dataset": m["dataset"], "protocol": m["protocol"] + ("@val" if val else ""),
                         "protocol_label": m["protocol_label"] + (", on the validation split" if val else ""),
                         "label": m["label"], "ipc": m["ipc"], "arch": arch, "mean": r["mean"], "std": r["std"],
                         "trials": len(r["accuracies"]), "accuracies": list(r["accuracies"]),
                         "epochs": m["epochs"]})
    return rows


def _ipc_key(ipc: Any) -> tuple[int, int]:
    return (1, 0) if ipc is None else (0, int(ipc))


def comparison(all_metrics: Sequence[dict]) -> dict:
    """Merge several evaluations' metrics into tables, one per (dataset, protocol).

    Returns {"tables": [{"dataset", "protocol", "protocol_label", "columns": [{"arch", "ipc"}...],
    "rows": [{"label", "cells": {"<arch>@<ipc>": {mean, std, trials, accuracies, epochs}}}]}], "std": STD_KIND}.
    Raises ValueError on two results for the same (dataset, protocol, label, ipc, architecture).
    """
    rows = _entry_rows(all_metrics)
    tables: dict[tuple[str, str], dict] = {}
    for r in rows:
        key = (r["dataset"], r["protocol"])
        t = tables.setdefault(key, {"dataset": r["dataset"], "protocol": r["protocol"],
                                    "protocol_label": r["protocol_label"], "columns": [], "rows": []})
        col = {"arch": r["arch"], "ipc": r["ipc"]}
        if col not in t["columns"]:
            t["columns"].append(col)
        row = next((x for x in t["rows"] if x["label"] == r["label"]), None)
        if row is None:
            row = {"label": r["label"], "cells": {}}
            t["rows"].append(row)
        cell = f"{r['arch']}@{_ipc_text(r['ipc'])}"
        if cell in row["cells"]:
            raise ValueError(f"two results for label {r['label']!r}, {r['dataset']} IPC {_ipc_text(r['ipc'])}, "
                             f"{r['arch']}, {r['protocol']} protocol; give the evaluations distinct labels")
        row["cells"][cell] = {k: r[k] for k in ("mean", "std", "trials", "accuracies", "epochs")}
    order = list(PROTOCOL_LABELS)
    out = sorted(tables.values(), key=lambda t: (t["dataset"], order.index(t["protocol"])
                                                 if t["protocol"] in order else len(order)))
    for t in out:
        t["columns"].sort(key=lambda c: (_ipc_key(c["ipc"]), c["arch"]))
    return {"tables": out, "std": STD_KIND, "unit": "percent"}


def comparison_markdown(comp: dict) -> str:
    """One markdown table per (dataset, protocol); rows = labels, columns = IPC (x architecture)."""
    lines = ["# Accuracy comparison", "",
             f"Top-1 test accuracy (%), mean ± std ({STD_KIND}) over trials. Each table holds a single protocol; "
             "strict and DiM-protocol numbers are not comparable and never share a column.", ""]
    for t in comp["tables"]:
        archs = {c["arch"] for c in t["columns"]}
        ipcs = {_ipc_text(c["ipc"]) for c in t["columns"]}

        def head(c: dict) -> str:
            if len(archs) == 1:
                return f"IPC {_ipc_text(c['ipc'])}"
            if len(ipcs) == 1:
                return arch_title(c["arch"])
            return f"{arch_title(c['arch'])}, IPC {_ipc_text(c['ipc'])}"

        single = ""
        if len(archs) == 1:
            single = f", {arch_title(next(iter(archs)))}"
        elif len(ipcs) == 1:
            single = f", IPC {next(iter(ipcs))}"
        lines += [f"## {t['dataset']}{single}: {t['protocol_label']}", "",
                  f"Protocol: {PROTOCOL_NOTES.get(t['protocol'].split('@')[0], t['protocol'])}.", "",
                  "| Method | " + " | ".join(head(c) for c in t["columns"]) + " |",
                  "|---|" + "---|" * len(t["columns"])]
        for row in t["rows"]:
            cells = []
            for c in t["columns"]:
                cell = row["cells"].get(f"{c['arch']}@{_ipc_text(c['ipc'])}")
                cells.append("–" if cell is None else format_mean_std(cell["mean"], cell["std"]))
            lines.append(f"| {_md_escape(row['label'])} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- plots
_PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
            (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
_W, _H = 900, 540
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 30, 60, 80


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:   # Pillow < 10.1: fixed bitmap font
        return ImageFont.load_default()


def _text_width(draw: ImageDraw.ImageDraw, text: str, font) -> float:
    return draw.textlength(text, font=font)


def _axes(draw: ImageDraw.ImageDraw, title: str, ylabel: str, lo: float, hi: float) -> Callable[[float], float]:
    """Frame, title, y grid/ticks; returns y(value) -> pixel row."""
    font, small = _font(16), _font(12)
    draw.text((_LEFT, 18), title, fill=(0, 0, 0), font=font)
    x0, x1, y0, y1 = _LEFT, _W - _RIGHT, _TOP, _H - _BOTTOM

    def y_of(v: float) -> float:
        return y1 - (v - lo) / (hi - lo) * (y1 - y0)

    step = 10 if hi - lo > 40 else 5 if hi - lo > 15 else 2 if hi - lo > 6 else 1
    v = math.ceil(lo / step) * step
    while v <= hi + 1e-9:
        y = y_of(v)
        draw.line([(x0, y), (x1, y)], fill=(225, 225, 225))
        label = f"{v:g}"
        draw.text((x0 - 8 - _text_width(draw, label, small), y - 7), label, fill=(60, 60, 60), font=small)
        v += step
    draw.rectangle([x0, y0, x1, y1], outline=(0, 0, 0))
    draw.text((8, y0 - 22), ylabel, fill=(60, 60, 60), font=small)
    return y_of


def _y_range(values: Iterable[tuple[float, float]]) -> tuple[float, float]:
    pairs = list(values)
    lo = min(m - s for m, s in pairs)
    hi = max(m + s for m, s in pairs)
    lo = max(0.0, math.floor((lo - 5) / 10) * 10)
    hi = min(100.0, math.ceil((hi + 2) / 10) * 10)
    if hi - lo < 10:
        lo = max(0.0, hi - 10)
    return lo, hi


def plot_architectures(metrics: dict, path) -> None:
    """Bar per architecture at the mean accuracy, error bar ± std, value printed above."""
    archs = list(metrics["architectures"])
    stats = [(metrics["architectures"][a]["mean"], metrics["architectures"][a]["std"]) for a in archs]
    img = Image.new("RGB", (_W, _H), "white")
    draw = ImageDraw.Draw(img)
    title = (f"{metrics['label']}: {metrics['dataset']} IPC {_ipc_text(metrics['ipc'])}, "
             f"{metrics['protocol_label']}, {metrics['trials']} trials")
    lo, hi = 0.0, 100.0
    y_of = _axes(draw, title, "accuracy (%)", lo, hi)
    small = _font(13)
    x0, x1 = _LEFT, _W - _RIGHT
    slot = (x1 - x0) / max(1, len(archs))
    bar = min(120.0, slot * 0.6)
    for i, (arch, (mean, std)) in enumerate(zip(archs, stats)):
        cx = x0 + slot * (i + 0.5)
        color = _PALETTE[i % len(_PALETTE)]
        draw.rectangle([cx - bar / 2, y_of(mean), cx + bar / 2, y_of(lo)], fill=color)
        top, bottom = y_of(min(hi, mean + std)), y_of(max(lo, mean - std))
        draw.line([(cx, top), (cx, bottom)], fill=(0, 0, 0), width=2)
        for y in (top, bottom):
            draw.line([(cx - 10, y), (cx + 10, y)], fill=(0, 0, 0), width=2)
        text = format_mean_std(mean, std)
        draw.text((cx - _text_width(draw, text, small) / 2, top - 20), text, fill=(0, 0, 0), font=small)
        name = arch_title(arch)
        draw.text((cx - _text_width(draw, name, small) / 2, _H - _BOTTOM + 10), name, fill=(0, 0, 0), font=small)
    img.save(path, format="PNG")


def plot_ipc(series: dict[str, list[tuple[Any, float, float]]], title: str, path) -> None:
    """Accuracy against IPC, one line per label: `series[label] = [(ipc, mean, std), ...]`.

    IPCs are placed at evenly spaced positions (IPC 1/10/50 would crowd on a linear axis); an entry with
    ipc None (the full training set) is drawn as a dashed horizontal line across the plot.
    """
    ipcs = sorted({p[0] for pts in series.values() for p in pts if p[0] is not None})
    img = Image.new("RGB", (_W, _H), "white")
    draw = ImageDraw.Draw(img)
    lo, hi = _y_range((m, s) for pts in series.values() for _, m, s in pts)
    y_of = _axes(draw, title, "accuracy (%)", lo, hi)
    small = _font(13)
    x0, x1 = _LEFT, _W - _RIGHT - 170   # room for the legend on the right
    slot = (x1 - x0) / max(1, len(ipcs))

    def x_of(ipc: int) -> float:
        return x0 + slot * (ipcs.index(ipc) + 0.5)

    for ipc in ipcs:
        label = f"IPC {ipc}"
        draw.text((x_of(ipc) - _text_width(draw, label, small) / 2, _H - _BOTTOM + 10), label,
                  fill=(0, 0, 0), font=small)
    for i, (label, pts) in enumerate(series.items()):
        color = _PALETTE[i % len(_PALETTE)]
        shift = (i - (len(series) - 1) / 2) * min(8.0, slot / (3 * max(1, len(series))))   # keep error bars apart

        def x_of(ipc: int, shift: float = shift) -> float:
            return x0 + slot * (ipcs.index(ipc) + 0.5) + shift

        full = [p for p in pts if p[0] is None]
        pts = sorted((p for p in pts if p[0] is not None), key=lambda p: p[0])
        for _, mean, _ in full:
            y = y_of(mean)
            for xs in range(x0, int(x1), 16):
                draw.line([(xs, y), (min(xs + 9, x1), y)], fill=color, width=2)
        if len(pts) > 1:
            draw.line([(x_of(p[0]), y_of(p[1])) for p in pts], fill=color, width=2)
        for ipc, mean, std in pts:
            cx, cy = x_of(ipc), y_of(mean)
            top, bottom = y_of(min(hi, mean + std)), y_of(max(lo, mean - std))
            draw.line([(cx, top), (cx, bottom)], fill=color, width=2)
            for y in (top, bottom):
                draw.line([(cx - 6, y), (cx + 6, y)], fill=color, width=2)
            draw.ellipse([cx - 5, cy - 5, cx + 5, cy + 5], fill=color)
        ly = _TOP + 10 + 22 * i
        draw.rectangle([x1 + 20, ly + 3, x1 + 34, ly + 15], fill=color)
        draw.text((x1 + 40, ly), str(label) + (" (full set)" if full and not pts else ""), fill=(0, 0, 0),
                  font=small)
    img.save(path, format="PNG")
