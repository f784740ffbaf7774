"""The thresholds' upkeep: divergence check, clamp into [0, 5], and the Pruner's scale-free Adam step."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import adasparse
from adasparse.control.thresholds import adam_step, check_finite, clamp_thresholds
from adasparse.core.operator import MAX_THRESHOLD


def _tensors() -> list[adasparse.PrunedTensor]:
    model = nn.Sequential(nn.Linear(100, 30), nn.Linear(30, 40))
    adasparse.sparsify(model, target=0.5, min_params=100)
    return adasparse.pruned_tensors(model)


def test_check_finite_names_the_layer() -> None:
    tensors = _tensors()
    check_finite(tensors)
    with torch.no_grad():
        tensors[1].raw[0, 0] = math.nan
    check_finite(tensors, weights=False)  # thresholds only
    with pytest.raises(ValueError, match="training diverged: 1.weight has non-finite values"):
        check_finite(tensors)
    with torch.no_grad():
        tensors[0].threshold.fill_(math.inf)
    with pytest.raises(ValueError, match="training diverged: the threshold of 0.weight is inf"):
        check_finite(tensors, weights=False)


def test_clamp_puts_only_outside_thresholds_back() -> None:
    tensors = _tensors()
    with torch.no_grad():
        tensors[0].threshold.fill_(-0.5)
        tensors[1].threshold.fill_(1.25)
    clamp_thresholds(tensors)
    assert [t.threshold.item() for t in tensors] == [0.0, 1.25]
    with torch.no_grad():
        tensors[1].threshold.fill_(9.0)
    clamp_thresholds(tensors)
    assert tensors[1].threshold.item() == MAX_THRESHOLD


def test_adam_step_is_scale_free_and_consumes_the_gradient() -> None:
    tensors = _tensors()
    moments = [[0.0, 0.0], [0.0, 0.0]]
    start = [t.threshold.item() for t in tensors]
    tensors[0].threshold.grad = torch.tensor(1e5)  # very different scales, the same first step
    tensors[1].threshold.grad = torch.tensor(-1e-3)
    assert adam_step(tensors, moments, 0.01, 1)
    moved = [t.threshold.item() - r for t, r in zip(tensors, start)]
    assert moved == pytest.approx([-0.01, 0.01], rel=1e-5)
    assert all(t.threshold.grad is None for t in tensors)
    assert moments[0][0] == pytest.approx(0.1 * 1e5) and moments[0][1] == pytest.approx(0.001 * 1e10)
    assert not adam_step(tensors, moments, 0.01, 2)  # no gradient: nothing moves
    tensors[0].threshold.grad = torch.tensor(math.nan)
    assert not adam_step(tensors, moments, 0.01, 2)  # a non-finite gradient is skipped
    assert tensors[0].threshold.item() == pytest.approx(start[0] - 0.01, rel=1e-5)


def test_a_structured_step_moves_the_fraction_as_a_gaussian_layer_would() -> None:
    """Blocks with concentrated and with spread norms at the same pruned fraction move their fraction alike (a
    step on ``r`` itself would move the concentrated ones across many blocks)."""
    from adasparse.core.distribution import MagnitudeDistribution

    torch.manual_seed(0)
    concentrated = nn.Linear(64, 64)
    spread = nn.Linear(64, 64)
    with torch.no_grad():
        concentrated.weight.copy_(1.0 + 0.01 * torch.randn(64, 64))
        spread.weight.copy_(torch.randn(64, 64) * torch.rand(64, 1) * 4)
    model = nn.Sequential(concentrated, spread)
    adasparse.sparsify(model, init_threshold=0.0, min_params=100, granularity="block:1x64")
    tensors = adasparse.pruned_tensors(model)
    distributions = [MagnitudeDistribution(t).measure() for t in tensors]
    for t, m in zip(tensors, distributions):
        with torch.no_grad():
            t.threshold.fill_(m.threshold_at(32.0))  # half of the rows pruned
    assert [m.zero_fraction(t.threshold.item()) for t, m in zip(tensors, distributions)] == [0.5, 0.5]
    for t in tensors:
        t.threshold.grad = torch.tensor(-1.0)  # prune more
    assert adam_step(tensors, [[0.0, 0.0], [0.0, 0.0]], 0.2, 1, distributions)
    expected = math.erf((math.sqrt(2) * 0.4769362762 + 0.2) / math.sqrt(2))  # erfinv(0.5) = 0.4769...
    for t, m in zip(tensors, distributions):
        assert m.position(t.threshold.item()) / 64 == pytest.approx(expected, abs=1e-3)
