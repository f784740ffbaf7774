"""The pre-activation Wide ResNet of Zagoruyko & Komodakis (2016), with conv biases on.

Laid out as in the "Weight Pruning via Adaptive Sparsity Loss" reference code: WRN-16-8 for CIFAR-100
(``WideResNet(16, 8, num_classes=100)``) has 11,012,036 parameters.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BasicBlock", "WideResNet"]


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=True)


class BasicBlock(nn.Module):
    """BN -> ReLU -> conv3x3(stride) -> BN -> ReLU -> dropout -> conv3x3, plus a shortcut.

    The shortcut is a 1x1 conv of the pre-activated input when the channels or the stride change,
    and the identity of the raw input otherwise.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.shortcut: nn.Module | None = None
        if in_channels != out_channels or stride != 1:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, padding=0, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.relu1(self.bn1(x))
        residual = x if self.shortcut is None else self.shortcut(activated)
        out = self.conv1(activated)
        out = self.conv2(self.dropout(self.relu2(self.bn2(out))))
        return out + residual


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor``: a 3x3 stem conv, three groups of ``(depth - 4) / 6`` basic blocks
    of widths ``16k``, ``32k``, ``64k`` (strides 1, 2, 2), then BN -> ReLU -> global average pool -> Linear.

    Convolutions are initialised Kaiming-normal (fan_out, relu) with zero bias, BatchNorm to weight 1
    and bias 0, and the Linear bias to 0. WRN-16-8 with 100 classes has 11,012,036 parameters.
    """

    def __init__(
        self,
        depth: int = 16,
        widen_factor: int = 8,
        num_classes: int = 100,
        dropout: float = 0.0,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, ...), got depth={depth}")
        if widen_factor < 1:
            raise ValueError(f"WideResNet widen_factor must be at least 1, got {widen_factor}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"WideResNet dropout must be in [0, 1), got {dropout}")
        blocks = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.depth = depth
        self.widen_factor = widen_factor
        self.conv1 = _conv3x3(in_channels, widths[0])
        self.block1 = self._group(widths[0], widths[1], blocks, 1, dropout)
        self.block2 = self._group(widths[1], widths[2], blocks, 2, dropout)
        self.block3 = self._group(widths[2], widths[3], blocks, 2, dropout)
        self.bn = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(widths[3], num_classes)
        self._init_weights()

    @staticmethod
    def _group(in_channels: int, out_channels: int, blocks: int, stride: int, dropout: float) -> nn.Sequential:
        layers = [BasicBlock(in_channels, out_channels, stride, dropout)]
        layers += [BasicBlock(out_channels, out_channels, 1, dropout) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(self.flatten(self.pool(self.relu(self.bn(out)))))
