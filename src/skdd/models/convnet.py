"""DC's ConvNet-3 (VICO-UoE/DatasetCondensation `networks.py::ConvNet`, identical in DiM).

It is the standard evaluation network of dataset distillation and one of the SKD model-pool
members, so widths, instance norm and the 28 -> 32 padding trick follow the reference exactly.
"""

from __future__ import annotations

from torch import Tensor, nn

from skdd.models.registry import check_width, register_model

DEPTH = 3  # fixed: the registered name promises a 3-block net


@register_model("convnet3", "classifier")
class ConvNet(nn.Module):
    """[conv3x3 -> instance norm (affine) -> ReLU -> avgpool2] x 3 -> linear.

    Instance norm (GroupNorm with one channel per group) keeps the network independent of batch
    composition, which matters when a batch is a handful of synthetic images of one class.
    """

    def __init__(self, *, in_channels: int, num_classes: int, image_size: int, width: int = 128):
        super().__init__()
        check_width("convnet3", width)
        layers, c_in = [], in_channels
        for d in range(DEPTH):
            # Padding 3 on the first conv turns 28x28 into 32x32, so both sizes end on a 4x4 map.
            pad = 3 if d == 0 and image_size == 28 else 1
            layers += [nn.Conv2d(c_in, width, 3, padding=pad), nn.GroupNorm(width, width, affine=True),
                       nn.ReLU(inplace=True), nn.AvgPool2d(2, 2)]
            c_in = width
        self.features = nn.Sequential(*layers, nn.Flatten())
        side = 32 // 2**DEPTH
        self.feature_dim = width * side * side
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.embed(x))
