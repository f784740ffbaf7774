"""The penalty modes of the sparsity loss as small strategy objects: adaptive, fixed, upper and constraint.

Each penalty has two numerically matching paths: :meth:`Penalty.loss_and_gradient` on Python floats (the CPU eager
path: the loss and its gradient in closed form, made a tensor by :func:`closed_form_loss`) and :meth:`Penalty.loss`
on tensors (GPUs, ``torch.compile``). :data:`PENALTIES` maps a mode name to its class; the projection mode is no
penalty (see :mod:`adasparse.control.projection`).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from ..core._checks import check_positive
from ..core.operator import MAX_THRESHOLD

__all__ = [
    "AdaptivePenalty",
    "ConstraintPenalty",
    "FixedPenalty",
    "PENALTIES",
    "Penalty",
    "UpperPenalty",
    "closed_form_loss",
    "sparsities_and_slopes",
]

_SQRT_HALF = math.sqrt(0.5)
_DENSITY_SCALE = math.sqrt(2.0 / math.pi)


def sparsities_and_slopes(r_values: list[float], offsets: list[float]) -> tuple[list[float], list[float]]:
    """Each layer's (corrected) analytic sparsity ``erf(clamp(r, 0, 5) / sqrt(2)) + offset`` and its slope in
    ``r`` (the Gaussian density at the clamped value: the clamp passes the gradient straight through)."""
    sparsities, slopes = [], []
    for r, offset in zip(r_values, offsets):
        a = min(max(r, 0.0), MAX_THRESHOLD)
        sparsities.append(math.erf(a * _SQRT_HALF) + offset)
        slopes.append(_DENSITY_SCALE * math.exp(-0.5 * a * a))  # straight-through clamp, as in the operator
    return sparsities, slopes


class _ClosedForm(torch.autograd.Function):
    """A scalar loss of known value and known gradient in each threshold, as one autograd node."""

    @staticmethod
    def forward(ctx, value: float, gradient: list[float], *thresholds: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.gradient = gradient
        ctx.dtypes = [r.dtype for r in thresholds]
        return torch.tensor(value, dtype=thresholds[0].dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        scale = grad.item()
        return (None, None, *(torch.tensor(scale * g, dtype=dtype) for g, dtype in zip(ctx.gradient, ctx.dtypes)))


def closed_form_loss(value: float, gradient: list[float], thresholds: list[torch.Tensor]) -> torch.Tensor:
    """The float path's loss as a tensor: ``value``, with ``gradient[i]`` as its derivative in ``thresholds[i]``
    (one autograd node instead of a dozen tiny tensor operations)."""
    return _ClosedForm.apply(value, gradient, *thresholds)


class Penalty:
    """A penalty on the layers' sparsities ``s_i`` (budget shares ``p_i``, overall ``S = sum(p_i s_i)``)."""

    name: ClassVar[str]

    def loss_and_gradient(
        self, r_values: list[float], shares: list[float], offsets: list[float], target: float, weight: float
    ) -> tuple[float, float, list[float]]:
        """The loss, the overall sparsity ``S`` and the loss's gradient in every ``r``, on Python floats."""
        sparsities, slopes = sparsities_and_slopes(r_values, offsets)
        overall = sum(p * s for p, s in zip(shares, sparsities))
        loss, gradient = self._loss_and_sparsity_gradient(sparsities, shares, overall, target, weight)
        return loss, overall, [g * d for g, d in zip(gradient, slopes)]

    def _loss_and_sparsity_gradient(
        self, sparsities: list[float], shares: list[float], overall: float, target: float, weight: float
    ) -> tuple[float, list[float]]:
        """The loss and its gradient in every ``s_i``."""
        raise NotImplementedError

    def loss(self, sparsities: torch.Tensor, overall: torch.Tensor, target: float, weight: float) -> torch.Tensor:
        """The loss as a differentiable tensor, from the layers' sparsities and the overall one."""
        raise NotImplementedError

    def after_training_call(self, overall: float | torch.Tensor, target: float) -> None:
        """Advance the penalty's own state after a training call of the loss (nothing, unless it has state);
        ``overall`` may be a tensor, read only by a penalty that needs its value (one host sync on a GPU)."""


class _OverallPenalty(Penalty):
    """A penalty on the overall sparsity alone: its gradient in ``s_i`` is ``dL/dS * p_i``."""

    def _loss_and_sparsity_gradient(
        self, sparsities: list[float], shares: list[float], overall: float, target: float, weight: float
    ) -> tuple[float, list[float]]:
        loss, factor = self.value_and_slope(overall, target, weight)
        return loss, [factor * p for p in shares]

    def value_and_slope(self, overall: float, target: float, weight: float) -> tuple[float, float]:
        """The loss and ``dL/dS`` at the overall sparsity ``overall``."""
        raise NotImplementedError


class AdaptivePenalty(_OverallPenalty):
    """``weight * (S - target)**2``: only the overall budget is constrained (the original method)."""

    name = "adaptive"

    def value_and_slope(self, overall: float, target: float, weight: float) -> tuple[float, float]:
        return weight * (overall - target) ** 2, 2.0 * weight * (overall - target)

    def loss(self, sparsities: torch.Tensor, overall: torch.Tensor, target: float, weight: float) -> torch.Tensor:
        return weight * (overall - target) ** 2


class FixedPenalty(Penalty):
    """``weight * mean_i (s_i - target)**2``: every layer is driven to the target."""

    name = "fixed"

    def _loss_and_sparsity_gradient(
        self, sparsities: list[float], shares: list[float], overall: float, target: float, weight: float
    ) -> tuple[float, list[float]]:
        count = len(sparsities)
        loss = weight * sum((s - target) ** 2 for s in sparsities) / count
        return loss, [2.0 * weight * (s - target) / count for s in sparsities]

    def loss(self, sparsities: torch.Tensor, overall: torch.Tensor, target: float, weight: float) -> torch.Tensor:
        return weight * torch.mean((sparsities - target) ** 2)


class UpperPenalty(_OverallPenalty):
    """``weight * relu(target - S)``: only a model less sparse than the target is penalised."""

    name = "upper"

    def value_and_slope(self, overall: float, target: float, weight: float) -> tuple[float, float]:
        return weight * max(target - overall, 0.0), -weight if target > overall else 0.0

    def loss(self, sparsities: torch.Tensor, overall: torch.Tensor, target: float, weight: float) -> torch.Tensor:
        return weight * torch.relu(target - overall)


class ConstraintPenalty(_OverallPenalty):
    """The augmented Lagrangian ``weight * (S - target)**2 + multiplier * (target - S)`` of ``S = target``.

    After every training call the multiplier takes a dual-ascent step ``dual_step * (target - S)``.

    Args:
        dual_step: the multiplier's step (``> 0``).
        multiplier: its starting value.
    """

    name = "constraint"

    def __init__(self, dual_step: float, multiplier: float = 0.0) -> None:
        self.dual_step = dual_step
        self.multiplier = multiplier

    @property
    def dual_step(self) -> float:
        """The multiplier's step per training call, ``> 0``."""
        return self._dual_step

    @dual_step.setter
    def dual_step(self, value: float) -> None:
        self._dual_step = check_positive(value, "dual_step")

    def value_and_slope(self, overall: float, target: float, weight: float) -> tuple[float, float]:
        loss = weight * (overall - target) ** 2 + self.multiplier * (target - overall)
        return loss, 2.0 * weight * (overall - target) - self.multiplier

    def loss(self, sparsities: torch.Tensor, overall: torch.Tensor, target: float, weight: float) -> torch.Tensor:
        return weight * (overall - target) ** 2 + self.multiplier * (target - overall)

    def after_training_call(self, overall: float | torch.Tensor, target: float) -> None:
        self.multiplier += self.dual_step * (target - float(overall))


PENALTIES: dict[str, type[Penalty]] = {
    cls.name: cls for cls in (AdaptivePenalty, FixedPenalty, UpperPenalty, ConstraintPenalty)
}
"""Mode name -> penalty class."""
