"""The end of a run (app/finish.py): the target check and the summary's fields."""

from __future__ import annotations

import dataclasses

import pytest

from adasparse.app.config import TrainConfig
from adasparse.app.finish import RunResult, target_reached
from adasparse.core.report import LayerSparsity, SparsityReport

REPORT = SparsityReport(
    (
        LayerSparsity("a.weight", "Linear", (10, 100), 1000, 900, None, None),
        LayerSparsity("b.weight", "Linear", (10, 300), 3000, 2700, None, None),
    ),
    total_params=4100,
    total_zeros=3600,
)


@pytest.mark.parametrize(("sparsity", "reached"), [(0.9, True), (0.9 + 1 / 4000, True), (0.9 + 2 / 4000, False)])
def test_parameter_budget_within_one_weight(sparsity: float, reached: bool) -> None:
    assert target_reached(TrainConfig(target=0.9), REPORT, {}, sparsity, 0.0) is reached


def test_flops_budget_within_the_cost_of_the_dearest_weight() -> None:
    config = TrainConfig(target=0.5, budget="flops")
    macs = {"a.weight": 1000.0, "b.weight": 9000.0}  # 1 and 3 multiply-accumulates a weight
    assert target_reached(config, REPORT, macs, 0.0, 0.5 + 3 / 10000)
    assert not target_reached(config, REPORT, macs, 0.0, 0.5 + 4 / 10000)


def test_summary_leaves_the_metrics_out() -> None:
    result = RunResult("run", {}, 1, 0.9, None, None, None, None, None, None, 1.0, 0.1, metrics=[{"epoch": 1.0}])
    data = result.to_dict()
    assert "metrics" not in data and data["test_accuracy"] == 0.9
    assert set(data) == {f.name for f in dataclasses.fields(RunResult)} - {"metrics"}
    assert RunResult(**data).metrics == []
