"""A small 2-d CNN for scikit-learn's 8x8 digits."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CNN2d"]


class CNN2d(nn.Module):
    """Two Conv2d + BatchNorm2d + ReLU layers, a 2x2 max-pool, then a 128-unit MLP head.

    Takes inputs of shape ``(batch, *input_shape)`` with ``input_shape = (channels, height, width)``;
    the flatten size follows from ``input_shape``.
    """

    def __init__(
        self, input_shape: tuple[int, ...] = (1, 8, 8), num_classes: int = 10, channels: tuple[int, int] = (32, 64)
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"CNN2d needs input_shape (channels, height, width), got {tuple(input_shape)}")
        in_channels, height, width = input_shape
        if height < 2 or width < 2:
            raise ValueError(f"CNN2d needs height and width of at least 2, got {tuple(input_shape)}")
        first, second = channels
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, first, 3, padding=1),
            nn.BatchNorm2d(first),
            nn.ReLU(inplace=True),
            nn.Conv2d(first, second, 3, padding=1),
            nn.BatchNorm2d(second),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(second * (height // 2) * (width // 2), 128),
            nn.ReLU(inplace=True),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
