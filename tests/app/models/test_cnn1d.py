"""CNN1d: shapes and layer structure."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adasparse.app.models.cnn1d import CNN1d


def test_default_output_shape() -> None:
    model = CNN1d()
    assert model(torch.randn(4, 1, 40)).shape == (4, 10)


def test_layer_structure() -> None:
    model = CNN1d()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv1d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 64), (64, 64), (64, 64)]
    assert [c.kernel_size for c in convs] == [(5,), (3,), (3,)]
    assert [c.stride for c in convs] == [(2,), (2,), (2,)]
    assert [c.padding for c in convs] == [(2,), (1,), (1,)]
    assert all(c.bias is not None for c in convs)
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 3
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 1
    assert (linears[0].in_features, linears[0].out_features) == (64 * 5, 10)


@pytest.mark.parametrize(("length", "final"), [(40, 5), (64, 8), (100, 13), (7, 1)])
def test_head_follows_input_length(length: int, final: int) -> None:
    model = CNN1d(input_shape=(2, length), num_classes=3, channels=8)
    assert model.head.in_features == 8 * final
    assert model.features(torch.randn(2, 2, length)).shape == (2, 8, final)
    assert model(torch.randn(2, 2, length)).shape == (2, 3)


def test_bad_input_shape_raises() -> None:
    with pytest.raises(ValueError, match="channels, length"):
        CNN1d(input_shape=(1, 8, 8))
