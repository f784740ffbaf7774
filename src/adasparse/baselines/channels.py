"""Channel pruning by magnitude, the structured baseline: rank channels by L1 norm, keep the largest.

The ranking is torch-pruning's ``MagnitudeImportance(p=1)`` over each channel's whole dependency group (the
producers' rows, the norms' entries and the readers' columns, normalised by the group's mean), the reference
implementation of L1-norm channel pruning. The budget is met on the same cost model as the learned thresholds
(:class:`~adasparse.core.channel_cost.ChannelCost`), in one of two allocations:

- ``"global"``: one ranking across every channel set;
- ``"uniform"``: every set prunes the same fraction of its channels;
- or a sequence of kept channel counts, one per set in the model's set order: an allocation chosen elsewhere (the
  fastest, say), the smallest-L1 channels of each set pruned; ``target`` is then not used.

The model is sparsified by channels and the chosen channels are fixed by masks, so fine-tuning, reports,
``desparsify`` and :func:`adasparse.shrink` work as after learned pruning.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..core._checks import check_choice, check_fraction
from ..core.attention_heads import AttentionHeadSet, HeadsArgument
from ..core.channel_rounding import rounded_kept_counts
from ..core.channel_sets import ChannelSet, _raw
from ..core.coupling import _torch_pruning, dependency_graph
from ..core.latency_table import LatencyTable
from ..core.parametrization import pruned_tensors
from ..core.sparsify import desparsify, sparsify

__all__ = ["ALLOCATIONS", "magnitude_channel_prune"]

ALLOCATIONS = ("global", "uniform")


def _head_importance(head_set: AttentionHeadSet) -> torch.Tensor:
    """Each head's L1 norm as torch-pruning scores a channel group: per tensor (the query, key and value rows, the
    output layer's columns) the head's L1 norm, averaged over the tensors, then divided by its mean over the heads."""
    parts = []
    for _, module, tensor in head_set.members:
        if tensor == "weight":
            parts.append(_raw(module, tensor).detach().float().abs().reshape(head_set.heads, -1).sum(1).cpu())
    for consumer in head_set.consumers:
        columns = _raw(consumer.module, "weight").detach().float().abs().sum(0)[consumer.index]
        parts.append(torch.zeros(head_set.heads).index_add_(0, consumer.root, columns.cpu()))
    score = torch.stack(parts).mean(0)
    return score / score.mean().clamp_min(1e-12)


def _importances(graph: Any, sets: list[ChannelSet]) -> list[torch.Tensor]:
    importance = _torch_pruning().importance.MagnitudeImportance(p=1)
    scores = []
    for channel_set in sets:
        if isinstance(channel_set, AttentionHeadSet):  # the graph sees a head's rows as separate channels
            scores.append(_head_importance(channel_set))
            continue
        _, leader, _ = channel_set.members[0]
        pruner = graph.get_pruner_of_module(leader)
        group = graph.get_pruning_group(leader, pruner.prune_out_channels, idxs=list(range(channel_set.channels)))
        scores.append(importance(group).detach().float().cpu())
    return scores


def _closest(candidates: int, sparsity_at: Any, target: float) -> int:
    """The count in ``[0, candidates]`` whose (non-decreasing) sparsity is closest to ``target``, by bisection."""
    low, high = 0, candidates
    while low < high:
        middle = (low + high) // 2
        if sparsity_at(middle) < target:
            low = middle + 1
        else:
            high = middle
    if low > 0 and abs(sparsity_at(low - 1) - target) <= abs(sparsity_at(low) - target):
        return low - 1
    return low


def magnitude_channel_prune(
    model: nn.Module,
    example_input: Any,
    target: float,
    *,
    budget: str = "flops",
    allocation: str | Sequence[int] = "global",
    min_params: int = 1000,
    channel_multiple: int = 1,
    heads: HeadsArgument | None = None,
    latency: LatencyTable | None = None,
) -> float:
    """Sparsify ``model`` by output channels and fix the smallest-L1 channels as pruned, in place.

    Args:
        model: a plain (usually trained) model.
        example_input: a batch the model accepts, to trace its dependencies and count its cost.
        target: the fraction of the model's cost to remove, in ``[0, 1)``.
        budget: ``"flops"`` (multiply-accumulates per example) or ``"params"`` (weights).
        allocation: ``"global"`` (one ranking), ``"uniform"`` (the same fraction in every set), or the channels
            each set keeps (integers in ``[1, channels]``, one per set in the order of
            :attr:`ChannelCost.channel_sets <adasparse.core.channel_cost.ChannelCost.channel_sets>`; ``ValueError``
            naming the set otherwise, or with ``channel_multiple`` other than 1).
        min_params: as in :func:`adasparse.sparsify`.
        channel_multiple: every set then keeps a multiple of this many channels, rounded down or up
            (:func:`~adasparse.core.channel_rounding.rounded_kept_counts`), the smallest-L1 channels still pruned.
        heads: the attention heads of your own attention modules, as for :func:`adasparse.sparsify`: each declared
            module's heads are then ranked by their L1 norm (query, key and value rows, output columns) with the
            channels (heads are left alone otherwise).
        latency: the model's :class:`~adasparse.LatencyTable`: ``budget="latency"`` then removes that fraction of
            the predicted time, and the rounding to ``channel_multiple`` takes the fastest of the equally close
            choices.

    Returns:
        The cost sparsity reached (within one channel of ``target``, ``channel_multiple`` channels when rounded;
        that of the given counts when ``allocation`` gives them).
    """
    target = check_fraction(target, "target")
    budget = check_choice(budget, "budget", ("flops", "params", "latency"))
    if budget == "latency" and latency is None:
        raise ValueError("budget='latency' needs latency= the model's table (adasparse.measure_latency(model, batch))")
    if isinstance(allocation, str):
        allocation = check_choice(allocation, "allocation", ALLOCATIONS)
    elif channel_multiple != 1:
        raise ValueError(
            f"channel_multiple={channel_multiple} rounds the counts this function chooses; counts given as the "
            "allocation are used as they are: round them yourself and pass channel_multiple=1"
        )
    graph = dependency_graph(model, example_input)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the layers left dense are the learned method's too
        sparsify(
            model,
            init_threshold=0.0,
            trainable=False,
            min_params=min_params,
            granularity="channel",
            example_input=example_input,
            heads=heads,
            latency=latency,
        )
    cost = pruned_tensors(model)[0].layout.cost
    sets = cost.channel_sets
    scores = _importances(graph, sets)
    sizes = [s.channels for s in sets]
    if not isinstance(allocation, str):
        try:
            given = _given_counts(allocation, sets)
        except ValueError:
            desparsify(model)  # the model as it was given
            raise
        counts = [size - kept for kept, size in zip(given, sizes)]
        return _fix_smallest(sets, scores, counts, cost, budget)
    if allocation == "uniform":
        steps = max(sizes)

        def counts_at(step: int) -> list[int]:
            return [min(round(step / steps * size), size - 1) for size in sizes]
    else:
        ranking = sorted(
            (float(score), index, channel)
            for index, set_scores in enumerate(scores)
            for channel, score in enumerate(set_scores.tolist())
        )
        steps = len(ranking)

        def counts_at(step: int) -> list[int]:
            counts = [0] * len(sets)
            for _, index, _ in ranking[:step]:
                counts[index] += 1
            return [min(count, size - 1) for count, size in zip(counts, sizes)]

    def sparsity_at(step: int) -> float:
        return cost.sparsity([count / size for count, size in zip(counts_at(step), sizes)], budget)

    counts = counts_at(_closest(steps, sparsity_at, target))
    kept = rounded_kept_counts(
        cost, [size - count for count, size in zip(counts, sizes)], channel_multiple, target, budget
    )
    counts = [size - count for count, size in zip(kept, sizes)]
    return _fix_smallest(sets, scores, counts, cost, budget)


def _given_counts(allocation: Sequence[int], sets: list[ChannelSet]) -> list[int]:
    """The kept counts ``allocation`` gives, checked against the model's channel sets."""
    counts = list(allocation)
    if len(counts) != len(sets):
        raise ValueError(f"allocation gives {len(counts)} kept counts, the model has {len(sets)} channel sets")
    for channel_set, kept in zip(sets, counts):
        if isinstance(kept, bool) or not isinstance(kept, int) or not 1 <= kept <= channel_set.channels:
            raise ValueError(
                f"allocation: the set led by {channel_set.names[0]} keeps an integer in [1, {channel_set.channels}] "
                f"channels, got {kept!r}"
            )
    return counts


def _fix_smallest(
    sets: list[ChannelSet], scores: list[torch.Tensor], counts: list[int], cost: Any, budget: str
) -> float:
    """Fix the ``counts[k]`` smallest-scored channels of set ``k`` as pruned; returns the cost sparsity reached."""
    for channel_set, set_scores, count in zip(sets, scores, counts):
        keep = torch.ones(channel_set.channels, dtype=torch.bool)
        keep[torch.argsort(set_scores, stable=True)[:count]] = False
        channel_set.fix(keep)
    return cost.sparsity([count / channel_set.channels for count, channel_set in zip(counts, sets)], budget)
