"""Coreset baselines (ALGORITHM.md 5.1-5.3): random, herding and k-center subsets of a real dataset.

`herding` and `k_center` are pure functions of one class's feature matrix; `select_per_class` applies a
method class by class and returns indices into the whole dataset in class-major order (all of class 0's
picks, in pick order, then class 1's, ...). Features come from `extract_features` (the penultimate layer,
`model.embed`, of a classifier trained on the full training set, DC's recipe). Each greedy step is one
vectorized pass over the class (O(N*D)), so a class costs O(k*N*D) with a Python loop over k only.
Distances are computed in float64 so that near-ties resolve the same way on every device.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from skdd.data.batches import Pixels
from skdd.errors import SkddError

__all__ = ["METHODS", "extract_features", "herding", "k_center", "random_subset", "select_per_class"]

METHODS = ("random", "herding", "kcenter")
_ALIASES = {"k_center": "kcenter", "k-center": "kcenter"}


def _check_k(features: Tensor, k: int, what: str) -> Tensor:
    if features.dim() != 2:
        raise SkddError(f"{what}: features must be a 2-D tensor [N, D], got shape {tuple(features.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise SkddError(f"{what}: k must be a non-negative integer, got {k!r}")
    if k > features.shape[0]:
        raise SkddError(f"{what}: cannot pick {k} of {features.shape[0]} samples")
    return features.detach().to(torch.float64)


def herding(features: Tensor, k: int) -> Tensor:
    """Greedy herding (Welling 2009 / iCaRL), argmin form.

    With mu = mean_i phi_i and S the points picked so far, step t = 1..k picks
    p_t = argmin_{i not in S} || mu - (phi_i + sum_{j in S} phi_j) / t ||_2 (lowest index on ties).
    Returns the k picked row indices (int64, on the features' device) in pick order.
    """
    phi = _check_k(features, k, "herding")
    n = phi.shape[0]
    mu = phi.mean(dim=0)
    picked = torch.zeros(n, dtype=torch.bool, device=phi.device)
    total = torch.zeros_like(mu)
    out = torch.empty(k, dtype=torch.long, device=phi.device)
    for t in range(1, k + 1):
        dist = torch.linalg.vector_norm(mu - (phi + total) / t, dim=1)
        dist.masked_fill_(picked, float("inf"))
        p = torch.argmin(dist)
        out[t - 1] = p
        picked[p] = True
        total += phi[p]
    return out


def k_center(features: Tensor, k: int) -> Tensor:
    """Greedy k-center (Sener & Savarese 2018) with a deterministic start.

    The first pick is the point closest to the class mean; each next pick is
    argmax_{i not in S} min_{s in S} || phi_i - phi_s ||_2 (lowest index on ties).
    Returns the k picked row indices (int64, on the features' device) in pick order.
    """
    phi = _check_k(features, k, "k_center")
    out = torch.empty(k, dtype=torch.long, device=phi.device)
    if k == 0:
        return out
    first = torch.argmin(torch.linalg.vector_norm(phi - phi.mean(dim=0), dim=1))
    out[0] = first
    min_dist = torch.linalg.vector_norm(phi - phi[first], dim=1)
    min_dist[first] = -1.0   # picked points are never picked again (distances are >= 0)
    for t in range(1, k):
        p = torch.argmax(min_dist)
        out[t] = p
        min_dist = torch.minimum(min_dist, torch.linalg.vector_norm(phi - phi[p], dim=1))
        min_dist[p] = -1.0
    return out


def _class_indices(labels: Tensor, ipc: int, classes: Sequence[str] | None) -> list[Tensor]:
    """Per class, the (ascending) indices of its samples; SkddError if any class has fewer than ipc."""
    if labels.dim() != 1:
        raise SkddError(f"selection: labels must be a 1-D tensor, got shape {tuple(labels.shape)}")
    if isinstance(ipc, bool) or not isinstance(ipc, int) or ipc < 1:
        raise SkddError(f"selection: ipc must be a positive integer, got {ipc!r}")
    if labels.numel() == 0:
        raise SkddError("selection: no samples to select from")
    labels = labels.detach().to("cpu", torch.long)
    num_classes = len(classes) if classes is not None else int(labels.max()) + 1
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise SkddError(f"selection: labels must lie in [0, {num_classes})")
    order = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels, minlength=num_classes).tolist()
    out, start = [], 0
    for c, count in enumerate(counts):
        if count < ipc:
            name = f"{classes[c]!r} ({c})" if classes is not None else str(c)
            raise SkddError(f"selection: class {name} has {count} samples, fewer than ipc={ipc}")
        out.append(order[start:start + count])
        start += count
    return out


def random_subset(labels: Tensor, ipc: int, seed: int, *, classes: Sequence[str] | None = None) -> Tensor:
    """`ipc` indices per class drawn uniformly without replacement, class-major, from a private generator
    seeded with `seed` (the global torch RNG is untouched). Returns int64 indices on the labels' device.
    `classes` (names) sets the number of classes and names them in errors; default max(label) + 1."""
    gen = torch.Generator().manual_seed(int(seed))
    picks = [idx[torch.randperm(idx.numel(), generator=gen)[:ipc]] for idx in _class_indices(labels, ipc, classes)]
    return torch.cat(picks).to(labels.device)


def select_per_class(method: str, features: Tensor | None, labels: Tensor, ipc: int, seed: int, *,
                     classes: Sequence[str] | None = None) -> Tensor:
    """Indices of `ipc` samples per class chosen by `method` ("random", "herding", "kcenter"; "k_center" and
    "k-center" are accepted too), class-major, in pick order within a class. `features` [N, D] is needed by
    herding and k-center (which ignore `seed`: they are deterministic); random ignores `features`."""
    name = _ALIASES.get(str(method).strip().lower(), str(method).strip().lower())
    if name not in METHODS:
        raise SkddError(f"selection: unknown method {method!r} (known: {', '.join(METHODS)})")
    if name == "random":
        return random_subset(labels, ipc, seed, classes=classes)
    if features is None:
        raise SkddError(f"selection: method {name!r} needs features")
    if features.dim() != 2 or features.shape[0] != labels.shape[0]:
        raise SkddError(f"selection: features {tuple(features.shape)} do not match {labels.shape[0]} labels")
    pick = herding if name == "herding" else k_center
    out = []
    for idx in _class_indices(labels, ipc, classes):
        idx = idx.to(features.device)
        out.append(idx[pick(features[idx], ipc)])
    return torch.cat(out).to(labels.device)


@torch.no_grad()
def extract_features(model: nn.Module, images_u8: Tensor, pixels: Pixels, device: torch.device | str,
                     batch: int = 1000) -> Tensor:
    """`model.embed` features (float32 [N, feature_dim], on `device`) of uint8 images, in eval mode under
    no_grad, in batches; full precision (no autocast) since the greedy selections compare distances.
    The model's train/eval mode is restored afterwards."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    try:
        feats = []
        for start in range(0, images_u8.shape[0], batch):
            x = pixels.classifier(images_u8[start:start + batch].to(device, non_blocking=True))
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            feats.append(model.embed(x).float().flatten(1))
        if not feats:
            raise SkddError("extract_features: no images")
        return torch.cat(feats)
    finally:
        model.train(was_training)
