"""Stage 4: a fixed synthetic set of IPC images per class from a generator, as a dataset artifact.

A generator's samples vary in quality, and a fixed set of IPC images per class is only as good as the ones
kept. So `sample` can over-generate (`candidates_per_class`) and keep IPC per class by what the `teacher`
(a classifier trained on the real training split) sees:

* `confidence`: drop candidates whose teacher probability for their own label is below the class's
  `confidence_quantile` (the generator's failures: images of another class, or of none);
* `coverage`: k-means with IPC centres in the teacher's feature space, keep the candidate nearest each
  centre (a set that spans the class instead of IPC copies of its mode);
* `confidence+coverage`: coverage over the confident candidates.

The set is written in the same Parquet schema as an ingested dataset, so evaluation and export read real
subsets and synthetic sets through one path; `latents.safetensors` keeps each kept image's noise vector, so
`refine` can go on from exactly these images. The noise is seeded: same generator, same seed, same bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from PIL import Image
from safetensors.torch import save_file
from torchvision.utils import make_grid

from skdd import lineage, storage
from skdd.config import as_dict, param, params_hash
from skdd.data.batches import Pixels
from skdd.data.dataset import ImageDataset
from skdd.data.parquet import write_shards
from skdd.device import DEVICES, resolve_device, seed_everything
from skdd.errors import SkddError
from skdd.evaluation.selection import SELECTIONS, select_candidates
from skdd.gan_artifact import load_sampling_generator, noise
from skdd.stages.common import open_input

GRID_COLUMNS = 10
LATENTS_FILE = "latents.safetensors"
SELECTION_FILE = "selection.json"


@dataclass
class SampleParams:
    seed: int = param(0, ge=0)
    ipc: int = param(10, ge=1, help="images per class")
    candidates_per_class: int | None = param(None, ge=1, help="images generated per class before selection "
                                                             "(null: ipc, i.e. no over-generation)")
    selection: str = param("none", choices=SELECTIONS, help="how IPC are kept of the candidates (needs --teacher "
                                                            "unless none)")
    confidence_quantile: float = param(0.5, ge=0, le=0.99, help="confidence: drop candidates below this quantile "
                                                                "of their class's own-label teacher probability")
    truncation: float | None = param(None, gt=0, help="draw G's noise from N(0, 1) truncated to [-ψ, ψ] (BigGAN's "
                                                      "trick; choose ψ on the validation split); null: N(0, 1)")
    kmeans_iters: int = param(30, ge=1)
    batch_size: int = param(500, ge=1)
    device: str = param("auto", choices=DEVICES)

    @property
    def candidates(self) -> int:
        return self.ipc if self.candidates_per_class is None else self.candidates_per_class

    def check(self, section: str) -> None:
        if self.candidates < self.ipc:
            raise SkddError(f"{section}.candidates_per_class: {self.candidates} is fewer than ipc={self.ipc}")
        if self.selection != "none" and self.candidates == self.ipc:
            raise SkddError(f"{section}.selection: {self.selection!r} needs candidates_per_class > ipc "
                            f"(got {self.candidates} for ipc {self.ipc})")


@torch.no_grad()
def generate_with_latents(g, spec, per_class: int, batch_size: int, device: torch.device,
                          truncation: float | None = None) -> tuple[ImageDataset, torch.Tensor]:
    """`per_class` images per class, class-major, and the noise vectors that made them; G in eval mode so
    BatchNorm uses its running statistics."""
    g.eval()
    labels = torch.arange(spec.num_classes, device=device).repeat_interleave(per_class)
    chunks, latents = [], []
    for start in range(0, len(labels), batch_size):
        y = labels[start:start + batch_size]
        z = noise(len(y), spec.z_dim, device, truncation)
        latents.append(z.cpu())
        chunks.append(Pixels.gan_to_u8(g(z, y)).cpu())
    ds = ImageDataset(images=torch.cat(chunks), labels=labels.cpu(), classes=list(spec.classes))
    return ds, torch.cat(latents)


def save_grid(ds: ImageDataset, ipc: int, path) -> None:
    """One row per class, up to GRID_COLUMNS images each."""
    cols = min(ipc, GRID_COLUMNS)
    idx = torch.cat([torch.arange(c * ipc, c * ipc + cols) for c in range(ds.num_classes)])
    grid = make_grid(ds.images[idx].float() / 255.0, nrow=cols, padding=1, pad_value=1.0)
    array = (grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(array if array.shape[2] == 3 else array[:, :, 0]).save(path, format="PNG")


def save_latents(path, z: torch.Tensor, labels: torch.Tensor) -> None:
    save_file({"z": z.detach().cpu().float().contiguous(), "labels": labels.detach().cpu().long().contiguous()},
              str(path))


def synthetic_info(spec, ds: ImageDataset, ipc: int, **extra) -> dict:
    """The manifest's `dataset` block of a generated set (shared by `sample` and `refine`)."""
    return {"name": f"{spec.dataset}-synthetic", "classes": list(spec.classes), "shape": list(ds.shape),
            "num_classes": ds.num_classes, "counts": {"train": len(ds)}, "class_counts": {"train": ds.class_counts()},
            "mean": spec.mean, "std": spec.std, "source_dataset": spec.dataset, "ipc": ipc, **extra}


def run(params: SampleParams, inputs: dict[str, str], output: str) -> dict:
    device = resolve_device(params.device)
    seed_everything(params.seed, device)
    gan_path, gan_manifest = open_input(inputs["gan"], "gan")
    spec, g, weights = load_sampling_generator(gan_path, device)
    records = [lineage.input_record("gan", inputs["gan"], gan_path)]
    teacher = None
    if params.selection != "none":
        if not inputs.get("teacher"):
            raise SkddError(f"sample.selection: {params.selection!r} needs a teacher artifact (--teacher)")
        from skdd.stages.teacher import check_teacher_fits, load_teacher

        teacher = load_teacher(inputs["teacher"], device)
        check_teacher_fits(teacher, (spec.in_channels, spec.image_size, spec.image_size), spec.num_classes,
                           f"generator {gan_path}")
        records.append(lineage.input_record("teacher", inputs["teacher"], teacher.path))
    candidates, z = generate_with_latents(g, spec, params.candidates, params.batch_size, device,
                                          params.truncation)
    own = feats = None
    if teacher is not None:
        feats, probs = teacher.features_and_probs(candidates.images)
        own = probs.gather(1, candidates.labels.to(probs.device).unsqueeze(1)).squeeze(1)
    keep = select_candidates(params.selection, feats, own, candidates.labels, params.ipc,
                             quantile=params.confidence_quantile, iters=params.kmeans_iters).cpu()
    ds = candidates.subset(keep)
    scores = None if own is None else [round(float(s), 6) for s in own.cpu()[keep]]
    with storage.staged_output(output) as stage:
        write_shards(ds, stage / "train", split="train")
        save_grid(ds, params.ipc, stage / "grid.png")
        save_latents(stage / LATENTS_FILE, z[keep], ds.labels)
        (stage / SELECTION_FILE).write_text(json.dumps(
            {"selection": params.selection, "candidates_per_class": params.candidates, "truncation": params.truncation,
             "confidence_quantile": params.confidence_quantile if "confidence" in params.selection else None,
             "kept_candidate_indices": [int(i) for i in keep.tolist()], "teacher_own_label_probability": scores})
            + "\n")
        info = synthetic_info(spec, ds, params.ipc, generator_stage=gan_manifest["stage"], generator_weights=weights)
        metrics = {"images": len(ds), "candidates": len(candidates), "generator_weights": weights}
        if own is not None:
            metrics["mean_teacher_probability_kept"] = round(sum(scores) / len(scores), 6)
            metrics["mean_teacher_probability_candidates"] = round(float(own.mean()), 6)
        return lineage.write_manifest(
            stage, kind="dataset", stage="sample", params=as_dict(params), params_hash=params_hash(params),
            inputs=records, metrics=metrics, extra={"dataset": info, "synthetic": True}, device=str(device))
