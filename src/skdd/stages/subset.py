"""`skdd select`: a baseline subset of the real training set (random, herding or k-center) as a dataset artifact.

The subset is written in the Parquet schema of `ingest`/`sample` (train split only), so `evaluate` and `export`
treat a baseline exactly like a synthetic set. Selection follows ALGORITHM.md 5.1-5.3:

* `random`: `ipc` images per class uniformly without replacement (seeded);
* `herding` / `kcenter`: greedy selections per class on the penultimate-layer features (`model.embed`) of a
  `feature_arch` classifier trained on the FULL training set. The feature net is trained with the strict
  protocol's loop (DSA augmentation, SGD lr 0.01 momentum 0.9 wd 5e-4, lr x0.1 half-way) for `feature_epochs`
  epochs of the full set, seed `seed`. DC does not publish how long its feature ConvNet was trained; the default
  of 2 epochs keeps the stage to minutes on a 2-core CPU for MNIST (a ConvNet-3 is well past 95% MNIST test
  accuracy by then); raise it on a GPU. The selections themselves are deterministic given the features.

Output files: `train/part-*.parquet`, `grid.png` (one row per class), `selection.json` (the chosen indices into
the source's train split, class-major, in pick order) and the manifest, whose `dataset` block carries
`"baseline": method` and `"ipc"`; `metrics.feature_net_accuracy` is the feature net's test accuracy (or
train accuracy when the dataset has no test split), null for `random`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from skdd import lineage, storage
from skdd.augment import dsa_strategy_for
from skdd.config import as_dict, param, params_hash
from skdd.data.batches import Pixels
from skdd.data.dataset import ImageDataset
from skdd.data.parquet import write_shards
from skdd.device import DEVICES, prepare_module, resolve_device, seed_everything
from skdd.errors import SkddError
from skdd.evaluation.protocols import TrainConfig, train_strict
from skdd.evaluation.selection import METHODS, extract_features, select_per_class
from skdd.models import create_model, list_models
from skdd.stages.common import load_dataset
from skdd.stages.sample import save_grid


@dataclass
class SelectParams:
    method: str = param("random", choices=METHODS)
    ipc: int = param(10, ge=1, help="images per class")
    seed: int = param(0, ge=0, help="random: the draw; herding/kcenter: the feature net's training")
    feature_arch: str = param("convnet3", help="herding/kcenter feature extractor (a registered classifier)")
    feature_epochs: int = param(2, ge=1, help="epochs of feature-net training on the full training set")
    feature_width: int = param(128, ge=1, help="feature-net width (DC: 128)")
    feature_batch_size: int = param(256, ge=1)
    device: str = param("auto", choices=DEVICES)

    def check(self, section: str) -> None:
        known = list_models("classifier")
        if self.feature_arch not in known:
            raise SkddError(f"{section}.feature_arch: unknown architecture {self.feature_arch!r} "
                            f"(known: {', '.join(known)})")


def train_feature_net(params: SelectParams, train: ImageDataset, test: ImageDataset, pixels: Pixels,
                      dataset_name: str, device: torch.device) -> tuple[torch.nn.Module, float]:
    """A `feature_arch` classifier trained on the whole training set; returns (model in eval mode, test acc)."""
    cfg = TrainConfig(params.feature_arch, epochs=params.feature_epochs, batch_size=params.feature_batch_size,
                      augment=dsa_strategy_for(dataset_name), width=params.feature_width)
    final: dict = {}

    def keep_last(epoch: int, snap: dict) -> None:
        if epoch == cfg.epochs:
            final["model"] = {k: v.detach().clone() for k, v in snap["model"].items()}

    result = train_strict(cfg, train, test, pixels, device, seed=params.seed, on_epoch=keep_last,
                          desc=f"select[{params.feature_arch} features]")
    c, h, _ = train.shape
    model = create_model(params.feature_arch, in_channels=c, num_classes=train.num_classes, image_size=h,
                         width=params.feature_width)
    model = prepare_module(model, device)
    model.load_state_dict(final["model"])
    model.eval()
    return model, result["accuracy"]


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
    features, feature_acc = None, None
    if params.method != "random":
        pixels = Pixels(data.info["mean"], data.info["std"], device)
        test = data.test if data.test is not None else train
        model, feature_acc = train_feature_net(params, train, test, pixels, data.name, device)
        features = extract_features(model, train.images, pixels, device)
        del model
    idx = select_per_class(params.method, features, train.labels, params.ipc, params.seed,
                           classes=train.classes).cpu()
    subset = ImageDataset(images=train.images[idx].contiguous(), labels=train.labels[idx].contiguous(),
                          classes=list(train.classes))
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
                   "feature_net_accuracy": None if feature_acc is None else round(100.0 * feature_acc, 4),
                   "feature_net_tested_on": None if feature_acc is None else
                   ("test" if data.test is not None else "train")}
        return lineage.write_manifest(
            stage, kind="dataset", stage="select", params=as_dict(params), params_hash=params_hash(params),
            inputs=[lineage.input_record("dataset", inputs["dataset"], data.path)],
            metrics=metrics, extra={"dataset": info, "synthetic": False}, device=str(device))
