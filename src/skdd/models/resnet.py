"""The two ResNet families the SKD experiments may refer to (docs/method.md §1.4 and §2.5).

`resnet10/18` are DiM's (vimar-gu/DiM `models/resnet.py`): BatchNorm, a narrow 32..256 CIFAR-style
net on 32x32 and an ImageNet-style 64..512 net with a 7x7 stem and max-pool on 28x28. They form
DiM's model pool. `resnet10_dc/18_dc` are DC's (`networks.py::ResNet`): instance norm, 64..512,
3x3 stem, used for cross-architecture evaluation. Which one the SKD paper used is unresolved, so
both are kept under distinct names instead of one configurable class that hides the difference.
"""

from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from skdd.errors import SkddError
from skdd.models.registry import check_width, register_model

STYLES = ("auto", "small", "large")


def _batch_norm(c: int) -> nn.Module:
    return nn.BatchNorm2d(c)


def _instance_norm(c: int) -> nn.Module:
    return nn.GroupNorm(c, c, affine=True)


class BasicBlock(nn.Module):
    """conv3x3-norm-ReLU-conv3x3-norm plus a projected shortcut when the shape changes (same in DiM and DC)."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: Callable[[int], nn.Module]):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = norm(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), norm(c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """stem -> 4 stages (widths w, 2w, 4w, 8w; strides 1, 2, 2, 2) -> global average pool -> linear.

    Global average pooling is what DiM does; DC's `avg_pool2d(4)` is the same thing because its
    last map is always 4x4 for 28 and 32 inputs.
    """

    def __init__(self, stem: nn.Module, width: int, blocks: int, num_classes: int,
                 norm: Callable[[int], nn.Module]):
        super().__init__()
        self.stem = stem
        stages, c_in = [], width
        for i in range(4):
            c_out, stride = width * 2**i, 1 if i == 0 else 2
            for j in range(blocks):
                stages.append(BasicBlock(c_in if j == 0 else c_out, c_out, stride if j == 0 else 1, norm))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.feature_dim = c_in
        self.fc = nn.Linear(c_in, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x)).mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.embed(x))


def _dim_resnet(name: str, blocks: int, in_channels: int, num_classes: int, image_size: int,
                width: int | None, style: str) -> ResNet:
    if style not in STYLES:
        raise SkddError(f"model {name!r}: unknown style {style!r} (known: {', '.join(STYLES)})")
    if style == "auto":
        # DiM picks 'small' for CIFAR and 'large' for MNIST/Fashion; image size is our proxy for the dataset.
        style = "small" if image_size == 32 else "large"
    width = check_width(name, width if width is not None else (32 if style == "small" else 64))
    if style == "small":
        stem = [nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
    else:  # 28 -> 14 (conv) -> 7 (pool)
        stem = [nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(width),
                nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1)]
    net = ResNet(nn.Sequential(*stem), width, blocks, num_classes, _batch_norm)
    net.style = style
    # DiM's init: He-normal over fan-out for convs, unit/zero norms; linear layers keep torch's default.
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return net


def _dc_resnet(name: str, blocks: int, in_channels: int, num_classes: int, width: int) -> ResNet:
    check_width(name, width)
    stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), _instance_norm(width),
                         nn.ReLU(inplace=True))
    return ResNet(stem, width, blocks, num_classes, _instance_norm)  # DC keeps torch's default init


@register_model("resnet10", "classifier")
def resnet10(*, in_channels: int, num_classes: int, image_size: int,
             width: int | None = None, style: str = "auto") -> ResNet:
    return _dim_resnet("resnet10", 1, in_channels, num_classes, image_size, width, style)


@register_model("resnet18", "classifier")
def resnet18(*, in_channels: int, num_classes: int, image_size: int,
             width: int | None = None, style: str = "auto") -> ResNet:
    return _dim_resnet("resnet18", 2, in_channels, num_classes, image_size, width, style)


@register_model("resnet10_dc", "classifier")
def resnet10_dc(*, in_channels: int, num_classes: int, image_size: int, width: int = 64) -> ResNet:
    return _dc_resnet("resnet10_dc", 1, in_channels, num_classes, width)


@register_model("resnet18_dc", "classifier")
def resnet18_dc(*, in_channels: int, num_classes: int, image_size: int, width: int = 64) -> ResNet:
    return _dc_resnet("resnet18_dc", 2, in_channels, num_classes, width)
