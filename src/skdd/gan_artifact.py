"""The conditional GAN as an artifact: how to build G and D from a spec, save them, and load them back.

`pretrain` writes a GAN artifact, `distill` reads one and writes another (same layout), `sample`
reads either. `model.json` carries everything needed to rebuild the networks, so no code or
pickle travels with the weights. When training kept an exponential moving average of G's weights
(`ema_decay`, skdd.ema), it sits beside G as `generator_ema.safetensors` (same spec, same keys);
`load_sampling_generator` prefers it, and an artifact without it (EMA off, or made before EMA existed)
samples from G itself.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from skdd.errors import SkddError
from skdd.losses import GAN_OBJECTIVES, GanObjective
from skdd.models import create_model

MODEL_FILE = "model.json"
G_FILE = "generator.safetensors"
G_EMA_FILE = "generator_ema.safetensors"
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
    gan_loss: str = "wgan-gp-ac"   # artifacts from before the choice existed were all WGAN-GP-AC

    @property
    def objective(self) -> GanObjective:
        return GAN_OBJECTIVES[self.gan_loss]

    def _common(self) -> dict:
        return dict(in_channels=self.in_channels, num_classes=self.num_classes, image_size=self.image_size)

    def build_generator(self) -> nn.Module:
        return create_model("generator", width=self.g_width, z_dim=self.z_dim, conditioning=self.conditioning,
                            **self._common())

    def build(self) -> tuple[nn.Module, nn.Module]:
        return self.build_generator(), create_model(self.objective.discriminator, width=self.d_width,
                                                    **self._common())


def noise(n: int, z_dim: int, device: torch.device, truncation: float | None = None) -> Tensor:
    """G's input noise, N(0, I); with `truncation` ψ, each entry drawn from N(0, 1) truncated to [-ψ, ψ] (BigGAN's
    truncation trick: fewer atypical draws, so more typical images, at the cost of variety)."""
    if truncation is None:
        return torch.randn(n, z_dim, device=device)
    return torch.nn.init.trunc_normal_(torch.empty(n, z_dim, device=device), 0.0, 1.0, -truncation, truncation)


def _save_weights(module: nn.Module, path: Path) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, str(path))


def save_gan(folder: Path, spec: GanSpec, g: nn.Module, d: nn.Module,
             opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, g_ema: nn.Module | None = None) -> None:
    """Write the artifact's weights and spec; `g_ema` (the moving average of G, when kept) as G_EMA_FILE."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MODEL_FILE).write_text(json.dumps(asdict(spec), indent=2) + "\n")
    _save_weights(g, folder / G_FILE)
    _save_weights(d, folder / D_FILE)
    if g_ema is not None:
        _save_weights(g_ema, folder / G_EMA_FILE)
    torch.save({"g": opt_g.state_dict(), "d": opt_d.state_dict()}, folder / OPT_FILE)


def read_spec(folder: Path) -> GanSpec:
    try:
        spec = GanSpec(**json.loads((folder / MODEL_FILE).read_text()))
    except (OSError, json.JSONDecodeError, TypeError) as exc:
        raise SkddError(f"{folder / MODEL_FILE}: not a valid GAN spec ({exc.__class__.__name__})") from None
    if spec.gan_loss not in GAN_OBJECTIVES:
        raise SkddError(f"{folder / MODEL_FILE}: unknown gan_loss {spec.gan_loss!r} "
                        f"(known: {', '.join(GAN_OBJECTIVES)})")
    return spec


def _load_weights(folder: Path, module: nn.Module, name: str) -> None:
    try:
        module.load_state_dict(load_file(str(folder / name)))
    except (RuntimeError, OSError) as exc:
        raise SkddError(f"{folder}: weights in {name} do not fit the spec in {MODEL_FILE}: "
                        f"{str(exc).splitlines()[0]}") from None


def load_gan(folder: Path, device: torch.device, with_optimizers: bool = False):
    """Rebuild G and D (and their optimizer states when asked) from a verified GAN artifact."""
    spec = read_spec(folder)
    g, d = spec.build()
    _load_weights(folder, g, G_FILE)
    _load_weights(folder, d, D_FILE)
    g.to(device)
    d.to(device)
    optim = None
    if with_optimizers:
        optim = torch.load(folder / OPT_FILE, weights_only=True, map_location=device)
    return spec, g, d, optim


def has_ema(folder: Path) -> bool:
    return (Path(folder) / G_EMA_FILE).is_file()


def load_ema_state(folder: Path) -> dict[str, Tensor] | None:
    """The artifact's EMA generator weights as a state dict (CPU), or None when it has none."""
    if not has_ema(folder):
        return None
    try:
        return load_file(str(Path(folder) / G_EMA_FILE))
    except (RuntimeError, OSError) as exc:
        raise SkddError(f"{folder}: {G_EMA_FILE} is unreadable: {str(exc).splitlines()[0]}") from None


def load_sampling_generator(folder: Path, device: torch.device) -> tuple[GanSpec, nn.Module, str]:
    """The generator to sample from, in eval mode: the EMA weights when the artifact has them ("ema"),
    else G itself ("raw"). Returns (spec, generator, which)."""
    folder = Path(folder)
    spec = read_spec(folder)
    g = spec.build_generator()
    which = "ema" if has_ema(folder) else "raw"
    _load_weights(folder, g, G_EMA_FILE if which == "ema" else G_FILE)
    g.to(device).eval().requires_grad_(False)
    return spec, g, which
