"""A small MobileNetV2-style 2-d CNN for scikit-learn's 8x8 digits: inverted residual blocks with depthwise
convolutions."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["InvertedResidual", "MobileNet2d"]

BLOCKS: tuple[tuple[int, int, int], ...] = ((4, 16, 1), (4, 24, 2), (4, 24, 1), (4, 32, 2), (4, 32, 1))
"""``(expansion, output width, stride)`` of each inverted residual block with the defaults."""


class InvertedResidual(nn.Module):
    """1x1 expand conv + BN + ReLU6, 3x3 depthwise conv (``groups`` = its channels, ``stride``) + BN + ReLU6, 1x1
    project conv + BN (linear bottleneck), plus the input when the stride is 1 and the widths match.

    The expand conv is left out when ``expansion`` is 1 (the depthwise conv then reads the input directly).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"InvertedResidual needs stride 1 or 2, got {stride}")
        if expansion < 1:
            raise ValueError(f"InvertedResidual needs an expansion of at least 1, got {expansion}")
        hidden = in_channels * expansion
        self.residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [nn.Conv2d(in_channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return x + out if self.residual else out


class MobileNet2d(nn.Module):
    """A 3x3 stem conv + BN + ReLU6, inverted residual blocks, global average pool, Linear.

    Takes inputs of shape ``(batch, *input_shape)`` with ``input_shape = (channels, height, width)``. ``blocks``
    lists ``(expansion, output width, stride)`` per block (default `BLOCKS`: widths 16, 24, 24, 32, 32, expansion
    4, strides 1, 2, 1, 2, 1; on 8x8 digits the blocks see 8x8, 4x4 and 2x2 maps); the residual additions tie the
    stem to the first block's projection and each stride-1 block's projection to the block before it. With the
    defaults on digits (``input_shape=(1, 8, 8)``, 10 classes) it has 29,370 parameters. Convolutions are
    initialised Kaiming-normal (fan_out), BatchNorm to weight 1 and bias 0, the classifier normal(0, 0.01).
    """

    def __init__(
        self,
        input_shape: tuple[int, ...] = (1, 8, 8),
        num_classes: int = 10,
        stem: int = 16,
        blocks: tuple[tuple[int, int, int], ...] = BLOCKS,
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"MobileNet2d needs input_shape (channels, height, width), got {tuple(input_shape)}")
        if stem < 1 or not blocks:
            raise ValueError(f"MobileNet2d needs a positive stem width and at least one block, got {stem}, {blocks}")
        self.stem = nn.Sequential(
            nn.Conv2d(input_shape[0], stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem), nn.ReLU6(inplace=True)
        )
        layers: list[nn.Module] = []
        cin = stem
        for expansion, width, stride in blocks:
            layers.append(InvertedResidual(cin, width, stride, expansion))
            cin = width
        self.blocks = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(cin, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.head.weight, 0.0, 0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.flatten(self.pool(self.blocks(self.stem(x)))))
