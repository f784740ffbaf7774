"""The layer-adaptive magnitude allocation of the projection (``projection_slope="lamp"``).

LAMP (Lee, Park, Mo, Ahn, Shin, "Layer-adaptive Sparsity for the Magnitude-based Pruning", ICLR 2021) scores a
weight ``u`` of a layer by ``w_u^2 / sum_{|w_v| >= |w_u|} w_v^2``: its squared magnitude over the energy of the
layer's weights at least as large. One global level on that score prunes each layer by magnitude, as a per-layer
threshold does, and chooses how many weights each layer loses: a weight counts for little when many larger ones
carry its layer, so a large layer gives up a larger fraction than a small one, and no layer is emptied (its largest
weight scores 1). The score does not change when a layer's weights are scaled, which a normalisation after the
layer makes arbitrary; one global magnitude threshold does.

The projection finds the level at which the overall pruned fraction equals the target and puts each threshold
there, on each layer's measured magnitudes (:class:`~adasparse.core.distribution.MagnitudeDistribution`). Levels
are kept as ``log(a_j^2 / sum_{l > j} a_l^2)`` for the ascending magnitudes ``a`` (the order of LAMP's score, whose
value is ``x / (1 + x)`` of this ``x``), the sum scaled up to the tensor's size when the distribution is a sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy

__all__ = ["LevelTable", "lamp_levels"]

_LEVEL_LIMIT = 1e3
"""Levels are clipped into ``[-1e3, 1e3]`` inside a :class:`LevelTable` (an exact zero's ``-inf`` and a largest
weight's ``+inf`` included): finite, so every layer's block fits its own stretch of one sorted array."""

_BLOCK = 4 * _LEVEL_LIMIT
"""The distance between two layers' stretches in a :class:`LevelTable`'s array."""


def lamp_levels(magnitudes: numpy.ndarray, numel: int) -> numpy.ndarray:
    """The level of each recorded magnitude (ascending, float64): ``log(a_j^2 / (scale * sum_{l > j} a_l^2))`` with
    ``scale = numel / len(magnitudes)`` (a sample's sums stand for the whole tensor's), non-decreasing; the largest
    magnitude's level is ``+inf`` (it is never pruned), an exact zero's ``-inf`` (always pruned)."""
    count = len(magnitudes)
    if count == 0:
        return numpy.empty(0, dtype=numpy.float64)
    levels = magnitudes.astype(numpy.float64)  # the squares, then the levels, in place
    numpy.multiply(levels, levels, out=levels)
    above = numpy.empty(count, dtype=numpy.float64)
    numpy.cumsum(levels[:0:-1], out=above[-2::-1])  # the sum of the squares after each position, from the top
    above[-1] = 0.0
    numpy.multiply(above, numel / count, out=above)
    with numpy.errstate(divide="ignore", invalid="ignore"):
        numpy.log(levels, out=levels)
        numpy.subtract(levels, numpy.log(above, out=above), out=levels)
    levels[-1] = math.inf
    levels[numpy.isnan(levels)] = -math.inf  # 0 / 0: a zero among zeros
    # Exact sums are monotone; rounding must not make them otherwise (the sums and the subtraction keep the order,
    # a logarithm's rounding rarely breaks it: checked first, a tenth of the cost of the running maximum).
    if count > 1 and numpy.less(levels[1:], levels[:-1]).any():
        numpy.maximum.accumulate(levels, out=levels)
    return levels


class LevelTable:
    """The levels of several layers in one sorted array, so that every layer's position at a level is one
    vectorised binary search.

    A layer's continuous position at a level (the scale of :meth:`MagnitudeDistribution.position`: value ``j`` at
    ``j + 0.5``) is that of a threshold pruning every magnitude whose level is at most it: linear in the level
    between two recorded levels, ``0.5 * exp(level - first)`` below the first; it never decreases as the level
    rises, and stays below the layer's size (its largest weight is kept).

    Args:
        levels: each layer's :func:`lamp_levels` (none empty).
    """

    def __init__(self, levels: Sequence[numpy.ndarray]) -> None:
        if any(len(layer) == 0 for layer in levels):
            raise ValueError("every layer of a LevelTable needs at least one recorded magnitude")
        lengths = [len(layer) for layer in levels]
        self.sizes = numpy.array(lengths, dtype=numpy.float64)
        offsets = _BLOCK * numpy.arange(len(levels), dtype=numpy.float64)
        starts = numpy.concatenate([[0], numpy.cumsum(lengths)[:-1]]).astype(int)
        self._flat = numpy.empty(sum(lengths), dtype=numpy.float64)
        lows, highs = [], []
        for layer, offset, start, length in zip(levels, offsets, starts, lengths):
            block = self._flat[start : start + length]
            numpy.clip(layer, -_LEVEL_LIMIT, _LEVEL_LIMIT, out=block)
            block += offset
            inner = layer[:-1]  # ascending: its finite levels are one stretch between the -inf and the +inf ones
            first, end = inner.searchsorted(-math.inf, side="right"), inner.searchsorted(math.inf, side="left")
            if first < end:
                lows.append(inner[first])
                highs.append(inner[end - 1])
        self._first = self._flat[starts] - offsets
        self._offsets, self._starts = offsets, starts
        self._zero_levels, self._half_starts, self._ends = offsets - _LEVEL_LIMIT, starts + 0.5, self.sizes - 0.5
        # Python lists: positions() reads them one layer at a time.
        self._offset_list: list[float] = offsets.tolist()
        self._start_list: list[int] = starts.tolist()
        self._end_list: list[float] = (self.sizes - 0.5).tolist()
        self.low = (min(lows) if lows else 0.0) - 40.0  # levels ascend: first is least
        """A level below which every position is under ``0.5 * exp(-40)``."""
        self.high = (max(highs) if highs else 0.0) + 1.0
        """A level above which every layer keeps only what its largest weight's level keeps."""

    def positions(self, level: float) -> numpy.ndarray:
        """Every layer's continuous position at ``level`` (clipped into the table's range).

        One vectorised search finds every layer's place; the few values per layer around it are then combined in
        scalar float64 arithmetic (the same IEEE operations, in the same order, as array arithmetic would do, at a
        fraction of its per-call cost for the handful of layers a model has)."""
        clipped = min(max(level, -_LEVEL_LIMIT), _LEVEL_LIMIT - 1.0)
        queries = [clipped + offset for offset in self._offset_list]
        after = self._flat.searchsorted(queries, side="right").tolist()  # each layer's top (+1e3) is above it
        flat, positions, below = self._flat, [], []
        for index, (query, offset, start, end, at) in enumerate(
            zip(queries, self._offset_list, self._start_list, self._end_list, after)
        ):
            if at == start:  # below the layer's first level
                below.append(index)
                positions.append(0.0)
                continue
            low, high = flat.item(at - 1), flat.item(at)
            span = high - low
            # No step inside a run of equal levels, nor from an exact zero's level (-1e3: the next weight stays).
            step = 0.0 if span <= 0.0 or low - offset <= -_LEVEL_LIMIT else min(max((query - low) / span, 0.0), 1.0)
            positions.append(min((at - start) - 0.5 + step, end))  # end: the size - 0.5
        result = numpy.array(positions, dtype=numpy.float64)
        if below:
            rows = numpy.array(below)
            result[rows] = numpy.minimum(
                0.5 * numpy.exp(numpy.minimum(level - self._first[rows], 0.0)), self.sizes[rows] - 0.5
            )
        return result

    def positions_at(self, levels: Sequence[float]) -> numpy.ndarray:
        """:meth:`positions` of several levels at once, one row per level: the same values bit for bit (the same IEEE
        operations, on whole arrays), for one vectorised search of the table instead of one per level."""
        level_column = numpy.asarray(levels, dtype=numpy.float64)[:, None]
        queries = numpy.minimum(numpy.maximum(level_column, -_LEVEL_LIMIT), _LEVEL_LIMIT - 1.0) + self._offsets
        after = self._flat.searchsorted(queries, side="right")
        low = self._flat[after - 1]
        span = self._flat[after] - low
        # No step inside a run of equal levels, nor from an exact zero's level (-1e3 above the layer's offset: both
        # exact, so ``low <= offset - 1e3`` is ``low - offset <= -1e3``); rows below a layer's first level are
        # replaced afterwards.
        step = numpy.zeros_like(queries)
        numpy.divide(queries - low, span, out=step, where=(span > 0.0) & (low > self._zero_levels))
        positions = after - self._half_starts + numpy.minimum(numpy.maximum(step, 0.0), 1.0)
        below = after == self._starts
        if below.any():
            positions[below] = 0.5 * numpy.exp(numpy.minimum((level_column - self._first)[below], 0.0))
        return numpy.minimum(positions, self._ends)

    def solve_many(
        self,
        shares: Sequence[float],
        targets: Sequence[float],
        tolerance: float,
        limits: Sequence[float] | None = None,
    ) -> list[numpy.ndarray]:
        """:meth:`solve` of each of ``targets``, the same positions bit for bit: every target takes its own steps of
        the same regula falsi, and the levels of one round are evaluated together (:meth:`positions_at`), so the
        table is searched once per round instead of once per target and step (a ramp's targets between two
        measurements cost about what two of them solved alone do)."""
        weights = numpy.asarray(shares, dtype=numpy.float64) / self.sizes
        caps = None if limits is None else numpy.asarray(limits, dtype=numpy.float64)

        def evaluated(levels: list[float]) -> numpy.ndarray:
            rows = self.positions_at(levels)
            if caps is not None:
                numpy.minimum(rows, caps, out=rows)
            return rows

        ends = evaluated([self.low, self.high])
        sums = float(weights @ ends[0]), float(weights @ ends[1])
        results: list[numpy.ndarray | None] = [None] * len(targets)
        searches: list[_Search] = []
        for index, target in enumerate(targets):
            start = self._start(index, target, sums, (ends[0], ends[1]))
            if isinstance(start, _Search):
                searches.append(start)
            else:
                results[index] = start.copy()
        for _ in range(200):
            if not searches:
                break
            levels = [search.next_level() for search in searches]
            rows = evaluated(levels)
            for search, level, positions in zip(searches, levels, rows):
                if search.update(level, float(weights @ positions) - search.target, positions, tolerance):
                    results[search.index] = search.best[1].copy()
            searches = [search for search in searches if results[search.index] is None]
        for search in searches:  # out of rounds: the best found, as solve() returns
            results[search.index] = search.best[1].copy()
        return results  # type: ignore[return-value]

    def solve(
        self,
        shares: Sequence[float],
        target: float,
        tolerance: float,
        limits: Sequence[float] | None = None,
        floors: Sequence[float] | None = None,
    ) -> numpy.ndarray:
        """The positions at the level where ``sum_i shares[i] * position_i / size_i`` is closest to ``target``
        (within ``tolerance`` when it can be reached): regula falsi inside a bracket, with the Illinois rule (the
        end kept twice has its gap halved, so neither end stalls), on a sum that is monotone and piecewise linear in
        the level. ``limits`` caps each layer's position (the most a threshold can prune): what a capped layer
        cannot take, the others do at a higher level. ``floors`` is the least position of each layer (applied after
        the caps)."""
        weights = numpy.asarray(shares, dtype=numpy.float64) / self.sizes
        caps = None if limits is None else numpy.asarray(limits, dtype=numpy.float64)
        least = None if floors is None else numpy.asarray(floors, dtype=numpy.float64)

        def evaluated(level: float) -> numpy.ndarray:
            positions = self.positions(level)
            if caps is not None:
                numpy.minimum(positions, caps, out=positions)
            if least is not None:
                numpy.maximum(positions, least, out=positions)
            return positions

        ends = evaluated(self.low), evaluated(self.high)
        search = self._start(0, target, (float(weights @ ends[0]), float(weights @ ends[1])), ends)
        if not isinstance(search, _Search):
            return search
        for _ in range(200):
            level = search.next_level()
            positions = evaluated(level)
            if search.update(level, float(weights @ positions) - target, positions, tolerance):
                break
        return search.best[1]

    def _start(
        self, index: int, target: float, sums: tuple[float, float], ends: tuple[numpy.ndarray, numpy.ndarray]
    ) -> _Search | numpy.ndarray:
        """The search for ``target`` between the table's ends (their positions ``ends``, whose weighted ``sums`` the
        overall is), or the positions of the end that already meets it (the end's own array)."""
        low_gap, high_gap = sums[0] - target, sums[1] - target
        if low_gap >= 0.0:
            return ends[0]
        if high_gap <= 0.0:
            return ends[1]
        best = (-low_gap, ends[0]) if -low_gap <= high_gap else (high_gap, ends[1])
        return _Search(index, target, self.low, self.high, low_gap, high_gap, best)


class _Search:
    """One target's regula falsi (:meth:`LevelTable.solve`, :meth:`LevelTable.solve_many`): the bracket, its gaps,
    the Illinois rule's memory (the end kept twice has its gap halved, so neither end stalls) and the best positions
    so far."""

    __slots__ = ("index", "target", "low", "high", "low_gap", "high_gap", "best", "kept")

    def __init__(
        self,
        index: int,
        target: float,
        low: float,
        high: float,
        low_gap: float,
        high_gap: float,
        best: tuple[float, numpy.ndarray],
    ) -> None:
        self.index, self.target = index, target
        self.low, self.high, self.low_gap, self.high_gap = low, high, low_gap, high_gap
        self.best, self.kept = best, 0

    def next_level(self) -> float:
        low, high, low_gap, high_gap = self.low, self.high, self.low_gap, self.high_gap
        level = (low * high_gap - high * low_gap) / (high_gap - low_gap)
        return level if low < level < high else 0.5 * (low + high)

    def update(self, level: float, gap: float, positions: numpy.ndarray, tolerance: float) -> bool:
        """Take the gap at ``level``; ``True`` when the search is done (:attr:`best` is its answer)."""
        if abs(gap) < self.best[0]:
            self.best = (abs(gap), positions)
        if abs(gap) <= tolerance or self.high - self.low <= 1e-12:
            return True
        if gap < 0.0:
            self.low, self.low_gap = level, gap
            if self.kept == -1:
                self.high_gap *= 0.5
            self.kept = -1
        else:
            self.high, self.high_gap = level, gap
            if self.kept == 1:
                self.low_gap *= 0.5
            self.kept = 1
        return False
