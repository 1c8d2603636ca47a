"""`skdd select`: a baseline subset of the real training set (random, herding or k-center) as a dataset artifact.

The subset is written in the Parquet schema of `ingest`/`sample` (train split only), so `evaluate` and `export`
treat a baseline exactly like a synthetic set. Selection follows docs/method.md §2.4:

* `random`: `ipc` images per class uniformly without replacement (seeded);
* `herding` / `kcenter`: greedy selections per class on the penultimate-layer features (`model.embed`) of the
  `teacher` artifact (`skdd teacher`: a classifier trained once on the training split, shared with `sample`'s
  selection, and recorded as this artifact's parent). The selections are deterministic given the features.

Output files: `train/part-*.parquet`, `grid.png` (one row per class), `selection.json` (the chosen indices into
the source's train split, class-major, in pick order) and the manifest, whose `dataset` block carries
`"baseline": method` and `"ipc"`; `metrics.teacher_val_accuracy` is the teacher's validation accuracy, null for
`random`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


from skdd import lineage, storage
from skdd.config import as_dict, param, params_hash
from skdd.data.parquet import write_shards
from skdd.device import DEVICES, resolve_device, seed_everything
from skdd.errors import SkddError
from skdd.evaluation.selection import METHODS, select_per_class
from skdd.stages.common import load_dataset
from skdd.stages.sample import save_grid


@dataclass
class SelectParams:
    method: str = param("random", choices=METHODS)
    ipc: int = param(10, ge=1, help="images per class")
    seed: int = param(0, ge=0, help="random: the draw (herding and k-center are deterministic)")
    device: str = param("auto", choices=DEVICES)


def run(params: SelectParams, inputs: dict[str, str], output: str) -> dict:
    device = resolve_device(params.device)
    seed_everything(params.seed, device)
    data = load_dataset(inputs["dataset"])
    train = data.train
    counts = train.class_counts()
    short = [i for i, n in enumerate(counts) if n < params.ipc]
    if short:
        raise SkddError(f"select.ipc: {params.ipc} images per class, but class {train.classes[short[0]]!r} of "
                        f"{data.name} has only {counts[short[0]]}")
    features, teacher, records = None, None, [lineage.input_record("dataset", inputs["dataset"], data.path)]
    if params.method != "random":
        if not inputs.get("teacher"):
            raise SkddError(f"select.method: {params.method!r} needs a teacher artifact (--teacher)")
        from skdd.stages.teacher import check_teacher_fits, load_teacher

        teacher = load_teacher(inputs["teacher"], device)
        check_teacher_fits(teacher, train.shape, train.num_classes, f"dataset {data.path}")
        features = teacher.features_and_probs(train.images)[0]
        records.append(lineage.input_record("teacher", inputs["teacher"], teacher.path))
    idx = select_per_class(params.method, features, train.labels, params.ipc, params.seed,
                           classes=train.classes).cpu()
    subset = train.subset(idx)
    with storage.staged_output(output) as stage:
        write_shards(subset, stage / "train", split="train")
        save_grid(subset, params.ipc, stage / "grid.png")
        (stage / "selection.json").write_text(json.dumps(
            {"method": params.method, "ipc": params.ipc, "source_split": "train",
             "indices": [int(i) for i in idx.tolist()]}) + "\n")
        info = {"name": f"{data.name}-{params.method}", "classes": list(train.classes), "shape": list(subset.shape),
                "num_classes": subset.num_classes, "counts": {"train": len(subset)},
                "class_counts": {"train": subset.class_counts()}, "mean": data.info["mean"],
                "std": data.info["std"], "source_dataset": data.name, "ipc": params.ipc, "baseline": params.method}
        metrics = {"images": len(subset),
                   "teacher_val_accuracy": None if teacher is None else teacher.manifest["metrics"].get("val_accuracy")}
        return lineage.write_manifest(
            stage, kind="dataset", stage="select", params=as_dict(params), params_hash=params_hash(params),
            inputs=records, metrics=metrics, extra={"dataset": info, "synthetic": False}, device=str(device))
