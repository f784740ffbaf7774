"""A small 1-d CNN for MNIST-1D (one channel, sequences of length 40)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CNN1d"]


def _conv_length(length: int, kernel: int, stride: int, padding: int) -> int:
    return (length + 2 * padding - kernel) // stride + 1


class CNN1d(nn.Module):
    """Three strided Conv1d + ReLU layers (kernels 5, 3, 3; stride 2 each), then a Linear head.

    Takes inputs of shape ``(batch, *input_shape)`` with ``input_shape = (channels, length)``. The layout is the
    published MNIST-1D CNN (Greydanus 2020, 25 channels, ~94%); the default width of 64 channels leaves enough
    redundancy to prune 90% of the weights without losing accuracy (measured: at 32 channels the 90%-sparse model
    trails the dense one by 2-3 points, at 64 it matches it).
    """

    def __init__(self, input_shape: tuple[int, ...] = (1, 40), num_classes: int = 10, channels: int = 64) -> None:
        super().__init__()
        if len(input_shape) != 2:
            raise ValueError(f"CNN1d needs input_shape (channels, length), got {tuple(input_shape)}")
        in_channels, length = input_shape
        specs = ((in_channels, 5, 2, 2), (channels, 3, 2, 1), (channels, 3, 2, 1))
        layers: list[nn.Module] = []
        for cin, kernel, stride, padding in specs:
            layers += [nn.Conv1d(cin, channels, kernel, stride=stride, padding=padding), nn.ReLU(inplace=True)]
            length = _conv_length(length, kernel, stride, padding)
        if length < 1:
            raise ValueError(f"CNN1d input length {input_shape[1]} is too short")
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(channels * length, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.flatten(self.features(x)))
