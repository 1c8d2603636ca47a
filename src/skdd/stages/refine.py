"""`skdd refine` (beyond the paper): optimise a fixed synthetic set by distribution matching.

`space: latent` optimises the set's latent codes through the FROZEN generator (GLaD / IT-GAN's idea with DM's
loss, `skdd.matching`): every image stays an output of the generator, so the set keeps the generator's prior
while its class statistics move towards the real data's. `space: pixel` optimises the pixels themselves from
the input set (DM itself when the input is a random real subset: the fixed-set anchor). The same loop, loss,
augmentation and random embedding networks serve both, so the two rows differ only in what is optimised.

Inputs: `dataset` (the real training split: the only data matched against; never val or test), `synthetic`
(the set to start from: `sample`'s output with its `latents.safetensors` for latent space, any dataset
artifact for pixel space) and, for latent space, `gan` (the generator that made it). Output: a dataset
artifact in the usual schema, plus `latents.safetensors` (latent space) and `curves.csv` (the DM loss).
Checkpointed every `checkpoint_every` steps; re-running resumes. `steps: 0` writes the input set unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from safetensors.torch import load_file
from torch import nn

from skdd import checkpoint as ckpt_mod
from skdd import lineage, storage
from skdd.augment import DiffAug, dsa_strategy_for
from skdd.config import as_dict, param, params_hash
from skdd.data.batches import Pixels
from skdd.data.dataset import ImageDataset
from skdd.data.parquet import write_shards
from skdd.device import DEVICES, prepare_module, resolve_device, seed_everything
from skdd.errors import SkddError
from skdd.gan_artifact import load_sampling_generator
from skdd.matching import dm_loss
from skdd.models import check_classifier_param, create_model
from skdd.stages.common import load_dataset, open_input
from skdd.stages.curves import write_curves
from skdd.stages.loop import run_steps
from skdd.stages.sample import LATENTS_FILE, save_grid, save_latents

SPACES = ("latent", "pixel")


@dataclass
class RefineParams:
    space: str = param("latent", choices=SPACES, help="latent: through the frozen generator; pixel: DM on pixels")
    steps: int = param(300, ge=0, help="0: the input set, unchanged")
    lr: float | None = param(None, gt=0, help="null: 0.05 (latent, Adam) or 0.1 (pixel in [0, 1], SGD momentum 0.5)")
    real_per_class: int = param(64, ge=1, help="real images per class in each step's batch (DM: 256)")
    embed_arch: str | list[str] = param("convnet3", help="the randomly initialised embedding network, new every "
                                        "step; a list: one drawn per step (sets that transfer across architectures)")
    embed_width: int = param(64, ge=1, help="DM: 128")
    loss_scale: str = param("absolute", choices=("absolute", "relative"),
                            help="relative: the DM loss over the real class means' squared norm, so every network "
                                 "in an embed_arch list weighs alike (absolute: DM's)")
    attention: float = param(0.0, ge=0, help="weight of DataDAM's spatial attention matching over the embedding "
                             "network's blocks, added to DM's loss (0: DM alone)")
    augment: str | None = param(None, help="DSA strategy; null: the dataset's (no flip for digits)")
    seed: int = param(0, ge=0)
    device: str = param("auto", choices=DEVICES)
    checkpoint_every: int = param(100, ge=1)
    log_every: int = param(25, ge=1)

    def check(self, section: str) -> None:
        archs = [self.embed_arch] if isinstance(self.embed_arch, str) else self.embed_arch
        if not archs:
            raise SkddError(f"{section}.embed_arch: name at least one architecture")
        for i, arch in enumerate(archs):
            check_classifier_param(f"{section}.embed_arch" + ("" if isinstance(self.embed_arch, str) else f"[{i}]"),
                                   arch)
        if self.augment is not None:
            DiffAug.for_param(f"{section}.augment", self.augment)


class _Codes(nn.Module):
    """The optimised tensor as a module, so the checkpoint loop saves it like any weights."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = nn.Parameter(value.clone())


class Refiner:
    """One DM step at a time over a fixed set (latent codes through G, or pixels); `run` adds the artifact."""

    def __init__(self, params: RefineParams, real: ImageDataset, init: torch.Tensor, labels: torch.Tensor,
                 pixels: Pixels, device: torch.device, generator: nn.Module | None, augment: str):
        self.params, self.real, self.labels, self.pixels, self.device = params, real, labels.to(device), pixels, device
        self.g = generator
        self.codes = _Codes(init.to(device))
        if generator is not None:
            self.opt = torch.optim.Adam(self.codes.parameters(), lr=params.lr or 0.05)
        else:
            self.opt = torch.optim.SGD(self.codes.parameters(), lr=params.lr or 0.1, momentum=0.5)
        self.aug = DiffAug(augment, "dsa")
        self.num_classes = real.num_classes
        self.by_class = [torch.nonzero(real.labels == c).flatten().to(device) for c in range(self.num_classes)]
        c, h, _ = real.shape
        self.shape = (c, h)

    def images(self) -> torch.Tensor:
        """The current set as classifier input (dataset mean/std), differentiable w.r.t. the codes."""
        if self.g is not None:
            return self.pixels.classifier_from_gan(self.g(self.codes.value, self.labels).float())
        return self.pixels.normalize(self.codes.value)

    def images_u8(self) -> torch.Tensor:
        with torch.no_grad():
            if self.g is not None:
                return Pixels.gan_to_u8(self.g(self.codes.value, self.labels)).cpu()
            return (self.codes.value.clamp(0, 1) * 255).round().to(torch.uint8).cpu()

    def embed_arch(self) -> str:
        """This step's embedding architecture. One name draws nothing, so a single-architecture run's random stream
        (and every set refined before lists existed) is unchanged; a list draws from the checkpointed RNG, so a
        resumed run draws the same sequence."""
        archs = self.params.embed_arch
        if isinstance(archs, str):
            return archs
        return archs[int(torch.randint(len(archs), (1,)))]

    def step(self) -> dict:
        p = self.params
        arch = self.embed_arch()
        picks = [idx[torch.randint(idx.numel(), (p.real_per_class,), device=self.device)] for idx in self.by_class]
        real_idx = torch.cat(picks)
        real = self.pixels.classifier(self.real.images[real_idx])
        c, h = self.shape
        embed = create_model(arch, in_channels=c, num_classes=self.num_classes, image_size=h,
                             width=p.embed_width).to(self.device).requires_grad_(False)
        loss = dm_loss(embed.embed, real, self.real.labels[real_idx], self.images(), self.labels, self.num_classes,
                       self.aug, relative=p.loss_scale == "relative", attention=p.attention, blocks=embed)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.g is None:
            with torch.no_grad():
                self.codes.value.clamp_(0, 1)   # pixels stay images: projected gradient descent
        return {"loss_dm": float(loss.detach())}

    def modules(self) -> dict:
        return {"codes": self.codes}

    def optimizers(self) -> dict:
        return {"codes": self.opt}

    def state_tensors(self) -> dict:
        return {}

    def meta(self) -> dict:
        return {}

    def resume(self, ckpt) -> None:
        ckpt_mod.restore(ckpt, self.modules(), self.optimizers())


def _read_latents(path, ds: ImageDataset) -> torch.Tensor:
    file = path / LATENTS_FILE
    if not file.is_file():
        raise SkddError(f"{path}: refine.space latent needs the {LATENTS_FILE} that `skdd sample` writes; "
                        "this set has none (use space: pixel)")
    tensors = load_file(str(file))
    z, labels = tensors.get("z"), tensors.get("labels")
    if z is None or labels is None or z.shape[0] != len(ds) or not torch.equal(labels, ds.labels):
        raise SkddError(f"{file}: latents do not match the set's {len(ds)} images and labels")
    return z


def run(params: RefineParams, inputs: dict[str, str], output: str) -> dict:
    device = resolve_device(params.device)
    seed_everything(params.seed, device)
    real = load_dataset(inputs["dataset"], splits=("train",))
    syn = load_dataset(inputs["synthetic"], splits=("train",))
    init_set = syn.train
    if init_set.shape != real.train.shape or init_set.num_classes != real.train.num_classes:
        raise SkddError(f"{syn.path}: set of {init_set.shape}, {init_set.num_classes} classes does not fit dataset "
                        f"{real.path} ({real.train.shape}, {real.train.num_classes} classes)")
    ipc = syn.info.get("ipc")
    records = [lineage.input_record("dataset", inputs["dataset"], real.path),
               lineage.input_record("synthetic", inputs["synthetic"], syn.path)]
    g, spec_info, weights = None, None, None
    pixels = Pixels(real.info["mean"], real.info["std"], device)
    if params.space == "latent":
        if not inputs.get("gan"):
            raise SkddError("refine.space: latent needs the generator that made the set (--gan)")
        gan_path, _ = open_input(inputs["gan"], "gan")
        spec, g, weights = load_sampling_generator(gan_path, device)
        g = prepare_module(g, device).eval().requires_grad_(False)
        if (spec.in_channels, spec.image_size, spec.image_size) != tuple(real.train.shape):
            raise SkddError(f"{gan_path}: generator makes {spec.in_channels}x{spec.image_size}x{spec.image_size} "
                            f"images; dataset {real.path} has {real.train.shape}")
        init = _read_latents(syn.path, init_set)
        records.append(lineage.input_record("gan", inputs["gan"], gan_path))
        spec_info = spec
    else:
        init = init_set.images.float() / 255.0
    augment = params.augment if params.augment is not None else dsa_strategy_for(real.name)
    refiner = Refiner(params, real.train.to(device), init, init_set.labels, pixels, device, g, augment)
    phash = params_hash(params)
    with storage.staged_output(output) as stage:
        curves, elapsed = [], 0.0
        if params.steps > 0:
            curves, elapsed = run_steps(refiner, name=f"refine[{params.space}]",
                                        ckpts=storage.checkpointer(output, lineage.run_key(phash, records)),
                                        steps=params.steps, log_every=params.log_every,
                                        checkpoint_every=params.checkpoint_every,
                                        images_per_step=len(init_set) + params.real_per_class * real.train.num_classes)
        ds = ImageDataset(images=refiner.images_u8(), labels=init_set.labels.clone(), classes=list(init_set.classes))
        write_shards(ds, stage / "train", split="train")
        save_grid(ds, ipc or len(ds) // ds.num_classes, stage / "grid.png")
        if g is not None:
            save_latents(stage / LATENTS_FILE, refiner.codes.value, ds.labels)
        write_curves(stage / "curves.csv", curves)
        first = [c["loss_dm"] for c in curves[:2]]
        last = [c["loss_dm"] for c in curves[-2:]]
        metrics = {"images": len(ds), "steps": params.steps,
                   "loss_dm_first": round(sum(first) / len(first), 6) if first else None,
                   "loss_dm_last": round(sum(last) / len(last), 6) if last else None,
                   "wall_seconds_this_run": round(elapsed, 2)}
        base = dict(syn.info)
        info = {**base, "name": f"{real.name}-refined-{params.space}", "counts": {"train": len(ds)},
                "class_counts": {"train": ds.class_counts()}, "refined": params.space}
        if spec_info is not None:
            info["generator_weights"] = weights
        return lineage.write_manifest(
            stage, kind="dataset", stage="refine", params=as_dict(params), params_hash=phash, inputs=records,
            metrics=metrics, extra={"dataset": info, "synthetic": True}, device=str(device))
