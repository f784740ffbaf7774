"""Kept channel counts rounded to a multiple: every channel set lands on one, the budget stays close, the kept
channels are still those of the largest scores, and the shrunk model has those widths."""

from __future__ import annotations

import itertools

import pytest
import torch

import adasparse
from adasparse.core import channel_rounding
from adasparse.core.channel_rounding import round_kept_channels, rounded_kept_counts
from adasparse.core.channel_sets import ChannelSet
from adasparse.core.distribution import MagnitudeDistribution
from adasparse.core.parametrization import pruning_units

from ..zoo import by_channels

pytest.importorskip("torch_pruning")

MODELS = [("cnn2d", (1, 8, 8)), ("resnet1d", (1, 40)), ("wrn-16-2", (3, 8, 8)), ("mobilenet2d", (1, 8, 8))]


def _cost(model: torch.nn.Module):
    return adasparse.pruned_tensors(model)[0].layout.cost


@torch.no_grad()
def _pruned(name: str, shape: tuple[int, ...], batch: int = 2):
    """A zoo model sparsified by channels whose sets each prune between 20% and 60% of their channels, counts that
    are mostly no multiple of 4 or 8."""
    model, x = by_channels(name, shape, batch)
    generator = torch.Generator().manual_seed(1)
    for unit in pruning_units(model):
        if isinstance(unit.layout, ChannelSet) and unit.layout.channels > 1:
            count = int(unit.layout.channels * (0.2 + 0.4 * float(torch.rand((), generator=generator))))
            unit.threshold.fill_(MagnitudeDistribution(unit).measure().threshold_at(float(count)))
    return model, x


def _kept(cost) -> list[int]:
    return [int(s.current_keep().sum()) for s in cost.channel_sets]


def _on_a_multiple(channel_set: ChannelSet, before: int, after: int, multiple: int) -> bool:
    if channel_set.kind != "channel" or channel_set.channels <= multiple:
        return after == before
    return after % multiple == 0 or after == channel_set.channels


@pytest.mark.parametrize(("name", "shape"), MODELS)
@pytest.mark.parametrize("multiple", [4, 8])
def test_every_set_keeps_a_multiple_and_the_budget_stays_close(
    name: str, shape: tuple[int, ...], multiple: int
) -> None:
    model, _ = _pruned(name, shape)
    cost = _cost(model)
    before = _kept(cost)
    target = cost.sparsity(cost.fractions(), "flops")
    after = round_kept_channels(model, multiple, target, "flops")
    assert after == _kept(cost)
    assert all(_on_a_multiple(s, b, a, multiple) for s, b, a in zip(cost.channel_sets, before, after))
    assert any(a != b for a, b in zip(after, before))  # the test has something to round
    fractions = cost.fractions()
    assert abs(cost.sparsity(fractions, "flops") - target) <= multiple * cost.channel_cost(fractions, "flops")


@pytest.mark.parametrize(("name", "shape"), MODELS[:2])
def test_the_kept_channels_are_those_of_the_largest_scores(name: str, shape: tuple[int, ...]) -> None:
    model, _ = _pruned(name, shape)
    cost = _cost(model)
    round_kept_channels(model, 8, cost.sparsity(cost.fractions(), "params"), "params")
    for channel_set in cost.channel_sets:
        keep = channel_set.current_keep()
        scores = channel_set.scores()
        if bool(keep.all()):
            continue
        assert float(scores[keep].min()) > float(scores[~keep].max())


@pytest.mark.parametrize("exhaustive", [True, False])
def test_the_choice_is_the_closest_rounding(exhaustive: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = _pruned("resnet1d", (1, 40))
    cost = _cost(model)
    kept = _kept(cost)
    sizes = [s.channels for s in cost.channel_sets]
    target = cost.sparsity([1 - k / s for k, s in zip(kept, sizes)], "flops")  # one the nearest multiples can meet

    def gap(counts) -> float:
        return abs(cost.sparsity([1 - c / s for c, s in zip(counts, sizes)], "flops") - target)

    def cut(counts) -> float:
        return max((k - c) / k for k, c in zip(kept, counts))

    options = [sorted({max(k // 8 * 8, 8), min(-(-k // 8) * 8, s)}) for k, s in zip(kept, sizes)]
    every = list(itertools.product(*options))
    best = min(gap(counts) for counts in every)
    close = max(best, channel_rounding.ROUNDING_TOLERANCE)
    nearest = [min(option, key=lambda c, k=k: (abs(c - k), -c)) for option, k in zip(options, kept)]
    if not exhaustive:
        monkeypatch.setattr(channel_rounding, "EXHAUSTIVE_SETS", 0)
    chosen = rounded_kept_counts(cost, kept, 8, target, "flops")
    assert all(count in option for count, option in zip(chosen, options))
    if exhaustive:  # within the tolerance of the closest, and no such choice takes less from any set
        assert gap(chosen) <= close + 1e-12
        assert cut(chosen) == min(cut(counts) for counts in every if gap(counts) <= close + 1e-12)
    else:  # the local search: never farther than rounding to the nearest multiples, close to the best
        assert gap(chosen) <= max(gap(nearest), close) + 1e-12 and gap(chosen) <= close + 0.01


@pytest.mark.parametrize("exhaustive", [True, False])
def test_a_coarse_model_moves_one_multiple_further_to_meet_its_budget(
    exhaustive: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cnn2d's sets have 32, 64 and 128 channels; learned counts 24, 44, 61 keep half its FLOPs. The nearest multiples
    of 8 (24, 40|48, 56|64) keep at best 0.542 of them; one multiple further on any set comes closer."""
    model, _ = by_channels("cnn2d", (1, 8, 8), 2)
    cost = _cost(model)
    sizes = [s.channels for s in cost.channel_sets]
    kept, target = [24, 44, 61], 0.5

    def gap(counts) -> float:
        return abs(cost.sparsity([1 - c / s for c, s in zip(counts, sizes)], "flops") - target)

    assert sizes == [32, 64, 128] and gap(kept) < 0.001
    nearest = min(itertools.product([24], [40, 48], [56, 64]), key=gap)
    assert gap(nearest) > 0.04
    wider = list(itertools.product([16, 24, 32], [32, 40, 48, 56], [48, 56, 64, 72]))
    if not exhaustive:
        monkeypatch.setattr(channel_rounding, "EXHAUSTIVE_CHOICES", 0)
    chosen = rounded_kept_counts(cost, kept, 8, target, "flops")
    assert all(count % 8 == 0 for count in chosen)
    if exhaustive:  # the closest of every choice one multiple further: [32, 32, 72], 0.015 from the target
        assert gap(chosen) == min(gap(counts) for counts in wider) and gap(chosen) < gap(nearest) / 2
    else:  # the local search from the nearest multiples' choice: closer than it
        assert gap(chosen) < gap(nearest)


def test_a_budget_the_nearest_multiples_meet_is_not_widened(monkeypatch: pytest.MonkeyPatch) -> None:
    model, _ = by_channels("cnn2d", (1, 8, 8), 2)
    cost = _cost(model)
    sizes = [s.channels for s in cost.channel_sets]
    target = cost.sparsity([1 - c / s for c, s in zip([24, 48, 56], sizes)], "flops")
    monkeypatch.setattr(
        channel_rounding, "_one_multiple_further", lambda *args: pytest.fail("widened a budget already met")
    )
    chosen = rounded_kept_counts(cost, [24, 44, 61], 8, target, "flops")
    assert chosen[0] == 24 and chosen[1] in (40, 48) and chosen[2] in (56, 64)


def test_a_miss_under_half_the_finest_step_is_not_widened() -> None:
    """cnn1d (three sets of 64): learned 34, 51, 51 keep half its FLOPs; the nearest multiples' best, 40 48 48, keeps
    0.508, less than half of the finest one-multiple step (0.03) away: moving further would only trade coarse sets
    (one multiple further reaches 0.500 with 24 64 48, taking 10 of the first set's 34 learned channels)."""
    model, _ = by_channels("cnn1d", (1, 40), 2)
    cost = _cost(model)
    assert [s.channels for s in cost.channel_sets] == [64, 64, 64]
    assert rounded_kept_counts(cost, [34, 51, 51], 8, 0.5, "flops") == [40, 48, 48]


def test_heads_are_left_as_they_are() -> None:
    model, _ = _pruned("transformer", (1, 40))
    cost = _cost(model)
    before = _kept(cost)
    after = round_kept_channels(model, 8, cost.sparsity(cost.fractions(), "flops"), "flops")
    heads = [index for index, s in enumerate(cost.channel_sets) if s.kind == "head"]
    assert heads and all(after[index] == before[index] for index in heads)


def test_the_shrunk_model_has_the_rounded_widths() -> None:
    model, x = _pruned("cnn2d", (1, 8, 8), 4)
    cost = _cost(model)
    round_kept_channels(model, 8, cost.sparsity(cost.fractions(), "flops"), "flops")
    smaller = adasparse.shrink(model, x)
    pruned = {item.name.rsplit(".", 1)[0] for item in pruning_units(model)}
    widths = [m.out_channels for n, m in smaller.named_modules() if isinstance(m, torch.nn.Conv2d) and n in pruned]
    assert widths and all(width % 8 == 0 for width in widths)


def test_multiple_one_changes_nothing_and_bad_input_is_named() -> None:
    model, _ = _pruned("cnn2d", (1, 8, 8))
    cost = _cost(model)
    before = _kept(cost)
    assert round_kept_channels(model, 1, 0.5, "flops") == before
    with pytest.raises(ValueError, match="channel_multiple must be an integer >= 1"):
        round_kept_channels(model, 0, 0.5)
    with pytest.raises(ValueError, match="kept has 1 counts"):
        rounded_kept_counts(cost, [3], 8, 0.5)
    plain = torch.nn.Sequential(torch.nn.Linear(40, 40))
    adasparse.sparsify(plain, target=0.5)
    with pytest.raises(ValueError, match="granularity='channel'"):
        round_kept_channels(plain, 8, 0.5)


def test_a_set_with_no_kept_channel_stays_so() -> None:
    model, _ = _pruned("resnet1d", (1, 40))
    cost = _cost(model)
    kept = [0] + _kept(cost)[1:]
    counts = rounded_kept_counts(cost, kept, 8, 0.5, "flops")  # 0 is a multiple; the others are rounded
    assert counts[0] == 0 and all(c % 8 == 0 or c == s.channels for c, s in zip(counts, cost.channel_sets))
