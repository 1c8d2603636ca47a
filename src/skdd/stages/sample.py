"""Stage 4: a fixed synthetic set of IPC images per class from a generator, as a dataset artifact.

The set is written in the same Parquet schema as an ingested dataset, so evaluation and export read
real subsets and synthetic sets through one path. The noise is seeded: same generator, same seed,
same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image
from torchvision.utils import make_grid

from skdd import lineage, storage
from skdd.config import as_dict, param, params_hash
from skdd.data.batches import Pixels
from skdd.data.dataset import ImageDataset
from skdd.data.parquet import write_shards
from skdd.device import DEVICES, resolve_device, seed_everything
from skdd.gan import load_gan, noise
from skdd.stages.common import open_input

GRID_COLUMNS = 10


@dataclass
class SampleParams:
    seed: int = param(0, ge=0)
    ipc: int = param(10, ge=1, help="images per class")
    batch_size: int = param(500, ge=1)
    device: str = param("auto", choices=DEVICES)


@torch.no_grad()
def generate(g, spec, ipc: int, batch_size: int, device: torch.device) -> ImageDataset:
    """IPC images per class, class-major order; G in eval mode so BatchNorm uses its running statistics."""
    g.eval()
    labels = torch.arange(spec.num_classes, device=device).repeat_interleave(ipc)
    chunks = []
    for start in range(0, len(labels), batch_size):
        y = labels[start:start + batch_size]
        chunks.append(Pixels.gan_to_u8(g(noise(len(y), spec.z_dim, device), y)).cpu())
    return ImageDataset(images=torch.cat(chunks), labels=labels.cpu(), classes=list(spec.classes))


def save_grid(ds: ImageDataset, ipc: int, path) -> None:
    """One row per class, up to GRID_COLUMNS images each."""
    cols = min(ipc, GRID_COLUMNS)
    idx = torch.cat([torch.arange(c * ipc, c * ipc + cols) for c in range(ds.num_classes)])
    grid = make_grid(ds.images[idx].float() / 255.0, nrow=cols, padding=1, pad_value=1.0)
    array = (grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(array if array.shape[2] == 3 else array[:, :, 0]).save(path, format="PNG")


def run(params: SampleParams, inputs: dict[str, str], output: str) -> dict:
    device = resolve_device(params.device)
    seed_everything(params.seed, device)
    gan_path, gan_manifest = open_input(inputs["gan"], "gan")
    spec, g, _, _ = load_gan(gan_path, device)
    ds = generate(g, spec, params.ipc, params.batch_size, device)
    with storage.staged_output(output) as stage:
        write_shards(ds, stage / "train", split="train")
        save_grid(ds, params.ipc, stage / "grid.png")
        info = {"name": f"{spec.dataset}-synthetic", "classes": list(spec.classes), "shape": list(ds.shape),
                "num_classes": ds.num_classes, "counts": {"train": len(ds)},
                "class_counts": {"train": ds.class_counts()}, "mean": spec.mean, "std": spec.std,
                "source_dataset": spec.dataset, "ipc": params.ipc, "generator_stage": gan_manifest["stage"]}
        return lineage.write_manifest(
            stage, kind="dataset", stage="sample", params=as_dict(params), params_hash=params_hash(params),
            inputs=[lineage.input_record("gan", inputs["gan"], gan_path)],
            metrics={"images": len(ds)}, extra={"dataset": info, "synthetic": True}, device=str(device))
