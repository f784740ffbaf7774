"""SparsityLoss: the three original formulas, the analytic overall sparsity, gradients and validation."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from torch import nn

import adasparse
from adasparse.control import loss as loss_module
from adasparse.core.schedules import cubic_ramp


@pytest.fixture(params=["fused", "tensor"], autouse=True)
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs on the CPU closed-form path and on the tensor path used on GPUs and under compile."""
    if request.param == "tensor":
        monkeypatch.setattr(loss_module, "_use_fused", lambda threshold: False)
    return request.param


def _model(rs: tuple[float, ...] = (0.5, 1.0, 2.0)) -> nn.Module:
    model = nn.Sequential(nn.Linear(100, 30), nn.Conv2d(8, 16, 3, groups=4), nn.Linear(50, 40))  # 3000, 288, 2000
    adasparse.sparsify(model, target=0.9, min_params=100)
    with torch.no_grad():
        for r, value in zip(adasparse.threshold_parameters(model), rs):
            r.fill_(value)
    return model


def _erf(r: float) -> float:
    return math.erf(min(max(r, 0), 5) / math.sqrt(2))


COUNTS = (3000, 16 * 2 * 3 * 3, 2000)  # the grouped conv has out * in/groups * k * k weights


def test_counts_use_weight_numel_with_groups() -> None:
    model = _model()
    assert [p.numel for p in adasparse.pruned_tensors(model)] == list(COUNTS)


@pytest.mark.parametrize("mode", ["adaptive", "fixed", "upper"])
def test_formulas(mode: str) -> None:
    rs = (0.5, 1.0, 2.0)
    model = _model(rs)
    s = [_erf(r) for r in rs]
    overall = sum(n * si for n, si in zip(COUNTS, s)) / sum(COUNTS)
    target, weight = 0.9, 7.0
    expected = {
        "adaptive": weight * (overall - target) ** 2,
        "fixed": weight * sum((si - target) ** 2 for si in s) / 3,
        "upper": weight * max(target - overall, 0.0),
    }[mode]
    criterion = adasparse.SparsityLoss(model, target=target, mode=mode, weight=weight)
    loss = criterion()
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert criterion.analytic_sparsity == pytest.approx(overall, rel=1e-6)
    loss.backward()
    grads = [r.grad for r in adasparse.threshold_parameters(model)]
    if mode == "fixed":  # each layer is pushed toward the target on its own
        assert [math.copysign(1, g.item()) for g in grads] == [math.copysign(1, si - target) for si in s]
    else:  # overall below target: every threshold is pushed up
        assert all(g is not None and g < 0 for g in grads)


def test_upper_mode_is_zero_above_target() -> None:
    model = _model((3.0, 3.0, 3.0))
    assert adasparse.SparsityLoss(model, target=0.9, mode="upper")().item() == 0.0


def test_adaptive_gradient_matches_closed_form() -> None:
    rs = (0.5, 1.0, 2.0)
    model = _model(rs)
    criterion = adasparse.SparsityLoss(model, target=0.9, weight=10.0)
    criterion().backward()
    overall = sum(n * _erf(r) for n, r in zip(COUNTS, rs)) / sum(COUNTS)
    for r, n, param in zip(rs, COUNTS, adasparse.threshold_parameters(model)):
        ds = math.sqrt(2 / math.pi) * math.exp(-r * r / 2)
        expected = 10.0 * 2 * (overall - 0.9) * n / sum(COUNTS) * ds
        assert param.grad.item() == pytest.approx(expected, rel=1e-5)


def test_layer_sparsities_and_names() -> None:
    criterion = adasparse.SparsityLoss(_model(), target=0.5)
    assert criterion.layer_names == ["0.weight", "1.weight", "2.weight"]
    torch.testing.assert_close(criterion.layer_sparsities(), torch.tensor([_erf(0.5), _erf(1.0), _erf(2.0)]))


def test_target_can_change_and_state_round_trips() -> None:
    criterion = adasparse.SparsityLoss(_model(), target=0.5, mode="fixed", weight=3.0)
    criterion.target = 0.8
    state = json.loads(json.dumps(criterion.state_dict()))
    other = adasparse.SparsityLoss(_model(), target=0.1)
    other.load_state_dict(state)
    assert (other.mode, other.target, other.weight) == ("fixed", 0.8, 3.0)
    assert "fixed" in repr(other)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"target": 1.0}, ValueError, r"target must be in \[0, 1\), got 1.0"),
        ({"target": -0.2}, ValueError, r"target must be in \[0, 1\)"),
        (
            {"target": 0.9, "mode": "budget"},
            ValueError,
            "mode must be one of 'adaptive', 'fixed', 'upper', 'constraint', 'projection', got 'budget'",
        ),
        ({"target": 0.9, "weight": -1.0}, ValueError, "weight must be >= 0, got -1.0"),
        ({"target": 0.9, "weight": float("inf")}, ValueError, "weight must be finite"),
    ],
)
def test_bad_arguments(kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        adasparse.SparsityLoss(_model(), **kwargs)


def test_loss_on_unsparsified_model() -> None:
    with pytest.raises(ValueError, match="needs a sparsified model"):
        adasparse.SparsityLoss(nn.Linear(100, 100), target=0.9)


def test_loss_after_desparsify_raises_clearly() -> None:
    model = _model()
    criterion = adasparse.SparsityLoss(model, target=0.9)
    adasparse.desparsify(model)
    with pytest.raises(ValueError, match="no longer sparsified"):
        criterion()


def test_constraint_mode_dual_ascent() -> None:
    rs = (0.5, 1.0, 2.0)
    model = _model(rs)
    criterion = adasparse.SparsityLoss(model, target=0.9, mode="constraint", dual_step=0.5, weight=7.0)
    overall = criterion.analytic_sparsity
    first = criterion()
    assert first.item() == pytest.approx(7.0 * (overall - 0.9) ** 2, rel=1e-5)  # the multiplier starts at 0
    assert criterion.multiplier == pytest.approx(0.5 * (0.9 - overall), rel=1e-5)
    multiplier = criterion.multiplier
    second = criterion()
    second.backward()
    assert second.item() == pytest.approx(7.0 * (overall - 0.9) ** 2 + multiplier * (0.9 - overall), rel=1e-5)
    for r, n, param in zip(rs, COUNTS, adasparse.threshold_parameters(model)):
        ds = math.sqrt(2 / math.pi) * math.exp(-r * r / 2)
        expected = (2 * 7.0 * (overall - 0.9) - multiplier) * n / sum(COUNTS) * ds
        assert param.grad.item() == pytest.approx(expected, rel=1e-5)
    with torch.no_grad():
        before = criterion.multiplier
        criterion()
    assert criterion.multiplier == before  # evaluation calls do not step the multiplier


def _settle(mode: str, pull: float, start: tuple[float, ...] = (0.5, 1.0, 2.0)) -> tuple[float, float]:
    """Train only the thresholds under the sparsity loss plus a constant task-like pull toward density."""
    model = _model(start)
    criterion = adasparse.SparsityLoss(model, target=0.95, mode=mode, weight=10.0)
    thresholds = list(adasparse.threshold_parameters(model))
    optimizer = torch.optim.SGD(thresholds, lr=0.05, momentum=0.9)
    for _ in range(4000):
        optimizer.zero_grad()
        (criterion() + pull * sum(thresholds)).backward()
        optimizer.step()
    return criterion.analytic_sparsity, criterion.multiplier


def test_constraint_mode_removes_the_penalty_bias() -> None:
    adaptive, _ = _settle("adaptive", pull=0.05)
    constrained, multiplier = _settle("constraint", pull=0.05)
    assert adaptive < 0.95 - 0.01  # the quadratic penalty settles short of the target
    assert constrained == pytest.approx(0.95, abs=1e-3)
    assert multiplier > 0
    free, free_multiplier = _settle("constraint", pull=0.0)
    assert free == pytest.approx(0.95, abs=1e-3) and free_multiplier == pytest.approx(0.0, abs=1e-2)
    above, _ = _settle("constraint", pull=0.0, start=(2.6, 2.6, 2.6))  # starting above the target: it comes down
    assert above == pytest.approx(0.95, abs=1e-3)


def test_correction_steers_on_measured_zeros() -> None:
    model = _model((1.0, 1.0, 1.0))
    with torch.no_grad():
        model[0].weight_orig.uniform_(-1, 1)  # uniform weights: far sparser-looking than erf says at r = 1
    criterion = adasparse.SparsityLoss(model, target=0.9, correction=True, correction_interval=5)
    offsets = criterion.update_correction()
    actual = adasparse.sparsity_report(model).layers[0].actual
    assert offsets[0] == pytest.approx(actual - math.erf(1 / math.sqrt(2)), abs=1e-6)
    assert criterion.layer_sparsities()[0].item() == pytest.approx(actual, abs=1e-6)
    assert criterion.analytic_sparsity == pytest.approx(criterion.actual_sparsity(), abs=1e-6)
    criterion().backward()
    assert criterion.state_dict()["calls"] == 1


def test_projection_holds_the_analytic_target_along_the_constraint_gradient() -> None:
    rs = (0.5, 1.0, 2.0)
    model = _model(rs)
    criterion = adasparse.SparsityLoss(model, target=0.8, mode="projection")
    loss = criterion()
    assert loss.item() == 0.0  # the task loss alone trains the thresholds in this mode
    criterion.step()
    assert criterion.analytic_sparsity == pytest.approx(0.8, abs=1e-6)
    moved = [param.item() - r for param, r in zip(adasparse.threshold_parameters(model), rs)]
    slopes = [n * math.exp(-r * r / 2) for n, r in zip(COUNTS, rs)]  # the direction p_i * s_i'(r_i)
    assert all(m > 0 for m in moved)
    for m, slope in zip(moved, slopes):
        assert m / moved[0] == pytest.approx(slope / slopes[0], rel=1e-4)
    criterion.target = 0.3  # a lower target moves every threshold down again
    criterion.step()
    assert criterion.analytic_sparsity == pytest.approx(0.3, abs=1e-6)
    assert criterion.state_dict()["steps"] == 2


def test_projection_with_correction_reaches_the_measured_target() -> None:
    model = nn.Sequential(nn.Linear(200, 100), nn.Linear(100, 50))
    adasparse.sparsify(model, target=0.9)
    with torch.no_grad():
        model[0].weight_orig.uniform_(-1, 1)  # far from Gaussian: erf alone would miss the target by points
        model[1].weight_orig.copy_(torch.distributions.Laplace(0.0, 1.0).sample(model[1].weight_orig.shape))
    for target in (0.5, 0.9, 0.98):
        criterion = adasparse.SparsityLoss(model, target=target, mode="projection", correction=True)
        criterion.step()
        assert criterion.actual_sparsity() == pytest.approx(target, abs=1.5 / 5000)  # within a weight or so
        gaussian = adasparse.SparsityLoss(model, target=target, mode="projection", correction=False)
        gaussian.step()
        assert abs(gaussian.actual_sparsity() - target) > 0.004


def test_projection_during_training_tracks_a_ramped_target() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    adasparse.sparsify(model, target=0.9, min_params=300)
    criterion = adasparse.SparsityLoss(model, target=0.0, mode="projection", correction=True, correction_interval=1)
    optimizer = torch.optim.SGD(adasparse.param_groups(model, lr=0.05, weight_decay=0.0, threshold_lr_scale=1.0))
    inputs, labels = torch.randn(256, 64), torch.randint(0, 10, (256,))
    for step in range(60):
        criterion.target = cubic_ramp(step / 60, 0.9, end=0.5)
        optimizer.zero_grad()
        (nn.functional.cross_entropy(model(inputs), labels) + criterion()).backward()
        optimizer.step()
        criterion.step()
        assert criterion.actual_sparsity() == pytest.approx(criterion.target, abs=0.01)


def test_projection_out_of_reach_warns_once_and_keeps_finite_thresholds() -> None:
    model = nn.Sequential(nn.Linear(100, 50), nn.Linear(50, 40))  # 5,000 and 2,000 weights
    adasparse.sparsify(model, target=0.5)
    with torch.no_grad():
        model[0].weight_orig.fill_(0.3)  # constant: always fully pruned, so the overall is at least 5/7
    criterion = adasparse.SparsityLoss(model, target=0.5, mode="projection", correction=True)
    with pytest.warns(UserWarning, match="cannot reach the target 0.5000: the overall sparsity stays at 0.7143"):
        criterion.step()
    assert all(math.isfinite(r.item()) for r in adasparse.threshold_parameters(model))
    assert criterion.actual_sparsity() == pytest.approx(5 / 7, abs=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        criterion.step()  # once only
        criterion.target = 0.9
        criterion.step()  # reachable again: no warning
    assert criterion.actual_sparsity() == pytest.approx(0.9, abs=1e-3)


def test_projection_warns_when_step_is_never_called() -> None:
    criterion = adasparse.SparsityLoss(_model(), target=0.9, mode="projection", correction_interval=3)
    with pytest.warns(UserWarning, match=r"call criterion.step\(\) after every optimizer.step\(\)"):
        for _ in range(4):
            criterion()


def test_step_is_a_no_op_outside_projection() -> None:
    model = _model()
    criterion = adasparse.SparsityLoss(model, target=0.9, mode="adaptive")
    before = [r.item() for r in adasparse.threshold_parameters(model)]
    criterion.step()
    assert [r.item() for r in adasparse.threshold_parameters(model)] == before


def test_budget_mapping_weights_layers() -> None:
    model = _model((0.5, 1.0, 2.0))
    costs = {"0.weight": 1.0, "1.weight": 0.0, "2.weight": 3.0}
    criterion = adasparse.SparsityLoss(model, target=0.5, budget=costs)
    assert criterion.shares == [0.25, 0.0, 0.75]
    expected = 0.25 * _erf(0.5) + 0.75 * _erf(2.0)
    assert criterion.analytic_sparsity == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="budget has no cost for 2.weight"):
        adasparse.SparsityLoss(model, target=0.5, budget={"0.weight": 1.0, "1.weight": 1.0})
    with pytest.raises(ValueError, match="budget must be one of 'params'"):
        adasparse.SparsityLoss(model, target=0.5, budget="macs")
