"""DiM's conditional WGAN-GP pair (vimar-gu/DiM `gan_model.py`, from richardkxu/GANs-on-CIFAR10).

The SKD method distils a dataset *into this generator*, so the layers follow the reference exactly
(see docs/method.md §1.2); only the hard-coded 10 classes and 196 channels became arguments.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from skdd.errors import SkddError
from skdd.models.registry import check_width, register_model

CONDITIONING_MODES = ("overwrite", "concat", "cbn")


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm whose scale and shift are looked up per class (de Vries et al. 2017; SNGAN's and BigGAN's G).

    The label then acts at every layer instead of only through the first linear layer, which is where a small,
    briefly trained generator with one-hot input loses it (digits drawn in the wrong class). Gains start at 1
    and shifts at 0, so at initialisation the layer is the plain BatchNorm it replaces.
    """

    def __init__(self, width: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(width, affine=False)
        self.gain = nn.Embedding(num_classes, width)
        self.shift = nn.Embedding(num_classes, width)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.bn(x) * self.gain(y)[:, :, None, None] + self.shift(y)[:, :, None, None]


def _norm(width: int, num_classes: int | None) -> nn.Module:
    return nn.BatchNorm2d(width) if num_classes is None else ConditionalBatchNorm2d(width, num_classes)


def _up(width: int, kernel: int, num_classes: int | None) -> list[nn.Module]:
    # k=4,s=2,p=1 doubles the map; k=3 gives 2n-1, which is how the reference reaches 7 from 4 for 28x28.
    return [nn.ConvTranspose2d(width, width, kernel, stride=2, padding=1), _norm(width, num_classes), nn.ReLU()]


def _same(width: int, num_classes: int | None) -> list[nn.Module]:
    return [nn.Conv2d(width, width, 3, padding=1), _norm(width, num_classes), nn.ReLU()]


class Generator(nn.Module):
    """Label-conditional generator: (z, y) -> image in [-1, 1], the range the training data is scaled to.

    DiM conditions by *overwriting* the first `num_classes` noise entries with the one-hot label;
    the SKD paper writes "noise (+) label", which reads as concatenation. Both are offered so the
    ambiguity can be tested rather than guessed. `cbn` goes beyond both: the label is concatenated to the
    noise and also sets every BatchNorm's scale and shift in the body (`ConditionalBatchNorm2d`); the layer
    plan is unchanged, and the other two modes keep the reference's exact parameter names.
    """

    def __init__(self, *, in_channels: int, num_classes: int, image_size: int, width: int = 196,
                 z_dim: int = 100, conditioning: str = "overwrite"):
        super().__init__()
        check_width("generator", width)
        if conditioning not in CONDITIONING_MODES:
            known = ", ".join(CONDITIONING_MODES)
            raise SkddError(f"generator: unknown conditioning {conditioning!r} (known: {known})")
        if isinstance(z_dim, bool) or not isinstance(z_dim, int) or z_dim < 1:
            raise SkddError(f"generator: z_dim must be a positive integer, got {z_dim!r}")
        if conditioning == "overwrite" and z_dim <= num_classes:
            raise SkddError(
                f"generator: z_dim {z_dim} leaves no noise after overwriting {num_classes} one-hot entries "
                "(need z_dim > num_classes, or conditioning 'concat')"
            )
        self.z_dim, self.num_classes, self.conditioning, self.width = z_dim, num_classes, conditioning, width
        fc_in = z_dim if conditioning == "overwrite" else z_dim + num_classes
        self.fc = nn.Sequential(nn.Linear(fc_in, width * 16), nn.BatchNorm1d(width * 16), nn.ReLU())
        k = num_classes if conditioning == "cbn" else None
        self.body = nn.Sequential(
            *_up(width, 3 if image_size == 28 else 4, k),  # 4 -> 7 | 8
            *_same(width, k), *_same(width, k), *_same(width, k),
            *_up(width, 4, k),  # -> 14 | 16
            *_same(width, k),
            *_up(width, 4, k),  # -> 28 | 32
            nn.Conv2d(width, in_channels, 3, padding=1),
            nn.Tanh(),
        )

    def condition(self, z: Tensor, y: Tensor) -> Tensor:
        """The fc input for noise z and labels y (exposed so matching code can reuse the exact input)."""
        onehot = F.one_hot(y, self.num_classes).to(z.dtype)
        if self.conditioning == "overwrite":
            # Out-of-place, so the caller's z is untouched and autograd can still flow into it.
            return torch.cat([onehot, z[:, self.num_classes:]], dim=1)
        return torch.cat([z, onehot], dim=1)

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        h = self.fc(self.condition(z, y)).view(-1, self.width, 4, 4)
        if self.conditioning != "cbn":
            return self.body(h)
        for layer in self.body:
            h = layer(h, y) if isinstance(layer, ConditionalBatchNorm2d) else layer(h)
        return h


class Discriminator(nn.Module):
    """WGAN-GP critic with an auxiliary classifier head (ACGAN).

    LayerNorm instead of BatchNorm because the gradient penalty is defined per sample and batch
    statistics would couple samples.
    """

    def __init__(self, *, in_channels: int, num_classes: int, image_size: int, width: int = 196):
        super().__init__()
        check_width("discriminator", width)
        s = image_size
        # (stride, output map size) per conv; the last stride-2 conv takes 7 -> 4 for 28 and 8 -> 4 for 32.
        plan = [(1, s), (2, s // 2), (1, s // 2), (2, s // 4), (1, s // 4), (1, s // 4), (1, s // 4), (2, 4)]
        layers, c_in = [], in_channels
        for stride, size in plan:
            layers += [nn.Conv2d(c_in, width, 3, stride=stride, padding=1), nn.LayerNorm([width, size, size]),
                       nn.LeakyReLU(0.01)]
            c_in = width
        self.features = nn.Sequential(*layers, nn.MaxPool2d(4), nn.Flatten())
        self.fc_src = nn.Linear(width, 1)
        self.fc_cls = nn.Linear(width, num_classes)
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (critic score [B], class logits [B, num_classes])."""
        h = self.features(x)
        return self.fc_src(h).squeeze(1), self.fc_cls(h)


class ProjectionDiscriminator(nn.Module):
    """Hinge critic with a projection head for the label (Miyato & Koyama 2018, SNGAN-projection; BigGAN's D).

    Spectral norm on every weight bounds D's Lipschitz constant, so no gradient penalty is needed and a critic
    step saves the penalty's double backward. The label enters as <embed(y), h> added to the unconditional score
    rather than through an auxiliary classifier, which conditions D on the class directly. No normalisation
    layer (spectral norm is the regulariser); the conv plan is `Discriminator`'s, so equal widths compare like
    for like.
    """

    def __init__(self, *, in_channels: int, num_classes: int, image_size: int, width: int = 196):
        super().__init__()
        check_width("projection-discriminator", width)
        sn = nn.utils.parametrizations.spectral_norm
        layers, c_in = [], in_channels
        for stride in (1, 2, 1, 2, 1, 1, 1, 2):   # Discriminator's strides: s -> s/2 -> s/4 -> 4
            layers += [sn(nn.Conv2d(c_in, width, 3, stride=stride, padding=1)), nn.LeakyReLU(0.1)]
            c_in = width
        self.features = nn.Sequential(*layers)
        self.fc = sn(nn.Linear(width, 1))
        self.embed = sn(nn.Embedding(num_classes, width))
        self.num_classes = num_classes

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Returns the critic score [B] of images x as members of classes y."""
        h = self.features(x).sum(dim=(2, 3))   # global sum pooling (SNGAN)
        return self.fc(h).squeeze(1) + (self.embed(y) * h).sum(1)


register_model("generator", "generator")(Generator)
register_model("discriminator", "discriminator")(Discriminator)
register_model("projection-discriminator", "discriminator")(ProjectionDiscriminator)
