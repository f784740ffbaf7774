"""Penalty strategies: float and tensor paths agree in value and gradient; the registry; the dual step."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import adasparse
from adasparse.control.loss import MODES
from adasparse.control.penalties import (
    PENALTIES,
    AdaptivePenalty,
    ConstraintPenalty,
    FixedPenalty,
    Penalty,
    UpperPenalty,
    closed_form_loss,
    sparsities_and_slopes,
)
from adasparse.core.operator import analytic_sparsity

R_VALUES = [0.5, 1.0, 2.0, -0.3, 6.0]  # two outside [0, 5]: the clamp passes the gradient straight through
SHARES = [0.4, 0.1, 0.3, 0.15, 0.05]
OFFSETS = [0.01, -0.02, 0.0, 0.03, -0.001]


def _penalties() -> list[Penalty]:
    return [AdaptivePenalty(), FixedPenalty(), UpperPenalty(), ConstraintPenalty(0.5, multiplier=0.7)]


def _tensor_loss_and_gradient(penalty: Penalty, target: float, weight: float) -> tuple[float, float, list[float]]:
    r = torch.tensor(R_VALUES, dtype=torch.float64, requires_grad=True)
    sparsities = analytic_sparsity(r) + torch.tensor(OFFSETS, dtype=torch.float64)
    overall = torch.dot(sparsities, torch.tensor(SHARES, dtype=torch.float64))
    loss = penalty.loss(sparsities, overall, target, weight)
    loss.backward()
    return loss.item(), overall.item(), r.grad.tolist()


def test_the_registry_holds_every_mode_but_the_projection() -> None:
    assert list(PENALTIES) == [mode for mode in MODES if mode != "projection"]
    assert all(cls.name == name and issubclass(cls, Penalty) for name, cls in PENALTIES.items())


@pytest.mark.parametrize("penalty", _penalties(), ids=lambda p: p.name)
@pytest.mark.parametrize("target", [0.3, 0.6, 0.97])
def test_float_and_tensor_paths_agree(penalty: Penalty, target: float) -> None:
    loss, overall, gradient = penalty.loss_and_gradient(R_VALUES, SHARES, OFFSETS, target, 7.0)
    tensor_loss, tensor_overall, tensor_gradient = _tensor_loss_and_gradient(penalty, target, 7.0)
    assert overall == pytest.approx(tensor_overall, rel=1e-12, abs=1e-15)
    assert loss == pytest.approx(tensor_loss, rel=1e-12, abs=1e-15)
    assert gradient == pytest.approx(tensor_gradient, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("penalty", _penalties(), ids=lambda p: p.name)
def test_float_gradient_is_the_derivative_of_the_float_loss(penalty: Penalty) -> None:
    target, weight, h = 0.6, 3.0, 1e-6
    _, _, gradient = penalty.loss_and_gradient(R_VALUES, SHARES, OFFSETS, target, weight)
    for i, r in enumerate(R_VALUES):
        if not 0.0 < r < 5.0:
            continue  # the clamp: the value is flat there, the straight-through gradient is not
        up, down = list(R_VALUES), list(R_VALUES)
        up[i], down[i] = r + h, r - h
        numeric = (
            penalty.loss_and_gradient(up, SHARES, OFFSETS, target, weight)[0]
            - penalty.loss_and_gradient(down, SHARES, OFFSETS, target, weight)[0]
        ) / (2 * h)
        assert gradient[i] == pytest.approx(numeric, rel=1e-5, abs=1e-9)


def test_the_formulas() -> None:
    sparsities, slopes = sparsities_and_slopes(R_VALUES, OFFSETS)
    assert sparsities[0] == pytest.approx(math.erf(0.5 / math.sqrt(2)) + 0.01, rel=1e-15)
    assert sparsities[4] == pytest.approx(math.erf(5 / math.sqrt(2)) - 0.001, rel=1e-15)  # clamped at 5
    assert slopes[3] == math.sqrt(2 / math.pi)  # r < 0: the density at 0
    overall = sum(p * s for p, s in zip(SHARES, sparsities))
    target, weight = 0.9, 2.0
    expected = {
        "adaptive": weight * (overall - target) ** 2,
        "fixed": weight * sum((s - target) ** 2 for s in sparsities) / len(sparsities),
        "upper": weight * (target - overall),
        "constraint": weight * (overall - target) ** 2 + 0.7 * (target - overall),
    }
    for penalty in _penalties():
        assert penalty.loss_and_gradient(R_VALUES, SHARES, OFFSETS, target, weight)[0] == pytest.approx(
            expected[penalty.name], rel=1e-14
        )


def test_upper_is_zero_with_no_gradient_above_the_target() -> None:
    loss, overall, gradient = UpperPenalty().loss_and_gradient(R_VALUES, SHARES, OFFSETS, 0.1, 5.0)
    assert overall > 0.1 and loss == 0.0 and gradient == [0.0] * len(R_VALUES)


def test_fixed_pushes_each_layer_toward_the_target_on_its_own() -> None:
    target = 0.6
    sparsities, _ = sparsities_and_slopes(R_VALUES, OFFSETS)
    _, _, gradient = FixedPenalty().loss_and_gradient(R_VALUES, SHARES, OFFSETS, target, 1.0)
    assert [math.copysign(1, g) for g in gradient] == [math.copysign(1, s - target) for s in sparsities]


def test_constraint_dual_ascent_and_checked_step() -> None:
    penalty = ConstraintPenalty(0.25)
    assert penalty.multiplier == 0.0
    penalty.after_training_call(0.5, 0.9)
    assert penalty.multiplier == 0.25 * (0.9 - 0.5)
    penalty.after_training_call(torch.tensor(1.0), 0.9)  # a tensor on the tensor path
    assert penalty.multiplier == pytest.approx(0.1 - 0.025)
    for other in (AdaptivePenalty(), FixedPenalty(), UpperPenalty()):
        other.after_training_call(0.5, 0.9)  # stateless: nothing to advance
    with pytest.raises(ValueError, match="dual_step must be > 0, got 0.0"):
        ConstraintPenalty(0.0)


def _criterion(**options: object) -> adasparse.SparsityLoss:
    model = nn.Sequential(nn.Linear(100, 30), nn.Linear(30, 40))
    adasparse.sparsify(model, target=0.5, min_params=100)
    return adasparse.SparsityLoss(model, target=0.5, **options)


def test_sparsity_loss_keeps_its_attributes_and_state_format() -> None:
    criterion = _criterion(mode="constraint", dual_step=0.25)
    criterion().backward()
    assert criterion.multiplier == pytest.approx(0.25 * (0.5 - criterion.analytic_sparsity))
    multiplier = criterion.multiplier
    criterion.mode = "adaptive"  # the multiplier stays with the loss across modes, as do its settings
    criterion()
    assert (criterion.multiplier, criterion.dual_step) == (multiplier, 0.25)
    assert set(criterion.state_dict()) == {
        "mode", "target", "weight", "dual_step", "multiplier", "correction", "correction_interval", "offsets",
        "calls", "steps", "idle",
    }  # fmt: skip
    with pytest.raises(ValueError, match="mode must be one of"):
        criterion.mode = "budget"
    with pytest.raises(ValueError, match="dual_step must be > 0"):
        criterion.dual_step = -1.0


def test_sparsity_loss_loads_checkpoints_of_earlier_versions() -> None:
    written = {  # as SparsityLoss.state_dict wrote it before the penalties were strategy objects
        "mode": "constraint", "target": 0.8, "weight": 3.0, "dual_step": 0.2, "multiplier": 0.125,
        "correction": False, "correction_interval": 20, "offsets": [0.0, 0.0], "calls": 7, "steps": 0,
        "idle": [False, False],
    }  # fmt: skip
    criterion = _criterion()
    criterion.load_state_dict(written)
    assert (criterion.mode, criterion.target, criterion.weight) == ("constraint", 0.8, 3.0)
    assert (criterion.dual_step, criterion.multiplier) == (0.2, 0.125)
    assert criterion.state_dict() == written
    oldest = _criterion(dual_step=0.3)
    oldest.load_state_dict({"mode": "fixed", "target": 0.4, "weight": 1.0})  # the first format: settings only
    assert (oldest.mode, oldest.dual_step, oldest.multiplier) == ("fixed", 0.3, 0.0)


def test_closed_form_loss_carries_the_given_value_and_gradient() -> None:
    thresholds = [torch.tensor(0.5, requires_grad=True), torch.tensor(1.0, dtype=torch.float64, requires_grad=True)]
    loss = closed_form_loss(0.25, [2.0, -3.0], thresholds)
    assert loss.dtype == torch.float32 and loss.item() == 0.25
    (4.0 * loss).backward()
    assert thresholds[0].grad.item() == 8.0 and thresholds[0].grad.dtype == torch.float32
    assert thresholds[1].grad.item() == -12.0 and thresholds[1].grad.dtype == torch.float64
