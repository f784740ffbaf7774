"""Kept channel counts rounded to a multiple, for kernels that run fastest on whole vector widths.

Dense convolution and matrix kernels process channels in blocks (16 floats for AVX-512 on CPUs, 8 or more for GPU
tensor cores), so a layer with one channel past a block pays for a whole block more: measured on this project's CPU
(one thread, batch 256, 3x3 convolution on 8x8 maps), 33 of 64 output channels took 0.59 of the dense time and 32
took 0.21. Rounding every set's kept count to a multiple of the block lets the shrunk model run at the speed its
multiply-accumulates promise.

:func:`rounded_kept_counts` chooses, for every channel set, to round its kept count down or up to a multiple so that
the cost removed stays closest to the target (a small subset-sum: every choice is tried for a dozen sets, a local
search beyond; one multiple further when the nearest ones miss it by more than 0.5% and half the finest step);
:func:`round_kept_channels` moves a sparsified model's thresholds to those counts (before the zeros are fixed). Sets
of attention heads are left as they are: a head is already a block.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ._checks import check_int
from .channel_cost import ChannelCost
from .channel_sets import ChannelSet
from .distribution import MagnitudeDistribution
from .latency_cost import LatencyCost
from .parametrization import pruning_units

__all__ = ["EXHAUSTIVE_CHOICES", "EXHAUSTIVE_SETS", "ROUNDING_TOLERANCE", "round_kept_channels", "rounded_kept_counts"]


ROUNDING_TOLERANCE = 0.005
"""Choices whose cost removed is within this of the target count as equally close: among them the one that takes
the smallest share of any set's kept channels away wins (half a channel set of 16 is a larger loss than 8 of 96)."""

EXHAUSTIVE_SETS = 12
"""Up to this many sets to round, every choice of up or down is tried (4096 at most); beyond, a local search."""

EXHAUSTIVE_CHOICES = 4096
"""When the choice is widened to one more multiple per set (the nearest ones missing the target by more than
:data:`ROUNDING_TOLERANCE` and half the finest step), every combination is tried up to this many; beyond, a local
search."""


def rounded_kept_counts(
    cost: ChannelCost, kept: Sequence[int], multiple: int, target: float, budget: str = "params"
) -> list[int]:
    """Each set's kept count (``kept``, in ``cost.channel_sets`` order) rounded to a multiple of ``multiple``.

    Every set of channels (not of heads) with more than ``multiple`` channels is rounded down or up to the
    neighbouring multiples, never below ``multiple`` nor above its channel count (a set whose count is no multiple
    may keep all its channels). The choice makes the cost removed (:meth:`ChannelCost.sparsity`) closest to
    ``target`` (all within :data:`ROUNDING_TOLERANCE` count as equally close); among equally close ones it takes the
    smallest share of any set's kept channels away, then moves the counts least (in fractions of each set): tried
    exhaustively for up to :data:`EXHAUSTIVE_SETS` sets to round, else from every set rounded to its nearest
    multiple by single and paired changes while they bring the cost closer. When that choice misses the target by
    more than :data:`ROUNDING_TOLERANCE` and more than half the finest step one set's multiple makes, every set
    may move one multiple further (sets already on one too) and the closest of those choices is taken if it is
    closer: on a model of few coarse sets (a first set of 32 channels moves by a quarter of itself) the nearest
    multiples alone missed half the FLOPs by 4 points. How close the target can be met still depends on the
    model: a set of 64 channels moves by 8 at once. When ``cost`` is priced by a latency table
    (``sparsify(..., latency=table)``), the fastest of the equally close choices is taken before
    the other tie-breaks: on a CPU an odd multiple of 8 channels can run slower than the next multiple of 16.
    """
    multiple = check_int(multiple, "channel_multiple", 1)
    sets = cost.channel_sets
    if len(kept) != len(sets):
        raise ValueError(f"kept has {len(kept)} counts, the model has {len(sets)} channel sets")
    counts = [int(count) for count in kept]
    if multiple == 1:
        return counts
    sizes = [s.channels for s in sets]
    nearest: dict[int, list[int]] = {}
    for index, (channel_set, count, size) in enumerate(zip(sets, counts, sizes)):
        if channel_set.kind == "channel" and size > multiple and count % multiple != 0:
            nearest[index] = [max(count // multiple * multiple, multiple), min(-(-count // multiple) * multiple, size)]
    if not nearest:
        return counts

    def removed_of(candidate: Sequence[int]) -> float:
        return cost.sparsity([1.0 - c / s for c, s in zip(candidate, sizes)], budget)

    def gap_of(candidate: Sequence[int]) -> float:
        return abs(removed_of(candidate) - target)

    time_of = cost.table.seconds if isinstance(cost, LatencyCost) else None  # priced in time: the fastest first
    closest = [int(counts[i] - low >= high - counts[i]) for i, (low, high) in nearest.items()]  # nearest multiple
    result = _closest_choice(counts, sizes, nearest, gap_of, closest, len(nearest) <= EXHAUSTIVE_SETS, time_of)
    if gap_of(result) <= max(
        ROUNDING_TOLERANCE, 0.5 * _finest_step(list(nearest), result, sizes, multiple, removed_of)
    ):
        return result
    further = _one_multiple_further(sets, counts, sizes, multiple)
    start = [options.index(result[i]) if result[i] in options else 0 for i, options in further.items()]
    widened = _closest_choice(
        counts, sizes, further, gap_of, start, math.prod(map(len, further.values())) <= EXHAUSTIVE_CHOICES, time_of
    )
    return widened if gap_of(widened) < gap_of(result) else result


def _closest_choice(
    counts: Sequence[int],
    sizes: Sequence[int],
    options: dict[int, list[int]],
    gap_of: Callable[[Sequence[int]], float],
    start: list[int],
    exhaustive: bool,
    time_of: Callable[[Sequence[int]], float] | None = None,
) -> list[int]:
    """The counts with each set in ``options`` (index -> the counts it may take) at one of its options, chosen as
    :func:`rounded_kept_counts` says: closest to the target (within :data:`ROUNDING_TOLERANCE` equally close), then
    the fastest by ``time_of`` (when given), then the smallest share of any set's kept channels taken away, then the
    least moved. Every combination when ``exhaustive``, else a local search from ``start`` (a position in each
    set's options)."""
    moving = list(options)

    def counts_of(choice: Sequence[int]) -> list[int]:
        candidate = list(counts)
        for index, position in zip(moving, choice):
            candidate[index] = options[index][position]
        return candidate

    def score(choice: Sequence[int]) -> tuple[float, float, float, float]:
        candidate = counts_of(choice)
        cut = max((counts[i] - candidate[i]) / max(counts[i], 1) for i in moving)
        moved = sum(abs(candidate[i] - counts[i]) / sizes[i] for i in moving)
        seconds = time_of(candidate) if time_of is not None else 0.0
        return round(max(gap_of(candidate), ROUNDING_TOLERANCE), 12), seconds, round(cut, 12), moved

    lengths = [len(options[index]) for index in moving]
    if exhaustive:
        return counts_of(min(itertools.product(*map(range, lengths)), key=score))
    return counts_of(_local_search(start, lengths, score))


def _finest_step(
    rounded: Sequence[int],
    result: Sequence[int],
    sizes: Sequence[int],
    multiple: int,
    removed_of: Callable[[Sequence[int]], float],
) -> float:
    """The least change of the cost removed that moving one rounded set by one multiple from ``result`` makes.
    Nearer the target than half of it, the nearest multiples are as close as moving any one set allows: going
    further would only trade coarse sets against each other."""
    base = removed_of(result)
    steps = []
    for index in rounded:
        for delta in (-multiple, multiple):
            moved = list(result)
            moved[index] += delta
            if multiple <= moved[index] <= sizes[index]:
                steps.append(abs(removed_of(moved) - base))
    positive = [step for step in steps if step > 0.0]
    return min(positive) if positive else 0.0


def _one_multiple_further(
    sets: Sequence[ChannelSet], counts: Sequence[int], sizes: Sequence[int], multiple: int
) -> dict[int, list[int]]:
    """Each set's counts one multiple beyond the nearest ones, for when those miss the target by more than
    :data:`ROUNDING_TOLERANCE` and half the finest step (:func:`_finest_step`): every set of channels that keeps
    some, sets already on a multiple included, so that a coarse set's step can be balanced by the others'."""
    options: dict[int, list[int]] = {}
    for index, (channel_set, count, size) in enumerate(zip(sets, counts, sizes)):
        if channel_set.kind == "channel" and size > multiple and count > 0:
            low = max(count // multiple * multiple - multiple, multiple)
            high = min(-(-count // multiple) * multiple + multiple, size)
            options[index] = sorted(set(range(low, high + 1, multiple)) | ({size} if high == size else set()))
    return options


def _local_search(
    choice: list[int], lengths: Sequence[int], score: Callable[[Sequence[int]], tuple[float, ...]]
) -> list[int]:
    """From ``choice`` (a position among ``lengths[k]`` options per set), the best change of one set to any other
    option, or of two sets by one position each, while one improves ``score``."""
    current = score(choice)
    while True:
        moves = [
            [*choice[:k], position, *choice[k + 1 :]]
            for k, length in enumerate(lengths)
            for position in range(length)
            if position != choice[k]
        ]
        for a, b in itertools.combinations(range(len(choice)), 2):
            for step_a, step_b in itertools.product((1, -1), repeat=2):
                pair = list(choice)
                pair[a] += step_a
                pair[b] += step_b
                if 0 <= pair[a] < lengths[a] and 0 <= pair[b] < lengths[b]:
                    moves.append(pair)
        best = min(moves, key=score, default=None)
        best_score = None if best is None else score(best)
        if best_score is None or best_score >= current:
            return choice
        choice, current = best, best_score


@torch.no_grad()
def round_kept_channels(model: nn.Module, multiple: int, target: float, budget: str = "params") -> list[int]:
    """Move the thresholds of a model sparsified by channels so that every set keeps a multiple of ``multiple``
    channels (see :func:`rounded_kept_counts`), its kept channels still those of the largest scores. Call it before
    the zeros are fixed; returns the kept counts, in the cost model's set order.

    Raises:
        ValueError: the model is not sparsified by channels, or ``multiple`` is not an integer >= 1.
    """
    multiple = check_int(multiple, "channel_multiple", 1)
    units = {id(item.layout): item for item in pruning_units(model) if isinstance(item.layout, ChannelSet)}
    if not units:
        raise ValueError("channel_multiple needs a model sparsified with granularity='channel'")
    cost: ChannelCost = next(iter(units.values())).layout.cost
    sets = cost.channel_sets
    kept = [int(s.current_keep().sum()) for s in sets]
    counts = rounded_kept_counts(cost, kept, multiple, target, budget)
    for channel_set, now, count in zip(sets, kept, counts):
        if count == now:
            continue
        unit = units[id(channel_set)]
        distribution = MagnitudeDistribution(unit).measure()
        unit.threshold.fill_(distribution.threshold_at(float(channel_set.channels - count)))
    return [int(s.current_keep().sum()) for s in sets]
