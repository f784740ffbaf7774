"""The projection mode of the sparsity loss: the thresholds moved onto the exact budget after every step.

:func:`_solve_projection` solves for the thresholds along the constraint's gradient; :class:`Projection` holds
what the projection needs between steps (each layer's measured distribution, the idle layers) and warns once when
the target is out of reach; :func:`update_idle` finds the layers the loss never reaches.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy

from ..core._checks import check_choice
from ..core._no_grad import no_grad
from ..core.distribution import MagnitudeDistribution
from ..core.operator import EPSILON, MAX_THRESHOLD, analytic_sparsity_value
from ..core.parametrization import PrunedTensor
from .layer_adaptive import LevelTable, lamp_levels
from .thresholds import ThresholdVersions, threshold_versions

__all__ = [
    "MAX_SAMPLE",
    "PROJECTION_SLOPES",
    "Projection",
    "SLOPE_FLOOR",
    "UNREACHABLE_GAP",
    "check_slope_needs_correction",
    "update_idle",
]

PROJECTION_SLOPES = ("gaussian", "measured", "lamp")
"""How the projection moves the thresholds onto the budget: along the Gaussian ``erf`` slope ``ds/dr`` at each
threshold, along the layer's measured one (:meth:`MagnitudeDistribution.zero_fraction_slope`), or, with
``"lamp"``, to one common level of the layer-adaptive magnitude score (:mod:`.layer_adaptive`: the allocation is
then the weights' own, and the threshold steps between projections do not change it). ``"measured"`` and
``"lamp"`` read the measured distributions (``correction``). A model pruned by channels is projected on its own
scale (the Gaussian-equivalent thresholds) and takes none of them."""


UNREACHABLE_GAP = 0.005
"""The projection warns (once) when it ends farther than this from the target: the target is out of reach."""

_DENSITY_SCALE = math.sqrt(2.0 / math.pi)

MAX_SAMPLE = 1 << 16
"""The projection records at most this many weights of a tensor (a fixed random sample of a larger one)."""

MAX_EQUIVALENT_SHIFT = 12.0
"""The channel projection's common shift of the Gaussian-equivalent thresholds is searched in ``[-12, 12]``: enough
to take any set from none of its channels to all but one, or back."""

MAX_REFINE_SHIFT = 0.25
"""How far the channel projection may shift the fine sets alone to close a gap a coarse set leaves, on the
Gaussian-equivalent scale: from half of a set's channels pruned, to 33% or 65% of them."""

SLOPE_FLOOR = _DENSITY_SCALE * math.exp(-0.5 * 3.0**2)
"""Smallest slope ``ds/dr`` the projection moves a threshold with: the Gaussian slope at ``r = 3`` (0.0089). At
the clamp (``r = 5``) the Gaussian slope is 1e-6, which left a layer pushed there fully pruned for good."""


def check_slope_needs_correction(slope: str, correction: bool, mode: str = "projection") -> None:
    """``ValueError`` when the projection would move the thresholds by the measured distributions (``slope``
    ``"measured"`` or ``"lamp"``) without measuring them (``correction=False``)."""
    if mode == "projection" and slope != "gaussian" and not correction:
        raise ValueError(
            f"projection_slope={slope!r} needs correction=True: it reads the measured weight distributions "
            "(use projection_slope='gaussian' without correction)"
        )


def _solve_projection(
    r_values: list[float],
    shares: list[float],
    target: float,
    sparsity_of: list[Callable[[float], float]],
    tolerance: float = 1e-7,
    fixed: list[bool] | None = None,
    measured_slopes: list[float] | None = None,
) -> tuple[list[float], float]:
    """The thresholds moved along the constraint's gradient so that the overall sparsity equals ``target``, and the
    overall sparsity ``sum p_i sparsity_of[i](r_i)`` they reach.

    ``r_i + delta * d_i`` with ``d_i = p_i * s_i'(r_i)`` (the Gaussian slope, or ``measured_slopes`` when given:
    the direction the constraint's multiplier pushes, so the step is the linearised Euclidean projection onto
    ``sum p_i s_i = target``), the slope bounded below by :data:`SLOPE_FLOOR` so that a threshold at a range limit
    can still be moved. The
    scalar ``delta`` solves ``sum p_i sparsity_of[i](r_i + delta d_i) = target`` by safeguarded secant steps (the
    Gaussian slope for the first, bisection whenever a step leaves the bracket), stopping within ``tolerance`` of
    the target or when the bracket is a point: thresholds are projected every training step and are already close,
    so this takes a few evaluations (each one ``sparsity_of`` call per layer, the step's main cost: none is made
    twice). A target out of reach leaves the thresholds at the closest end. Layers marked ``fixed`` keep their
    threshold (their sparsity still counts).
    """
    if measured_slopes is not None:
        slopes = [max(slope, SLOPE_FLOOR) for slope in measured_slopes]
    else:
        slopes = [
            max(_DENSITY_SCALE * math.exp(-0.5 * min(max(r, 0.0), MAX_THRESHOLD) ** 2), SLOPE_FLOOR) for r in r_values
        ]
    directions = [0.0 if fixed and fixed[i] else p * slope for i, (p, slope) in enumerate(zip(shares, slopes))]
    largest = max(directions)
    if largest <= 0.0:
        return list(r_values), sum(p * f(r) for p, f, r in zip(shares, sparsity_of, r_values))
    directions = [d / largest for d in directions]
    moving = [(r, d) for r, d in zip(r_values, directions) if d > 0.0]
    low = min(min((0.0 - r) / d for r, d in moving), 0.0)
    high = max(max((MAX_THRESHOLD - r) / d for r, d in moving), 0.0)
    evaluated: dict[float, float] = {}

    def overall(delta: float) -> float:
        value = evaluated.get(delta)
        if value is None:
            value = sum(p * f(r + delta * d) for r, d, p, f in zip(r_values, directions, shares, sparsity_of))
            evaluated[delta] = value
        return value

    def gaussian_slope(delta: float) -> float:
        total = 0.0
        for r, d, p in zip(r_values, directions, shares):
            a = r + delta * d
            if 0.0 < a < MAX_THRESHOLD:
                total += p * d * _DENSITY_SCALE * math.exp(-0.5 * a * a)
        return total

    delta, best = 0.0, (math.inf, 0.0)
    previous: tuple[float, float] | None = None
    for _ in range(100):
        gap = overall(delta) - target
        best = min(best, (abs(gap), delta))
        if abs(gap) <= tolerance or high - low <= 1e-10:
            break
        if gap < 0.0:
            low = delta
        else:
            high = delta
        if previous is not None and previous[1] != gap:  # secant on the measured function
            slope = (previous[1] - gap) / (previous[0] - delta)
        else:  # first step, or a flat stretch of the step function: the Gaussian slope
            slope = gaussian_slope(delta)
        previous = (delta, gap)
        step = delta - gap / slope if slope > 0.0 else math.nan
        delta = step if low < step < high else 0.5 * (low + high)
    if abs(overall(high) - target) < best[0]:
        best = (abs(overall(high) - target), high)
    return [r + best[1] * d for r, d in zip(r_values, directions)], overall(best[1])


class Projection:
    """The projection's state between steps, for the pruned tensors ``tensors`` with budget shares ``shares``.

    Args:
        tensors: the pruned tensors whose thresholds are projected.
        shares: each tensor's share of the budget (sums to 1).
    """

    def __init__(
        self, tensors: list[PrunedTensor], shares: list[float], budget: Any = None, slope: str = "gaussian"
    ) -> None:
        self._tensors = tensors
        self._shares = shares
        self.slope = check_choice(slope, "projection_slope", PROJECTION_SLOPES)
        """The slope each threshold moves along (:data:`PROJECTION_SLOPES`)."""
        self._budget = budget
        """For a model pruned by channels: an object with ``sparsity(fractions)`` and ``gradient(fractions)`` in
        the tensors' order (:class:`~adasparse.control.loss.ChannelBudget`); ``None`` otherwise."""
        self.idle = [False] * len(tensors)
        """Per pruned tensor: the loss does not reach it, so it is pruned first (see :meth:`project`)."""
        self.measured: list[MagnitudeDistribution] | None = None
        """Each tensor's recorded distribution (``None`` until :meth:`measure`)."""
        self._levels: list[Any] | None = None
        """With ``slope="lamp"``: each tensor's layer-adaptive levels of its recorded magnitudes (made when first
        needed after each measurement)."""
        self._runs: list[bool] = []
        """With ``slope="lamp"``: per tensor, whether its recorded magnitudes have runs a threshold prunes whole
        (:func:`_has_runs`)."""
        self._limits: list[float] = []
        """With ``slope="lamp"``: per tensor, the position of a 5-std threshold (the most it can prune)."""
        self._tables: dict[tuple[int, ...], LevelTable] = {}
        """The levels' tables, per set of tensors the level moves (idle ones aside)."""
        self._solved: tuple[Any, list[float], float] | None = None
        """The last solution: its (target, idle flags), the thresholds and the overall sparsity they reach."""
        self._planned: list[float] = []
        """Targets the coming projections will ask for (:meth:`plan`), solved with the next one solved."""
        self._solutions: dict[Any, tuple[list[float], float]] = {}
        """Solutions on the current levels, by (target, idle flags): the last solve's, planned targets included."""
        self._filled: ThresholdVersions | None = None
        """The thresholds' versions right after the last solution was written (nothing to write while equal)."""
        self._warned_unreachable = False

    @no_grad
    def measure(self, structured_only: bool = False) -> list[MagnitudeDistribution]:
        """Record every tensor's distribution of ``|w_c|`` (at most :data:`MAX_SAMPLE` weights each); with
        ``structured_only``, only those of tensors pruned by groups (their scores are few and already computed by
        the forward pass, so they are re-measured at every step; the others only when never measured)."""
        self._levels = None
        if self.measured is None:
            self.measured = [MagnitudeDistribution(t, MAX_SAMPLE).measure() for t in self._tensors]
            return self.measured
        for tensor, measured in zip(self._tensors, self.measured):
            if not structured_only or tensor.layout is not None:
                measured.measure()
        return self.measured

    @no_grad
    def _project_channels(self, target: float, final: bool = False) -> float:
        """The projection of a model pruned by channels: every set's threshold moves by the same amount on the
        Gaussian-equivalent scale (:meth:`MagnitudeDistribution.gaussian_equivalent`: the threshold a Gaussian
        layer would need for the set's pruned fraction) until the cost of the shrunk model is closest to
        ``target``: within one channel of the set crossing it. The differences the task gradient made between sets
        stay, no set jumps alone to all its channels, and the threshold steps (:func:`.thresholds.adam_step`) are
        taken on the same scale, so a push that every set gets alike is undone alike. On that scale a set nearly
        fully pruned moves less per shift than one half pruned (an equal shift of the fractions themselves drove a
        cheap classifier layer to one unit in a measured case). Positions among the measured scores are continuous
        (:meth:`MagnitudeDistribution.position`), so a set with few channels moves as surely as one with many.
        Every set keeps a channel. In the ``final`` projection, a gap the coarsest set leaves is then narrowed with
        the fine sets alone, within a bound (:meth:`_refined_positions`)."""
        if self.measured is None:
            self.measure()
        measured: list[MagnitudeDistribution] = self.measured  # type: ignore[assignment]
        thresholds = [t.threshold for t in self._tensors]
        sizes = [max(len(m), 1) for m in measured]

        starts = [m.gaussian_equivalent(m.position(r.item())) for m, r in zip(measured, thresholds)]

        def shifted(delta: float) -> list[float]:
            return _shifted_positions(measured, starts, sizes, delta)

        def overall(delta: float) -> float:
            return self._budget.sparsity(_fractions_at(measured, shifted(delta)))

        positions = shifted(_closest_shift(overall, target, -MAX_EQUIVALENT_SHIFT, MAX_EQUIVALENT_SHIFT))
        if final:
            positions = self._refined_positions(measured, positions, sizes, target)
        fractions = _fractions_at(measured, positions)
        for r, distribution, position in zip(thresholds, measured, positions):
            r.fill_(distribution.threshold_at(position))
        overall_now = self._budget.sparsity(fractions)
        unreachable = max(UNREACHABLE_GAP, self._budget.channel_cost(fractions))  # one channel may weigh more
        if abs(overall_now - target) > unreachable and not self._warned_unreachable:
            self._warned_unreachable = True
            warnings.warn(
                f"the projection cannot reach the target {target:.4f}: removing the pruned channels takes "
                f"{overall_now:.4f} of the model's cost off with every set at one channel or at none; warning once",
                UserWarning,
                stacklevel=3,
            )
        return overall_now

    def _refined_positions(
        self, measured: list[MagnitudeDistribution], positions: list[float], sizes: list[int], target: float
    ) -> list[float]:
        """Close a gap to ``target`` of more than :data:`UNREACHABLE_GAP` left by a coarse set (a head, a wide
        channel) with the fine sets only: those whose channel costs at most that gap, shifted together on the
        Gaussian-equivalent scale by at most :data:`MAX_REFINE_SHIFT`, kept only if the gap shrinks. Done once, in
        the last projection before the zeros are fixed: at every step it accumulated (each step's common shift
        starts where the last refinement left the fine sets), and took a cheap classifier layer to 4 of its 128
        units during the ramp. The bound keeps a fine set that costs little (a layer whose inputs are mostly
        pruned) from giving up most of its channels to close the gap alone."""
        fractions = _fractions_at(measured, positions)
        gap = abs(self._budget.sparsity(fractions) - target)
        if gap <= UNREACHABLE_GAP:
            return positions
        per_channel = [slope / size for slope, size in zip(self._budget.gradient(fractions), sizes)]
        fine = [cost <= UNREACHABLE_GAP for cost in per_channel]
        if not any(fine) or all(fine):
            return positions
        starts = [m.gaussian_equivalent(p) for m, p in zip(measured, positions)]

        def refined(delta: float) -> list[float]:
            shifted = _shifted_positions(measured, starts, sizes, delta)
            return [new if is_fine else old for new, old, is_fine in zip(shifted, positions, fine)]

        def overall(delta: float) -> float:
            return self._budget.sparsity(_fractions_at(measured, refined(delta)))

        delta = _closest_shift(overall, target, -MAX_REFINE_SHIFT, MAX_REFINE_SHIFT)
        return refined(delta) if abs(overall(delta) - target) < gap else positions

    def _project_levels(self, target: float) -> float:
        """The projection with ``slope="lamp"``: every threshold at one common layer-adaptive level
        (:class:`.layer_adaptive.LevelTable`), the level that makes the overall sparsity the target. Idle tensors
        first, as in :meth:`project`: alone at a common level if they can carry the target (the others keep every
        weight), else fully pruned and the others share the rest. The thresholds depend only on the target, the
        measured distributions and the idle tensors: while none of them changes, the last ones are put back."""
        if self.measured is None:
            self.measure()
        measured: list[MagnitudeDistribution] = self.measured  # type: ignore[assignment]
        if self._levels is None:
            self._levels = [  # group scores (blocks) are all recorded; weights may be a sample of the tensor
                lamp_levels(m.sorted_float64(), len(m) if t.layout is not None else t.numel)
                for m, t in zip(measured, self._tensors)
            ]
            self._runs = [_has_runs(m.sorted_float64()) for m in measured]
            self._limits = [m.position(MAX_THRESHOLD) for m in measured]  # a threshold prunes at most 5 std
            self._tables, self._solved, self._solutions = {}, None, {}
        key = (target, tuple(self.idle))
        if self._solved is None or self._solved[0] != key:
            solution = self._solutions.get(key)
            if solution is None:
                targets = [target, *(planned for planned in dict.fromkeys(self._planned) if planned != target)]
                self._planned = []
                solutions = self._solve_levels(targets, measured)
                self._solutions = {(planned, key[1]): found for planned, found in zip(targets, solutions)}
                solution = solutions[0]
            self._solved = (key, *solution)
            self._filled = None
        _, values, overall = self._solved
        if self._filled != threshold_versions(self._tensors):
            for pruned, value in zip(self._tensors, values):
                pruned.threshold.fill_(value)
            self._filled = threshold_versions(self._tensors)
        return overall

    def is_current(self, target: float, correction: bool, versions: ThresholdVersions) -> bool:
        """Whether :meth:`project` with these arguments would write no threshold and warn nothing: the layer-adaptive
        solution for ``target`` and the idle flags stands, on the same distributions, and the thresholds still
        hold it (``versions``: their :func:`.thresholds.threshold_versions` now). Lets a step of a held target skip
        the projection without entering it."""
        if self._budget is not None or not correction or self.slope != "lamp":
            return False
        if self._levels is None or self._solved is None or self._solved[0] != (target, tuple(self.idle)):
            return False
        if self._filled != versions:
            return False
        return self._warned_unreachable or abs(self._solved[2] - target) <= UNREACHABLE_GAP

    def plan(self, targets: list[float]) -> None:
        """The targets the coming projections will ask for, in order (a ramp's, up to the next measurement): with
        ``slope="lamp"`` they are solved together with the next target solved (:meth:`LevelTable.solve_many`) and
        put back when asked for, until the distributions are measured again. Only a saving: a target not planned is
        solved when asked, to the same thresholds bit for bit. Other slopes keep no plan."""
        self._planned = list(targets) if self.slope == "lamp" else []

    def _solve_levels(
        self, targets: list[float], measured: list[MagnitudeDistribution]
    ) -> list[tuple[list[float], float]]:
        """The thresholds of :meth:`_project_levels` for each of ``targets`` and the overall sparsity they reach;
        targets whose level moves the same tensors are solved together."""
        setups = [self._level_setup(target, measured) for target in targets]
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, (moving, _, rest) in enumerate(setups):
            if moving and rest > 0.0:
                groups.setdefault(tuple(moving), []).append(index)
        for moving, indices in groups.items():
            table = self._tables.get(moving)
            if table is None:
                table = self._tables[moving] = LevelTable([self._levels[i] for i in moving])  # type: ignore[index]
            shares = [self._shares[i] for i in moving]
            tolerance = 1e-3 * min(p / len(measured[i]) for p, i in zip(shares, moving))  # of one weight
            limits = [self._limits[i] for i in moving]
            rests = [setups[index][2] for index in indices]
            if len(rests) == 1:
                found = [table.solve(shares, rests[0], tolerance, limits)]
            else:
                found = table.solve_many(shares, rests, tolerance, limits)
            runs = [self._runs[i] for i in moving]
            layers = [measured[i] for i in moving]
            for index, rest, positions in zip(indices, rests, found):
                if any(runs):
                    positions = _split_runs(table, layers, runs, shares, rest, tolerance, limits, positions)
                values = setups[index][1]
                for i, layer, has_runs, position in zip(moving, layers, runs, positions):
                    values[i] = _threshold_at(layer, float(position), has_runs)
        return [
            (values, sum(p * m.zero_fraction(value) for p, m, value in zip(self._shares, measured, values)))
            for _, values, _ in setups
        ]

    def _level_setup(
        self, target: float, measured: list[MagnitudeDistribution]
    ) -> tuple[list[int], list[float], float]:
        """For ``target``: the tensors the common level moves (idle ones first, see :meth:`_project_levels`), the
        thresholds of the others, and the part of the target left to the moving ones."""
        values = [0.0] * len(self._tensors)
        moving = [i for i, m in enumerate(measured) if len(m)]
        if any(self.idle):
            idle = [i for i in moving if self.idle[i]]
            if sum(self._shares[i] * measured[i].zero_fraction(MAX_THRESHOLD) for i in idle) >= target:
                moving = idle
            else:
                moving = [i for i in moving if not self.idle[i]]
                values = [MAX_THRESHOLD if flag else 0.0 for flag in self.idle]
        others = set(range(len(values))) - set(moving)
        rest = target - sum(self._shares[i] * measured[i].zero_fraction(values[i]) for i in others)
        return moving, values, rest

    def measured_state(self) -> list[dict[str, Any]] | None:
        """The recorded distributions' states (``None`` when never measured)."""
        return None if self.measured is None else [m.state_dict() for m in self.measured]

    def load_measured_state(self, states: list[dict[str, Any]]) -> None:
        """Restore :meth:`measured_state` (``ValueError`` for another number of tensors)."""
        if len(states) != len(self._tensors):
            raise ValueError(
                f"state has {len(states)} measured layers, the model has {len(self._tensors)} pruned tensors"
            )
        self.measured = [MagnitudeDistribution(t, MAX_SAMPLE) for t in self._tensors]
        for layer, layer_state in zip(self.measured, states):
            layer.load_state_dict(layer_state)
        self._levels = None

    @no_grad
    def project(self, target: float, correction: bool, final: bool = False) -> float:
        """Move the thresholds (in place) so that the overall sparsity equals ``target``; returns the new overall.

        With ``correction`` the sparsity is each tensor's recorded one (measured now if never measured), otherwise
        the Gaussian estimate. Idle tensors come first: fully pruned if the target needs more, else they alone carry
        it. A target out of reach warns once. ``final`` marks the last projection before the zeros are fixed: for a
        model pruned by channels, a gap a coarse set leaves is then narrowed (see :meth:`_refined_positions`).
        """
        if self._budget is not None:
            return self._project_channels(target, final)
        if correction and self.slope == "lamp":
            overall = self._project_levels(target)
        else:
            overall = self._project_along_slopes(target, correction)
        self._check_reached(target, overall)
        return overall

    def _check_reached(self, target: float, overall: float) -> None:
        """Warn once when the projection ended farther than :data:`UNREACHABLE_GAP` from ``target``."""
        if abs(overall - target) > UNREACHABLE_GAP and not self._warned_unreachable:
            self._warned_unreachable = True
            warnings.warn(
                f"the projection cannot reach the target {target:.4f}: the overall sparsity stays at "
                f"{overall:.4f} with every threshold at its limit (e.g. a layer of constant weights is always "
                "fully pruned); warning once",
                UserWarning,
                stacklevel=4,  # the caller of project() or put_back(), past the no_grad wrapper
            )

    @no_grad
    def put_back(self, target: float, correction: bool) -> ThresholdVersions | None:
        """:meth:`project` for a target solved ahead (:meth:`plan`) on the current distributions: its thresholds
        written, and their versions after returned; ``None``, with nothing done, when there is no such solution. Every
        value it writes is finite and in ``[0, 5]`` (in any floating dtype: rounding keeps both ends), so what it
        writes needs no divergence check or clamp afterwards."""
        if self._budget is not None or not correction or self.slope != "lamp" or self._levels is None:
            return None
        solution = self._solutions.get((target, tuple(self.idle)))
        if solution is None or not _in_range(solution[0]):
            return None
        self._check_reached(target, self._project_levels(target))
        return self._filled

    def written_in_range(self) -> ThresholdVersions | None:
        """The thresholds' versions right after the last write of a layer-adaptive solution whose values all lie in
        ``[0, 5]`` (``None`` otherwise): while they are the thresholds' versions, the thresholds need no divergence
        check or clamp."""
        if self._solved is None or self._filled is None or not _in_range(self._solved[1]):
            return None
        return self._filled

    def _project_along_slopes(self, target: float, correction: bool) -> float:
        """The projection along each threshold's slope (``"gaussian"`` or ``"measured"``, see
        :func:`_solve_projection`); returns the overall sparsity reached."""
        thresholds = [t.threshold for t in self._tensors]
        if correction:
            if self.measured is None:
                self.measure()
            measured: list[MagnitudeDistribution] = self.measured  # type: ignore[assignment]
            sparsity_of = [m.zero_fraction for m in measured]
            # Counts move in steps of one weight: aim within half of the coarsest step, not closer.
            tolerance = 0.5 * max(p / max(len(m), 1) for p, m in zip(self._shares, measured))
        else:
            sparsity_of = [analytic_sparsity_value] * len(thresholds)
            tolerance = 1e-7
        values = [r.item() for r in thresholds]  # exact in a Python float for every floating dtype
        fixed = None
        if any(self.idle):
            # Idle tensors first: fully pruned if the target needs more, else they alone carry it.
            idle_at_limit = [MAX_THRESHOLD if idle else 0.0 for idle in self.idle]
            idle_only = sum(p * f(r) for p, f, r in zip(self._shares, sparsity_of, idle_at_limit))
            if idle_only >= target:
                values = [value if idle else 0.0 for value, idle in zip(values, self.idle)]
                fixed = [not idle for idle in self.idle]
            else:
                values = [MAX_THRESHOLD if idle else value for value, idle in zip(values, self.idle)]
                fixed = list(self.idle)
        slopes = None
        if correction and self.slope == "measured":
            slopes = [m.zero_fraction_slope(value) for m, value in zip(measured, values)]
        projected, overall = _solve_projection(values, self._shares, target, sparsity_of, tolerance, fixed, slopes)
        for r, value in zip(thresholds, projected):
            r.fill_(min(max(value, 0.0), MAX_THRESHOLD))  # the same sparsity: the forward clamps r there anyway
        return overall


def _in_range(values: list[float]) -> bool:
    """Whether every threshold value is in ``[0, 5]`` (so finite), as it stays once written in any floating dtype."""
    return all(0.0 <= value <= MAX_THRESHOLD for value in values)


def _shifted_positions(
    measured: list[MagnitudeDistribution], starts: list[float], sizes: list[int], delta: float
) -> list[float]:
    """Each set's continuous position among its channel scores (:meth:`MagnitudeDistribution.position`) after the
    shift ``delta`` of its Gaussian-equivalent threshold ``starts`` (:meth:`MagnitudeDistribution.gaussian_equivalent`),
    at most ``size - 1``: every set keeps a channel."""
    return [min(m.position_at_equivalent(start + delta), size - 1.0) for m, start, size in zip(measured, starts, sizes)]


def _has_runs(values: numpy.ndarray) -> bool:
    """Whether a threshold can prune more of the ascending magnitudes ``values`` than its continuous position says
    by more than a weight: three equal ones in a row, or more than one above zero that every threshold prunes (at
    most the bound's ``EPSILON``; exact zeros are pruned at every level anyway)."""
    above_zero = values[int(values.searchsorted(0.0, side="right")) :]
    if len(above_zero) > 2 and bool(numpy.any(above_zero[2:] == above_zero[:-2])):
        return True
    return int(above_zero.searchsorted(EPSILON, side="right")) > 1


def _threshold_at(measured: MagnitudeDistribution, position: float, has_runs: bool) -> float:
    """:meth:`MagnitudeDistribution.threshold_at`, except that in a layer with runs (:func:`_has_runs`) a position
    inside a run of equal magnitudes gives the threshold just above the run: the run is pruned whole, as it would be
    anyway, and the bound does not sit on the run's value, where the count in float64 and the forward pass in the
    weight's dtype could disagree."""
    if has_runs:
        values = measured.sorted_float64()
        index = int(position - 0.5)
        if 0.5 < position < len(values) - 0.5 and values[index] == values[index + 1]:
            position = float(values.searchsorted(values[index], side="right"))  # between the run and the next value
    return measured.threshold_at(position)


def _split_runs(
    table: LevelTable,
    measured: list[MagnitudeDistribution],
    runs: list[bool],
    shares: list[float],
    target: float,
    tolerance: float,
    limits: list[float],
    positions: numpy.ndarray,
) -> numpy.ndarray:
    """``positions`` (a :meth:`LevelTable.solve` of ``target``) with the runs of equal magnitudes split off.

    A threshold prunes a run of equal magnitudes whole wherever inside the run it falls, so a level inside a run
    prunes more than the continuous position says (a constant layer's weights are all one run, and the zeros of a
    pruned layer become one after centring). Such a layer, the one whose run costs most first, is put on the side of
    its run that brings the overall count closer to the target, and the others are solved again at their own common
    level; as long as the gap is larger than one weight per layer (chance ties of two trained weights are left).
    ``runs`` flags the layers whose thresholds are placed off their runs (:func:`_threshold_at`)."""
    sizes = numpy.array([len(m) for m in measured], dtype=numpy.float64)
    weights = numpy.asarray(shares, dtype=numpy.float64) / sizes
    slack = tolerance + 2.0 * float(weights.sum())
    caps, floors = list(limits), [0.0] * len(measured)

    def counts_at(candidate: numpy.ndarray) -> numpy.ndarray:
        return sizes * numpy.array(_fractions_at(measured, list(candidate), runs))

    counts = counts_at(positions)
    settled: set[int] = set()
    while abs(float(weights @ counts) - target) > slack:
        excess = weights * (counts - positions)
        straddled = [k for k in range(len(measured)) if counts[k] - positions[k] > 1.0 and k not in settled]
        if not straddled:
            break
        k = max(straddled, key=lambda index: excess[index])
        values = measured[k].sorted_float64()
        run_start = float(values.searchsorted(values[int(counts[k]) - 1], side="left"))
        options = []
        for cap, floor in ((min(run_start, caps[k]), 0.0), (caps[k], float(counts[k]))):
            trial_caps, trial_floors = caps.copy(), floors.copy()
            trial_caps[k], trial_floors[k] = cap, floor
            trial = table.solve(shares, target, tolerance, trial_caps, trial_floors)
            trial_counts = counts_at(trial)
            options.append((abs(float(weights @ trial_counts) - target), trial, trial_counts, trial_caps, trial_floors))
        _, positions, counts, caps, floors = min(options, key=lambda option: option[0])
        settled.add(k)
    return positions


def _fractions_at(
    measured: list[MagnitudeDistribution], positions: list[float], runs: list[bool] | None = None
) -> list[float]:
    """Each set's pruned fraction at its continuous ``position`` among its measured scores (thresholds placed off
    the runs of the sets ``runs`` flags, see :func:`_threshold_at`)."""
    flags = runs or [False] * len(measured)
    return [m.zero_fraction(_threshold_at(m, float(p), r)) for m, p, r in zip(measured, positions, flags)]


def _closest_shift(overall: Callable[[float], float], target: float, low: float, high: float) -> float:
    """The shift whose (non-decreasing, stepwise) ``overall`` is closest to ``target``: bisection to the step
    crossing the target, then the nearer of its two sides."""
    if overall(high) <= target:
        return high
    if overall(low) >= target:
        return low
    for _ in range(60):
        middle = 0.5 * (low + high)
        if overall(middle) < target:
            low = middle
        else:
            high = middle
    return low if abs(overall(low) - target) <= abs(overall(high) - target) else high


def update_idle(tensors: list[PrunedTensor], reached: list[bool], idle: list[bool]) -> bool:
    """Mark as idle the tensors the loss never reaches (trainable weights that got no gradient at any check so far,
    e.g. an unused pooler), so that the budget goes to the layers that matter; a tensor reached later rejoins the
    others. ``reached`` (each tensor's gradient ever seen) and ``idle`` are updated in place. Returns ``False``,
    changing nothing, when no tensor has a gradient now (cleared before the call: nothing can be concluded).

    Only the tensors not reached yet are read in full; whether any gradient exists at all is then asked of the
    reached ones smallest first, stopping at the first (once every tensor is reached: one small reduction, not a
    pass over every gradient)."""

    def has_gradient(pruned: PrunedTensor) -> bool:
        return pruned.raw.grad is not None and bool(pruned.raw.grad.any())

    unreached = {index: has_gradient(tensors[index]) for index, seen in enumerate(reached) if not seen}
    if not any(unreached.values()):
        smallest_first = sorted((tensors[index] for index, seen in enumerate(reached) if seen), key=lambda t: t.numel)
        if not any(has_gradient(pruned) for pruned in smallest_first):
            return False
    for index, pruned in enumerate(tensors):
        reached[index] = reached[index] or unreached.get(index, False)
        idle[index] = not reached[index] and pruned.raw.requires_grad
    return True
