"""A small ResNet-style 1-d CNN for MNIST-1D (one channel, sequences of length 40)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BasicBlock1d", "ResNet1d"]


class BasicBlock1d(nn.Module):
    """conv3(stride) -> BN -> ReLU -> conv3 -> BN, plus a shortcut, then ReLU (the post-activation ResNet block).

    The shortcut is a strided 1x1 conv + BN when the channels or the stride change, the identity otherwise.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm1d(out_channels)
        self.conv2 = nn.Conv1d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm1d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels or stride != 1:
            self.shortcut = nn.Sequential(
                nn.Conv1d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm1d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet1d(nn.Module):
    """A kernel-5 stem conv + BN + ReLU, one basic block per width (strides 1, 2, 2), global average pool, Linear.

    Takes inputs of shape ``(batch, *input_shape)`` with ``input_shape = (channels, length)``. With the default
    widths ``(32, 64, 128)`` on MNIST-1D (``input_shape=(1, 40)``, 10 classes) it has 111,338 parameters; every
    conv but the stem (160 weights) has at least 1000 weights, as has the head. Convolutions are initialised
    Kaiming-normal (fan_out, relu), BatchNorm to weight 1 and bias 0.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...] = (1, 40),
        num_classes: int = 10,
        widths: tuple[int, ...] = (32, 64, 128),
    ) -> None:
        super().__init__()
        if len(input_shape) != 2:
            raise ValueError(f"ResNet1d needs input_shape (channels, length), got {tuple(input_shape)}")
        if not widths or any(w < 1 for w in widths):
            raise ValueError(f"ResNet1d needs at least one positive width, got {tuple(widths)}")
        in_channels = input_shape[0]
        self.stem = nn.Sequential(
            nn.Conv1d(in_channels, widths[0], 5, padding=2, bias=False),
            nn.BatchNorm1d(widths[0]),
            nn.ReLU(inplace=True),
        )
        blocks: list[nn.Module] = []
        cin = widths[0]
        for index, width in enumerate(widths):
            blocks.append(BasicBlock1d(cin, width, stride=1 if index == 0 else 2))
            cin = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(cin, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv1d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm1d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.flatten(self.pool(self.blocks(self.stem(x)))))
