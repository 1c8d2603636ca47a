"""Throughput of pretrain and distill steps: images/s, ms/step, peak memory, and the share of a distill
step spent outside model forward/backward (batch indexing, pixel conversion, augmentation).

The overhead is measured by running the same steps a second time with those parts replaced by
precomputed tensors (identity augmentation, fixed batch); the difference is what they cost.

    python benchmarks/throughput.py --dataset mnist --g-width 32 --d-width 32 --pool-width 16 --steps 10
"""

from __future__ import annotations

import argparse
import contextlib
import json
from unittest import mock

import torch

from skdd.augment import DiffAug
from skdd.config import from_dict
from skdd.data.batches import EpochBatcher, Pixels
from skdd.data.dataset import ImageDataset
from skdd.device import amp_on, prepare_module, resolve_device, seed_everything
from skdd.gan_artifact import GanSpec
from skdd.stages.distill import DistillParams, Distiller
from skdd.adversarial import gan_step

from _common import distill_images_per_step, peak_memory_mb, timed

SHAPES = {"mnist": (1, 28), "fashion-mnist": (1, 28), "cifar10": (3, 32)}


def fake_dataset(name: str, n: int, device) -> ImageDataset:
    c, s = SHAPES[name]
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, c, s, s), dtype=torch.uint8, generator=g)
    return ImageDataset(images=images, labels=torch.arange(n) % 10, classes=[str(i) for i in range(10)]).to(device)


def build(args, device):
    c, s = SHAPES[args.dataset]
    spec = GanSpec(in_channels=c, image_size=s, num_classes=10, g_width=args.g_width, d_width=args.d_width,
                   z_dim=100, conditioning="overwrite", classes=[str(i) for i in range(10)], dataset=args.dataset,
                   mean=[0.5] * c, std=[0.25] * c)
    g, d = spec.build()
    g, d = prepare_module(g, device), prepare_module(d, device)
    opt_g = torch.optim.Adam(g.parameters(), lr=1e-4, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(d.parameters(), lr=1e-4, betas=(0.0, 0.9))
    return spec, g, d, opt_g, opt_d


@contextlib.contextmanager
def stripped(distiller: Distiller):
    """Replace batch sampling, pixel conversion and augmentation by precomputed tensors."""
    idx = distiller.batcher.next()
    pidx = distiller.pool_batcher.next()
    fixed_gan = distiller.pixels.gan(distiller.train.images[idx])
    fixed_cls = distiller.pixels.classifier(distiller.train.images[pidx])
    with mock.patch.object(EpochBatcher, "next", lambda self: idx if self is distiller.batcher else pidx), \
            mock.patch.object(Pixels, "gan", lambda self, u8: fixed_gan), \
            mock.patch.object(Pixels, "classifier", lambda self, u8: fixed_cls[: u8.shape[0]]), \
            mock.patch.object(DiffAug, "__call__", lambda self, x, shared=False: x), \
            mock.patch.object(DiffAug, "pair", lambda self, a, b, shared=True: (a, b)):
        yield


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist", choices=sorted(SHAPES))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--g-width", type=int, default=32)
    ap.add_argument("--d-width", type=int, default=32)
    ap.add_argument("--pool-width", type=int, default=16)
    ap.add_argument("--pool", default="convnet3,resnet10,resnet18")
    ap.add_argument("--pool-steps", type=int, default=16)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--pretrain-batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3, help="alternating full/stripped timings, fastest kept")
    ap.add_argument("--no-amp", action="store_true")
    args = ap.parse_args()
    device = resolve_device(args.device)
    seed_everything(0, device)
    amp = amp_on(device, not args.no_amp)
    train = fake_dataset(args.dataset, 2048, device)
    results = {**vars(args), "device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
               "amp_bf16": amp}

    spec, g, d, opt_g, opt_d = build(args, device)
    pixels = Pixels(spec.mean, spec.std, device)
    batcher = EpochBatcher(len(train), args.pretrain_batch, device)

    def pretrain_step():
        i = batcher.next()
        gan_step(g, d, opt_g, opt_d, pixels.gan(train.images[i]), train.labels[i], spec, 10.0, device, amp)

    t = timed(pretrain_step, args.steps, device)
    results["pretrain"] = {"ms_per_step": round(t * 1e3, 1), "images_per_s": round(args.pretrain_batch / t, 1)}

    for arch in args.pool.split(","):
        params = from_dict(DistillParams, {"batch_size": args.batch, "pool": [arch], "pool_width": args.pool_width,
                                           "pool_steps": args.pool_steps, "amp": amp}, "distill")
        distiller = Distiller(params, spec, g, d, opt_g, opt_d, train, device, lam=0.01)
        fulls, bares = [], []
        for _ in range(args.repeats):   # alternate and keep the fastest of each: CPU timings are noisy
            fulls.append(timed(distiller.step, args.steps, device))
            with stripped(distiller):
                bares.append(timed(distiller.step, args.steps, device))
        full, bare = min(fulls), min(bares)
        # images through a model per step: pool training + real/syn matching + G and D passes
        images = distill_images_per_step(args.batch, args.pool_steps)
        results[f"distill[{arch}]"] = {
            "ms_per_step": round(full * 1e3, 1), "images_per_s": round(images / full, 1),
            "ms_per_step_models_only": round(bare * 1e3, 1),
            "overhead_fraction": round(max(full - bare, 0.0) / full, 4)}
    results["peak_memory_mb"] = round(peak_memory_mb(device), 1)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
