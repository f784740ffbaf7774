"""The layer-adaptive (LAMP) allocation of the projection: its levels order weights as LAMP's score does, ignore a
layer's scale, take more from large layers than from small ones, and land on the target."""

from __future__ import annotations

import math
import warnings

import numpy
import pytest
import torch
from torch import nn

import adasparse
from adasparse.control.layer_adaptive import LevelTable, lamp_levels
from adasparse.control.projection import Projection
from adasparse.core.operator import MAX_THRESHOLD


def _magnitudes(count: int, seed: int, scale: float = 1.0) -> numpy.ndarray:
    return numpy.sort(numpy.abs(numpy.random.default_rng(seed).standard_normal(count))) * scale


def test_levels_are_lamp_scores_in_order_and_keep_every_layer_s_largest_weight() -> None:
    values = _magnitudes(500, 0)
    levels = lamp_levels(values, len(values))
    squares = values**2
    lamp = squares / numpy.cumsum(squares[::-1])[::-1]  # LAMP: w_u^2 / sum over weights at least as large
    ratio = numpy.exp(levels[:-1])
    assert numpy.allclose(ratio / (1 + ratio), lamp[:-1], rtol=1e-9)
    assert levels[-1] == math.inf and lamp[-1] == 1.0
    assert numpy.all(numpy.diff(levels) >= 0)
    with_zeros = lamp_levels(numpy.concatenate([[0.0, 0.0], values]), len(values) + 2)
    assert with_zeros[0] == with_zeros[1] == -math.inf and numpy.all(with_zeros[1:] >= with_zeros[:-1])
    # a sample stands for a tensor ten times its size: its sums are scaled, every level falls by log(10)
    assert numpy.allclose(lamp_levels(values, 10 * len(values))[:-1], levels[:-1] - math.log(10))


def test_levels_ignore_the_layer_s_scale_and_positions_grow_with_the_level() -> None:
    values = _magnitudes(300, 1)
    assert numpy.allclose(lamp_levels(values, 300)[:-1], lamp_levels(1000.0 * values, 300)[:-1], atol=1e-9)
    levels = lamp_levels(values, 300)
    table = LevelTable([levels, lamp_levels(_magnitudes(50, 2), 50)])
    grid = numpy.linspace(levels[0] - 5, levels[-2] + 1, 2000)
    positions = numpy.array([table.positions(level) for level in grid])
    assert numpy.all(numpy.diff(positions, axis=0) >= 0)
    assert positions[0, 0] < 0.01 and 298 < positions[-1, 0] < 300  # its largest weight stays
    assert table.positions(levels[10])[0] == pytest.approx(10.5)  # value j sits at j + 0.5
    assert table.positions(0.5 * (levels[10] + levels[11]))[0] == pytest.approx(11.0)  # linear between levels
    zeros = LevelTable([lamp_levels(numpy.concatenate([[0.0] * 3, values]), 303)])
    assert zeros.positions(levels[0] - 1e-3)[0] == pytest.approx(2.5)  # exact zeros pruned, the next one not


def _positions_by_arrays(table: LevelTable, level: float) -> numpy.ndarray:
    """:meth:`LevelTable.positions` as whole-array arithmetic on the table's one sorted array (every layer's block
    shifted by its offset): what the scalar loop must reproduce bit for bit."""
    flat, offsets, starts = table._flat, numpy.array(table._offset_list), numpy.array(table._start_list)
    queries = min(max(level, -1e3), 1e3 - 1.0) + offsets
    after = flat.searchsorted(queries, side="right")
    low, high = flat[after - 1], flat[after]
    span = high - low
    below = after == starts
    with numpy.errstate(divide="ignore", invalid="ignore"):
        step = (queries - low) / span
    step[(span <= 0.0) | (low - offsets <= -1e3) | below] = 0.0
    positions = after - starts - 0.5 + numpy.minimum(numpy.maximum(step, 0.0), 1.0)
    if below.any():
        positions[below] = 0.5 * numpy.exp(numpy.minimum(level - (flat[starts] - offsets)[below], 0.0))
    return numpy.minimum(positions, table.sizes - 0.5)


def _random_levels(rng: numpy.random.Generator) -> list[numpy.ndarray]:
    """The levels of one to seven layers of every kind the projection meets (runs, zeros, heavy tails, any scale)."""
    levels = []
    for kind in rng.integers(0, 4, size=int(rng.integers(1, 8))):
        count = int(rng.integers(1, 2_000))
        values = {
            0: numpy.abs(rng.standard_normal(count)),
            1: rng.choice([0.0, 0.5, 1.0], size=count),  # ternary: runs and exact zeros
            2: numpy.abs(numpy.round(rng.standard_normal(count), 2)),  # quantised: runs
            3: numpy.abs(rng.standard_t(2, size=count)) * 10 ** rng.uniform(-3, 3),  # heavy tails, any scale
        }[int(kind)]
        levels.append(lamp_levels(numpy.sort(values.astype(numpy.float32)).astype(numpy.float64), 3 * count))
    return levels


def _bits(array: numpy.ndarray) -> numpy.ndarray:
    return numpy.ascontiguousarray(array, dtype=numpy.float64).view(numpy.int64)


def test_positions_are_the_array_formula_s_bit_for_bit() -> None:
    rng = numpy.random.default_rng(5)
    for _ in range(40):
        levels = _random_levels(rng)
        table = LevelTable(levels)
        finite = [float(v) for layer in levels for v in layer[numpy.isfinite(layer)][::97]]
        grid = [*rng.uniform(-60.0, 30.0, size=30), table.low, table.high, -2e3, 2e3, -math.inf, math.inf, *finite]
        for level in grid:
            expected = _positions_by_arrays(table, level)
            assert numpy.array_equal(table.positions(level).view(numpy.int64), expected.view(numpy.int64)), level
        together = table.positions_at(grid)  # every level at once: the same rows
        for level, row in zip(grid, together):
            assert numpy.array_equal(_bits(row), _bits(table.positions(level))), level


def test_targets_solved_together_get_each_one_s_own_solution_bit_for_bit() -> None:
    rng = numpy.random.default_rng(11)
    for case in range(40):
        levels = _random_levels(rng)
        table = LevelTable(levels)
        shares = rng.dirichlet(numpy.ones(len(levels))).tolist()
        tolerance = 1e-3 * min(p / len(layer) for p, layer in zip(shares, levels))
        limits = None if case % 2 else [float(rng.uniform(0.5, 1.0) * len(layer)) for layer in levels]
        # a ramp's targets, with the ends out of reach below and above and a repeated one
        targets = [0.0, *numpy.sort(rng.uniform(0.0, 1.0, size=12)).tolist(), 0.5, 0.5, 1.0]
        together = table.solve_many(shares, targets, tolerance, limits)
        assert len(together) == len(targets)
        for target, positions in zip(targets, together):
            alone = table.solve(shares, target, tolerance, limits)
            assert numpy.array_equal(_bits(positions), _bits(alone)), (case, target)
        together[0][0] = -1.0  # every answer is its own array
        assert together[-1][0] != -1.0 and table.solve_many(shares, [0.0], tolerance, limits)[0][0] != -1.0


def test_levels_stay_in_order_where_rounding_of_the_logarithms_could_break_it() -> None:
    # magnitudes one float apart: the squares and sums barely move, so the rounding of each log decides the order
    values = numpy.nextafter(1.0, 2.0, dtype=numpy.float64) ** numpy.arange(5_000, dtype=numpy.float64)
    levels = lamp_levels(values, len(values))
    assert numpy.all(levels[1:] >= levels[:-1])
    squares = values**2
    above = numpy.concatenate([numpy.cumsum(squares[:0:-1])[::-1], [0.0]])
    with numpy.errstate(divide="ignore"):
        raw = numpy.log(squares) - numpy.log(above)
    raw[-1] = math.inf
    assert numpy.array_equal(levels, numpy.maximum.accumulate(raw))


@pytest.mark.parametrize("target", [0.05, 0.5, 0.9, 0.99])
def test_solver_lands_on_the_target_and_takes_more_from_the_larger_layer(target: float) -> None:
    small, large = _magnitudes(1_000, 2), _magnitudes(20_000, 3, scale=0.01)  # the large one also much smaller
    table = LevelTable([lamp_levels(small, 1_000), lamp_levels(large, 20_000)])
    shares = [1 / 21, 20 / 21]
    positions = table.solve(shares, target, tolerance=1e-9)
    reached = shares[0] * positions[0] / 1_000 + shares[1] * positions[1] / 20_000
    assert reached == pytest.approx(target, abs=1e-8)
    assert positions[1] / 20_000 > positions[0] / 1_000  # more of its weights carry each one
    assert table.solve(shares, 0.0, 1e-9).max() < 1e-6
    everything = table.solve(shares, 1.0, 1e-9)  # out of reach: as far as it goes, each layer's largest weight kept
    assert numpy.all(everything >= table.sizes - 2.0) and numpy.all(everything <= table.sizes - 0.5)


def test_solver_keeps_each_position_between_its_floor_and_its_cap() -> None:
    table = LevelTable([lamp_levels(_magnitudes(1_000, 2), 1_000), lamp_levels(_magnitudes(2_000, 3), 2_000)])
    shares = [1 / 3, 2 / 3]
    positions = table.solve(shares, 0.5, 1e-9, limits=[1_000.0, 2_000.0], floors=[800.0, 0.0])
    assert positions[0] >= 800.0  # held up: the other layer gives less at a lower level
    assert shares[0] * positions[0] / 1_000 + shares[1] * positions[1] / 2_000 == pytest.approx(0.5, abs=1e-8)
    free = table.solve(shares, 0.5, 1e-9)
    assert free[0] < 800.0 and positions[1] < free[1]


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(200, 100), nn.Linear(100, 50), nn.Linear(50, 40))  # 20,000, 5,000, 2,000
    return adasparse.sparsify(model, target=0.5, min_params=100)


def _projection(model: nn.Module) -> Projection:
    pruned = adasparse.pruned_tensors(model)
    total = sum(t.numel for t in pruned)
    return Projection(pruned, [t.numel / total for t in pruned], slope="lamp")


def _counted(model: nn.Module) -> list[float]:
    return [int((t.effective() == 0).sum()) / t.numel for t in adasparse.pruned_tensors(model)]


@pytest.mark.parametrize("target", [0.3, 0.9, 0.98])
def test_lamp_projection_reaches_the_counted_target_whatever_the_layers_scale(target: float) -> None:
    model = _model()
    overall = _projection(model).project(target, correction=True)
    counted = _counted(model)
    sizes = [20_000, 5_000, 2_000]
    assert overall == pytest.approx(target, abs=3 / 27_000)
    assert sum(c * n for c, n in zip(counted, sizes)) / 27_000 == pytest.approx(overall, abs=1e-12)
    assert counted[0] > counted[1] > counted[2]  # the larger the layer, the more it gives
    assert all(0.0 <= r.item() <= MAX_THRESHOLD for r in adasparse.threshold_parameters(model))
    scaled = _model()
    with torch.no_grad():
        scaled[1].weight_orig.mul_(1000.0)  # a normalisation after it would make its scale arbitrary
    _projection(scaled).project(target, correction=True)
    assert _counted(scaled) == pytest.approx(counted, abs=2e-4)  # the thresholds are in std units: ~ the same


def test_lamp_projection_prunes_idle_layers_first() -> None:
    model = _model()
    projection = _projection(model)
    projection.idle[1] = True  # 5,000 of 27,000 weights
    projection.project(0.1, correction=True)
    r = [r.item() for r in adasparse.threshold_parameters(model)]
    assert r[0] == 0.0 and r[2] == 0.0 and 0.0 < r[1] < MAX_THRESHOLD
    assert sum(c * n for c, n in zip(_counted(model), [20_000, 5_000, 2_000])) / 27_000 == pytest.approx(
        0.1, abs=2 / 27_000
    )
    projection.project(0.6, correction=True)
    assert _counted(model)[1] == 1.0
    assert sum(c * n for c, n in zip(_counted(model), [20_000, 5_000, 2_000])) / 27_000 == pytest.approx(
        0.6, abs=3 / 27_000
    )


def test_lamp_needs_the_measured_distributions() -> None:
    model = _model()
    with pytest.raises(ValueError, match="projection_slope='lamp' needs correction=True"):
        adasparse.SparsityLoss(model, 0.5, mode="projection", projection_slope="lamp")
    with pytest.raises(ValueError, match="projection_slope='lamp' needs correction=True"):
        adasparse.PrunerConfig(projection_slope="lamp", correction=False).validated()


def test_pruner_with_lamp_holds_the_target_through_training() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    pruner = adasparse.Pruner(model, target=0.9, total_steps=40, config=adasparse.PrunerConfig(projection_slope="lamp"))
    optimizer = torch.optim.SGD(pruner.param_groups(lr=0.05), lr=0.05)
    x, y = torch.randn(128, 64), torch.randint(0, 10, (128,))
    for _ in range(40):
        loss = nn.functional.cross_entropy(model(x), y) + pruner.loss()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        pruner.step()
    plain = pruner.finish()
    layers = [m.weight for m in plain.modules() if isinstance(m, nn.Linear)]
    zeros = sum(int((w == 0).sum()) for w in layers) / sum(w.numel() for w in layers)
    assert zeros == pytest.approx(0.9, abs=1e-4)


def test_with_lamp_the_thresholds_take_no_gradient_and_are_solved_only_when_something_changed() -> None:
    import adasparse.control.layer_adaptive as layer_adaptive

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    pruner = adasparse.Pruner(model, target=0.8, total_steps=100, projection_slope="lamp", ramp=0.1)
    optimizer = torch.optim.SGD(pruner.param_groups(lr=0.05), lr=0.05)
    x, y = torch.randn(64, 64), torch.randint(0, 10, (64,))
    solved: dict[int, int] = {}  # step -> targets solved there
    solve, solve_many = layer_adaptive.LevelTable.solve, layer_adaptive.LevelTable.solve_many

    def counted(self, shares, target, *args, **kwargs):
        solved[pruner.steps] = solved.get(pruner.steps, 0) + 1
        return solve(self, shares, target, *args, **kwargs)

    def counted_many(self, shares, targets, *args, **kwargs):
        solved[pruner.steps] = solved.get(pruner.steps, 0) + len(targets)
        return solve_many(self, shares, targets, *args, **kwargs)

    layer_adaptive.LevelTable.solve, layer_adaptive.LevelTable.solve_many = counted, counted_many
    try:
        for _ in range(60):
            loss = nn.functional.cross_entropy(model(x), y) + pruner.loss()
            optimizer.zero_grad()
            loss.backward()
            assert all(r.grad is None for r in adasparse.threshold_parameters(model))  # the loss does not reach them
            optimizer.step()
            pruner.step()
    finally:
        layer_adaptive.LevelTable.solve, layer_adaptive.LevelTable.solve_many = solve, solve_many
    # The ramp's targets up to the first measurement after it (steps 1-9, then the final one of steps 10-19; step
    # 0's is 0, nothing to solve) are solved together at step 0, then a target only when the distributions are
    # measured: the target moves no more.
    assert solved == {0: 10, 20: 1, 40: 1}


def test_a_cached_solution_is_written_again_only_when_a_threshold_was_changed() -> None:
    model = _model()
    projection = _projection(model)
    projection.project(0.9, correction=True)
    thresholds = list(adasparse.threshold_parameters(model))
    solved = [r.item() for r in thresholds]
    versions = [r._version for r in thresholds]
    projection.project(0.9, correction=True)
    assert [r._version for r in thresholds] == versions  # the same solution: nothing written
    with torch.no_grad():
        thresholds[1].fill_(0.0)  # e.g. a user's edit, or a state loaded into the model
    projection.project(0.9, correction=True)
    assert [r.item() for r in thresholds] == solved


def test_a_layer_whose_share_lies_beyond_five_std_leaves_it_to_the_others() -> None:
    torch.manual_seed(0)
    model = adasparse.sparsify(nn.Sequential(nn.Linear(100, 20), nn.Linear(100, 20)), target=0.5, min_params=100)
    with torch.no_grad():
        heavy = model[1].weight_orig
        heavy.normal_()
        heavy.view(-1)[:3] = torch.tensor([1000.0, -1000.0, 1000.0])  # std ~55: no threshold reaches them
    projection = _projection(model)
    projection.measure()
    limit = projection.measured[1].position(MAX_THRESHOLD)
    assert limit < 1997.5  # the three large weights stay whatever the threshold
    levels = [lamp_levels(m.sorted_float64(), t.numel) for m, t in zip(projection.measured, projection._tensors)]
    unlimited = LevelTable(levels).solve([0.5, 0.5], 0.999, 1e-9)
    assert unlimited[1] > limit  # LAMP alone would ask the heavy layer for more than its thresholds can take
    overall = projection.project(0.999, correction=True)
    assert overall == pytest.approx(0.999, abs=1.5 / 4000)  # the other layer takes it
    assert model[1].weight_orig.abs().max() == 1000.0 and _counted(model)[1] <= 1997 / 2000


@pytest.mark.parametrize("target", [0.3, 0.5, 0.7, 0.9])
def test_lamp_projection_splits_a_run_of_equal_magnitudes_off(target: float) -> None:
    """With the paper's centred operator a pruned layer's zeros become one run of equal magnitudes (at its mean),
    which any threshold prunes whole: the projection puts that layer on one side of the run and solves the others
    to the target."""
    model = _pruned_before(centred=True)
    pruned = adasparse.pruned_tensors(model)
    overall = Projection(pruned, [t.numel / 7_000 for t in pruned], slope="lamp").project(target, correction=True)
    counted = sum(int((t.effective() == 0).sum()) for t in pruned) / 7_000
    assert counted == pytest.approx(overall, abs=1e-12)
    assert overall == pytest.approx(target, abs=2 / 7_000)


@pytest.mark.parametrize("target", [0.5, 0.7, 0.9])
def test_zeros_of_a_pruned_layer_count_as_pruned_when_kept_weights_keep_their_values(target: float) -> None:
    model = _pruned_before(centred=False)
    pruned = adasparse.pruned_tensors(model)
    projection = Projection(pruned, [t.numel / 7_000 for t in pruned], slope="lamp")
    overall = projection.project(target, correction=True)
    assert sum(int((t.effective() == 0).sum()) for t in pruned) / 7_000 == pytest.approx(overall, abs=1e-12)
    assert overall == pytest.approx(target, abs=2 / 7_000)
    zeros = int((pruned[0].raw == 0).sum())
    assert projection.measured[0].zero_fraction(0.0) == zeros / 5_000  # zero whatever the threshold
    with pytest.warns(UserWarning, match="cannot reach the target 0.3000"):  # below what the zeros already make
        projection.project(0.3, correction=True)


def _pruned_before(centred: bool) -> nn.Module:
    """Two layers, the first with a non-zero mean and 60% of its weights exactly zero (as after an earlier prune)."""
    torch.manual_seed(0)
    model = adasparse.sparsify(nn.Sequential(nn.Linear(100, 50), nn.Linear(50, 40)), target=0.5, centred=centred)
    with torch.no_grad():
        weight = model[0].weight_orig
        weight.add_(0.05)
        weight[torch.rand_like(weight) < 0.6] = 0.0
    return model


def test_only_layers_with_runs_a_threshold_prunes_whole_are_split() -> None:
    from adasparse.control.projection import _has_runs

    random = numpy.sort(numpy.abs(numpy.random.default_rng(0).standard_normal(10_000)))
    assert not _has_runs(random)
    assert not _has_runs(numpy.concatenate([[0.0] * 50, random]))  # exact zeros: pruned at every level anyway
    tied = random.copy()
    tied[100:103] = tied[100]
    assert _has_runs(tied)
    assert _has_runs(numpy.concatenate([[3e-8, 5e-7], random]))  # under the bound's epsilon: pruned by any threshold


@pytest.mark.parametrize("target", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_with_ternary_weights_the_projection_counts_what_the_forward_pass_prunes(target: float) -> None:
    """Weights in {-1, 0, 1} are three runs: a level inside a run must give a threshold clear of the run's value,
    where the count in float64 and the float32 forward pass could disagree (it reported 0.300 while 0.388 of the
    weights were zero)."""
    torch.manual_seed(0)
    model = adasparse.sparsify(nn.Sequential(nn.Linear(300, 200), nn.Linear(200, 100)), target=0.5, min_params=100)
    with torch.no_grad():
        for layer in model:
            layer.weight_orig.copy_(torch.sign(layer.weight_orig) * (torch.rand_like(layer.weight_orig) > 0.3))
    pruned = adasparse.pruned_tensors(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some targets lie between two reachable sparsities
        overall = Projection(pruned, [t.numel / 80_000 for t in pruned], slope="lamp").project(target, True)
    assert sum(int((t.effective() == 0).sum()) for t in pruned) / 80_000 == pytest.approx(overall, abs=1e-12)


def _ramp_run(
    monkeypatch: pytest.MonkeyPatch, planned: bool
) -> tuple[list[list[float]], dict[str, torch.Tensor], int, int]:
    """Every step's thresholds of a short default run with a ramp, its final weights, how many targets were solved
    together (:meth:`LevelTable.solve_many`) and how many steps of the loss took the full path (checks, clamp,
    projection) rather than putting a solution back."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    pruner = adasparse.Pruner(model, target=0.9, total_steps=90, correction_interval=7)
    optimizer = torch.optim.SGD(pruner.param_groups(lr=0.05), lr=0.05, momentum=0.9)
    x, y = torch.randn(128, 64), torch.randint(0, 10, (128,))
    together, full_steps = [], []
    solve_many, full_step = LevelTable.solve_many, adasparse.SparsityLoss._full_step
    with monkeypatch.context() as patch:
        patch.setattr(
            adasparse.SparsityLoss, "_full_step", lambda self, *a: full_steps.append(1) or full_step(self, *a)
        )
        if not planned:
            patch.setattr(Projection, "plan", lambda self, targets: None)
        patch.setattr(
            LevelTable,
            "solve_many",
            lambda self, shares, targets, *a: together.append(len(targets)) or solve_many(self, shares, targets, *a),
        )
        thresholds = []
        for _ in range(90):
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            pruner.step()
            thresholds.append([r.item() for r in adasparse.threshold_parameters(model)])
    weights = {name: value.clone() for name, value in pruner.finish().state_dict().items()}
    return thresholds, weights, sum(together), len(full_steps)


def test_a_ramp_solved_ahead_trains_the_weights_of_one_solved_step_by_step(monkeypatch: pytest.MonkeyPatch) -> None:
    planned_thresholds, planned_weights, together, planned_full = _ramp_run(monkeypatch, planned=True)
    stepwise_thresholds, stepwise_weights, alone, stepwise_full = _ramp_run(monkeypatch, planned=False)
    assert together >= 25 and alone == 0  # the ramp's 27 steps (step 0's target is 0): solved ahead, or one by one
    # Solved ahead, a ramp step only writes its solution; step by step, each takes the checks and the projection.
    assert planned_full <= 12 < 27 <= stepwise_full
    assert planned_thresholds == stepwise_thresholds  # every step's thresholds, exactly
    assert len({tuple(r) for r in planned_thresholds[:27]}) == 27  # the ramp moved them at every step
    assert planned_weights.keys() == stepwise_weights.keys()
    assert all(torch.equal(planned_weights[name], stepwise_weights[name]) for name in planned_weights)
