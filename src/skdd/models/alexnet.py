"""DC's small AlexNet (VICO-UoE/DatasetCondensation `networks.py::AlexNet`).

Used only for cross-architecture evaluation of distilled sets; kept as in DC (no normalization)
so numbers are comparable with the DC/DM literature.
"""

from __future__ import annotations

from torch import Tensor, nn

from skdd.models.registry import check_width, register_model

BASE_CHANNELS = (128, 192, 256, 192, 192)  # DC's widths; `width` rescales them relative to 128


@register_model("alexnet", "classifier")
class AlexNet(nn.Module):
    """5 convs with three 2x2 max-pools, ending on a 4x4 map for both 28x28 and 32x32 inputs."""

    def __init__(self, *, in_channels: int, num_classes: int, image_size: int, width: int = 128):
        super().__init__()
        check_width("alexnet", width)
        c1, c2, c3, c4, c5 = (max(1, round(c * width / 128)) for c in BASE_CHANNELS)
        # Padding 4 on the 5x5 first conv turns 28x28 into 32x32 (DC does this for its 1-channel sets).
        pad = 4 if image_size == 28 else 2
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, padding=pad), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.feature_dim = c5 * 4 * 4
        self.fc = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.embed(x))
