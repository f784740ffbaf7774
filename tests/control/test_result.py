"""The end of pruning: measured_result's reached flag (weights or a cost budget) and the result's checkpoint form."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import adasparse
from adasparse.control.result import PrunerResult, measured_result, result_from_dict, result_to_dict


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(100, 40), nn.Linear(40, 30))  # 4,000 and 1,200 weights
    adasparse.sparsify(model, target=0.5, min_params=100)
    return model


def test_reached_within_one_weight_of_the_target() -> None:
    model = _model()
    calibration = adasparse.calibrate(model, 0.7)
    tensors = adasparse.pruned_tensors(model)
    result = measured_result(model, tensors, 0.7, None, calibration.before, calibration)
    assert result.reached and result.sparsity == calibration.after.overall
    assert result.sparsity_before == calibration.before.overall and result.analytic == calibration.before.analytic
    assert result.message == str(calibration) and result.report is calibration.after
    missed = measured_result(model, tensors, 0.7 + 2 / 5200, None, calibration.before, calibration)
    assert not missed.reached  # two weights short
    assert "NOT reached" in str(missed)


def test_reached_counts_the_budgets_cost() -> None:
    model = _model()
    costs = {"0.weight": 4000.0, "1.weight": 12000.0}  # a zero in the second layer costs 10 of the first's
    calibration = adasparse.calibrate(model, 0.6, budget=costs)
    tensors = adasparse.pruned_tensors(model)
    assert measured_result(model, tensors, 0.6, costs, calibration.before, calibration).reached
    report = adasparse.sparsity_report(model)
    uncalibrated = measured_result(model, tensors, 0.6, None, report, None)  # no calibration: measured now
    assert uncalibrated.message == "" and uncalibrated.report.overall == report.overall
    assert uncalibrated.reached == (abs(report.pruned_zeros - 0.6 * report.pruned_params) <= 1.0 + 1e-9 * 5200)


def test_checkpoint_form_round_trips_through_json() -> None:
    model = _model()
    calibration = adasparse.calibrate(model, 0.5)
    result = measured_result(model, adasparse.pruned_tensors(model), 0.5, None, calibration.before, calibration)
    restored = result_from_dict(json.loads(json.dumps(result_to_dict(result))))
    assert isinstance(restored, PrunerResult) and restored == result
    older = {key: value for key, value in result_to_dict(result).items() if key != "message"}
    assert result_from_dict(older).message == ""
    with pytest.raises(KeyError):
        result_from_dict({"target": 0.5})
