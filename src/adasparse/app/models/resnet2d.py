"""A small ResNet-style 2-d CNN for scikit-learn's 8x8 digits; the network is :class:`~.resnet.ResNet` over two
spatial dimensions."""

from __future__ import annotations

from .resnet import ResidualBlock, ResNet

__all__ = ["BasicBlock2d", "ResNet2d"]


class BasicBlock2d(ResidualBlock):
    """conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN, plus a shortcut, then ReLU (the post-activation ResNet block).

    The shortcut is a strided 1x1 conv + BN when the channels or the stride change, the identity otherwise.
    """

    dims = 2


class ResNet2d(ResNet):
    """A 3x3 stem conv + BN + ReLU, one basic block per width (strides 1, 2, 2), global average pool, Linear.

    Takes inputs of shape ``(batch, *input_shape)`` with ``input_shape = (channels, height, width)``; on 8x8
    digits the three stages see 8x8, 4x4 and 2x2 maps. With the default widths ``(16, 32, 64)`` on digits
    (``input_shape=(1, 8, 8)``, 10 classes) it has 77,754 parameters; all but the stem, the second stage's 1x1
    shortcut and the head (1,296 weights, 1.7%) are in layers of at least 1000 weights.
    Convolutions are initialised Kaiming-normal (fan_out, relu), BatchNorm to weight 1 and bias 0.
    """

    block = BasicBlock2d
    stem_kernel = 3

    def __init__(
        self,
        input_shape: tuple[int, ...] = (1, 8, 8),
        num_classes: int = 10,
        widths: tuple[int, ...] = (16, 32, 64),
    ) -> None:
        super().__init__(input_shape, num_classes, widths)
