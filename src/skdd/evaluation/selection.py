"""Coreset baselines (docs/method.md §2.4; the candidate selection: §3.7): random, herding and k-center subsets
of a real dataset.

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

__all__ = ["METHODS", "SELECTIONS", "confidence_survivors", "coverage", "extract_features", "herding", "k_center",
           "kmeans", "nearest_distinct", "random_subset", "select_candidates", "select_per_class"]

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


# ------------------------------------------------------------------ generated candidates (over-generate, then keep)
SELECTIONS = ("none", "confidence", "coverage", "confidence+coverage")


def confidence_survivors(own_prob: Tensor, quantile: float, keep_at_least: int) -> Tensor:
    """Indices (ascending) of the candidates whose probability for their own label is at least the `quantile`
    quantile of the class's candidates; when ties or a small class leave fewer than `keep_at_least`, the most
    confident `keep_at_least` are kept instead. `quantile` 0 keeps everything."""
    if own_prob.dim() != 1:
        raise SkddError(f"confidence: expected a 1-D tensor of probabilities, got shape {tuple(own_prob.shape)}")
    if not 0.0 <= quantile < 1.0:
        raise SkddError(f"confidence: quantile must lie in [0, 1), got {quantile!r}")
    if keep_at_least > own_prob.numel():
        raise SkddError(f"confidence: cannot keep {keep_at_least} of {own_prob.numel()} candidates")
    p = own_prob.detach().to(torch.float64)
    threshold = torch.quantile(p, quantile)
    keep = torch.nonzero(p >= threshold).flatten()
    if keep.numel() < keep_at_least:
        keep = torch.sort(torch.argsort(p, descending=True, stable=True)[:keep_at_least]).values
    return keep


def kmeans(features: Tensor, k: int, iters: int = 30) -> Tensor:
    """Lloyd's k-means in float64 with a deterministic start (the greedy k-center picks), so the same features
    always give the same centres. An empty cluster is re-seeded with the point farthest from its centre.
    Returns the centres [k, D]."""
    phi = _check_k(features, k, "kmeans")
    if k < 1:
        raise SkddError("kmeans: k must be at least 1")
    centres = phi[k_center(phi, k)].clone()
    for _ in range(iters):
        assign = torch.cdist(phi, centres).argmin(dim=1)
        new = torch.zeros_like(centres).index_add_(0, assign, phi)
        counts = torch.bincount(assign, minlength=k).to(phi.dtype)
        empty = counts == 0
        new = new / counts.clamp_min(1).unsqueeze(1)
        if bool(empty.any()):
            dist_own = torch.linalg.vector_norm(phi - new[assign], dim=1)
            for c in torch.nonzero(empty).flatten().tolist():
                far = int(torch.argmax(dist_own))
                new[c] = phi[far]
                dist_own[far] = -1.0
        if torch.equal(new, centres):
            break
        centres = new
    return centres


def nearest_distinct(features: Tensor, centres: Tensor) -> Tensor:
    """For each centre in order, the index of the nearest point not already taken by an earlier centre."""
    phi = features.detach().to(torch.float64)
    dist = torch.cdist(centres.to(torch.float64), phi)
    out = torch.empty(centres.shape[0], dtype=torch.long, device=phi.device)
    for c in range(centres.shape[0]):
        p = int(torch.argmin(dist[c]))
        out[c] = p
        dist[:, p] = float("inf")
    return out


def coverage(features: Tensor, k: int, iters: int = 30) -> Tensor:
    """k points that cover the class: k-means with k centres, then the point nearest each centre (distinct)."""
    return nearest_distinct(features, kmeans(features, k, iters))


def select_candidates(selection: str, features: Tensor | None, own_prob: Tensor | None, labels: Tensor, ipc: int,
                      *, quantile: float = 0.5, iters: int = 30) -> Tensor:
    """Indices of `ipc` kept candidates per class, class-major: `none` keeps each class's first `ipc` candidates
    (generation order is random already); `confidence` drops those below the class's confidence quantile, then
    keeps the first `ipc` survivors; `coverage` keeps the candidates nearest the k-means centres in the teacher's
    feature space; `confidence+coverage` runs coverage on the survivors."""
    if selection not in SELECTIONS:
        raise SkddError(f"selection: unknown mode {selection!r} (known: {', '.join(SELECTIONS)})")
    out = []
    for idx in _class_indices(labels, ipc, None):
        idx = idx.to(labels.device)
        if selection == "none":
            out.append(idx[:ipc])
            continue
        pool = idx
        if "confidence" in selection:
            pool = idx[confidence_survivors(own_prob[idx], quantile, ipc).to(idx.device)]
        if "coverage" in selection:
            out.append(pool[coverage(features[pool], ipc, iters).to(pool.device)])
        else:
            out.append(pool[:ipc])
    return torch.cat(out)
