"""The Pruner with granularity="channel": the model's cost once shrunk is held to the budget, resumes exactly."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import adasparse
from adasparse.app.models import create_model
from adasparse.core.flops import layer_macs
from tests.loops import train_with_pruner

from ..zoo import ATTENTION_HEADS, AttentionNet

pytest.importorskip("torch_pruning")


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 1, 40, generator=generator)
    y = (x[:, 0, :20].sum(dim=1) > x[:, 0, 20:].sum(dim=1)).long()
    return x, y


def _pruner(model: torch.nn.Module, target: float, steps: int, **options: object) -> adasparse.Pruner:
    x, _ = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return adasparse.Pruner(
            model, target, steps, granularity="channel", example_input=x[:4], min_params=100, **options
        )


def _train(
    model: torch.nn.Module, pruner: adasparse.Pruner, steps: int, start: int = 0, optimizer_state: dict | None = None
) -> dict:
    """Train from step ``start`` to ``steps``; returns the optimizer's state."""
    x, y = _data()
    optimizer = torch.optim.SGD(pruner.param_groups(lr=0.05), momentum=0.9)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    train_with_pruner(model, pruner, optimizer, x, y, range(start, steps))
    return copy.deepcopy(optimizer.state_dict())


@pytest.mark.parametrize("budget", ["flops", "params"])
def test_the_shrunk_models_cost_is_the_target(budget: str) -> None:
    torch.manual_seed(0)
    model = create_model("resnet1d", num_classes=2, input_shape=(1, 40))
    x, _ = _data()
    dense = {"flops": sum(layer_macs(model, x[:4], min_params=0).values())}
    pruner = _pruner(model, 0.5, 40, budget=budget)
    _train(model, pruner, 40)
    frozen = pruner.freeze_result
    assert frozen is not None and frozen.reached
    cost = adasparse.pruned_tensors(model)[0].layout.cost
    one_channel = cost.channel_cost(cost.fractions(), budget)
    assert abs(frozen.sparsity_before - 0.5) <= one_channel + 1e-9
    plain = pruner.finish()
    result = pruner.result
    assert result is not None and result.reached
    smaller = adasparse.shrink(plain, x[:4])
    if budget == "flops":
        removed = 1.0 - sum(layer_macs(smaller, x[:4], min_params=0).values()) / dense["flops"]
        assert removed == pytest.approx(result.sparsity, abs=1e-9)
    plain.eval()
    with torch.no_grad():
        assert torch.allclose(smaller(x), plain(x), atol=1e-5)


def test_channels_need_the_projection_and_an_example_input() -> None:
    model = create_model("resnet1d", num_classes=2, input_shape=(1, 40))
    with pytest.raises(ValueError, match="granularity='channel' is held to its budget by mode='projection'"):
        adasparse.Pruner(model, 0.5, 10, granularity="channel", mode="adaptive")
    with pytest.raises(ValueError, match="needs example_input"):
        adasparse.Pruner(model, 0.5, 10, granularity="channel", min_params=100)


def test_resume_ends_like_an_uninterrupted_run() -> None:
    torch.manual_seed(0)
    start = create_model("resnet1d", num_classes=2, input_shape=(1, 40))
    whole = copy.deepcopy(start)
    pruner = _pruner(whole, 0.5, 30)
    _train(whole, pruner, 30)
    first = copy.deepcopy(start)
    pruner = _pruner(first, 0.5, 30)
    optimizer_state = _train(first, pruner, 12)
    saved_model, saved_pruner = copy.deepcopy(first.state_dict()), copy.deepcopy(pruner.state_dict())
    second = copy.deepcopy(start)
    resumed = _pruner(second, 0.5, 30)
    second.load_state_dict(saved_model)
    resumed.load_state_dict(saved_pruner)
    _train(second, resumed, 30, start=12, optimizer_state=optimizer_state)
    for (name, a), (_, b) in zip(whole.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("target", [0.2, 0.5, 0.8])
def test_the_projection_shifts_every_set_alike_onto_the_budget(target: float) -> None:
    torch.manual_seed(0)
    model = create_model("wrn-16-2", num_classes=10, input_shape=(3, 8, 8))
    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adasparse.sparsify(model, init_threshold=0.0, min_params=100, granularity="channel", example_input=x)
    criterion = adasparse.SparsityLoss(model, target, mode="projection", correction=True, budget="flops")
    reached = criterion.project()
    cost = adasparse.pruned_tensors(model)[0].layout.cost
    fractions = cost.fractions()
    assert reached == pytest.approx(cost.sparsity(fractions, "flops"), abs=1e-12)
    assert abs(reached - target) <= cost.channel_cost(fractions, "flops")
    assert max(fractions) - min(fractions) <= 0.1  # from equal starts, one common shift (up to a channel or two)
    assert all(fraction < 1.0 for fraction in fractions)


def test_a_push_every_set_gets_alike_is_undone_alike() -> None:
    """Every set's threshold pushed the same way, then projected back onto a fixed budget: the sets stay where they
    were relative to each other (once, equal pushes on a different scale than the projection's drove a classifier
    layer that costs few FLOPs to a single unit)."""
    from adasparse.control.thresholds import adam_step
    from tests.zoo import by_channels

    model, _ = by_channels("cnn2d", (1, 8, 8), 2, r=0.0)
    criterion = adasparse.SparsityLoss(model, 0.75, mode="projection", correction=True, budget="flops")
    criterion.step()
    tensors = adasparse.pruned_tensors(model)
    assert len(tensors) >= 2

    def equivalents() -> list[float]:
        distributions = criterion.structured_distributions()
        return [m.gaussian_equivalent(m.position(t.threshold.item())) for m, t in zip(distributions, tensors)]

    before = equivalents()
    moments = [[0.0, 0.0] for _ in tensors]
    for count in range(1, 31):
        for pruned in tensors:
            pruned.threshold.grad = torch.tensor(1.0)  # every set: keep more
        adam_step(tensors, moments, 0.05, count, criterion.structured_distributions())
        criterion.step()
    after = equivalents()
    spread_before = max(before) - min(before)
    assert max(after) - min(after) == pytest.approx(spread_before, abs=0.05)
    assert all(t.layout.current_keep().any() for t in tensors)


def test_declared_heads_are_held_to_the_budget_and_shrink_away() -> None:
    torch.manual_seed(0)
    model = AttentionNet()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, 8, generator=generator)
    y = x[:, :, :3].sum(dim=1).argmax(dim=1)
    dense = sum(layer_macs(model, x[:4], min_params=0).values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = adasparse.Pruner(
            model,
            0.5,
            30,
            granularity="channel",
            example_input=x[:4],
            min_params=100,
            heads=ATTENTION_HEADS,
            budget="flops",
        )
    optimizer = torch.optim.AdamW(pruner.param_groups(lr=1e-3))
    train_with_pruner(model, pruner, optimizer, x, y, 30)
    plain = pruner.finish()
    assert pruner.result is not None and pruner.result.reached
    smaller = adasparse.shrink(plain, x[:4], heads=ATTENTION_HEADS)
    assert sum(block.attn.num_heads for block in smaller.blocks) < 8
    removed = 1.0 - sum(layer_macs(smaller, x[:4], min_params=0).values()) / dense
    assert removed == pytest.approx(pruner.result.sparsity, abs=1e-9)
    plain.eval()
    with torch.no_grad():
        assert torch.allclose(smaller(x), plain(x), atol=1e-5)


def test_the_final_projection_narrows_a_gap_a_coarse_set_leaves_with_the_fine_sets() -> None:
    """Heads are coarse (a few % of the transformer's FLOPs each): the projection at each step lands within one head
    of the budget; the final one (before the zeros are fixed) narrows the gap by moving the MLP sets alone, at most
    0.25 on the Gaussian-equivalent scale, and leaves the heads as they are."""
    from adasparse.control.projection import MAX_REFINE_SHIFT, UNREACHABLE_GAP
    from tests.zoo import by_channels

    model, _ = by_channels("transformer", (1, 40), 2, r=0.0)
    tensors = adasparse.pruned_tensors(model)
    cost = tensors[0].layout.cost
    criterion = adasparse.SparsityLoss(model, 0.0, mode="projection", correction=True, budget="flops")
    start = [t.threshold.detach().clone() for t in tensors]
    gaps = {}
    for target in [0.30 + 0.01 * i for i in range(40)]:
        for pruned, r in zip(tensors, start):
            with torch.no_grad():
                pruned.threshold.copy_(r)
        criterion.target = target
        gaps[target] = abs(criterion.project() - target)
    target = max(gaps, key=gaps.get)
    assert gaps[target] > UNREACHABLE_GAP  # a head's crossing leaves one
    for pruned, r in zip(tensors, start):
        with torch.no_grad():
            pruned.threshold.copy_(r)
    criterion.target = target
    criterion.project()
    assert abs(criterion.project() - target) == pytest.approx(gaps[target])  # not narrowed at every step
    distributions = criterion.structured_distributions()
    before = [m.gaussian_equivalent(m.position(t.threshold.item())) for m, t in zip(distributions, tensors)]
    heads_before = [t.layout.current_keep().clone() for t in tensors if t.layout.kind == "head"]
    reached = criterion.project(final=True)
    assert abs(reached - target) < gaps[target]
    assert reached == pytest.approx(cost.sparsity(cost.fractions(), "flops"), abs=1e-9)
    after = [m.gaussian_equivalent(m.position(t.threshold.item())) for m, t in zip(distributions, tensors)]
    assert all(abs(a - b) <= MAX_REFINE_SHIFT + 1e-6 for a, b in zip(after, before))
    heads_after = [t.layout.current_keep() for t in tensors if t.layout.kind == "head"]
    assert heads_before and all(torch.equal(a, b) for a, b in zip(heads_before, heads_after))


def test_channel_multiple_rounds_the_kept_channels_when_the_zeros_are_fixed() -> None:
    torch.manual_seed(0)
    model = create_model("resnet1d", num_classes=2, input_shape=(1, 40))
    x, _ = _data()
    pruner = _pruner(model, 0.5, 40, budget="flops", channel_multiple=8)
    _train(model, pruner, 40)
    frozen = pruner.freeze_result
    assert frozen is not None and frozen.reached
    cost = adasparse.pruned_tensors(model)[0].layout.cost
    kept = [int(s.current_keep().sum()) for s in cost.channel_sets]
    assert all(count % 8 == 0 or count == s.channels for count, s in zip(kept, cost.channel_sets))
    assert abs(frozen.sparsity - 0.5) <= 8 * cost.channel_cost(cost.fractions(), "flops")
    smaller = adasparse.shrink(pruner.finish(), x[:4])
    widths = [m.out_channels for m in smaller.modules() if isinstance(m, torch.nn.Conv1d) and m.out_channels > 1]
    assert sorted(set(widths)) != [] and all(w % 8 == 0 or w in (32, 64, 128) for w in widths)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"channel_multiple": 0}, "channel_multiple must be an integer >= 1"),
        ({"channel_multiple": True}, "channel_multiple must be an integer >= 1"),
        ({"channel_multiple": 8, "granularity": "element"}, "channel_multiple=8 rounds channel counts"),
    ],
)
def test_channel_multiple_is_checked(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        adasparse.PrunerConfig(**options).validated()
