"""Name -> constructor registry for every network the pipeline builds.

Stages, configs and the CLI refer to networks by a string (e.g. the pool `convnet3,resnet10,resnet18`),
so one lookup table keeps those names, the set of supported input shapes and the user-facing error
messages in one place (same idea as timm's `_registry.py`). Model modules register themselves on
import; `skdd.models` imports them all.
"""

from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

from skdd.errors import SkddError

KINDS = ("classifier", "generator", "discriminator")
# Every reference network is written for MNIST/FashionMNIST (28x28x1) or CIFAR-10 (32x32x3). The
# two cross combinations fall out of the same code, anything else would need new architecture
# decisions, so it is refused up front rather than failing deep inside a forward pass.
SUPPORTED_IMAGE_SIZES = (28, 32)
SUPPORTED_CHANNELS = (1, 3)

_entrypoints: dict[str, Callable[..., nn.Module]] = {}
_kinds: dict[str, str] = {}


def register_model(name: str, kind: str) -> Callable:
    """Decorator adding a constructor `fn(*, in_channels, num_classes, image_size, **kw)` to the registry.

    Duplicates are refused because a silently replaced entry would change which network a config
    name builds, depending on import order.
    """
    if kind not in KINDS:
        raise ValueError(f"model kind must be one of {', '.join(KINDS)}, got {kind!r}")

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _entrypoints:
            raise ValueError(f"model {name!r} is already registered")
        _entrypoints[name] = fn
        _kinds[name] = kind
        return fn

    return decorator


def list_models(kind: str | None = None) -> list[str]:
    """Registered names, sorted so that test ids and help texts are stable."""
    if kind is not None and kind not in KINDS:
        raise SkddError(f"unknown model kind {kind!r} (known: {', '.join(KINDS)})")
    return sorted(n for n, k in _kinds.items() if kind is None or k == kind)


def check_classifier_param(key: str, name: str) -> None:
    """A params field naming a classifier: one line naming the key when it is not registered as one."""
    known = list_models("classifier")
    if name not in known:
        raise SkddError(f"{key}: unknown architecture {name!r} (known: {', '.join(known)})")


def model_kind(name: str) -> str:
    """The kind a name was registered with; lets callers check a config before building anything."""
    _check_name(name)
    return _kinds[name]


def create_model(name: str, *, in_channels: int, num_classes: int, image_size: int, **kwargs) -> nn.Module:
    """Build a freshly initialised model; the caller seeds torch's RNG for reproducible weights."""
    _check_name(name)
    if image_size not in SUPPORTED_IMAGE_SIZES:
        raise SkddError(
            f"model {name!r}: unsupported image size {image_size!r} "
            f"(supported: {', '.join(map(str, SUPPORTED_IMAGE_SIZES))})"
        )
    if in_channels not in SUPPORTED_CHANNELS:
        raise SkddError(
            f"model {name!r}: unsupported number of input channels {in_channels!r} "
            f"(supported: {', '.join(map(str, SUPPORTED_CHANNELS))})"
        )
    if not isinstance(num_classes, int) or num_classes < 2:
        raise SkddError(f"model {name!r}: num_classes must be an integer >= 2, got {num_classes!r}")
    fn = _entrypoints[name]
    # Options usually come from a YAML config, so a typo must read as a config error, not a TypeError.
    accepted = set(inspect.signature(fn).parameters) - {"in_channels", "num_classes", "image_size"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise SkddError(
            f"model {name!r}: unknown option(s) {', '.join(unknown)} "
            f"(accepted: {', '.join(sorted(accepted)) or 'none'})"
        )
    return fn(in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)


def check_width(name: str, width: object) -> int:
    """Shared guard for the `width` option every model takes."""
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise SkddError(f"model {name!r}: width must be a positive integer, got {width!r}")
    return width


def _check_name(name: str) -> None:
    if name not in _entrypoints:
        raise SkddError(f"unknown model {name!r} (known: {', '.join(list_models())})")
