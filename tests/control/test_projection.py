"""The projection: the solver lands on the target along the constraint's gradient; the controller's idle layers,
measured distributions, saved state and out-of-reach warning."""

from __future__ import annotations

import io
import math
import warnings

import pytest
import torch
from torch import nn

import adasparse
from adasparse.control.projection import SLOPE_FLOOR, Projection, _solve_projection, update_idle
from adasparse.core.operator import MAX_THRESHOLD, analytic_sparsity_value


def _gaussian_overall(shares: list[float], r_values: list[float]) -> float:
    return sum(p * analytic_sparsity_value(r) for p, r in zip(shares, r_values))


def test_projection_moves_a_threshold_at_the_range_limit() -> None:
    shares = [0.5, 0.5]
    projected = _solve_projection([MAX_THRESHOLD, MAX_THRESHOLD], shares, 0.9, [analytic_sparsity_value] * 2)[0]
    assert all(value < MAX_THRESHOLD - 0.5 for value in projected)
    overall = sum(p * analytic_sparsity_value(r) for p, r in zip(shares, projected))
    assert overall == pytest.approx(0.9, abs=1e-6)


@pytest.mark.parametrize("target", [0.0, 0.2, 0.5, 0.9, 0.99])
def test_solver_hits_the_target_along_the_constraint_gradient(target: float) -> None:
    r_values, shares = [0.3, 1.0, 1.8, 2.5], [0.1, 0.4, 0.3, 0.2]
    projected = _solve_projection(r_values, shares, target, [analytic_sparsity_value] * 4)[0]
    assert _gaussian_overall(shares, projected) == pytest.approx(target, abs=1e-7)
    if 0.0 < target:  # the move is r_i + delta * p_i * s_i'(r_i), the slope bounded below
        moves = [b - a for a, b in zip(r_values, projected)]
        slopes = [p * max(math.sqrt(2 / math.pi) * math.exp(-r * r / 2), SLOPE_FLOOR) for p, r in zip(shares, r_values)]
        for move, slope in zip(moves, slopes):
            assert move / moves[1] == pytest.approx(slope / slopes[1], rel=1e-9)


@pytest.mark.parametrize("target", [0.3, 0.7, 0.995])
def test_solver_returns_the_overall_it_reached_and_evaluates_no_point_twice(target: float) -> None:
    r_values, shares = [0.5, 1.0, 2.0], [0.2, 0.3, 0.5]
    calls: list[float] = []

    def counted(r: float) -> float:
        calls.append(r)
        return analytic_sparsity_value(r)

    projected, overall = _solve_projection(r_values, shares, target, [counted] * 3, tolerance=1e-9)
    assert overall == _gaussian_overall(shares, projected)  # bit for bit: the same sum at the same thresholds
    first_layer = calls[0::3]  # every evaluation calls each layer once, in order
    assert len(first_layer) == len(set(first_layer)) >= 2
    fixed = _solve_projection(r_values, shares, target, [counted] * 3, fixed=[True] * 3)
    assert fixed == (r_values, _gaussian_overall(shares, r_values))


def test_solver_keeps_fixed_layers_and_stops_at_the_closest_end() -> None:
    r_values, shares, gaussian = [0.5, 1.0, 2.0], [0.5, 0.25, 0.25], [analytic_sparsity_value] * 3
    fixed = [True, False, False]
    projected = _solve_projection(r_values, shares, 0.6, gaussian, fixed=fixed)[0]
    assert projected[0] == 0.5 and _gaussian_overall(shares, projected) == pytest.approx(0.6, abs=1e-7)
    unreachable = _solve_projection(r_values, shares, 0.8, gaussian, fixed=fixed)[0]  # at most 0.19 + 0.5
    assert unreachable[0] == 0.5 and min(unreachable[1:]) >= MAX_THRESHOLD - 1e-9  # as close as it gets
    assert _solve_projection(r_values, shares, 0.5, gaussian, fixed=[True] * 3)[0] == r_values


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(200, 100), nn.Linear(100, 50), nn.Linear(50, 40))  # 20,000, 5,000, 2,000
    adasparse.sparsify(model, target=0.5, min_params=100)
    with torch.no_grad():
        model[0].weight_orig.uniform_(-1, 1)  # not Gaussian: the measured projection differs from the Gaussian one
    return model


def _counted_overall(model: nn.Module) -> float:
    pruned = adasparse.pruned_tensors(model)
    zeros = sum(int((t.effective() == 0).sum()) for t in pruned)
    return zeros / sum(t.numel for t in pruned)


def _projection(model: nn.Module) -> Projection:
    pruned = adasparse.pruned_tensors(model)
    total = sum(t.numel for t in pruned)
    return Projection(pruned, [t.numel / total for t in pruned])


@pytest.mark.parametrize("target", [0.3, 0.75, 0.95])
def test_measured_projection_reaches_the_counted_target(target: float) -> None:
    model = _model()
    projection = _projection(model)
    overall = projection.project(target, correction=True)
    assert projection.measured is not None  # measured on first use
    assert overall == pytest.approx(target, abs=1 / 27_000)
    assert _counted_overall(model) == pytest.approx(target, abs=1.5 / 27_000)
    assert all(0.0 <= r.item() <= MAX_THRESHOLD for r in adasparse.threshold_parameters(model))


def test_gaussian_projection_reaches_the_analytic_target() -> None:
    model = _model()
    projection = _projection(model)
    overall = projection.project(0.8, correction=False)
    shares = [t.numel / 27_000 for t in adasparse.pruned_tensors(model)]
    assert overall == pytest.approx(0.8, abs=1e-7)
    assert _gaussian_overall(shares, [r.item() for r in adasparse.threshold_parameters(model)]) == pytest.approx(
        0.8, abs=1e-6
    )
    assert projection.measured is None


def test_idle_layers_carry_the_target_first() -> None:
    model = _model()
    projection = _projection(model)
    projection.idle[1] = True  # 5,000 of 27,000 weights
    projection.project(0.1, correction=True)  # the idle layer alone can carry it
    r = [r.item() for r in adasparse.threshold_parameters(model)]
    assert r[0] == 0.0 and r[2] == 0.0 and 0.0 < r[1] < MAX_THRESHOLD
    assert _counted_overall(model) == pytest.approx(0.1, abs=2 / 27_000)
    projection.project(0.6, correction=True)  # more than it holds: fully pruned, the others carry the rest
    pruned = adasparse.pruned_tensors(model)
    assert int((pruned[1].effective() == 0).sum()) == 5000
    assert _counted_overall(model) == pytest.approx(0.6, abs=2 / 27_000)


def test_measured_state_round_trips_and_keeps_the_recorded_weights() -> None:
    model = _model()
    projection = _projection(model)
    projection.measure()
    buffer = io.BytesIO()
    torch.save(projection.measured_state(), buffer)
    buffer.seek(0)
    restored = _projection(model)
    assert restored.measured_state() is None
    restored.load_measured_state(torch.load(buffer, weights_only=True))
    with torch.no_grad():
        model[0].weight_orig.mul_(torch.rand_like(model[0].weight_orig))  # after the measurement: ignored by both
    start = [r.item() for r in adasparse.threshold_parameters(model)]
    first = projection.project(0.7, correction=True)
    thresholds = [r.item() for r in adasparse.threshold_parameters(model)]
    with torch.no_grad():
        for r, value in zip(adasparse.threshold_parameters(model), start):
            r.fill_(value)
    assert restored.project(0.7, correction=True) == first
    assert [r.item() for r in adasparse.threshold_parameters(model)] == thresholds
    with pytest.raises(ValueError, match="state has 1 measured layers, the model has 3 pruned tensors"):
        restored.load_measured_state(projection.measured_state()[:1])


@pytest.mark.parametrize("slope", ["gaussian", "lamp"])
def test_out_of_reach_warns_once(slope: str) -> None:
    model = nn.Sequential(nn.Linear(100, 50), nn.Linear(50, 40))
    adasparse.sparsify(model, target=0.5)
    with torch.no_grad():
        model[0].weight_orig.fill_(0.3)  # constant: always fully pruned
    pruned = adasparse.pruned_tensors(model)
    projection = Projection(pruned, [t.numel / 7000 for t in pruned], slope=slope)
    with pytest.warns(UserWarning, match="cannot reach the target 0.5000") as caught:
        overall = projection.project(0.5, correction=True)
    assert caught[0].filename == __file__  # it names the caller's line, whichever projection ran
    assert overall == pytest.approx(5 / 7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        projection.project(0.4, correction=True)


def test_update_idle_marks_the_tensors_the_loss_never_reaches() -> None:
    model = _model()
    tensors = adasparse.pruned_tensors(model)
    reached, idle = [False] * 3, [False] * 3
    assert not update_idle(tensors, reached, idle)  # no gradient anywhere (cleared): nothing concluded
    assert reached == [False] * 3 and idle == [False] * 3
    model[0](torch.randn(4, 200)).sum().backward()  # only the first layer is used
    assert update_idle(tensors, reached, idle)
    assert reached == [True, False, False] and idle == [False, True, True]
    tensors[2].raw.requires_grad_(False)  # a frozen weight is never idle
    for pruned in tensors:
        pruned.raw.grad = None
    model[1](torch.randn(4, 100)).sum().backward()
    assert update_idle(tensors, reached, idle)
    assert reached == [True, True, False] and idle == [False, False, False]  # reached once: reached for good
    for pruned in tensors:
        pruned.raw.grad = None
    assert not update_idle(tensors, reached, idle)  # cleared again: nothing concluded, nothing changed
    assert reached == [True, True, False] and idle == [False, False, False]
    tensors[0].raw.grad = torch.zeros_like(tensors[0].raw)  # an all-zero gradient is no gradient
    assert not update_idle(tensors, reached, idle)
    tensors[0].raw.grad[0, 0] = 1.0  # a reached tensor alone answers whether any gradient exists
    assert update_idle(tensors, reached, idle)
    assert reached == [True, True, False] and idle == [False, False, False]


def _heavy_tailed_and_gaussian() -> nn.Module:
    """Two layers of equal size: one Gaussian, one whose weights are almost all tiny beside a few large ones (so
    that from r = 0.5 on it has hardly any weight left near its threshold)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(100, 100, bias=False), nn.Linear(100, 100, bias=False))
    with torch.no_grad():
        model[0].weight.normal_()
        heavy = torch.randn(100, 100) * 1e-3
        heavy.view(-1)[:150] = torch.randn(150).sign() * 10.0
        model[1].weight.copy_(heavy)
    return model


def test_measured_slope_is_the_zero_fractions_and_near_zero_where_no_weight_is_left() -> None:
    model = adasparse.sparsify(_heavy_tailed_and_gaussian(), init_threshold=1.0)
    gaussian, heavy = (
        adasparse.core.distribution.MagnitudeDistribution(t).measure() for t in adasparse.pruned_tensors(model)
    )
    expected = math.sqrt(2 / math.pi) * math.exp(-0.5)
    assert gaussian.zero_fraction_slope(1.0) == pytest.approx(expected, abs=0.03)
    assert heavy.zero_fraction_slope(1.0) == 0.0  # every tiny weight is below, every large one far above
    low, high = 0.0, 0.1  # one-sided at 0
    assert gaussian.zero_fraction_slope(0.0) == (gaussian.zero_fraction(high) - gaussian.zero_fraction(low)) / 0.1


@pytest.mark.parametrize("slope", ["gaussian", "measured"])
def test_measured_slope_moves_only_the_layer_that_has_weights_to_give(slope: str) -> None:
    model = adasparse.sparsify(_heavy_tailed_and_gaussian(), init_threshold=1.0)
    tensors = adasparse.pruned_tensors(model)
    criterion = adasparse.SparsityLoss(model, 0.0, mode="projection", correction=True, projection_slope=slope)
    criterion.measure_distributions()
    before = criterion._projection.measured
    start = [t.threshold.item() for t in tensors]
    target = 0.5 * (before[0].zero_fraction(start[0]) + before[1].zero_fraction(start[1])) + 0.05
    criterion.target = target
    assert criterion.project() == pytest.approx(target, abs=1e-4)
    moved = [t.threshold.item() - r for t, r in zip(tensors, start)]
    assert moved[0] > 0.0
    if slope == "measured":  # the saturated layer moves at the floor's pace only
        assert before[1].zero_fraction_slope(start[1]) == 0.0
        assert moved[1] / moved[0] == pytest.approx(
            SLOPE_FLOOR / before[0].zero_fraction_slope(start[0]), rel=1e-4
        )  # float32 thresholds
        assert moved[1] < 0.02 * moved[0]
    else:  # the Gaussian slope pushes both alike
        assert moved[1] == pytest.approx(moved[0], rel=1e-9)


def test_projection_slope_is_checked() -> None:
    model = adasparse.sparsify(nn.Sequential(nn.Linear(100, 100)), target=0.5)
    with pytest.raises(ValueError, match="projection_slope"):
        adasparse.SparsityLoss(model, 0.5, mode="projection", projection_slope="steep")
    with pytest.raises(ValueError, match="projection_slope"):
        adasparse.PrunerConfig(projection_slope="steep").validated()
