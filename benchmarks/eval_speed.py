"""Speed of one strict-protocol evaluation trial against a plain PyTorch loop doing the same work.

    python benchmarks/eval_speed.py --epochs 300 --device cpu
    python benchmarks/eval_speed.py --epochs 1000 --device cuda --repeats 5

Both sides: ConvNet-3 (`--width`, default 128) on an MNIST-shaped fixed set of IPC x 10 images (random uint8
pixels: speed does not depend on content), batch 256, SGD lr 0.01 momentum 0.9 wd 5e-4 with the lr x0.1
half-way, per-sample DSA augmentation (`color_crop_cutout_scale_rotate`, MNIST's), bf16 autocast and
channels_last on CUDA, and one eval-mode pass over a `--test-size` test set at the end.

* skdd: `train_strict` with the `evaluate` stage's per-epoch checkpoint callback (`EpochSaver`, saving every
  `--checkpoint-every` epochs into a temporary folder), i.e. what `skdd evaluate` runs per trial;
* plain: the textbook loop (randperm, index, augment, forward, CE, backward, step), no callback, no snapshot.

Each side is timed `--repeats` times, alternating, after one short warm-up of each; the medians are compared.
Prints one JSON object: wall seconds, train images/s of each side, ratio = skdd / plain (target <= 1.10), and
whether both reached the same test accuracy (on CPU they run the very same random draws, so they should).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from skdd.augment import STRATEGY_DIGITS, DiffAug
from skdd.checkpoint import Checkpointer
from skdd.data.batches import Pixels
from skdd.data.dataset import ImageDataset
from skdd.device import amp_on, autocast, prepare_module, resolve_device, seed_everything
from skdd.evaluation.protocols import LR_DECAY_FACTOR, TrainConfig, train_strict
from skdd.models import create_model
from skdd.stages.evaluate import EpochSaver

from _common import sync

MEAN, STD = [0.1307], [0.3081]


def fake(n: int, seed: int) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=g)
    return ImageDataset(images=images, labels=torch.arange(n) % 10, classes=[str(i) for i in range(10)])


def plain_trial(cfg: TrainConfig, train: ImageDataset, test: ImageDataset, pixels: Pixels, device: torch.device,
                seed: int) -> float:
    torch.manual_seed(seed)
    model = prepare_module(create_model(cfg.arch, in_channels=1, num_classes=10, image_size=28, width=cfg.width),
                           device)
    train, test = train.to(device), test.to(device)
    aug = DiffAug(cfg.augment, "dsa")
    layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format

    def sgd(lr: float) -> torch.optim.SGD:
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    opt = sgd(cfg.lr)
    n = len(train)
    model.train()
    for epoch in range(cfg.epochs):
        if epoch == cfg.epochs // 2 and epoch > 0:
            opt = sgd(cfg.lr * LR_DECAY_FACTOR)
        perm = torch.randperm(n, device=device)
        for b in range(0, n, cfg.batch_size):
            idx = perm[b:b + cfg.batch_size]
            x = aug(pixels.classifier(train.images[idx]), shared=False)
            with autocast(device, amp_on(device, cfg.amp)):
                logits = model(x.contiguous(memory_format=layout))
            loss = F.cross_entropy(logits.float(), train.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    with torch.no_grad():
        for b in range(0, len(test), 500):
            x = pixels.classifier(test.images[b:b + 500])
            with autocast(device, amp_on(device, cfg.amp)):
                logits = model(x.contiguous(memory_format=layout))
            correct += (logits.argmax(1) == test.labels[b:b + 500]).sum()
    return int(correct.item()) / len(test)


def skdd_trial(cfg: TrainConfig, train: ImageDataset, test: ImageDataset, pixels: Pixels, device: torch.device,
               seed: int, every: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        saver = EpochSaver(Checkpointer(Path(tmp) / "checkpoints", "bench"), every, 0, cfg.epochs, [])
        return train_strict(cfg, train, test, pixels, device, seed=seed, on_epoch=saver)["accuracy"]


def timed(fn, device: torch.device) -> tuple[float, float]:
    sync(device)
    t0 = time.perf_counter()
    acc = fn()
    sync(device)
    return time.perf_counter() - t0, acc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--device", default="auto")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--test-size", type=int, default=10000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--checkpoint-every", type=int, default=50, help="the evaluate stage's default")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    seed_everything(0, device)
    train, test = fake(10 * args.ipc, 1), fake(args.test_size, 2)
    pixels = Pixels(MEAN, STD, device)
    cfg = TrainConfig("convnet3", epochs=args.epochs, batch_size=args.batch_size, augment=STRATEGY_DIGITS,
                      width=args.width)
    warm = TrainConfig("convnet3", epochs=2, batch_size=args.batch_size, augment=STRATEGY_DIGITS, width=args.width)
    plain_trial(warm, train, test, pixels, device, 0)
    skdd_trial(warm, train, test, pixels, device, 0, args.checkpoint_every)
    plain_t, skdd_t, accs = [], [], set()
    for r in range(args.repeats):
        t, a = timed(lambda: plain_trial(cfg, train, test, pixels, device, r), device)
        plain_t.append(t)
        t, b = timed(lambda: skdd_trial(cfg, train, test, pixels, device, r, args.checkpoint_every), device)
        skdd_t.append(t)
        accs.add(a == b)
    images = args.epochs * len(train)
    plain_s, skdd_s = statistics.median(plain_t), statistics.median(skdd_t)
    print(json.dumps({
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(), "epochs": args.epochs, "width": args.width,
        "train_images": len(train), "test_images": len(test), "batch_size": args.batch_size,
        "checkpoint_every": args.checkpoint_every, "repeats": args.repeats,
        "plain_wall_s": round(plain_s, 3), "skdd_wall_s": round(skdd_s, 3),
        "plain_images_per_s": round(images / plain_s, 1), "skdd_images_per_s": round(images / skdd_s, 1),
        "plain_wall_all": [round(t, 3) for t in plain_t], "skdd_wall_all": [round(t, 3) for t in skdd_t],
        "ratio": round(skdd_s / plain_s, 4), "target": 1.10, "same_accuracy": accs == {True},
    }, indent=2))


if __name__ == "__main__":
    main()
