"""DC's VGG11 with instance norm (VICO-UoE/DatasetCondensation `networks.py::VGG`).

Used for cross-architecture evaluation, so it stays as in DC to keep numbers comparable.
"""

from __future__ import annotations

from torch import Tensor, nn

from skdd.models.registry import check_width, register_model

# Channel multiples of `width` (DC's [64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M] at width 64).
CFG_VGG11 = (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M")


@register_model("vgg11", "classifier")
class VGG11(nn.Module):
    """Five max-pools take a 32x32 map to 1x1, so the classifier sees exactly 8*width features.

    A plain 28x28 input would shrink 28 -> 14 -> 7 -> 3 -> 1 -> 0 and fail, so for 28x28 the first
    conv gets padding 3 (28 -> 32), as DC does for its 1-channel datasets.
    """

    def __init__(self, *, in_channels: int, num_classes: int, image_size: int, width: int = 64):
        super().__init__()
        check_width("vgg11", width)
        layers, c_in = [], in_channels
        for i, v in enumerate(CFG_VGG11):
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            c_out = v * width
            pad = 3 if i == 0 and image_size == 28 else 1
            layers += [nn.Conv2d(c_in, c_out, 3, padding=pad), nn.GroupNorm(c_out, c_out, affine=True),
                       nn.ReLU(inplace=True)]
            c_in = c_out
        self.features = nn.Sequential(*layers, nn.Flatten())  # DC's trailing AvgPool2d(1) is an identity, dropped
        self.feature_dim = c_in
        self.classifier = nn.Linear(c_in, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.embed(x))
