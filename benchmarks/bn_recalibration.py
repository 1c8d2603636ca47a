"""Does a fixed set lose on a BatchNorm network because of its feature statistics? A diagnostic.

    python benchmarks/bn_recalibration.py --data runs/cpu-cifar10/cifar10/dataset \
        --set selected=runs/cpu-cifar10/cifar10/ipc10/seed3407/sample-gan+confidence+coverage \
        --set refined=runs/cpu-cifar10/cifar10/ipc10/seed3407/refine-gan --arch resnet18 --trials 2

A BatchNorm network trained on a fixed set normalises the test images with running statistics collected on
the (augmented) synthetic images. If a set's images drive the network's features to other statistics than real
images do (something an instance-norm embedding like ConvNet3's cannot see, so latent refine through it is free
to change them), the trained network is right about the classes but mis-normalises real test images. This
trains `--arch` on each set with the strict protocol and tests the final model three ways:

* `as_trained`: the running statistics training left (the protocol's number);
* `bn_on_set`: running statistics re-estimated on the set itself without augmentation (separates the
  augmentation's share of the mismatch);
* `bn_on_real`: re-estimated on `--real-images` real training images (never test or val images).

A gain of `bn_on_real` over `as_trained` that is much larger for one set than for another says that set's
loss is (partly) a statistics mismatch, and a refine objective should match feature statistics as well as class
means. Prints one JSON object; a diagnostic, not a selection: nothing here is chosen on the test split.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from torch import nn

from skdd.augment import dsa_strategy_for
from skdd.data.batches import Pixels
from skdd.device import resolve_device, seed_everything
from skdd.evaluation.protocols import TrainConfig, _build_model, evaluate_accuracy, train_strict
from skdd.stages.common import load_dataset


@torch.no_grad()
def recalibrate(model: nn.Module, images: torch.Tensor, pixels: Pixels, batch: int = 250) -> None:
    """Replace every BatchNorm's running statistics by their plain average over `images` (uint8, no augmentation)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None   # cumulative average over all batches
    model.train()
    for start in range(0, images.shape[0], batch):
        model(pixels.classifier(images[start:start + batch]))
    model.eval()


def trial(cfg: TrainConfig, train, test, real_images: torch.Tensor, pixels: Pixels, device, seed: int) -> dict:
    final: dict = {}

    def keep(epoch: int, snap: dict) -> None:
        if epoch == cfg.epochs:
            final["model"] = {k: v.detach().clone() for k, v in snap["model"].items()}

    result = train_strict(cfg, train, test, pixels, device, seed=seed, on_epoch=keep)
    model = _build_model(cfg, train.shape, train.num_classes, seed, device)
    model.load_state_dict(final["model"])
    out = {"as_trained": evaluate_accuracy(model, test, pixels, device)}
    assert abs(out["as_trained"] - result["accuracy"]) < 1e-9, "the rebuilt model is not the trained one"
    recalibrate(model, train.images.to(device), pixels)
    out["bn_on_set"] = evaluate_accuracy(model, test, pixels, device)
    recalibrate(model, real_images.to(device), pixels)
    out["bn_on_real"] = evaluate_accuracy(model, test, pixels, device)
    return {k: 100 * v for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="the real dataset artifact (its train and test splits)")
    ap.add_argument("--set", action="append", required=True, metavar="NAME=PATH", help="a fixed set (repeatable)")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--trials", type=int, default=2)
    ap.add_argument("--real-images", type=int, default=5000)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = resolve_device(args.device)
    real = load_dataset(args.data, splits=("train", "test"))
    pixels = Pixels(real.info["mean"], real.info["std"], device)
    seed_everything(0, device)
    pick = torch.randperm(len(real.train))[:args.real_images]
    real_images = real.train.images[pick]
    cfg = TrainConfig(arch=args.arch, epochs=args.epochs, width=args.width, augment=dsa_strategy_for(real.name))
    report: dict = {"arch": args.arch, "epochs": args.epochs, "trials": args.trials, "device": str(device),
                    "real_images": args.real_images, "sets": {}}
    for spec in args.set:
        name, _, path = spec.partition("=")
        train = load_dataset(path, splits=("train",)).train
        runs = [trial(cfg, train, real.test, real_images, pixels, device, seed) for seed in range(args.trials)]
        report["sets"][name] = {"path": path, **{k: {"mean": round(statistics.fmean(r[k] for r in runs), 2),
                                                     "trials": [round(r[k], 2) for r in runs]} for k in runs[0]}}
        print(json.dumps({name: report["sets"][name]}), flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
