"""A small ConvNeXt-style 2-d CNN for scikit-learn's 8x8 digits: depthwise 7x7 convolutions, LayerNorm over the
channels, inverted-bottleneck MLPs applied per pixel, residual blocks (Liu et al., "A ConvNet for the 2020s",
CVPR 2022)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConvNeXt2d", "ConvNeXtBlock", "LayerNorm2d"]

STAGES: tuple[tuple[int, int], ...] = ((32, 2), (64, 2))
"""``(width, blocks)`` of each stage with the defaults; every stage after the first starts by halving the map."""


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a ``(batch, channels, height, width)`` map, at every pixel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """7x7 depthwise conv, LayerNorm over the channels, Linear to 4x the width, GELU, Linear back (both per pixel,
    channels last), plus the input. No layer scale and no stochastic depth (short schedules on small data)."""

    def __init__(self, width: int, expansion: int = 4) -> None:
        super().__init__()
        if width < 1 or expansion < 1:
            raise ValueError(f"ConvNeXtBlock needs a positive width and expansion, got {width}, {expansion}")
        self.depthwise = nn.Conv2d(width, width, 7, padding=3, groups=width)
        self.norm = nn.LayerNorm(width)
        self.expand = nn.Linear(width, expansion * width)
        self.activation = nn.GELU()
        self.project = nn.Linear(expansion * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm(self.depthwise(x).permute(0, 2, 3, 1))
        out = self.project(self.activation(self.expand(out)))
        return x + out.permute(0, 3, 1, 2)


class ConvNeXt2d(nn.Module):
    """A 3x3 stem conv + LayerNorm, stages of :class:`ConvNeXtBlock`, each stage after the first entered through a
    LayerNorm + 2x2 stride-2 conv, global average pool, LayerNorm, Linear.

    Takes inputs of shape ``(batch, *input_shape)`` with ``input_shape = (channels, height, width)``. ``stages`` lists
    ``(width, blocks)`` per stage (default `STAGES`: 32 then 64 channels, two blocks each; on 8x8 digits the stages see
    8x8 and 4x4 maps). No BatchNorm anywhere: every normalization is a LayerNorm over the channels. With the defaults
    on digits (``input_shape=(1, 8, 8)``, 10 classes) it has 102,346 parameters. Convolutions and Linear layers are
    initialised truncated-normal (std 0.02) with zero biases, as ConvNeXt does.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...] = (1, 8, 8),
        num_classes: int = 10,
        stages: tuple[tuple[int, int], ...] = STAGES,
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"ConvNeXt2d needs input_shape (channels, height, width), got {tuple(input_shape)}")
        if not stages or any(width < 1 or blocks < 1 for width, blocks in stages):
            raise ValueError(f"ConvNeXt2d needs at least one stage of positive width and blocks, got {stages}")
        first = stages[0][0]
        self.stem = nn.Sequential(nn.Conv2d(input_shape[0], first, 3, padding=1), LayerNorm2d(first))
        layers: list[nn.Module] = []
        cin = first
        for index, (width, blocks) in enumerate(stages):
            if index > 0:
                layers += [LayerNorm2d(cin), nn.Conv2d(cin, width, 2, stride=2)]
            layers += [ConvNeXtBlock(width) for _ in range(blocks)]
            cin = width
        self.stages = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.norm = nn.LayerNorm(cin)
        self.head = nn.Linear(cin, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.flatten(self.pool(self.stages(self.stem(x))))))
