"""`skdd teacher`: one classifier per dataset, trained on the real training split only.

Why a stage of its own: selection of generated candidates (confidence, coverage), the herding / k-center
baselines and the generator's quality probes all need a network that knows the real data. Training it once,
as an artifact with its own manifest, makes it a parent in the lineage of everything that uses it, and makes
every user of it see the same features. It never sees validation or test images: its accuracy is measured on
the validation split that ingest held out (the test split is left to the final evaluation).

Training is the strict protocol's loop (DSA augmentation, SGD, lr x0.1 half-way), checkpointed every epoch
so a killed run resumes; the artifact holds `teacher.safetensors` (weights) and `model.json` (everything to
rebuild the network: architecture, width, shape, classes, the dataset's mean/std).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from skdd import lineage, storage
from skdd.augment import dsa_strategy_for
from skdd.config import as_dict, param, params_hash
from skdd.data.batches import Pixels
from skdd.device import DEVICES, prepare_module, resolve_device, seed_everything
from skdd.errors import SkddError
from skdd.evaluation.selection import extract_features
from skdd.evaluation.protocols import TrainConfig, checkpoint_kwargs, snapshot_from_checkpoint, train_strict
from skdd.models import check_classifier_param, create_model
from skdd.stages.common import load_dataset, open_input

MODEL_FILE = "model.json"
WEIGHTS_FILE = "teacher.safetensors"


@dataclass
class TeacherParams:
    arch: str = param("convnet3", help="a registered classifier")
    width: int = param(64, ge=1)
    epochs: int = param(3, ge=1, help="passes over the training split")
    batch_size: int = param(256, ge=1)
    lr: float = param(0.01, gt=0)
    seed: int = param(0, ge=0)
    amp: bool = param(True, help="bf16 autocast on CUDA (ignored on CPU)")
    device: str = param("auto", choices=DEVICES)

    def check(self, section: str) -> None:
        check_classifier_param(f"{section}.arch", self.arch)


@dataclass
class TeacherSpec:
    arch: str
    width: int
    in_channels: int
    image_size: int
    num_classes: int
    classes: list[str]
    dataset: str
    mean: list[float]
    std: list[float]

    def build(self) -> nn.Module:
        return create_model(self.arch, in_channels=self.in_channels, num_classes=self.num_classes,
                            image_size=self.image_size, width=self.width)


@dataclass
class Teacher:
    """A loaded teacher: the network in eval mode, its spec, and the pixel convention it was trained with."""

    model: nn.Module
    spec: TeacherSpec
    pixels: Pixels
    path: Path
    manifest: dict

    @torch.no_grad()
    def features_and_probs(self, images_u8: torch.Tensor, batch: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
        """Penultimate features (`model.embed`, as the coreset baselines use) and softmax probabilities of uint8
        images, float32, full precision (selections compare distances and quantiles)."""
        device = next(self.model.parameters()).device
        feats = extract_features(self.model, images_u8, self.pixels, device, batch=batch)
        probs = [torch.softmax(self.model(self.pixels.classifier(images_u8[s:s + batch].to(device))).float(), dim=1)
                 for s in range(0, images_u8.shape[0], batch)]
        return feats, torch.cat(probs)


def load_teacher(uri: str | Path, device: torch.device) -> Teacher:
    """A verified teacher artifact, rebuilt on `device` in eval mode."""
    path, manifest = open_input(uri, "classifier")
    try:
        spec = TeacherSpec(**json.loads((path / MODEL_FILE).read_text()))
    except (OSError, json.JSONDecodeError, TypeError) as exc:
        raise SkddError(f"{path / MODEL_FILE}: not a valid teacher spec ({exc.__class__.__name__})") from None
    model = spec.build()
    try:
        model.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
    except (RuntimeError, OSError) as exc:
        raise SkddError(f"{path}: weights do not fit {MODEL_FILE}: {str(exc).splitlines()[0]}") from None
    model = prepare_module(model, device).eval().requires_grad_(False)
    return Teacher(model=model, spec=spec, pixels=Pixels(spec.mean, spec.std, device), path=path, manifest=manifest)


def check_teacher_fits(teacher: Teacher, shape: tuple[int, int, int], num_classes: int, where: str) -> None:
    c, h, _ = shape
    s = teacher.spec
    if (s.in_channels, s.image_size, s.num_classes) != (c, h, num_classes):
        raise SkddError(f"{teacher.path}: teacher was trained for {s.in_channels}x{s.image_size}x{s.image_size}, "
                        f"{s.num_classes} classes; {where} has {c}x{h}x{h}, {num_classes} classes")


def run(params: TeacherParams, inputs: dict[str, str], output: str) -> dict:
    device = resolve_device(params.device)
    seed_everything(params.seed, device)
    data = load_dataset(inputs["dataset"], splits=("train", "val"))
    train, val = data.train, getattr(data, "val", None)
    c, h, w = train.shape
    if h != w:
        raise SkddError(f"{data.path}: square images required, got {h}x{w}")
    pixels = Pixels(data.info["mean"], data.info["std"], device)
    cfg = TrainConfig(params.arch, epochs=params.epochs, batch_size=params.batch_size, lr=params.lr,
                      augment=dsa_strategy_for(data.name), width=params.width, amp=params.amp)
    phash = params_hash(params)
    record = lineage.input_record("dataset", inputs["dataset"], data.path)
    ckpts = storage.checkpointer(output, lineage.run_key(phash, [record]))
    final: dict = {}

    def on_epoch(epoch: int, snap: dict) -> None:
        if epoch == cfg.epochs:
            final["model"] = {k: v.detach().cpu().clone() for k, v in snap["model"].items()}
        else:
            ckpts.save(**checkpoint_kwargs(snap))

    state = None
    latest = ckpts.latest()
    if latest is not None:
        state = snapshot_from_checkpoint(latest)
        print(f"teacher: resuming after epoch {latest.step} ({ckpts.folder})", flush=True)
    elif ckpts.stale():
        ckpts.clear()
    # accuracy on the validation split when ingest held one out; never the test split
    held_out = val if val is not None else train
    with storage.staged_output(output) as stage:
        result = train_strict(cfg, train, held_out, pixels, device, seed=params.seed, on_epoch=on_epoch, state=state,
                              desc=f"teacher[{params.arch}]")
        spec = TeacherSpec(arch=params.arch, width=params.width, in_channels=c, image_size=h,
                           num_classes=train.num_classes, classes=list(train.classes), dataset=data.name,
                           mean=list(data.info["mean"]), std=list(data.info["std"]))
        (stage / MODEL_FILE).write_text(json.dumps(asdict(spec), indent=2) + "\n")
        save_file({k: v.contiguous() for k, v in final["model"].items()}, str(stage / WEIGHTS_FILE))
        metrics = {"val_accuracy": round(100.0 * result["accuracy"], 4) if val is not None else None,
                   "train_accuracy": None if val is not None else round(100.0 * result["accuracy"], 4),
                   "accuracy_on": "val" if val is not None else "train (the dataset has no val split)",
                   "train_images": len(train), "final_train_loss": round(result["train_loss"], 6)}
        return lineage.write_manifest(
            stage, kind="classifier", stage="teacher", params=as_dict(params), params_hash=phash,
            inputs=[record], metrics=metrics, extra={"teacher": asdict(spec)}, device=str(device))
