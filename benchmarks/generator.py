"""Generator recipes and SKD loss modes over GAN seeds: the GAN's own fixed IPC set, strict protocol.

    python benchmarks/generator.py --preset benchmarks/presets/cpu-generator.yaml --work runs/cpu-generator
    python benchmarks/generator.py --preset ... --work ... --datasets mnist     # one dataset of the preset
    python benchmarks/generator.py --preset ... --work ... --render-only        # re-write the results page only

What a user gets from the generator alone: `sample selection=none` (IPC images per class drawn at random from the
generator, EMA weights when the artifact has them), trained on under the strict protocol. Rows per dataset:

* `random`: a random real subset of the same size (the bar to clear);
* one row per `recipes` entry: pretrain with those overrides (e.g. `gan_loss`, `ema_decay`, `d_augment`), per GAN
  seed (the pretrain seed; every stage's own seed stays fixed, so seeds differ only by the GAN);
* one row per `skd_modes` entry: the `skd_recipe` generator distilled with those overrides (the GAN-only control,
  SKD at the paper's λ, ×100, balanced ...), per seed, with the per-seed paired difference against `control`;
  `lambda_x: k` in a mode means λ = k × the paper's λ for each dataset; `paired_with: <mode>` pairs the mode
  with that mode instead of the control (e.g. the trajectories pool against the online one at the same λ); a
  mode with `pool_source: trajectories` reads the dataset's `pool` stage artifact (the preset's `pool` section
  over the base params), made once per dataset.

Order: recipes first (in the preset's order, every dataset and seed of one recipe before the next), then the loss
modes, so a stopped run has complete seed sets for the rows that matter most. Stages are reused when their output's
manifest reads (re-running resumes; stages resume from their checkpoints). `docs/results.md` gets the section
between `<!-- generator:<name> begin -->` and `... end -->`; `<work>/results.json` holds every number and each
stage's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
from pathlib import Path

from fixed_set import (STAGE_SECTIONS, Runner, _ov, committed_results, paired, read_preset, run_and_save, summarise,
                       verdict, write_section)

PRESET_KEYS = {"name", "description", "base", "datasets", "ipc", "gan_seeds", "recipes", "skd_recipe", "skd_modes",
               "control", "pool", *STAGE_SECTIONS}


class GeneratorRunner(Runner):
    def recipe_gan(self, ds: dict, recipe: str, seed: int) -> Path:
        return self.stage("pretrain", ds["d"] / recipe / f"seed{seed}" / "gan",
                          {"dataset": ds["data"], "teacher": ds["teacher"]},
                          _ov(self.preset["recipes"][recipe]) + [f"seed={seed}"])

    def own_set(self, ds: dict, row: str, folder: Path, gan: Path, seed: int) -> None:
        """The generator's own IPC set (no selection), evaluated; recorded as `row` for `seed`."""
        ipc = self.preset["ipc"]
        sample = self.stage("sample", folder / f"sample-ipc{ipc}", {"gan": gan, "teacher": ds["teacher"]},
                            [f"ipc={ipc}", "selection=none", "candidates_per_class=null"])
        self.record(ds["cells"], ipc, row, str(seed), self.evaluate(ds["data"], sample, row, ipc))

    def run(self, only: list[str] | None = None) -> None:
        names = [n for n in self.preset["datasets"] if not only or n in only]
        sets = [self.dataset(n, self.preset["datasets"][n] or {}) for n in names]
        ipc = self.preset["ipc"]
        for ds in sets:
            out = self.stage("select", ds["d"] / f"select-random-ipc{ipc}", {"dataset": ds["data"],
                                                                          "teacher": ds["teacher"]},
                             ["method=random", f"ipc={ipc}"])
            self.record(ds["cells"], ipc, "random", "-", self.evaluate(ds["data"], out, "random", ipc))
        for recipe in self.preset["recipes"]:
            for ds in sets:
                for seed in self.preset["gan_seeds"]:
                    gan = self.recipe_gan(ds, recipe, seed)
                    self.own_set(ds, recipe, gan.parent, gan, seed)
        from skdd.stages.distill import default_lambda

        base = self.preset.get("skd_recipe")
        for mode, overrides in (self.preset.get("skd_modes") or {}).items():
            overrides = {k: v for k, v in overrides.items() if k != "paired_with"}
            for name, ds in zip(names, sets):
                if "lambda_x" in overrides:   # a multiple of the paper's λ for this dataset
                    overrides = {k: v for k, v in overrides.items() if k != "lambda_x"} | {
                        "lambda_skd": overrides["lambda_x"] * default_lambda(overrides.get("loss", "skd"), name)}
                inputs = {"dataset": ds["data"], "teacher": ds["teacher"]}
                if overrides.get("pool_source") == "trajectories":   # the dataset's recorded pool, made once
                    inputs["pool"] = self.stage("pool", ds["d"] / "pool", {"dataset": ds["data"]},
                                                _ov(self.preset.get("pool")))
                for seed in self.preset["gan_seeds"]:
                    folder = ds["d"] / base / f"seed{seed}" / f"distill-{mode}"
                    gan = self.stage("distill", folder / "gan", {**inputs, "gan": self.recipe_gan(ds, base, seed)},
                                     _ov(overrides) + [f"seed={seed}"])
                    self.own_set(ds, f"{base} → {mode}", folder, gan, seed)


def render(results: dict, preset: dict, command: str) -> str:
    name, ipc = preset["name"], str(preset["ipc"])
    lines = [f"<!-- generator:{name} begin -->", f"## Preset `{name}`: generator recipes and SKD loss modes", "",
             preset.get("description", "").strip(), "",
             "| | |", "|---|---|", f"| command | `{command}` |", f"| device | {results['device']} |",
             f"| torch | {results['torch']} |", f"| commit | `{results['commit']}` |", f"| date | {results['date']} |",
             f"| wall time of the last run | {results['wall_minutes']:.0f} min (stages reused from earlier runs "
             "are not counted) |", ""]
    control = f"{preset.get('skd_recipe')} → {preset.get('control')}"
    for ds, cells in results["datasets"].items():
        rows = cells.get(ipc, {})
        if not rows:
            continue
        lines += [f"**{ds}** ({cells['data_note']}), IPC {ipc}, the generator's own set (no selection), strict "
                  "protocol, ConvNet3, test accuracy (%): mean ± std over GAN seeds of each seed's mean over trials "
                  "[per seed]; paired Δ: per-seed difference against the row named, mean ± std over seeds, and "
                  "the verdict ('no effect' when |mean| ≤ std):", "",
                  "| row | accuracy | Δ random | paired Δ | verdict | median min per seed (pretrain / distill) |",
                  "|---|---:|---:|---:|---|---:|"]
        rand = summarise(rows["random"])["mean"] if "random" in rows else None
        first = next((r for r in preset["recipes"] if r in rows), None)
        base = preset.get("skd_recipe")
        order = ["random", *preset["recipes"], *(f"{base} → {m}" for m in preset.get("skd_modes") or {})]
        for rname in [r for r in order if r in rows]:
            row = rows[rname]
            s = summarise(row)
            seeds = "" if not s["per_seed"] else " [" + ", ".join(f"{v:.1f}" for v in s["per_seed"].values()) + "]"
            acc = f"{s['mean']:.1f} ± {s['std']:.1f} ({s['n']} {s['over']}){seeds}"
            d_rand = "" if rand is None or rname == "random" else f"{s['mean'] - rand:+.1f}"
            ref = None if rname == "random" or rname == first else control if "→" in rname else first
            paired_with = (preset.get("skd_modes") or {}).get(rname.split(" → ")[-1], {}).get("paired_with") \
                if "→" in rname else None
            ref = f"{base} → {paired_with}" if paired_with else ref
            d = paired(row, rows[ref]) if ref and ref in rows and rname != ref else None
            d_txt = "" if d is None else f"{d['mean']:+.1f} ± {d['std']:.1f} vs {ref}"
            lines.append(f"| {rname} | {acc} | {d_rand} | {d_txt} | {verdict(d) if d else ''} | "
                         f"{minutes(results, ds, rname, preset)} |")
        lines.append("")
    lines.append(f"<!-- generator:{name} end -->")
    return "\n".join(lines) + "\n"


def minutes(results: dict, ds: str, rname: str, preset: dict) -> str:
    """Median wall minutes over seeds of the row's training stage (pretrain for recipes, distill for loss modes):
    the median, so one stage that shared the machine with other work does not set the figure."""
    if "→" in rname:
        base, mode = rname.split(" → ")
        stage = re.compile(rf"{re.escape(ds)}/{re.escape(base)}/seed[^/]+/distill-{re.escape(mode)}/gan")
    elif rname in preset["recipes"]:
        stage = re.compile(rf"{re.escape(ds)}/{re.escape(rname)}/seed[^/]+/gan")   # pretrain, not its distills
    else:
        return ""
    walls = [w for k, w in results["wall_seconds"].items() if stage.fullmatch(k)]
    return f"{statistics.median(walls) / 60:.1f}" if walls else ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--datasets", type=lambda text: text.split(","),
                    help="comma-separated: run only these of the preset's datasets (earlier results stay)")
    ap.add_argument("--render-only", action="store_true")
    ap.add_argument("--no-docs", action="store_true", help="do not touch docs/results.md")
    args = ap.parse_args(argv)
    preset = read_preset(ap, args.preset, PRESET_KEYS)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    results_path = work / "results.json"
    command = f"python benchmarks/generator.py --preset {args.preset} --work {args.work}"
    if args.render_only:
        results = json.loads(committed_results(results_path, preset["name"]).read_text())
    else:
        previous = json.loads(results_path.read_text()) if results_path.is_file() else {}
        results = dict(previous)
        runner = GeneratorRunner(preset, work)
        runner.datasets.update({k: v for k, v in previous.get("datasets", {}).items()
                                if args.datasets and k not in args.datasets})
        runner.wall.update(previous.get("wall_seconds", {}))
        run_and_save(runner, lambda: runner.run(args.datasets), results, results_path, preset["name"], command)
    text = render(results, preset, command)
    print(text)
    if not args.no_docs:
        write_section(text, preset["name"], kind="generator", results=results)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
