"""Exact-target calibration: one global scale on all thresholds, found on the exact zero count."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ._checks import check_fraction
from .channel_cost import shared_cost
from .channel_sets import ChannelSet
from .distribution import MagnitudeDistribution, unit_costs
from .latency_cost import LatencyCost
from .operator import MAX_THRESHOLD
from .parametrization import PrunedTensor, pruned_tensors, pruning_units
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

    budget: str | None = None
    """For a model pruned by channels, ``"params"`` or ``"flops"``: the target is the fraction of that cost the
    pruned channels take off (``before.shrunk[budget]`` -> ``after.shrunk[budget]``)."""

    def __str__(self) -> str:
        if self.budget is not None and self.before.shrunk and self.after.shrunk:
            return (
                f"calibrated to target {self.target:.4f}: {self.budget} removed once shrunk "
                f"{self.before.shrunk[self.budget]:.6f} -> {self.after.shrunk[self.budget]:.6f} "
                f"(threshold scale {self.scale:.6f}{'' if self.reached else ', target NOT reached'})"
            )
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
    budget: Mapping[str, float] | str | None = None,
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
            total cost instead of the weight count; it is then met to within the cost of one weight. For a model
            pruned by channels, ``"params"`` (default) or ``"flops"``: the fraction of the model's weights or
            multiply-accumulates removed once the pruned channels are (:mod:`adasparse.core.channel_cost`), met to
            within one channel.
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
    if any(isinstance(item.layout, ChannelSet) for item in pruned):
        return _calibrate_channels(model, target, budget, max_iterations)
    if isinstance(budget, str):
        raise ValueError(f"budget={budget!r} names a channel cost; this model is not pruned by channels")
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

        high = MAX_THRESHOLD / min(layer.base for layer in layers if layer.base > 0.0)
        scale = _bisect(zeros_at, goal, high, max_iterations, tolerance)
        for layer in layers:
            layer.parameter.copy_(layer.threshold_at(scale))
        achieved = zeros_at(scale)  # in the distributions' units: weights, or groups for a block granularity
    after = sparsity_report(model)
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


def _bisect(value_at: Callable[[float], float], goal: float, high: float, iterations: int, step: float) -> float:
    """The scale in ``[0, high]`` whose (non-decreasing) value is closest to ``goal``, by bisection."""
    low, low_value, high_value = 0.0, value_at(0.0), value_at(high)
    if high_value < goal:
        return high
    if low_value >= goal:
        return low
    for _ in range(iterations):
        middle = 0.5 * (low + high)
        if middle in (low, high):
            break
        middle_value = value_at(middle)
        if middle_value < goal:
            low, low_value = middle, middle_value
        else:
            high, high_value = middle, middle_value
        if high_value - low_value <= step:
            break
    return low if abs(low_value - goal) <= abs(high_value - goal) else high


def _calibrate_channels(
    model: nn.Module, target: float, budget: Mapping[str, float] | str | None, max_iterations: int
) -> CalibrationResult:
    """:func:`calibrate` for a model pruned by channels: the target is the fraction of the model's cost its pruned
    channels take off (one global scale of the sets' thresholds, found on the exact channel counts)."""
    kind = "params" if budget is None else budget
    if not isinstance(kind, str) or kind not in ("params", "flops", "latency"):
        raise ValueError(f"a model pruned by channels takes budget='params', 'flops' or 'latency', got {budget!r}")
    units = pruning_units(model)
    cost = shared_cost(units)
    assert cost is not None, "a model pruned by channels has a channel cost model"
    if kind == "latency" and not isinstance(cost, LatencyCost):
        raise ValueError("budget='latency' needs the channel sets priced by a latency table (sparsify(..., latency=))")
    before = sparsity_report(model)
    with torch.no_grad():
        layers = {id(item.layout): _Layer(item) for item in units}
        ordered = [layers[id(channel_set)] for channel_set in cost.channel_sets]
        if all(layer.base == 0.0 for layer in ordered):
            for layer in ordered:
                layer.base = 1.0

        def fractions_at(scale: float) -> list[float]:
            return [layer.zeros_at(scale) / max(len(layer.distribution), 1) for layer in ordered]

        step = cost.channel_cost(fractions_at(1.0), kind)
        high = MAX_THRESHOLD / min(layer.base for layer in ordered if layer.base > 0.0)

        def value_at(scale: float) -> float:
            return cost.sparsity(fractions_at(scale), kind)

        # Already within one channel: keep the allocation. One common scale of thresholds whose sets have very
        # different score densities can trade a channel of one set for dozens of another at equal cost.
        scale = 1.0
        if abs(value_at(1.0) - target) > step:
            scale = _bisect(value_at, target, high, max_iterations, step)
            if abs(value_at(1.0) - target) <= abs(value_at(scale) - target):
                scale = 1.0
        for layer in ordered:
            layer.parameter.copy_(layer.threshold_at(scale))
    after = sparsity_report(model)
    achieved = cost.sparsity(cost.fractions(), kind)
    reached = abs(achieved - target) <= cost.channel_cost(cost.fractions(), kind) + 1e-9
    if not reached:
        warnings.warn(
            f"calibrate could not reach target {target}: removing the pruned channels takes {achieved:.6f} of the "
            f"model's {kind} off; thresholds are clamped to [0, {MAX_THRESHOLD}]",
            RuntimeWarning,
            stacklevel=3,
        )
    return CalibrationResult(target, scale, reached, before, after, budget=kind)
