"""CNN2d: shapes and layer structure."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adasparse.app.models.cnn2d import CNN2d


def test_default_output_shape() -> None:
    model = CNN2d()
    assert model(torch.randn(4, 1, 8, 8)).shape == (4, 10)


def test_layer_structure() -> None:
    model = CNN2d()
    kinds = [type(m) for m in model.features]
    assert kinds == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (1, 32, (3, 3), (1, 1)),
        (32, 64, (3, 3), (1, 1)),
    ]
    assert [b.num_features for b in model.modules() if isinstance(b, nn.BatchNorm2d)] == [32, 64]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64 * 4 * 4, 128), (128, 10)]


@pytest.mark.parametrize(("input_shape", "flat"), [((3, 16, 16), 64 * 8 * 8), ((1, 9, 6), 64 * 4 * 3)])
def test_other_spatial_sizes(input_shape: tuple[int, int, int], flat: int) -> None:
    model = CNN2d(input_shape=input_shape, num_classes=5)
    assert model.classifier[1].in_features == flat
    assert model(torch.randn(2, *input_shape)).shape == (2, 5)


def test_custom_channels() -> None:
    model = CNN2d(channels=(4, 6), num_classes=3)
    assert model.classifier[1].in_features == 6 * 4 * 4
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)


def test_bad_input_shape_raises() -> None:
    with pytest.raises(ValueError, match="channels, height, width"):
        CNN2d(input_shape=(1, 40))
