"""Models for `adasparse train`, written with torch alone, one per file (``resnet1d`` and ``resnet2d`` share
``resnet.py``), created by name.

``create_model("wrn-16-8", num_classes=100, input_shape=(3, 32, 32))``.
"""

from __future__ import annotations

import re
from typing import Callable

from torch import nn

from .cnn1d import CNN1d
from .cnn2d import CNN2d
from .convnext2d import ConvNeXt2d
from .mlp import MLP
from .mobilenet2d import MobileNet2d
from .resnet1d import ResNet1d
from .resnet2d import ResNet2d
from .transformer import Transformer1d
from .wide_resnet import WideResNet

__all__ = ["MODELS", "create_model", "default_model", "check_model_name"]

ModelFactory = Callable[..., nn.Module]


def _mlp(*, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    return MLP(tuple(input_shape), num_classes)


def _cnn1d(*, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    return CNN1d(tuple(input_shape), num_classes)


def _cnn2d(*, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    return CNN2d(tuple(input_shape), num_classes)


def _resnet1d(*, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    return ResNet1d(tuple(input_shape), num_classes)


def _resnet2d(*, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    return ResNet2d(tuple(input_shape), num_classes)


def _mobilenet2d(*, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    return MobileNet2d(tuple(input_shape), num_classes)


def _convnext2d(*, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    return ConvNeXt2d(tuple(input_shape), num_classes)


def _transformer(*, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    return Transformer1d(tuple(input_shape), num_classes)


def _wrn(depth: int, widen_factor: int) -> ModelFactory:
    def make(*, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
        return WideResNet(depth, widen_factor, num_classes=num_classes, in_channels=input_shape[0])

    make.__name__ = f"wrn_{depth}_{widen_factor}"
    make.__doc__ = f"WRN-{depth}-{widen_factor}, taking its input channels from ``input_shape[0]``."
    return make


MODELS: dict[str, ModelFactory] = {
    "mlp": _mlp,
    "cnn1d": _cnn1d,
    "cnn2d": _cnn2d,
    "wrn-16-8": _wrn(16, 8),
    "resnet1d": _resnet1d,
    "resnet2d": _resnet2d,
    "transformer": _transformer,
    "mobilenet2d": _mobilenet2d,
    "convnext2d": _convnext2d,
}
"""Each named model's factory, called as ``factory(num_classes=..., input_shape=...)``."""

_WRN_NAME = re.compile(r"wrn-(\d+)-(\d+)")

_DEFAULTS = {"mnist1d": "cnn1d", "digits": "cnn2d", "cifar10": "wrn-16-8", "cifar100": "wrn-16-8"}


def _factory(name: str) -> ModelFactory:
    factory = MODELS.get(name)
    if factory is None:
        match = _WRN_NAME.fullmatch(name) if isinstance(name, str) else None
        if match is None:
            raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)} (or wrn-DEPTH-WIDTH)")
        factory = _wrn(int(match.group(1)), int(match.group(2)))
    return factory


def check_model_name(name: str) -> str:
    """Return ``name`` if :func:`create_model` knows it; ``ValueError`` listing the known names otherwise."""
    _factory(name)
    return name


def create_model(name: str, *, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """Build the model called ``name`` (a key of `MODELS`, or any ``wrn-DEPTH-WIDTH``).

    ``input_shape`` is the shape of one example without the batch dimension, e.g. ``(3, 32, 32)``.
    """
    return _factory(name)(num_classes=num_classes, input_shape=tuple(input_shape))


def default_model(dataset: str) -> str:
    """The name of the model `adasparse train` uses for ``dataset`` when none is given."""
    try:
        return _DEFAULTS[dataset]
    except KeyError:
        raise ValueError(f"no default model for dataset {dataset!r}; known datasets: {', '.join(_DEFAULTS)}") from None
