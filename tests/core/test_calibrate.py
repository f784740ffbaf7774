"""calibrate: exact overall sparsity within one weight, allocation kept, unreachable targets reported."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import adasparse


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(300, 200), nn.ReLU(), nn.Conv1d(16, 32, 5, groups=2), nn.Linear(200, 100))
    adasparse.sparsify(model, target=0.9)
    with torch.no_grad():
        for r, value in zip(adasparse.threshold_parameters(model), (1.2, 2.0, 0.8)):
            r.fill_(value)
    return model


@pytest.mark.parametrize("target", [0.01, 0.3, 0.5, 0.9, 0.95, 0.98, 0.999])
def test_reaches_target_within_one_weight(target: float) -> None:
    model = _model()
    result = adasparse.calibrate(model, target)
    report = adasparse.sparsity_report(model)
    assert result.reached
    assert abs(report.pruned_zeros - target * report.pruned_params) <= 1.0
    assert result.after.pruned_zeros == report.pruned_zeros
    assert "calibrated to target" in str(result)


def test_keeps_the_learned_allocation() -> None:
    model = _model()
    before = [r.item() for r in adasparse.threshold_parameters(model)]
    result = adasparse.calibrate(model, 0.9)
    after = [r.item() for r in adasparse.threshold_parameters(model)]
    ratios = [a / b for a, b in zip(after, before)]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-6)
    assert ratios[0] == pytest.approx(result.scale, rel=1e-6)
    assert result.before.overall != pytest.approx(result.after.overall)


def test_unreachable_target_warns() -> None:
    model = _model()
    with torch.no_grad():
        model[0].weight_orig[:, :] = torch.randn(200, 300) ** 11  # extremely heavy tails: 5 sigma prunes little
    with pytest.warns(RuntimeWarning, match="could not reach target"):
        result = adasparse.calibrate(model, 0.999)
    assert not result.reached
    assert all(r.item() <= 5.0 for r in adasparse.threshold_parameters(model))


def test_all_zero_thresholds_still_calibrate() -> None:
    model = _model()
    with torch.no_grad():
        for r in adasparse.threshold_parameters(model):
            r.zero_()
    assert adasparse.calibrate(model, 0.7).reached


def test_calibrated_model_stays_exact_after_desparsify() -> None:
    model = _model(3)
    adasparse.calibrate(model, 0.9)
    report = adasparse.sparsity_report(model)
    adasparse.desparsify(model)
    assert adasparse.sparsity_report(model, min_params=1000).pruned_zeros == report.pruned_zeros
    total = 60_000 + 32 * 8 * 5 + 20_000
    assert report.pruned_params == total
    assert math.isclose(report.pruned_zeros / total, 0.9, abs_tol=1 / total)


def test_errors() -> None:
    with pytest.raises(ValueError, match="needs a sparsified model"):
        adasparse.calibrate(nn.Linear(100, 100), 0.5)
    with pytest.raises(ValueError, match=r"target must be in \[0, 1\)"):
        adasparse.calibrate(_model(), 1.0)


def test_calibrates_a_cost_budget() -> None:
    model = _model()
    costs = {"0.weight": 60_000.0, "2.weight": 1280.0 * 40, "3.weight": 20_000.0 * 3}
    result = adasparse.calibrate(model, 0.8, budget=costs)
    assert result.reached
    unit = {name: costs[name] / layer.numel for name, layer in zip(costs, result.after.layers)}
    achieved = sum(unit[layer.name] * layer.zeros for layer in result.after.layers) / sum(costs.values())
    assert achieved == pytest.approx(0.8, abs=max(unit.values()) / sum(costs.values()))
    with pytest.raises(ValueError, match="budget has no cost for 3.weight"):
        adasparse.calibrate(model, 0.8, budget={"0.weight": 1.0, "2.weight": 1.0})


def test_block_granularity_reaches_the_target_without_a_false_warning() -> None:
    import warnings

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 16))
    adasparse.sparsify(model, target=0.5, granularity="block:4x4", min_params=100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the reached count was read in weights against a goal in blocks
        result = adasparse.calibrate(model, 0.9)
    assert result.reached and adasparse.sparsity_report(model, min_params=100).overall == pytest.approx(0.9)
