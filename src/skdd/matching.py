"""Distribution matching (DM, Zhao & Bilen 2023; docs/method.md §3.8): the loss `refine` lowers.

Per class, the mean embedding of a real batch and of the synthetic images, under a freshly initialised
(random) network, should agree; the loss is the sum over classes of the squared distance between the two
means. A new random network every step makes the set match the real data under many feature maps at once,
without the bi-level loop of gradient or trajectory matching, which is why it is the cheapest fixed-set
objective. Real and synthetic images of one class get the same augmentation parameters (DSA's siamese
augmentation); classes draw their own.

`attention` adds DataDAM's spatial attention matching (Sajedi et al., ICCV 2023): per block of the embedding
network, each image's map sum_ch |f|^4 over the channels, L2-normalised over positions, and the squared distance
between the real and synthetic class means of those maps. DM alone matches only the last layer's mean feature,
which an instance-norm ConvNet3 reads from colour and texture statistics wherever they sit; the attention maps ask
the synthetic images to be active where real images of the class are, block by block (where the objects are).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from skdd.augment import AugParams, DiffAug
from skdd.errors import SkddError

ATTENTION_POWER = 4   # DataDAM's p: higher powers weigh the most active positions more


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


def spatial_attention(activation: Tensor) -> Tensor:
    """DataDAM's attention map of each image [N, H*W]: sum over channels of |f|^p, L2-normalised over positions."""
    return F.normalize(activation.float().abs().pow(ATTENTION_POWER).sum(1).flatten(1), dim=1)


def _forward(embed, x: Tensor, blocks: nn.Module | None) -> tuple[Tensor, list[Tensor]]:
    """embed(x) and, when `blocks` is given, the outputs of its ReLUs in call order (each block's activations)."""
    if blocks is None:
        return embed(x), []
    acts: list[Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: acts.append(out))
             for m in blocks.modules() if isinstance(m, nn.ReLU)]
    try:
        out = embed(x)
    finally:
        for h in hooks:
            h.remove()
    if not acts:
        raise SkddError(f"attention matching reads the ReLU blocks of the embedding network; "
                        f"{type(blocks).__name__} has none")
    return out, acts


def dm_loss(embed: nn.Module, real: Tensor, real_labels: Tensor, syn: Tensor, syn_labels: Tensor,
            num_classes: int, aug: DiffAug | None = None, relative: bool = False, attention: float = 0.0,
            blocks: nn.Module | None = None) -> Tensor:
    """sum_c || mean_{x in real_c} f(A_c(x)) - mean_{s in syn_c} f(A_c(s)) ||^2 for the embedding f = `embed`.

    `relative` divides by sum_c ||mean_{x in real_c} f(A_c(x))||^2 (a constant of the step): random embedding
    networks differ in feature scale by orders of magnitude (a mixed refine on CIFAR-10 logs losses from about 0.1
    to 90 by the network drawn), so when the network is drawn from a list the absolute loss lets the
    largest-scale architectures set Adam's step for all of them.

    `attention` > 0 adds `attention` × sum over `blocks`' ReLU outputs of sum_c ||mean real_c map - mean syn_c
    map||^2 (`spatial_attention`; `blocks` is the module `embed` runs, needed to see its blocks)."""
    if attention > 0 and blocks is None:
        raise SkddError("attention matching needs the embedding network's blocks")
    if aug is not None and aug.names:
        labels = torch.cat([real_labels, syn_labels])
        params = per_class_aug(aug, labels, num_classes, real.device)
        both = aug.apply(torch.cat([real, syn]), params)
        real, syn = both[:real.shape[0]], both[real.shape[0]:]
    watch = blocks if attention > 0 else None
    with torch.no_grad():
        out_real, acts_real = _forward(embed, real, watch)
        mu_real = class_means(out_real.flatten(1).float(), real_labels, num_classes)
    out_syn, acts_syn = _forward(embed, syn, watch)
    mu_syn = class_means(out_syn.flatten(1).float(), syn_labels, num_classes)
    loss = (mu_real - mu_syn).pow(2).sum()
    if relative:
        loss = loss / mu_real.pow(2).sum().clamp_min(1e-12)
    for a_real, a_syn in zip(acts_real, acts_syn):
        loss = loss + attention * (class_means(spatial_attention(a_real), real_labels, num_classes)
                                   - class_means(spatial_attention(a_syn), syn_labels, num_classes)).pow(2).sum()
    return loss
