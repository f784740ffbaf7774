"""The latency table: which modules each channel set reaches, the allocations that time every combination, the
interpolation, its file format and its errors. Timings are only compared with each other, never with a number."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from torch import nn

import adasparse
from adasparse.core.latency_table import LatencyTable, TimedModule, _covering_allocations, _grid, measure_latency

pytest.importorskip("torch_pruning")


class _Chain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(2, 32, 3, padding=1)
        self.norm1 = nn.BatchNorm1d(32)
        self.conv2 = nn.Conv1d(32, 24, 3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Linear(24 * 16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.conv1(x)))
        x = torch.relu(self.conv2(x))  # a functional activation: in the table's remainder
        return self.head(x.flatten(1))


class _Concat(nn.Module):
    """A layer reading three channel sets at once (a concatenation) and producing a fourth."""

    def __init__(self) -> None:
        super().__init__()
        self.branches = nn.ModuleList(nn.Conv1d(2, 32, 3, padding=1) for _ in range(3))
        self.mix = nn.Conv1d(96, 32, 1)
        self.head = nn.Linear(32 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([branch(x) for branch in self.branches], dim=1)
        return self.head(self.mix(torch.relu(x)).flatten(1))


@pytest.fixture(scope="module")
def chain_table() -> tuple[nn.Module, torch.Tensor, LatencyTable]:
    torch.manual_seed(0)
    model = _Chain().eval()
    x = torch.randn(16, 2, 16)
    return model, x, measure_latency(model, x, multiple=8, rounds=2, warmup=0, min_params=100, coverings=2)


def test_grid_is_the_multiples_and_the_size() -> None:
    assert _grid(64, 8) == (8, 16, 24, 32, 40, 48, 56, 64)
    assert _grid(20, 8) == (8, 16, 20)
    assert _grid(4, 8) == (1, 2, 3, 4)  # a small set (heads) at every count


def test_every_module_meets_every_combination_of_its_sets() -> None:
    sizes, grids = [16, 24, 8], [_grid(16, 8), _grid(24, 8), _grid(8, 8)]
    depends = {"a": (0, 1), "b": (1, 2), "c": (2,)}
    allocations = _covering_allocations(sizes, grids, depends, seed=0)
    assert allocations[0] == sizes
    for name, sets in depends.items():
        met = {tuple(counts[k] for k in sets) for counts in allocations}
        assert met == set(itertools.product(*(grids[k] for k in sets))), name
    assert len(allocations) <= 3 * 24  # about the largest module's combinations, not their product over modules


def test_the_table_holds_the_modules_the_sets_reach(chain_table: tuple) -> None:
    model, _, table = chain_table
    assert table.sets == [("conv1", 32), ("conv2", 24)]
    depends = {module.name: module.sets for module in table.modules}
    assert depends["conv1"] == (0,)
    assert depends["norm1"] == (0,)
    assert depends["act"] == (0,)
    assert depends["conv2"] == (0, 1)
    assert depends["head"] == (1,)
    conv2 = next(module for module in table.modules if module.name == "conv2")
    assert conv2.grids == ((8, 16, 24, 32), (8, 16, 24))
    assert all(value > 0.0 for row in conv2.seconds for value in row)
    assert table.batch == 16 and table.multiple == 8
    assert [counts for counts, _ in table.measured][0] == [32, 24]  # the dense model first
    assert not adasparse.is_sparsified(model)  # measured on copies


def test_the_table_predicts_what_it_measured(chain_table: tuple) -> None:
    _, _, table = chain_table
    errors = table.prediction_errors()
    assert len(errors) == len(table.measured)
    assert all(math.isfinite(error) for error in errors)
    assert sorted(abs(error) for error in errors)[len(errors) // 2] < 0.5  # in-sample: the modules' sum and fit
    assert table.dense_seconds() > 0.0 and table.seconds([8, 8]) > 0.0
    assert isinstance(table.seconds([8, 8]), float)


def test_interpolation_and_its_gradient() -> None:
    plane = TimedModule("conv", (0, 1), ((8, 16), (8, 16, 24)), [[1.0, 2.0, 4.0], [3.0, 5.0, 9.0]])
    line = TimedModule("norm", (1,), ((8, 16, 24),), [0.5, 1.0, 1.5])
    table = LatencyTable([("a", 16), ("b", 24)], [plane, line], [0.25, 1.0, 0.0], batch=4, multiple=8)
    assert table.seconds([16, 24]) == pytest.approx(9.0 + 1.5 + 0.25 + 1.0)
    assert table.seconds([8, 8]) == pytest.approx(1.0 + 0.5 + 0.25 + 0.5)
    assert plane.value_and_slopes([12, 12])[0] == pytest.approx((1 + 2 + 3 + 5) / 4)
    kept = [11.0, 19.0]
    _, gradient = table.seconds_and_gradient(kept)
    for k in range(2):
        step = [value + (1e-4 if i == k else 0.0) for i, value in enumerate(kept)]
        assert gradient[k] == pytest.approx((table.seconds(step) - table.seconds(kept)) / 1e-4, rel=1e-4)
    assert plane.value_and_slopes([4, 8])[0] == pytest.approx(0.0)  # extrapolated below the grid, floored at 0
    assert plane.value_and_slopes([6, 8])[0] == pytest.approx(0.5)


def test_file_round_trip(tmp_path, chain_table: tuple) -> None:
    _, _, table = chain_table
    path = tmp_path / "latency.json"
    table.save(path)
    loaded = LatencyTable.load(path)
    assert loaded.to_dict() == table.to_dict()
    assert loaded.seconds([20, 12]) == table.seconds([20, 12])
    path.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not a latency table"):
        LatencyTable.load(path)
    broken = table.to_dict()
    del broken["rest"]
    with pytest.raises(ValueError, match="missing or malformed"):
        LatencyTable.from_dict(broken)


def test_bad_input_is_refused() -> None:
    model, x = _Chain(), torch.randn(4, 2, 16)
    with pytest.raises(ValueError, match="multiple"):
        measure_latency(model, x, multiple=0)
    with pytest.raises(ValueError, match="rounds"):
        measure_latency(model, x, rounds=1)
    with pytest.raises(ValueError, match="depends on 4 channel sets"):
        measure_latency(_Concat(), torch.randn(4, 2, 8), rounds=2, min_params=10)
    with pytest.raises(ValueError, match="times on the CPU"):
        measure_latency(_Chain().to("meta"), x, rounds=2)
    with pytest.raises(ValueError, match="no channel set"):
        measure_latency(nn.Sequential(nn.Flatten(), nn.Linear(32, 4)), x, rounds=2)
    adasparse.sparsify(model, 0.5, min_params=100, granularity="channel", example_input=x)
    with pytest.raises(ValueError, match="desparsify it first"):
        measure_latency(model, x, rounds=2)
    with pytest.raises(ValueError, match="rest has 1 terms, expected 2"):
        LatencyTable([("a", 8)], [], [0.0], batch=1, multiple=8)
    with pytest.raises(ValueError, match="kept gives 2 counts"):
        LatencyTable([("a", 8)], [], [0.0, 1.0], batch=1, multiple=8).seconds([8, 8])
