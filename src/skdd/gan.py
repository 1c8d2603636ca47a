"""The conditional GAN as an artifact: how to build G and D from a spec, save them, and load them back.

`pretrain` writes a GAN artifact, `distill` reads one and writes another (same layout), `sample`
reads either. `model.json` carries everything needed to rebuild the networks, so no code or
pickle travels with the weights.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from skdd.errors import SkddError
from skdd.models import create_model

MODEL_FILE = "model.json"
G_FILE = "generator.safetensors"
D_FILE = "discriminator.safetensors"
OPT_FILE = "optimizers.pt"


@dataclass
class GanSpec:
    in_channels: int
    image_size: int
    num_classes: int
    g_width: int
    d_width: int
    z_dim: int
    conditioning: str
    classes: list[str]
    dataset: str
    mean: list[float]
    std: list[float]

    def build(self) -> tuple[nn.Module, nn.Module]:
        common = dict(in_channels=self.in_channels, num_classes=self.num_classes, image_size=self.image_size)
        g = create_model("generator", width=self.g_width, z_dim=self.z_dim, conditioning=self.conditioning, **common)
        d = create_model("discriminator", width=self.d_width, **common)
        return g, d


def noise(n: int, z_dim: int, device: torch.device) -> Tensor:
    return torch.randn(n, z_dim, device=device)


def save_gan(folder: Path, spec: GanSpec, g: nn.Module, d: nn.Module,
             opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MODEL_FILE).write_text(json.dumps(asdict(spec), indent=2) + "\n")
    save_file({k: v.detach().cpu().contiguous() for k, v in g.state_dict().items()}, str(folder / G_FILE))
    save_file({k: v.detach().cpu().contiguous() for k, v in d.state_dict().items()}, str(folder / D_FILE))
    torch.save({"g": opt_g.state_dict(), "d": opt_d.state_dict()}, folder / OPT_FILE)


def read_spec(folder: Path) -> GanSpec:
    try:
        return GanSpec(**json.loads((folder / MODEL_FILE).read_text()))
    except (OSError, json.JSONDecodeError, TypeError) as exc:
        raise SkddError(f"{folder / MODEL_FILE}: not a valid GAN spec ({exc.__class__.__name__})") from None


def load_gan(folder: Path, device: torch.device, with_optimizers: bool = False):
    """Rebuild G and D (and their optimizer states when asked) from a verified GAN artifact."""
    spec = read_spec(folder)
    g, d = spec.build()
    try:
        g.load_state_dict(load_file(str(folder / G_FILE)))
        d.load_state_dict(load_file(str(folder / D_FILE)))
    except (RuntimeError, OSError) as exc:
        raise SkddError(f"{folder}: weights do not fit the spec in {MODEL_FILE}: {str(exc).splitlines()[0]}") from None
    g.to(device)
    d.to(device)
    optim = None
    if with_optimizers:
        optim = torch.load(folder / OPT_FILE, weights_only=True, map_location=device)
    return spec, g, d, optim
