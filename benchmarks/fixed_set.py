"""Fixed synthetic sets against real subsets of the same size, over GAN seeds (strict protocol).

    python benchmarks/fixed_set.py --preset benchmarks/presets/cpu-fixed-set.yaml --work runs/cpu-fixed-set
    python benchmarks/fixed_set.py --preset ... --work ... --render-only      # re-write the results page only
    python benchmarks/fixed_set.py --preset ... --work ... --phases distilled,cross_arch --ipc 10 --datasets mnist

Rows per dataset and IPC (every stage through `skdd.stages.registry.run_stage`, params: the preset's `base` file,
then the preset's section, then what the row needs):

* real subsets: `random`, `kcenter`, `herding` (the teacher's features); `dm-pixel`: DM on pixels from the
  random subset (`refine space=pixel`), the fixed-set anchor; `herding+dm-pixel`: the same from the herding subset;
* per GAN seed (`pretrain seed`): the generator's own sample (`sample selection=none`), `+confidence`,
  `+coverage`, `+confidence+coverage` (over `candidates_per_class` candidates), and `+refine` (latent DM through
  the frozen generator, from the confidence+coverage set), `+refine+dm-pixel` (pixel DM from the refined set: does
  the generator's start still matter once pixels move?); with `with_distill: true` also the SKD-distilled generator
  with the same selection and refine (`skd+refine`) and the GAN-only control at equal steps (`gan-only+refine`);
* `selections: [confidence+coverage]` (optional): the ablation phase's selection modes (default: all four);
* `truncations: [null, 1.0, 0.5]` (optional): the generator's own sample with its noise truncated to [-ψ, ψ]; every
  ψ is evaluated on the **validation** split (`evaluate split=val`) for every seed, the best mean over seeds is
  chosen there, and only that ψ is tested (`gan+truncation`): no choice ever reads the test split;
* `cross_arch: [convnet3, resnet18, alexnet, vgg11]`: random, dm-pixel and the first seed's `gan+refine` set and
  its selected set before refine (`gan+confidence+coverage`) evaluated on every listed architecture
  (generalisation is where a generator prior claims to help);
* `refine_variants: {transfer: {embed_arch: [convnet3, resnet18_dc, alexnet, vgg11]}}` (optional): the latent
  refine again from the same selected set with each entry's overrides (row `gan+refine-<name>`, every seed, paired
  with `gan+refine`), and each one's first-seed set on the `cross_arch` architectures: e.g. does matching under
  several random architectures narrow the spread across them?

Order: phases by importance, each over every IPC and dataset: real rows and the refined set of every seed, then
pixel DM from the better starts, then the selection ablation, then truncation, then cross-architecture, then the
refine variants, then the distilled rows, so a run stopped early has the rows that matter most on every dataset.

`--phases`, `--ipc` and `--datasets` run part of the preset (in the order given); such a partial run keeps the
rows of `results.json` it did not touch, so the page still shows everything measured so far. A full run
re-records every row (reused stages cost nothing).

A stage whose output already has a manifest is reused (re-running resumes; stages resume from their checkpoints).
A generator row is reported as the mean ± std over GAN seeds of its per-seed mean accuracy (trials inside a seed
are averaged first), with the per-seed values; real rows as mean ± std over trials. `docs/results.md` gets the
section between `<!-- fixed-set:<name> begin -->` and `... end -->`; `<work>/results.json` holds every number.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
RESULTS_MD = REPO / "docs" / "results.md"
RESULTS_JSON = REPO / "docs" / "results"      # <preset>.json: the numbers behind each section
SELECTIONS = ("none", "confidence", "coverage", "confidence+coverage")
GAN_ROWS = ["gan", "gan+truncation", "gan+confidence", "gan+coverage", "gan+confidence+coverage", "gan+refine",
            "gan+refine+dm-pixel"]
DISTILL_ROWS = ["gan-only+refine", "skd+refine"]
REAL_ROWS = ["random", "kcenter", "herding", "dm-pixel", "herding+dm-pixel"]
PAIRED = [("skd+refine", "gan-only+refine"), ("gan-only+refine", "gan+refine")]   # (row, control) per seed
VARIANT_PREFIX = "gan+refine-"    # `refine_variants` rows, each paired with gan+refine
PHASES = ("headline", "polish", "ablation", "truncation", "cross_arch", "transfer", "distilled")   # by importance
STAGE_SECTIONS = ("teacher", "pretrain", "sample", "select", "refine", "evaluate", "distill")   # over the base file
PRESET_KEYS = {"name", "description", "base", "datasets", "ipc", "gan_seeds", "with_distill", "refine_pixel",
               "refine_variants", "truncations", "cross_arch", "selections", *STAGE_SECTIONS}
NOT_IPC = ("data_note", "cross_arch", "val", "truncation")     # a dataset's cells that are not an IPC's rows


def row_order(names) -> list[str]:
    """The one order of rows in every table: real, generator, refine variants (by name), distilled; anything else
    after them as given. Both tables use it, so a row added to an old results.json lands in its place."""
    variants = sorted({r for r in names if r.startswith(VARIANT_PREFIX)})
    known = REAL_ROWS + GAN_ROWS + variants + DISTILL_ROWS
    return [r for r in known if r in names] + [r for r in names if r not in known]


def truncation_row(psi: float | None) -> str:
    """The validation row of the own sample drawn with truncation ψ (null: untruncated, the `gan` row's sample)."""
    return "gan" if psi is None else f"gan@psi={psi}"


def row_name(gname: str, selection: str) -> str:
    """A generator row's name (and its sample folder's): `gan`, `gan+confidence`, ..."""
    return gname if selection == "none" else f"{gname}+{selection}"


def _ov(section: dict | None) -> list[str]:
    return [f"{k}={json.dumps(v) if isinstance(v, (list, dict)) else ('null' if v is None else v)}"
            for k, v in (section or {}).items()]


class Runner:
    def __init__(self, preset: dict, work: Path, on_result=None):
        self.preset, self.work = preset, work
        self.base = str(REPO / preset["base"])
        self.wall: dict[str, float] = {}
        self.datasets: dict[str, dict] = {}       # filled as evaluations finish (a stopped run keeps what ran)
        self.on_result = on_result or (lambda: None)

    def stage(self, stage: str, out: Path, inputs: dict[str, Path], overrides: list[str]) -> Path:
        from skdd.errors import SkddError
        from skdd.lineage import read_manifest
        from skdd.stages.registry import run_stage

        if (out / "manifest.json").is_file():
            try:
                read_manifest(out)                 # an older manifest schema, or an edited one, is recomputed
                return out
            except SkddError as exc:
                print(f"fixed-set: {out.relative_to(self.work)}: not reused ({exc})", flush=True)
        t0 = time.perf_counter()
        print(f"fixed-set: {stage} -> {out.relative_to(self.work)}", flush=True)
        run_stage(stage, output=str(out), inputs={k: str(v) for k, v in inputs.items()}, params_file=self.base,
                  overrides=_ov(self.preset.get(stage)) + overrides)
        self.wall[str(out.relative_to(self.work))] = round(time.perf_counter() - t0, 1)
        return out

    def evaluate(self, data: Path, synthetic: Path, label: str, ipc: int, architectures: list[str] | None = None,
                 split: str = "test") -> dict:
        """Per-architecture trial accuracies of the strict protocol on `synthetic` (the preset's architectures, or
        `architectures` for the cross-architecture rows; `split` val to choose a setting; each in its own folder)."""
        prefix = ("x-" if architectures else "") + ("val-" if split == "val" else "")
        out = synthetic.parent / f"eval-{prefix}{synthetic.name}"
        extra = [f"architectures={json.dumps(architectures)}"] if architectures else []
        self.stage("evaluate", out, {"dataset": data, "synthetic": synthetic},
                   [f"label={label}", f"ipc={ipc}", "protocol=strict", f"split={split}"] + extra)
        metrics = json.loads((out / "metrics.json").read_text())
        return {a: r["accuracies"] for a, r in metrics["architectures"].items()}

    def record(self, cells: dict, ipc: int, row: str, seed: str, accs: dict) -> None:
        cells.setdefault(str(ipc), {}).setdefault(row, {"seeds": {}})["seeds"][seed] = accs
        self.on_result()

    def refined_row(self, cells: dict, data: Path, teacher: Path, k: Path, ipc: int, seed: int, gname: str,
                    gpath: Path, variant: str = "", overrides: dict | None = None) -> Path:
        """The generator's fixed set as skdd makes it: confidence+coverage of the candidates, then latent refine
        (with `overrides` over the preset's refine section, recorded as row `<gname>+refine<variant>`)."""
        src = self.sample(k, seed, gname, gpath, teacher, ipc, "confidence+coverage")
        ref = self.stage("refine", k / f"seed{seed}" / f"refine-{gname}{variant}",
                         {"dataset": data, "synthetic": src, "gan": gpath}, ["space=latent"] + _ov(overrides))
        tag = f"{gname}+refine{variant}"
        self.record(cells, ipc, tag, str(seed), self.evaluate(data, ref, tag, ipc))
        return ref

    def sample(self, k: Path, seed: int, gname: str, gpath: Path, teacher: Path, ipc: int, sel: str,
               truncation: float | None = None) -> Path:
        folder = f"sample-{row_name(gname, sel)}" + ("" if truncation is None else f"-psi{truncation}")
        return self.stage("sample", k / f"seed{seed}" / folder, {"gan": gpath, "teacher": teacher},
                          [f"ipc={ipc}", f"selection={sel}"] + (["candidates_per_class=null"] if sel == "none" else [])
                          + ([] if truncation is None else [f"truncation={truncation}"]))

    def dataset(self, name: str, where: dict) -> dict:
        """Ingest and teacher of one dataset (reused when they exist); returns what the phases need."""
        from skdd.data.offline import COPIES

        if where.get("source", "offline") == "offline":
            kind, location, note = COPIES[name]
            location = str((REPO / location).resolve())
        else:
            kind, location, note = where["source"], where["location"], f"{where['source']} {where['location']}"
        d = self.work / name
        data = self.stage("ingest", d / "dataset", {}, [f"name={name}", f"source={kind}", f"location={location}"])
        teacher = self.stage("teacher", d / "teacher", {"dataset": data}, [])
        self.datasets.setdefault(name, {"data_note": note})
        return {"d": d, "data": data, "teacher": teacher, "cells": self.datasets[name]}

    def gan(self, ds: dict, seed: int) -> Path:
        return self.stage("pretrain", ds["d"] / f"seed{seed}" / "gan",
                          {"dataset": ds["data"], "teacher": ds["teacher"]}, [f"seed={seed}"])

    def real_subset(self, ds: dict, ipc: int, method: str) -> Path:
        """`select` of IPC real images per class by `method` (random, kcenter, herding: the teacher's features)."""
        return self.stage("select", ds["d"] / f"ipc{ipc}" / f"select-{method}",
                          {"dataset": ds["data"], "teacher": ds["teacher"]}, [f"method={method}", f"ipc={ipc}"])

    def pixel_dm(self, data: Path, start: Path, out: Path) -> Path:
        """DM on pixels (`refine space=pixel`, the preset's `refine_pixel` section) started from the set `start`."""
        return self.stage("refine", out, {"dataset": data, "synthetic": start},
                          ["space=pixel"] + _ov(self.preset.get("refine_pixel")))

    def headline(self, ds: dict, ipc: int) -> None:
        """Real rows, pixel DM, and the refined set of every GAN seed."""
        data, teacher, cells, k = ds["data"], ds["teacher"], ds["cells"], ds["d"] / f"ipc{ipc}"
        for method in ("random", "kcenter", "herding"):
            out = self.real_subset(ds, ipc, method)
            self.record(cells, ipc, method, "-", self.evaluate(data, out, method, ipc))
        dm = self.pixel_dm(data, k / "select-random", k / "dm-pixel")
        self.record(cells, ipc, "dm-pixel", "-", self.evaluate(data, dm, "dm-pixel", ipc))
        for seed in self.preset["gan_seeds"]:
            self.refined_row(cells, data, teacher, k, ipc, seed, "gan", self.gan(ds, seed))

    def polish(self, ds: dict, ipc: int) -> None:
        """Pixel DM (the same steps as `dm-pixel`) from a better start than a random subset: the herding subset,
        and each seed's refined generator set. Does the generator's set still add something once pixels move?"""
        data, teacher, cells, k = ds["data"], ds["teacher"], ds["cells"], ds["d"] / f"ipc{ipc}"
        out = self.pixel_dm(data, self.real_subset(ds, ipc, "herding"), k / "dm-pixel-herding")
        self.record(cells, ipc, "herding+dm-pixel", "-", self.evaluate(data, out, "herding+dm-pixel", ipc))
        for seed in self.preset["gan_seeds"]:
            ref = self.refined_row(cells, data, teacher, k, ipc, seed, "gan", self.gan(ds, seed))
            out = self.pixel_dm(data, ref, k / f"seed{seed}" / "dm-pixel-gan")
            self.record(cells, ipc, "gan+refine+dm-pixel", str(seed),
                        self.evaluate(data, out, "gan+refine+dm-pixel", ipc))

    def ablation(self, ds: dict, ipc: int) -> None:
        """Each selection mode alone (the preset's `selections`, default all), no refine, for every GAN seed."""
        k = ds["d"] / f"ipc{ipc}"
        for seed in self.preset["gan_seeds"]:
            for sel in self.preset.get("selections") or SELECTIONS:
                tag = row_name("gan", sel)
                out = self.sample(k, seed, "gan", self.gan(ds, seed), ds["teacher"], ipc, sel)
                self.record(ds["cells"], ipc, tag, str(seed), self.evaluate(ds["data"], out, tag, ipc))

    def truncation(self, ds: dict, ipc: int) -> None:
        """The generator's own sample with its noise truncated (`sample truncation=ψ`, BigGAN's trick): each ψ of
        the preset's `truncations` (null: untruncated) on the validation split for every seed, the ψ with the best
        mean over seeds chosen there, then only that ψ tested on the test split (row `gan+truncation`)."""
        if not self.preset.get("truncations"):
            return
        k, data = ds["d"] / f"ipc{ipc}", ds["data"]
        val = ds["cells"].setdefault("val", {}).setdefault(str(ipc), {})
        for psi in self.preset["truncations"]:
            tag = truncation_row(psi)
            for seed in self.preset["gan_seeds"]:
                out = self.sample(k, seed, "gan", self.gan(ds, seed), ds["teacher"], ipc, "none", psi)
                val.setdefault(tag, {"seeds": {}})["seeds"][str(seed)] = self.evaluate(data, out, tag, ipc, split="val")
                self.on_result()
        best = max(self.preset["truncations"],
                   key=lambda p: summarise(val[truncation_row(p)])["mean"])
        ds["cells"].setdefault("truncation", {})[str(ipc)] = best
        for seed in self.preset["gan_seeds"]:
            out = self.sample(k, seed, "gan", self.gan(ds, seed), ds["teacher"], ipc, "none", best)
            self.record(ds["cells"], ipc, "gan+truncation", str(seed), self.evaluate(data, out, "gan+truncation", ipc))

    def cross_arch(self, ds: dict, ipc: int) -> None:
        """Generalisation: the first seed's refined set against the real random subset and pixel DM, and the same
        seed's selected set before refine, so a gap on one architecture can be told apart as the generator's
        (already in the selected images) or refine's (made by matching through one embedding network)."""
        if not self.preset.get("cross_arch"):
            return
        k, seed = ds["d"] / f"ipc{ipc}", self.preset["gan_seeds"][0]
        for rname, src in (("random", k / "select-random"), ("dm-pixel", k / "dm-pixel"),
                           ("gan+confidence+coverage", k / f"seed{seed}" / "sample-gan+confidence+coverage"),
                           ("gan+refine", k / f"seed{seed}" / "refine-gan")):
            ds["cells"].setdefault("cross_arch", {}).setdefault(str(ipc), {})[rname] = self.evaluate(
                ds["data"], src, rname, ipc, self.preset["cross_arch"])
            self.on_result()

    def transfer(self, ds: dict, ipc: int) -> None:
        """The latent refine with each of the preset's `refine_variants` overrides (e.g. a list of embedding
        architectures) from the same selected set as `gan+refine`, every seed; each first seed's set on the
        `cross_arch` list."""
        data, k = ds["data"], ds["d"] / f"ipc{ipc}"
        for variant, overrides in (self.preset.get("refine_variants") or {}).items():
            for i, seed in enumerate(self.preset["gan_seeds"]):
                out = self.refined_row(ds["cells"], data, ds["teacher"], k, ipc, seed, "gan", self.gan(ds, seed),
                                       f"-{variant}", overrides)
                if i == 0 and self.preset.get("cross_arch"):
                    tag = VARIANT_PREFIX + variant
                    ds["cells"].setdefault("cross_arch", {}).setdefault(str(ipc), {})[tag] = self.evaluate(
                        data, out, tag, ipc, self.preset["cross_arch"])
                    self.on_result()

    def distilled(self, ds: dict, ipc: int) -> None:
        """The SKD-distilled generator and its GAN-only control at equal steps, per seed, selected and refined."""
        if not self.preset.get("with_distill"):
            return
        k = ds["d"] / f"ipc{ipc}"
        for seed in self.preset["gan_seeds"]:
            for loss in ("gan-only", "skd"):      # the loss mode names the generator's rows
                gpath = self.stage("distill", ds["d"] / f"seed{seed}" / f"distill-{loss}",
                                   {"dataset": ds["data"], "gan": self.gan(ds, seed), "teacher": ds["teacher"]},
                                   [f"loss={loss}", f"seed={seed}"])
                self.refined_row(ds["cells"], ds["data"], ds["teacher"], k, ipc, seed, loss, gpath)

    def run(self, phases: tuple[str, ...] = PHASES) -> None:
        """Phases in order of importance, each over every IPC and dataset, so a run stopped early has the rows
        that matter most on every dataset rather than every row of the first one."""
        sets = [self.dataset(name, where or {}) for name, where in self.preset["datasets"].items()]
        for phase in phases:
            for ipc in self.preset["ipc"]:
                for ds in sets:
                    getattr(self, phase)(ds, ipc)


def summarise(row: dict, arch: str = "convnet3") -> dict:
    """Mean ± std over seeds of per-seed means (real rows: over trials), plus the per-seed means."""
    per_seed = {s: statistics.fmean(a[arch]) for s, a in row["seeds"].items() if arch in a}
    if list(per_seed) == ["-"]:
        acc = row["seeds"]["-"][arch]
        return {"mean": statistics.fmean(acc), "std": statistics.pstdev(acc), "n": len(acc), "over": "trials",
                "per_seed": {}}
    vals = list(per_seed.values())
    return {"mean": statistics.fmean(vals), "std": statistics.pstdev(vals) if len(vals) > 1 else 0.0,
            "n": len(vals), "over": "GAN seeds", "per_seed": per_seed}


def paired(row: dict, control: dict) -> dict | None:
    """Mean ± std over seeds of (row − control) on the same GAN seed; None without a common seed."""
    a, b = summarise(row)["per_seed"], summarise(control)["per_seed"]
    diffs = [a[s] - b[s] for s in a if s in b]
    if not diffs:
        return None
    return {"mean": statistics.fmean(diffs), "std": statistics.pstdev(diffs) if len(diffs) > 1 else 0.0,
            "n": len(diffs), "per_seed": diffs}


def verdict(d: dict | None) -> str:
    """'no effect' when the paired difference is within its spread over seeds (or has one seed), as the
    project's rule for comparisons says; else the sign."""
    if d is None:
        return "—"
    if d["n"] < 2 or abs(d["mean"]) <= d["std"]:
        return "no effect"
    return "better" if d["mean"] > 0 else "worse"


def render(results: dict, preset: dict, command: str) -> str:
    name = preset["name"]
    lines = [f"<!-- fixed-set:{name} begin -->", f"## Preset `{name}`: fixed sets against real subsets", "",
             preset.get("description", "").strip(), "",
             "| | |", "|---|---|", f"| command | `{command}` |", f"| device | {results['device']} |",
             f"| torch | {results['torch']} |", f"| commit | `{results['commit']}` |", f"| date | {results['date']} |",
             f"| wall time of the last run | {results['wall_minutes']:.0f} min (stages reused from earlier runs "
             "are not counted) |", ""]
    for ds, cells in results["datasets"].items():
        lines.append(f"**{ds}** ({cells['data_note']}), strict protocol, ConvNet3, test accuracy (%); generator rows: "
                     "mean ± std over GAN seeds of each seed's mean over trials, per-seed means in brackets; "
                     "Δ random: the row's mean minus the random-real subset's:")
        lines.append("")
        ipcs = [k for k in cells if k not in NOT_IPC]
        if not ipcs:
            continue
        lines.append("| row | " + " | ".join(f"IPC {i}" for i in ipcs) + " |")
        lines.append("|---|" + "---:|" * len(ipcs))
        rows = row_order(list(dict.fromkeys(r for i in ipcs for r in cells[i])))
        variants = [r for r in rows if r.startswith(VARIANT_PREFIX)]
        for rname in rows:
            vals = []
            for i in ipcs:
                if rname not in cells[i]:
                    vals.append("—")
                    continue
                s = summarise(cells[i][rname])
                seeds = "" if not s["per_seed"] else " [" + ", ".join(f"{v:.1f}" for v in s["per_seed"].values()) + "]"
                delta = ""
                if rname != "random" and "random" in cells[i]:
                    delta = f"; Δ random {s['mean'] - summarise(cells[i]['random'])['mean']:+.1f}"
                vals.append(f"{s['mean']:.1f} ± {s['std']:.1f} ({s['n']} {s['over']}{delta}){seeds}")
            lines.append(f"| {rname} | " + " | ".join(vals) + " |")
        lines.append("")
        pairs = [(i, row, control, d) for row, control in PAIRED + [(v, "gan+refine") for v in variants] for i in ipcs
                 if row in cells[i] and control in cells[i] and (d := paired(cells[i][row], cells[i][control]))]
        for i, row, control, d in pairs:
            lines.append(f"- IPC {i}, {row} against {control} on the same GAN seed: {d['mean']:+.1f} ± "
                         f"{d['std']:.1f} (" + " / ".join(f"{v:+.1f}" for v in d["per_seed"]) + f"): {verdict(d)}")
        if pairs:
            lines.append("")
        for ipc, rows in (cells.get("val") or {}).items():
            chosen = (cells.get("truncation") or {}).get(ipc, "—")
            chosen = "null (untruncated)" if chosen is None else chosen
            lines.append(f"- IPC {ipc}, the own sample's noise truncation ψ on the **validation** split (mean ± std "
                         "over GAN seeds [per seed]; the best mean chosen, only it tested): " + "; ".join(
                             f"{r}: {s['mean']:.1f} ± {s['std']:.1f} [" + ", ".join(
                                 f"{v:.1f}" for v in s["per_seed"].values()) + "]"
                             for r, s in ((r, summarise(v)) for r, v in rows.items())) + f"; chosen ψ = {chosen}")
            lines.append("")
        for ipc, rows in (cells.get("cross_arch") or {}).items():
            lines += cross_arch_table(ds, int(ipc), rows)
    lines.append(f"<!-- fixed-set:{name} end -->")
    return "\n".join(lines) + "\n"


def cross_arch_table(dataset: str, ipc: int, rows: dict) -> list[str]:
    """The paper's Table 2 layout (one row per set, one column per architecture) plus the spread across
    architectures (best minus worst mean): a set that only suits ConvNet3 shows a wide spread. On CIFAR-10 at
    IPC 10 the paper's own rows follow, as reported (its protocol: fresh samples, best test checkpoint)."""
    from skdd.reproduce.paper import PAPER

    archs = list(next(iter(rows.values())))
    lines = [f"Cross-architecture, IPC {ipc} (generator rows: the first GAN seed only), mean ± std over trials; "
             "spread: best minus worst architecture's mean:", "",
             "| row | " + " | ".join(archs) + " | spread |", "|---|" + "---:|" * (len(archs) + 1)]
    for rname in row_order(list(rows)):
        accs = rows[rname]
        means = [statistics.fmean(accs[a]) for a in archs]
        lines.append(f"| {rname} | " + " | ".join(
            f"{m:.1f} ± {statistics.pstdev(accs[a]):.1f}" for m, a in zip(means, archs))
            + f" | {max(means) - min(means):.1f} |")
    if dataset == "cifar10" and ipc == 10:
        for method in ("skd", "dim-mse"):
            paper = PAPER["table2"][method]
            if all(a in paper for a in archs):
                vals = [paper[a][0] for a in archs]
                lines.append(f"| paper: {method} (reported) | " + " | ".join(
                    f"{paper[a][0]:.1f} ± {paper[a][1]:.1f}" for a in archs) + f" | {max(vals) - min(vals):.1f} |")
    lines.append("")
    return lines


def write_section(text: str, name: str, kind: str = "fixed-set", results: dict | None = None) -> None:
    """Replace (or append) the `<!-- kind:name begin/end -->` section of docs/results.md, and commit-ready beside it
    the numbers it was rendered from (`docs/results/<name>.json`): `runs/` is not versioned, so without the JSON a
    page could not be re-rendered or audited on another machine."""
    if results is not None:
        RESULTS_JSON.mkdir(exist_ok=True)
        (RESULTS_JSON / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    md = RESULTS_MD.read_text()
    begin, end = f"<!-- {kind}:{name} begin -->", f"<!-- {kind}:{name} end -->"
    if begin in md:
        md = md[:md.index(begin)] + text + md[md.index(end) + len(end) + 1:]
    else:
        md = md.rstrip("\n") + "\n\n" + text
    RESULTS_MD.write_text(md)


def committed_results(results_path: Path, name: str) -> Path:
    """What --render-only renders: the work folder's results, else the committed docs/results/<name>.json."""
    if results_path.is_file():
        return results_path
    if (RESULTS_JSON / f"{name}.json").is_file():
        return RESULTS_JSON / f"{name}.json"
    raise SystemExit(f"--render-only: neither {results_path} nor {RESULTS_JSON / f'{name}.json'} exists")


def run_and_save(runner: Runner, run, results: dict, results_path: Path, name: str, command: str) -> None:
    """`run()`, writing `results` (the runner's cells and wall times, the device, commit and command) to
    `results_path` after every evaluation, so a stopped run still reports every finished row."""
    import torch
    from reproduce import device_name   # the CPU's model name: 2-core machines here differ by 2x in speed

    t0 = time.perf_counter()
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()

    def save() -> None:
        results.update({"preset": name, "datasets": runner.datasets, "wall_seconds": runner.wall,
                        "wall_minutes": (time.perf_counter() - t0) / 60, "torch": torch.__version__,
                        "device": device_name("cuda" if torch.cuda.is_available() else "cpu"),
                        "commit": commit, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                        "command": command})
        results_path.write_text(json.dumps(results, indent=2) + "\n")

    runner.on_result = save
    run()
    save()


def read_preset(ap: argparse.ArgumentParser, path: str, known: set[str]) -> dict:
    """The preset file, refused in one line (argparse's exit 2) when it has a key the runner does not read: a
    renamed or misspelt key would otherwise be skipped in silence, hours into a run."""
    preset = yaml.safe_load(Path(path).read_text())
    if unknown := sorted(set(preset) - known):
        ap.error(f"{path}: unknown keys {unknown}; known: {', '.join(sorted(known))}")
    return preset


def read_fixed_set_preset(ap: argparse.ArgumentParser, path: str) -> dict:
    """`read_preset` with this runner's keys, plus the values it would otherwise meet only at their phase: a
    misspelt selection mode stops here, not hours in (the preset-validation tests read presets through this too)."""
    preset = read_preset(ap, path, PRESET_KEYS)
    if unknown := sorted(set(preset.get("selections") or ()) - set(SELECTIONS)):
        ap.error(f"{path}: selections: unknown {unknown}; known: {', '.join(SELECTIONS)}")
    return preset


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--render-only", action="store_true")
    ap.add_argument("--no-docs", action="store_true", help="do not touch docs/results.md")
    ap.add_argument("--phases", help=f"comma-separated subset of {','.join(PHASES)}, run in the order given")
    ap.add_argument("--ipc", help="comma-separated subset of the preset's IPC values")
    ap.add_argument("--datasets", help="comma-separated subset of the preset's datasets")
    args = ap.parse_args(argv)
    preset = read_fixed_set_preset(ap, args.preset)
    phases = tuple(args.phases.split(",")) if args.phases else PHASES
    if unknown := sorted(set(phases) - set(PHASES)):
        ap.error(f"--phases: unknown {unknown}; known: {', '.join(PHASES)}")
    if args.ipc:
        wanted = [int(i) for i in args.ipc.split(",")]
        if unknown := sorted(set(wanted) - set(preset["ipc"])):
            ap.error(f"--ipc: {unknown} not in the preset's {preset['ipc']}")
        preset["ipc"] = [i for i in preset["ipc"] if i in wanted]
    if args.datasets:
        wanted_ds = args.datasets.split(",")
        if unknown := sorted(set(wanted_ds) - set(preset["datasets"])):
            ap.error(f"--datasets: {unknown} not in the preset's {sorted(preset['datasets'])}")
        preset["datasets"] = {k: v for k, v in preset["datasets"].items() if k in wanted_ds}
    partial = bool(args.phases or args.ipc or args.datasets)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    results_path = work / "results.json"
    command = f"python benchmarks/fixed_set.py --preset {args.preset} --work {args.work}"
    if args.render_only:
        results = json.loads(committed_results(results_path, preset["name"]).read_text())
    else:
        results = {}
        runner = Runner(preset, work)
        if partial and results_path.is_file():              # keep the rows this run does not touch
            runner.datasets = json.loads(results_path.read_text()).get("datasets", {})
        run_and_save(runner, lambda: runner.run(phases), results, results_path, preset["name"], command)
    text = render(results, preset, command)
    print(text)
    if not args.no_docs:
        write_section(text, preset["name"], results=results)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
