"""benchmarks/latency_table.py: the grid search returns the allocation the table predicts fastest among those at
the FLOPs budget, and refuses a budget no grid allocation meets."""

from __future__ import annotations

import itertools

import pytest
import torch

from adasparse.core.latency_table import LatencyTable, TimedModule

from . import load_script
from .test_allocation_latency import _model

pytest.importorskip("torch_pruning")


@pytest.fixture(scope="module")
def script():
    return load_script("latency_table")


def _table() -> LatencyTable:
    """Odd multiples of 8 cost more than the next multiple of 16, as on the CPU the pages are measured on."""
    first, second = (8, 16, 24, 32), (8, 16, 24, 32, 40, 48)

    def price(count: int) -> float:
        return count + (12.0 if count % 16 else 0.0)

    modules = [
        TimedModule("0", (0,), (first,), [price(k) for k in first]),
        TimedModule("2", (0, 1), (first, second), [[price(a) * price(b) / 16 for b in second] for a in first]),
    ]
    return LatencyTable([("0", 32), ("2", 48)], modules, [1.0, 0.0, 0.0], batch=4, multiple=8)


def test_the_fastest_grid_allocation_at_the_budget(script) -> None:
    allocations = script.Allocations(_model(), torch.randn(4, 1, 8, 8))
    table = _table()
    ranked = script.fastest_on_grid(table, allocations, 0.45, 0.06, count=3)
    assert [p for _, _, p in ranked] == sorted(p for _, _, p in ranked) and len(ranked) == 3
    counts, removed, predicted = ranked[0]
    at_budget = [
        c
        for c in itertools.product((8, 16, 24, 32), (8, 16, 24, 32, 40, 48))
        if 0.45 <= allocations.flops_removed(list(c)) <= 0.51
    ]
    assert counts in at_budget
    assert predicted == min(table.seconds(c) for c in at_budget) / table.dense_seconds()
    assert removed == allocations.flops_removed(list(counts))
    assert all(count % 16 == 0 for count in counts)  # the made-up table's fast widths
    with pytest.raises(ValueError, match="no grid allocation"):
        script.fastest_on_grid(table, allocations, 0.999, 0.0001)
