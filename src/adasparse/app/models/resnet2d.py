"""A small ResNet-style 2-d CNN for scikit-learn's 8x8 digits."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BasicBlock2d", "ResNet2d"]


class BasicBlock2d(nn.Module):
    """conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN, plus a shortcut, then ReLU (the post-activation ResNet block).

    The shortcut is a strided 1x1 conv + BN when the channels or the stride change, the identity otherwise.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels or stride != 1:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet2d(nn.Module):
    """A 3x3 stem conv + BN + ReLU, one basic block per width (strides 1, 2, 2), global average pool, Linear.

    Takes inputs of shape ``(batch, *input_shape)`` with ``input_shape = (channels, height, width)``; on 8x8
    digits the three stages see 8x8, 4x4 and 2x2 maps. With the default widths ``(16, 32, 64)`` on digits
    (``input_shape=(1, 8, 8)``, 10 classes) it has 77,754 parameters; all but the stem, the second stage's 1x1
    shortcut and the head (1,296 weights, 1.7%) are in layers of at least 1000 weights.
    Convolutions are initialised Kaiming-normal (fan_out, relu), BatchNorm to weight 1 and bias 0.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...] = (1, 8, 8),
        num_classes: int = 10,
        widths: tuple[int, ...] = (16, 32, 64),
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"ResNet2d needs input_shape (channels, height, width), got {tuple(input_shape)}")
        if not widths or any(w < 1 for w in widths):
            raise ValueError(f"ResNet2d needs at least one positive width, got {tuple(widths)}")
        in_channels = input_shape[0]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        blocks: list[nn.Module] = []
        cin = widths[0]
        for index, width in enumerate(widths):
            blocks.append(BasicBlock2d(cin, width, stride=1 if index == 0 else 2))
            cin = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(cin, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.flatten(self.pool(self.blocks(self.stem(x)))))
