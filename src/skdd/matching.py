"""Distribution matching (DM, Zhao & Bilen 2023; docs/method.md §3.8): the loss `refine` lowers.

Per class, the mean embedding of a real batch and of the synthetic images, under a freshly initialised
(random) network, should agree; the loss is the sum over classes of the squared distance between the two
means. A new random network every step makes the set match the real data under many feature maps at once,
without the bi-level loop of gradient or trajectory matching, which is why it is the cheapest fixed-set
objective. Real and synthetic images of one class get the same augmentation parameters (DSA's siamese
augmentation); classes draw their own.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from skdd.augment import AugParams, DiffAug


def per_class_aug(aug: DiffAug, classes: Tensor, num_classes: int, device) -> AugParams:
    """One draw of augmentation parameters per class, expanded to the samples of `classes` (siamese within a class)."""
    drawn = aug.sample(num_classes, device)
    return AugParams(int(classes.numel()), drawn.ops, {k: v[classes] for k, v in drawn.values.items()})


def class_means(embeddings: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Mean embedding per class [num_classes, D] (every class must be present)."""
    sums = torch.zeros(num_classes, embeddings.shape[1], dtype=embeddings.dtype, device=embeddings.device)
    sums.index_add_(0, labels, embeddings)
    counts = torch.bincount(labels, minlength=num_classes).to(embeddings.dtype).unsqueeze(1)
    return sums / counts


def dm_loss(embed: nn.Module, real: Tensor, real_labels: Tensor, syn: Tensor, syn_labels: Tensor,
            num_classes: int, aug: DiffAug | None = None, relative: bool = False) -> Tensor:
    """sum_c || mean_{x in real_c} f(A_c(x)) - mean_{s in syn_c} f(A_c(s)) ||^2 for the embedding f = `embed`.

    `relative` divides by sum_c ||mean_{x in real_c} f(A_c(x))||^2 (a constant of the step): random embedding
    networks differ in feature scale by orders of magnitude (a mixed refine on CIFAR-10 logs losses from about 0.1
    to 90 by the network drawn), so when the network is drawn from a list the absolute loss lets the
    largest-scale architectures set Adam's step for all of them."""
    if aug is not None and aug.names:
        labels = torch.cat([real_labels, syn_labels])
        params = per_class_aug(aug, labels, num_classes, real.device)
        both = aug.apply(torch.cat([real, syn]), params)
        real, syn = both[:real.shape[0]], both[real.shape[0]:]
    with torch.no_grad():
        mu_real = class_means(embed(real).flatten(1).float(), real_labels, num_classes)
    mu_syn = class_means(embed(syn).flatten(1).float(), syn_labels, num_classes)
    loss = (mu_real - mu_syn).pow(2).sum()
    return loss / mu_real.pow(2).sum().clamp_min(1e-12) if relative else loss
