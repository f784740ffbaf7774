"""MLP: shapes and layer structure."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adasparse.app.models.mlp import MLP


@pytest.mark.parametrize("input_shape", [(40,), (1, 40), (1, 8, 8), (3, 4, 4)])
def test_output_shape(input_shape: tuple[int, ...]) -> None:
    model = MLP(input_shape, num_classes=7)
    assert model(torch.randn(5, *input_shape)).shape == (5, 7)


def test_layers_follow_hidden_sizes() -> None:
    model = MLP((1, 8, 8), num_classes=10, hidden=(32, 16, 8))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 32), (32, 16), (16, 8), (8, 10)]
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 3
    assert isinstance(model.layers[0], nn.Flatten)


def test_default_hidden_and_no_hidden() -> None:
    default = [m.out_features for m in MLP((10,), 3).modules() if isinstance(m, nn.Linear)]
    assert default == [256, 256, 3]
    linear_only = [m for m in MLP((10,), 3, hidden=()).modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear_only] == [(10, 3)]
