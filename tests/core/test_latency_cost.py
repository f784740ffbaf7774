"""A channel budget priced in time: the cost model a latency table gives, and the Pruner holding it."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import adasparse
from adasparse.core.channel_cost import shared_cost
from adasparse.core.channel_rounding import _closest_choice
from adasparse.core.latency_cost import LatencyCost
from adasparse.core.latency_table import LatencyTable, TimedModule
from adasparse.core.parametrization import pruned_tensors

pytest.importorskip("torch_pruning")


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(2, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv1d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 16, 4),
    )


def _table(first_price: float = 1.0) -> LatencyTable:
    """A made-up table for ``_model``: the first set's channels cost ``first_price`` each, the second's 0.1."""
    grid = tuple(range(8, 33, 8))
    first = TimedModule("0", (0,), (grid,), [first_price * k for k in grid])
    second = TimedModule("2", (0, 1), (grid, grid), [[0.1 * b for b in grid] for _ in grid])
    return LatencyTable([("0", 32), ("2", 32)], [first, second], [1.0, 0.0, 0.0], batch=8, multiple=8)


def _sparsified(model: nn.Module, x: torch.Tensor, latency: LatencyTable | None = None) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adasparse.sparsify(
            model, init_threshold=0.0, min_params=100, granularity="channel", example_input=x, latency=latency
        )
    return model


def test_latency_budget_is_the_predicted_time_removed() -> None:
    x = torch.randn(8, 2, 16)
    flops_cost = shared_cost(pruned_tensors(_sparsified(_model(), x)))
    model = _sparsified(_model(), x, _table())
    priced = shared_cost(pruned_tensors(model))
    assert isinstance(priced, LatencyCost)
    assert all(s.cost is priced for s in priced.channel_sets)
    table = _table()
    dense = table.dense_seconds()
    assert priced.sparsity([0.0, 0.0], "latency") == pytest.approx(0.0)
    assert priced.sparsity([0.5, 0.0], "latency") == pytest.approx(1.0 - table.seconds([16, 32]) / dense)
    for budget in ("params", "flops"):  # the other budgets are counted as before
        assert priced.sparsity([0.5, 0.25], budget) == flops_cost.sparsity([0.5, 0.25], budget)
    gradient = priced.gradient([0.3, 0.6], "latency")
    for k in range(2):
        step = [0.3, 0.6]
        step[k] += 1e-6
        slope = (priced.sparsity(step, "latency") - priced.sparsity([0.3, 0.6], "latency")) / 1e-6
        assert gradient[k] == pytest.approx(slope, rel=1e-3)
    assert gradient[0] > gradient[1]  # the first set's channels are the expensive ones
    report = adasparse.sparsity_report(model)
    assert set(report.shrunk) == {"params", "flops", "latency"}
    assert "predicted time" in str(report)


def test_calibrating_to_a_latency_budget_needs_sets_priced_in_time() -> None:
    x = torch.randn(8, 2, 16)
    with pytest.raises(ValueError, match="priced by a latency table"):
        adasparse.calibrate(_sparsified(_model(), x), 0.3, budget="latency")
    result = adasparse.calibrate(_sparsified(_model(), x, _table()), 0.3, budget="latency")
    assert abs(result.after.shrunk["latency"] - 0.3) < 0.1


def test_sparsify_prices_the_sets_or_changes_nothing() -> None:
    x = torch.randn(8, 2, 16)
    model = _model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adasparse.sparsify(model, 0.5, min_params=100, granularity="channel", example_input=x, latency=_table())
    assert isinstance(shared_cost(pruned_tensors(model)), LatencyCost)
    other = LatencyTable([("0", 16), ("2", 32)], [], [1.0, 0.0, 0.0], batch=8, multiple=8)
    plain = _model()
    with pytest.raises(ValueError, match="measured for other channel sets"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adasparse.sparsify(plain, 0.5, min_params=100, granularity="channel", example_input=x, latency=other)
    assert not adasparse.is_sparsified(plain)
    with pytest.raises(ValueError, match="latency= prices channels"):
        adasparse.sparsify(_model(), 0.5, min_params=100, latency=_table())


def _train(pruner: adasparse.Pruner, model: nn.Module, steps: int) -> None:
    optimizer = torch.optim.SGD(pruner.param_groups(lr=0.05), momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.randn(8, 2, 16, generator=generator)
        y = torch.randint(0, 4, (8,), generator=generator)
        loss = nn.functional.cross_entropy(model(x), y) + pruner.loss()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        pruner.step()


@pytest.mark.parametrize("multiple", [1, 8])
def test_pruner_holds_a_latency_budget(multiple: int) -> None:
    x = torch.randn(8, 2, 16)
    model = _model()
    table = _table(first_price=1.0)
    pruner = adasparse.Pruner(
        model,
        target=0.4,
        total_steps=30,
        granularity="channel",
        budget="latency",
        latency=table,
        example_input=x,
        min_params=100,
        channel_multiple=multiple,
    )
    _train(pruner, model, 30)
    removed = pruner.report().shrunk["latency"]
    plain = pruner.finish()
    assert pruner.result is not None and pruner.result.reached, pruner.result
    small = adasparse.shrink(plain, x)
    kept = [small[0].out_channels, small[2].out_channels]
    assert 1.0 - table.seconds(kept) / table.dense_seconds() == pytest.approx(removed)
    one_channel = 1.0 / table.dense_seconds()  # the first set's channel: the most one channel weighs
    if multiple == 1:
        assert abs(removed - 0.4) <= one_channel
    else:  # within what the multiples allow (`reached` above counts `multiple` channels)
        assert all(count % multiple == 0 for count in kept)


def test_pruner_refuses_a_latency_budget_it_cannot_price() -> None:
    x = torch.randn(8, 2, 16)
    with pytest.raises(ValueError, match="budget='latency' needs latency="):
        adasparse.Pruner(_model(), 0.4, 10, granularity="channel", budget="latency", example_input=x)
    with pytest.raises(ValueError, match="give channel_multiple > 1"):
        adasparse.Pruner(_model(), 0.4, 10, granularity="channel", budget="flops", latency=_table(), example_input=x)
    with pytest.raises(ValueError, match="needs granularity='channel'"):
        adasparse.Pruner(_model(), 0.4, 10, budget="latency", latency=_table())
    with pytest.raises(TypeError, match="LatencyTable"):
        adasparse.Pruner(
            _model(), 0.4, 10, granularity="channel", budget="latency", latency={"sets": []}, example_input=x
        )
    model = _model()
    other = LatencyTable([("0", 16), ("2", 32)], [], [1.0, 0.0, 0.0], batch=8, multiple=8)
    with pytest.raises(ValueError, match="other channel sets"):
        adasparse.Pruner(
            model, 0.4, 10, granularity="channel", budget="latency", latency=other, example_input=x, min_params=100
        )
    assert not adasparse.is_sparsified(model)  # left as it was given


def test_the_rounding_takes_the_fastest_of_equally_close_choices() -> None:
    options = {0: [16, 32], 1: [16, 32]}

    def gap_of(counts) -> float:
        return 0.0 if sum(counts) == 48 else 1.0  # (16, 32) and (32, 16) meet the target alike

    def choose(time_of=None) -> list[int]:
        return _closest_choice([24, 24], [32, 32], options, gap_of, [0, 0], True, time_of)

    assert choose() == [16, 32]  # equal cut and move: the first
    assert choose(lambda counts: 10 * counts[1] + counts[0]) == [32, 16]
    assert choose(lambda counts: 10 * counts[0] + counts[1]) == [16, 32]


def test_pruner_rounds_a_flops_budget_to_the_fastest_choice() -> None:
    x = torch.randn(8, 2, 16)
    model = _model()
    pruner = adasparse.Pruner(
        model,
        target=0.5,
        total_steps=20,
        granularity="channel",
        budget="flops",
        latency=_table(),
        example_input=x,
        min_params=100,
        channel_multiple=8,
    )
    _train(pruner, model, 20)
    pruner.finish()
    assert pruner.result is not None and pruner.result.reached, pruner.result
    assert set(pruner.result.report.shrunk) == {"params", "flops", "latency"}
