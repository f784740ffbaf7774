"""What the budget is made of: each pruned tensor's measured distribution of magnitudes and its per-layer cost.

:class:`MagnitudeDistribution` records a pruned tensor's sorted ``|w_c|`` and std as the forward pass computes them,
so the zeros at any threshold are one binary search instead of a forward pass; :func:`budget_costs` and
:func:`unit_costs` turn a budget (the weight count or a mapping of layer name to cost) into per-layer costs.
Calibration and the projection of the sparsity loss both use them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy
import torch

from ._checks import check_choice
from ._no_grad import no_grad
from .operator import EPSILON, MAX_THRESHOLD, pruning_bound, sorted_magnitudes
from .parametrization import PrunedTensor

__all__ = ["SLOPE_WIDTH", "MagnitudeDistribution", "budget_costs", "unit_costs"]

MAX_EQUIVALENT_FRACTION = 1.0 - 1e-9
"""The largest fraction :meth:`MagnitudeDistribution.gaussian_equivalent` maps (to a finite threshold, about 6.1)."""


SLOPE_WIDTH = 0.1
"""Half the span, in standard deviations, over which :meth:`MagnitudeDistribution.zero_fraction_slope` measures."""


class MagnitudeDistribution:
    """A pruned tensor's ``|w_c|`` (sorted ascending) and std, as measured by :meth:`measure`; with a structured
    granularity, its groups' norms and their root mean square (counts are then of groups).

    The zero count at a threshold ``r`` is then a binary search of its bound ``clamp(r, 0, 5) * std + 1e-6``:
    :meth:`zero_count` is exact (the bound in the weight's dtype, as the forward pass compares it),
    :meth:`zero_fraction` works on Python floats and float64 values (the projection evaluates it many times per
    step). With ``max_sample``, a tensor with more elements is represented by a fixed random sample of that many
    (the same sample at every measurement, seeded by the tensor's size).

    Args:
        pruned: the pruned tensor to measure.
        max_sample: the most elements to record (``None``: all of them).
    """

    def __init__(self, pruned: PrunedTensor, max_sample: int | None = None) -> None:
        self._pruned = pruned
        self._sample: torch.Tensor | None = None
        numel = pruned.numel
        self._structured = pruned.layout is not None
        if max_sample is not None and numel > max_sample and not self._structured:
            generator = torch.Generator().manual_seed(numel)
            # In memory order: gathering them is then a near-sequential read (5x faster than in random order).
            self._sample = torch.randperm(numel, generator=generator)[:max_sample].sort().values
        self._values = torch.empty(0, dtype=torch.float64)
        self._std: float | torch.Tensor = 0.0
        self._dtype = torch.float64
        self._float64: numpy.ndarray | None = None
        self._source: torch.Tensor | None = None
        """The scores last sorted, for a structured granularity."""

    @no_grad
    def measure(self) -> MagnitudeDistribution:
        """Record the tensor's distribution as it is now (the only place it is computed); returns ``self``. For a
        structured granularity it is the groups' norms and their root mean square
        (:mod:`~adasparse.core.granularity`), sorted again only when the layout computed new scores (a channel set
        caches them per change of the weights)."""
        if self._structured:
            scores, scale = self._pruned.scores()
            if scores is not self._source:
                self._values = torch.from_numpy(numpy.sort(scores.float().cpu().numpy()))
                self._std, self._source, self._float64 = scale, scores, None
            self._dtype = self._values.dtype
            return self
        self._values, self._std = sorted_magnitudes(
            self._pruned.raw.detach(), self._sample, zeros_stay=not self._pruned.centred
        )
        self._dtype = self._pruned.raw.dtype
        self._float64 = None
        return self

    @property
    def values(self) -> torch.Tensor:
        """The recorded magnitudes ``|w_c|``, sorted ascending."""
        return self._values

    @property
    def std(self) -> float:
        """The recorded standard deviation of the weight."""
        return float(self._std)

    def __len__(self) -> int:
        """How many magnitudes are recorded (the tensor's size, or the sample's)."""
        return self._values.numel()

    def zero_count(self, r: torch.Tensor) -> int:
        """How many recorded weights the threshold ``r`` (a 0-d tensor) prunes, exactly as the forward pass would."""
        bound = pruning_bound(r, self._std, self._dtype).reshape(1)
        return int(torch.searchsorted(self._values, bound.to(self._values.device), right=True))

    def zero_fraction(self, r: float) -> float:
        """The fraction of recorded weights the threshold ``r`` prunes, on float64 (1 weight = ``1 / len``)."""
        values = self.sorted_float64()
        bound = min(max(r, 0.0), MAX_THRESHOLD) * float(self._std) + EPSILON
        return float(values.searchsorted(bound, side="right")) / max(len(values), 1)

    def zero_fraction_slope(self, r: float, width: float = SLOPE_WIDTH) -> float:
        """The measured ``d zero_fraction / d r`` at ``r``: the fraction of recorded weights between ``r - width``
        (not below 0) and ``r + width``, over that span. Unlike the Gaussian slope it is near 0 for a layer with
        almost no weights left near its threshold (one whose weights became heavy-tailed)."""
        low, high = max(r - width, 0.0), r + width
        return (self.zero_fraction(high) - self.zero_fraction(low)) / (high - low)

    def sorted_float64(self) -> numpy.ndarray:
        """The recorded magnitudes, ascending, as a float64 array (made once per measurement; do not modify)."""
        if self._float64 is None:
            self._float64 = self._values.double().cpu().numpy()
        return self._float64

    def position(self, r: float) -> float:
        """Where the threshold ``r`` falls among the recorded values, as a continuous count in ``[0, len]``: value
        ``i`` (ascending) sits at ``i + 0.5`` and positions between are linear in the bound, so a threshold that
        moves a little moves its position a little, however coarse the groups (the pruned count is the position
        rounded)."""
        values, scale = self.sorted_float64(), float(self._std)
        if not len(values):
            return 0.0
        bound = min(max(r, 0.0), MAX_THRESHOLD) * scale + EPSILON
        above = int(values.searchsorted(bound, side="right"))
        if above == 0:
            return 0.5 * bound / values[0] if values[0] > 0.0 else 0.0
        if above == len(values):
            return float(len(values))
        low, high = values[above - 1], values[above]
        step = (bound - low) / (high - low) if high > low else 0.0
        return above - 0.5 + step

    def gaussian_equivalent(self, position: float) -> float:
        """The threshold a Gaussian layer needs to prune the fraction ``position / len`` (``sqrt(2) *
        erfinv(fraction)``, the fraction capped just below 1): a scale on which every granularity moves alike."""
        size = len(self)
        fraction = min(max(position / size, 0.0), MAX_EQUIVALENT_FRACTION) if size else 0.0
        return math.sqrt(2.0) * float(torch.erfinv(torch.tensor(fraction, dtype=torch.float64)))

    def position_at_equivalent(self, equivalent: float) -> float:
        """The continuous position whose pruned fraction a Gaussian layer reaches at threshold ``equivalent`` (the
        inverse of :meth:`gaussian_equivalent`)."""
        return len(self) * math.erf(max(equivalent, 0.0) / math.sqrt(2.0))

    def threshold_at(self, position: float) -> float:
        """The threshold ``r`` in ``[0, 5]`` at a continuous ``position`` (the inverse of :meth:`position`)."""
        values, scale = self.sorted_float64(), float(self._std)
        if scale <= 0.0 or not len(values) or position <= 0.0:
            return 0.0
        if position >= len(values):
            return MAX_THRESHOLD
        if position <= 0.5:
            bound = values[0] * min(position / 0.5, 1.0 - 1e-3)
        elif position >= len(values) - 0.5:
            bound = values[-1]  # every value pruned
        else:
            index = int(position - 0.5)
            # Never exactly on a value: the threshold is stored in the weight's dtype and compared there, so a bound
            # on a value could fall on either side of it.
            step = min(max(position - 0.5 - index, 1e-3), 1.0 - 1e-3)
            bound = values[index] + step * (values[index + 1] - values[index])
        return min(max((bound - EPSILON) / scale, 0.0), MAX_THRESHOLD)

    def state_dict(self) -> dict[str, Any]:
        """The recorded distribution: ``{"std": float, "sorted": float64 tensor}`` (``weights_only`` safe)."""
        return {"std": float(self._std), "sorted": torch.from_numpy(self.sorted_float64().copy())}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (the values are then held in float64)."""
        self._std = float(state["std"])
        self._values = state["sorted"].double()
        self._dtype = self._values.dtype
        self._float64 = self._values.numpy()
        self._source = None


def budget_costs(pruned: list[PrunedTensor], budget: str | Mapping[str, float]) -> list[float]:
    """Each pruned tensor's cost in the budget: its weight count for ``"params"``, else ``budget[name]``.

    Raises:
        ValueError: another budget name, a tensor without a cost, or costs that are negative, not finite or all 0.
        TypeError: a budget that is neither a string nor a mapping.
    """
    if isinstance(budget, str):
        check_choice(budget, "budget", ("params",))
        return [float(t.numel) for t in pruned]
    if not isinstance(budget, Mapping):
        raise TypeError(f"budget must be 'params' or a mapping of layer name to cost, got {type(budget).__name__}")
    missing = [t.name for t in pruned if t.name not in budget]
    if missing:
        raise ValueError(f"budget has no cost for {', '.join(missing)}")
    costs = [float(budget[t.name]) for t in pruned]
    if any(not math.isfinite(c) or c < 0 for c in costs) or sum(costs) <= 0:
        raise ValueError("budget costs must be finite, >= 0, and not all 0")
    return costs


def unit_costs(pruned: list[PrunedTensor], budget: Mapping[str, float] | None) -> list[float]:
    """The cost of one zero weight in each tensor: 1 for the weight count (``None``), ``cost / numel`` for a
    mapping (checked as in :func:`budget_costs`)."""
    if budget is None:
        return [1.0] * len(pruned)
    return [cost / t.numel for cost, t in zip(budget_costs(pruned, budget), pruned)]
