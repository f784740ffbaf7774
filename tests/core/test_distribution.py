"""MagnitudeDistribution counts the zeros the operator makes; the budget's per-layer costs and their checks."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import adasparse
from adasparse.core.distribution import MagnitudeDistribution, budget_costs, unit_costs

THRESHOLDS = (0.0, 0.3, 0.6745, 1.0, 1.645, 2.5, 4.9, 5.0, 7.0, -1.0)


def _pruned(dtype: torch.dtype = torch.float32, centred: bool = False, seed: int = 0) -> adasparse.PrunedTensor:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(120, 90), nn.Linear(90, 40)).to(dtype)
    adasparse.sparsify(model, target=0.5, min_params=100, centred=centred)
    with torch.no_grad():
        model[0].weight_orig.add_(0.05)  # an offset: the counts are on the centred weight
    return adasparse.pruned_tensors(model)[0]


def _zeros_of_effective(pruned: adasparse.PrunedTensor, r: float) -> int:
    with torch.no_grad():
        pruned.threshold.fill_(r)
        return int((pruned.effective() == 0).sum())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("centred", [False, True])
def test_zero_count_is_the_operators_zero_count(dtype: torch.dtype, centred: bool) -> None:
    pruned = _pruned(dtype, centred)
    distribution = MagnitudeDistribution(pruned).measure()
    assert len(distribution) == pruned.numel
    for r in THRESHOLDS:
        with torch.no_grad():
            pruned.threshold.fill_(r)
        expected = _zeros_of_effective(pruned, r)
        assert distribution.zero_count(pruned.threshold) == expected, r


def test_zero_fraction_on_float64_weights_is_the_exact_fraction() -> None:
    pruned = _pruned(torch.float64)
    distribution = MagnitudeDistribution(pruned).measure()
    for r in THRESHOLDS:
        assert distribution.zero_fraction(r) == _zeros_of_effective(pruned, r) / pruned.numel, r


def test_values_are_sorted_and_the_std_is_the_operators() -> None:
    pruned = _pruned()
    distribution = MagnitudeDistribution(pruned).measure()
    values = distribution.values
    assert bool((values[1:] >= values[:-1]).all())
    raw = pruned.raw.detach()
    assert distribution.std == pytest.approx(float((raw - raw.mean()).std()), rel=1e-5)
    torch.testing.assert_close(values, (raw - raw.mean()).abs().reshape(-1).sort().values)


def test_a_sample_is_fixed_across_measurements_and_tracks_the_weights() -> None:
    pruned = _pruned()
    first = MagnitudeDistribution(pruned, max_sample=1000).measure()
    second = MagnitudeDistribution(pruned, max_sample=1000).measure()
    assert len(first) == 1000 and torch.equal(first.values, second.values)
    assert abs(first.zero_fraction(1.0) - _zeros_of_effective(pruned, 1.0) / pruned.numel) < 0.05
    with torch.no_grad():
        pruned.raw.mul_(2.0)  # the same relative distribution
    before = first.values.clone()
    first.measure()
    torch.testing.assert_close(first.values, 2.0 * before)
    assert len(MagnitudeDistribution(pruned, max_sample=pruned.numel).measure()) == pruned.numel  # no sample


def test_state_round_trips_with_weights_only() -> None:
    pruned = _pruned()
    distribution = MagnitudeDistribution(pruned, max_sample=5000).measure()
    buffer = io.BytesIO()
    torch.save(distribution.state_dict(), buffer)
    buffer.seek(0)
    restored = MagnitudeDistribution(pruned, max_sample=5000)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert len(restored) == len(distribution) and restored.std == distribution.std
    for r in THRESHOLDS:
        assert restored.zero_fraction(r) == distribution.zero_fraction(r)
    with torch.no_grad():
        pruned.raw.mul_(3.0)  # restored state is what was recorded, not the tensor now
    assert restored.zero_fraction(1.0) == distribution.zero_fraction(1.0)


def test_budget_costs_and_unit_costs() -> None:
    model = nn.Sequential(nn.Linear(100, 30), nn.Linear(30, 40))
    adasparse.sparsify(model, target=0.5, min_params=100)
    pruned = adasparse.pruned_tensors(model)
    assert budget_costs(pruned, "params") == [3000.0, 1200.0]
    assert budget_costs(pruned, {"0.weight": 2, "1.weight": 0.5, "other": -1}) == [2.0, 0.5]
    assert unit_costs(pruned, None) == [1.0, 1.0]
    assert unit_costs(pruned, {"0.weight": 6.0, "1.weight": 1.2}) == [6.0 / 3000, 1.2 / 1200]


@pytest.mark.parametrize(
    "budget, error, message",
    [
        ("flops", ValueError, "budget must be one of 'params', got 'flops'"),
        (3.0, TypeError, "budget must be 'params' or a mapping of layer name to cost, got float"),
        ({"0.weight": 1.0}, ValueError, "budget has no cost for 1.weight"),
        ({"0.weight": -1.0, "1.weight": 1.0}, ValueError, "budget costs must be finite, >= 0, and not all 0"),
        ({"0.weight": float("inf"), "1.weight": 1.0}, ValueError, "budget costs must be finite"),
        ({"0.weight": 0.0, "1.weight": 0.0}, ValueError, "budget costs must be finite, >= 0, and not all 0"),
    ],
)
def test_bad_budgets(budget: object, error: type, message: str) -> None:
    model = nn.Sequential(nn.Linear(100, 30), nn.Linear(30, 40))
    adasparse.sparsify(model, target=0.5, min_params=100)
    with pytest.raises(error, match=message):
        budget_costs(adasparse.pruned_tensors(model), budget)  # type: ignore[arg-type]


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_the_gaussian_equivalent_is_a_gaussian_layers_threshold_and_inverts(fraction: float) -> None:
    pruned = _pruned()
    measured = MagnitudeDistribution(pruned).measure()
    position = fraction * len(measured)
    equivalent = measured.gaussian_equivalent(position)
    assert torch.erf(torch.tensor(equivalent / 2**0.5, dtype=torch.float64)).item() == pytest.approx(fraction, abs=1e-9)
    assert measured.position_at_equivalent(equivalent) == pytest.approx(position, abs=1e-6)
    assert measured.gaussian_equivalent(len(measured)) < 7.0  # all pruned: finite
