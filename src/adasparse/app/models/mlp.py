"""A multilayer perceptron: flatten, then Linear + ReLU per hidden size, then a Linear head."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["MLP"]


class MLP(nn.Module):
    """Flattens inputs of shape ``(batch, *input_shape)`` and maps them to ``num_classes`` logits."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: tuple[int, ...] = (256, 256)) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True)]
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
