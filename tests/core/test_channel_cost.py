"""The channel cost model predicts the shrunk model's weights and multiply-accumulates exactly."""

from __future__ import annotations

import warnings

import pytest
import torch

import adasparse
from adasparse.app.models import create_model
from adasparse.core.flops import layer_macs
from adasparse.core.shrink import shrink
from adasparse.core.sparsify import sparsify

from ..zoo import by_channels

pytest.importorskip("torch_pruning")


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("cnn2d", (1, 8, 8)),
        ("resnet1d", (1, 40)),
        ("transformer", (1, 40)),
        ("wrn-16-2", (3, 8, 8)),
        ("mobilenet2d", (1, 8, 8)),
    ],
)
@pytest.mark.parametrize("r", [0.6, 1.0])
def test_predicted_cost_is_the_shrunk_models(name: str, shape: tuple[int, ...], r: float) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, input_shape=shape)
    x = torch.randn(3, *shape)
    dense_macs = sum(layer_macs(model, x, min_params=0).values())
    dense_params = {key: value for key, value in layer_macs(model, x, min_params=0).items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sparsify(model, init_threshold=r, min_params=100, granularity="channel", example_input=x)
    cost = adasparse.pruned_tensors(model)[0].layout.cost
    fractions = cost.fractions()  # counted exactly
    smaller = shrink(model, x)
    macs = sum(layer_macs(smaller, x, min_params=0).values())
    assert cost.sparsity(fractions, "flops") == pytest.approx(1.0 - macs / dense_macs, abs=1e-9)
    weights = {name for name in dense_params}
    dense_count = sum(layer.params for layer in cost.layers)
    small_count = sum(p.numel() for n, p in smaller.named_parameters() if n in weights)
    assert cost.sparsity(fractions, "params") == pytest.approx(1.0 - small_count / dense_count, abs=1e-9)


def test_gradient_matches_finite_differences() -> None:
    model, _ = by_channels("resnet1d", (1, 40), 2)
    cost = adasparse.pruned_tensors(model)[0].layout.cost
    point = [0.1 * (k + 1) for k in range(cost.sets)]
    for budget in ("params", "flops"):
        gradient = cost.gradient(point, budget)
        for k in range(cost.sets):
            step = [value + (1e-6 if j == k else 0.0) for j, value in enumerate(point)]
            numeric = (cost.sparsity(step, budget) - cost.sparsity(point, budget)) / 1e-6
            assert gradient[k] == pytest.approx(numeric, rel=1e-4, abs=1e-9)
