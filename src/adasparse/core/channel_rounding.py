"""Kept channel counts rounded to a multiple, for kernels that run fastest on whole vector widths.

Dense convolution and matrix kernels process channels in blocks (16 floats for AVX-512 on CPUs, 8 or more for GPU
tensor cores), so a layer with one channel past a block pays for a whole block more: measured on this project's CPU
(one thread, batch 256, 3x3 convolution on 8x8 maps), 33 of 64 output channels took 0.59 of the dense time and 32
took 0.21. Rounding every set's kept count to a multiple of the block lets the shrunk model run at the speed its
multiply-accumulates promise.

:func:`rounded_kept_counts` chooses, for every channel set, to round its kept count down or up to a multiple so that
the cost removed stays closest to the target (a small subset-sum: every choice is tried for a dozen sets, a local
search beyond); :func:`round_kept_channels` moves a sparsified model's thresholds to those counts (before the zeros
are fixed). Sets of attention heads are left as they are: a head is already a block.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ._checks import check_int
from .channel_cost import ChannelCost
from .channel_sets import ChannelSet
from .distribution import MagnitudeDistribution
from .parametrization import pruning_units

__all__ = ["EXHAUSTIVE_SETS", "ROUNDING_TOLERANCE", "round_kept_channels", "rounded_kept_counts"]


ROUNDING_TOLERANCE = 0.005
"""Choices whose cost removed is within this of the target count as equally close: among them the one that takes
the smallest share of any set's kept channels away wins (half a channel set of 16 is a larger loss than 8 of 96)."""

EXHAUSTIVE_SETS = 12
"""Up to this many sets to round, every choice of up or down is tried (4096 at most); beyond, a local search."""


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
    multiple by single and paired changes while they bring the cost closer. How close the target can be met
    depends on the model: a set of 64 channels moves by 8 at once (on a model of two such sets, 2-4% of its FLOPs).
    """
    multiple = check_int(multiple, "channel_multiple", 1)
    sets = cost.channel_sets
    if len(kept) != len(sets):
        raise ValueError(f"kept has {len(kept)} counts, the model has {len(sets)} channel sets")
    counts = [int(count) for count in kept]
    if multiple == 1:
        return counts
    sizes = [s.channels for s in sets]
    options: dict[int, tuple[int, int]] = {}
    for index, (channel_set, count, size) in enumerate(zip(sets, counts, sizes)):
        if channel_set.kind == "channel" and size > multiple and count % multiple != 0:
            options[index] = (max(count // multiple * multiple, multiple), min(-(-count // multiple) * multiple, size))
    if not options:
        return counts
    rounded = list(options)

    def score(choice: Sequence[int]) -> tuple[float, float, float]:
        candidate = list(counts)
        for index, up in zip(rounded, choice):
            candidate[index] = options[index][up]
        gap = abs(cost.sparsity([1.0 - c / s for c, s in zip(candidate, sizes)], budget) - target)
        cut = max((counts[i] - candidate[i]) / max(counts[i], 1) for i in rounded)
        moved = sum(abs(candidate[index] - counts[index]) / sizes[index] for index in rounded)
        return round(max(gap, ROUNDING_TOLERANCE), 12), round(cut, 12), moved

    if len(rounded) <= EXHAUSTIVE_SETS:
        best = min(itertools.product((0, 1), repeat=len(rounded)), key=score)
    else:
        best = _local_search([int(counts[i] - options[i][0] >= options[i][1] - counts[i]) for i in rounded], score)
    result = list(counts)
    for index, up in zip(rounded, best):
        result[index] = options[index][up]
    return result


def _local_search(choice: list[int], score: Callable[[Sequence[int]], tuple[float, ...]]) -> list[int]:
    """From ``choice`` (0: round down, 1: up, per set), the best single or paired change while one improves
    ``score``."""
    current = score(choice)
    while True:
        moves = [(i,) for i in range(len(choice))] + list(itertools.combinations(range(len(choice)), 2))
        best_move, best_score = None, current
        for move in moves:
            candidate = list(choice)
            for index in move:
                candidate[index] = 1 - candidate[index]
            candidate_score = score(candidate)
            if candidate_score < best_score:
                best_move, best_score = move, candidate_score
        if best_move is None:
            return choice
        for index in best_move:
            choice[index] = 1 - choice[index]
        current = best_score


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
