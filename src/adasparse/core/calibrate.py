"""Exact-target calibration: one global scale on all thresholds, found on the exact zero count."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ._checks import check_fraction
from .distribution import MagnitudeDistribution, unit_costs
from .operator import MAX_THRESHOLD
from .parametrization import PrunedTensor, pruned_tensors
from .report import SparsityReport, sparsity_report

__all__ = ["CalibrationResult", "calibrate"]


@dataclass(frozen=True)
class CalibrationResult:
    """What :func:`calibrate` did.

    Attributes:
        target: the requested overall sparsity.
        scale: the factor applied to every threshold ``r`` (clamped to ``[0, 5]`` afterwards).
        reached: whether the actual overall sparsity is within one weight of the target.
        before / after: the full sparsity reports.
    """

    target: float
    scale: float
    reached: bool
    before: SparsityReport
    after: SparsityReport

    def __str__(self) -> str:
        return (
            f"calibrated to target {self.target:.4f}: actual {self.before.overall:.6f} -> {self.after.overall:.6f} "
            f"({self.after.pruned_zeros:,} of {self.after.pruned_params:,} weights zero, "
            f"threshold scale {self.scale:.6f}{'' if self.reached else ', target NOT reached'})"
        )


class _Layer:
    """A pruned tensor's measured distribution and its threshold, to count zeros at any scale of the threshold."""

    def __init__(self, pruned: PrunedTensor) -> None:
        self.parameter = pruned.threshold
        self.distribution = MagnitudeDistribution(pruned).measure()
        self.base = min(max(self.parameter.item(), 0.0), MAX_THRESHOLD)

    def threshold_at(self, scale: float) -> torch.Tensor:
        value = min(self.base * scale, MAX_THRESHOLD)
        return torch.tensor(value, dtype=self.parameter.dtype, device=self.parameter.device)

    def zeros_at(self, scale: float) -> int:
        return self.distribution.zero_count(self.threshold_at(scale))


def calibrate(
    model: nn.Module,
    target: float,
    *,
    budget: Mapping[str, float] | None = None,
    max_iterations: int = 200,
) -> CalibrationResult:
    """Scale all thresholds by one factor so the actual overall sparsity is the target to within one weight.

    Keeps the learned allocation across layers (every ``r`` is multiplied by the same factor, found by bisection
    on the exact zero count of the effective weights). Meant as the last step after training, before
    :func:`adasparse.desparsify`; thresholds are changed in place (even frozen ones).

    Args:
        model: a sparsified model.
        target: overall sparsity over the pruned tensors, in ``[0, 1)``.
        budget: per-layer costs (e.g. :func:`adasparse.flops.layer_macs`) to make the target a fraction of the
            total cost instead of the weight count; it is then met to within the cost of one weight.
        max_iterations: bisection steps (each costs one binary search per layer).

    Returns:
        A :class:`CalibrationResult` with the reports before and after.

    Raises:
        ValueError: a plain model or a bad target. A target the thresholds cannot reach (all clamped at 5
            standard deviations) gives a ``RuntimeWarning`` and ``reached=False``.

    Example::

        >>> result = calibrate(model, 0.9)
        >>> print(result)     # calibrated to target 0.9000: actual 0.889731 -> 0.900000 (...)
    """
    target = check_fraction(target, "target")
    pruned = pruned_tensors(model)
    if not pruned:
        raise ValueError("calibrate needs a sparsified model: call adasparse.sparsify(model, ...) first")
    before = sparsity_report(model)
    with torch.no_grad():
        layers = [_Layer(item) for item in pruned]
        if all(layer.base == 0.0 for layer in layers):
            for layer in layers:
                layer.base = 1.0
        unit = unit_costs(pruned, budget)
        total = sum(u * len(layer.distribution) for u, layer in zip(unit, layers))
        goal = target * total
        tolerance = max(unit)

        def zeros_at(scale: float) -> float:
            return sum(u * layer.zeros_at(scale) for u, layer in zip(unit, layers))

        low, high = 0.0, MAX_THRESHOLD / min(layer.base for layer in layers if layer.base > 0.0)
        low_zeros, high_zeros = zeros_at(low), zeros_at(high)
        if high_zeros < goal:
            low, low_zeros = high, high_zeros
        elif low_zeros < goal:
            for _ in range(max_iterations):
                middle = 0.5 * (low + high)
                if middle in (low, high):
                    break
                middle_zeros = zeros_at(middle)
                if middle_zeros < goal:
                    low, low_zeros = middle, middle_zeros
                else:
                    high, high_zeros = middle, middle_zeros
                if high_zeros - low_zeros <= tolerance:
                    break
        else:
            high, high_zeros = low, low_zeros
        scale = low if abs(low_zeros - goal) <= abs(high_zeros - goal) else high
        for layer in layers:
            layer.parameter.copy_(layer.threshold_at(scale))
    after = sparsity_report(model)
    achieved = sum(u * layer.zeros for u, layer in zip(unit, after.layers))
    reached = abs(achieved - goal) <= tolerance
    if not reached:
        warnings.warn(
            f"calibrate could not reach target {target}: achieved {achieved / total:.6f} of the "
            f"{'budget' if budget else 'weights'} (goal {goal:.1f} of {total:.1f}); thresholds are clamped to "
            f"[0, {MAX_THRESHOLD}] and layers whose r is 0 are not scaled",
            RuntimeWarning,
            stacklevel=2,
        )
    return CalibrationResult(target, scale, reached, before, after)
