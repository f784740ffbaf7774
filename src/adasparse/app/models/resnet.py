"""The small post-activation ResNet behind :class:`~.resnet1d.ResNet1d` and :class:`~.resnet2d.ResNet2d`, written
once for any number of spatial dimensions (1: sequences, 2: images)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ResidualBlock", "ResNet"]

_LAYERS: dict[int, tuple[type[nn.Module], type[nn.Module], type[nn.Module]]] = {
    1: (nn.Conv1d, nn.BatchNorm1d, nn.AdaptiveAvgPool1d),
    2: (nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d),
}
"""Convolution, batch norm and global pooling of each number of spatial dimensions."""

_INPUT_SHAPES = {1: "(channels, length)", 2: "(channels, height, width)"}


class ResidualBlock(nn.Module):
    """conv3(stride) -> BN -> ReLU -> conv3 -> BN, plus a shortcut, then ReLU (the post-activation ResNet block),
    over ``dims`` spatial dimensions (a class attribute set by the subclasses).

    The shortcut is a strided 1x1 conv + BN when the channels or the stride change, the identity otherwise.
    """

    dims: int

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        conv, norm, _ = _LAYERS[self.dims]
        self.conv1 = conv(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm(out_channels)
        self.conv2 = conv(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = norm(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels or stride != 1:
            self.shortcut = nn.Sequential(
                conv(in_channels, out_channels, 1, stride=stride, bias=False), norm(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A stem conv (kernel ``stem_kernel``, same padding) + BN + ReLU, one ``block`` per width (strides 1, 2, 2,
    ...), global average pool, Linear; ``block`` and ``stem_kernel`` are class attributes set by the subclasses.

    Takes inputs of shape ``(batch, *input_shape)`` with ``input_shape = (channels, *spatial)``. Convolutions are
    initialised Kaiming-normal (fan_out, relu), BatchNorm to weight 1 and bias 0.
    """

    block: type[ResidualBlock]
    stem_kernel: int

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        dims, name = self.block.dims, type(self).__name__
        if len(input_shape) != dims + 1:
            raise ValueError(f"{name} needs input_shape {_INPUT_SHAPES[dims]}, got {tuple(input_shape)}")
        if not widths or any(w < 1 for w in widths):
            raise ValueError(f"{name} needs at least one positive width, got {tuple(widths)}")
        conv, norm, pool = _LAYERS[dims]
        self.stem = nn.Sequential(
            conv(input_shape[0], widths[0], self.stem_kernel, padding=self.stem_kernel // 2, bias=False),
            norm(widths[0]),
            nn.ReLU(inplace=True),
        )
        blocks: list[nn.Module] = []
        cin = widths[0]
        for index, width in enumerate(widths):
            blocks.append(self.block(cin, width, stride=1 if index == 0 else 2))
            cin = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = pool(1)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(cin, num_classes)
        for module in self.modules():
            if isinstance(module, conv):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, norm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.flatten(self.pool(self.blocks(self.stem(x)))))
