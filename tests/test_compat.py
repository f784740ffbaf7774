"""The original function names keep their signatures and (fixed) semantics."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from adasparse import compat


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(16, 32, 3, groups=4), nn.ReLU(), nn.Flatten(), nn.Linear(32, 100), nn.Linear(100, 5))


def test_iter_sparsify_and_desparsify() -> None:
    model = compat.iter_sparsify(_model(), thresh=1.0, trainable=False, pthres=1000)
    assert [n for n, _ in model.named_parameters() if n.endswith("_threshold")] == [
        "0.weight_threshold",
        "3.weight_threshold",
    ]
    assert not model[0].weight_threshold.requires_grad
    compat.iter_desparsify(model)
    assert not any(n.endswith("_threshold") for n, _ in model.named_parameters())


def test_sparsity_returns_percent_and_count(capsys: pytest.CaptureFixture[str]) -> None:
    model = compat.iter_sparsify(_model(), thresh=1.0, pthres=1000)
    zeros = int((model[0].weight == 0).sum() + (model[3].weight == 0).sum())
    percent, count = compat.sparsity(model, print_per_layer=True)
    assert count == zeros
    assert percent == pytest.approx(100.0 * zeros / (1152 + 3200))
    out = capsys.readouterr().out
    assert "0.weight:" in out and "3.weight:" in out


def test_adaptive_loss_is_density() -> None:
    model = compat.iter_sparsify(_model(), thresh=1.0, pthres=1000)
    with torch.no_grad():
        model[3].weight_threshold.fill_(2.0)
    per_layer = compat.adaptive_loss(model, reduce=False)
    densities = [1 - math.erf(1 / math.sqrt(2)), 1 - math.erf(2 / math.sqrt(2))]
    assert per_layer.tolist() == pytest.approx(densities, rel=1e-6)
    overall = compat.adaptive_loss(model)
    assert overall.item() == pytest.approx((1152 * densities[0] + 3200 * densities[1]) / 4352, rel=1e-6)
    overall.backward()
    assert model[0].weight_threshold.grad < 0
