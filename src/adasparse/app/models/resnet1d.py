"""A small ResNet-style 1-d CNN for MNIST-1D (one channel, sequences of length 40); the network is
:class:`~.resnet.ResNet` over one spatial dimension."""

from __future__ import annotations

from .resnet import ResidualBlock, ResNet

__all__ = ["BasicBlock1d", "ResNet1d"]


class BasicBlock1d(ResidualBlock):
    """conv3(stride) -> BN -> ReLU -> conv3 -> BN, plus a shortcut, then ReLU (the post-activation ResNet block).

    The shortcut is a strided 1x1 conv + BN when the channels or the stride change, the identity otherwise.
    """

    dims = 1


class ResNet1d(ResNet):
    """A kernel-5 stem conv + BN + ReLU, one basic block per width (strides 1, 2, 2), global average pool, Linear.

    Takes inputs of shape ``(batch, *input_shape)`` with ``input_shape = (channels, length)``. With the default
    widths ``(32, 64, 128)`` on MNIST-1D (``input_shape=(1, 40)``, 10 classes) it has 111,338 parameters; every
    conv but the stem (160 weights) has at least 1000 weights, as has the head. Convolutions are initialised
    Kaiming-normal (fan_out, relu), BatchNorm to weight 1 and bias 0.
    """

    block = BasicBlock1d
    stem_kernel = 5

    def __init__(
        self,
        input_shape: tuple[int, ...] = (1, 40),
        num_classes: int = 10,
        widths: tuple[int, ...] = (32, 64, 128),
    ) -> None:
        super().__init__(input_shape, num_classes, widths)
