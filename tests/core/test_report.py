"""sparsity_report / state_dict_report: counts, overall figures, formats."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import adasparse


def _model() -> nn.Module:
    model = nn.Sequential(nn.Linear(100, 50), nn.ReLU(), nn.Linear(50, 40), nn.BatchNorm1d(40), nn.Linear(40, 10))
    adasparse.sparsify(model, target=0.9)
    with torch.no_grad():
        model[0].weight_threshold.fill_(1.5)
        model[2].weight_threshold.fill_(0.7)
    return model


def test_counts_match_effective_weights() -> None:
    model = _model()
    report = adasparse.sparsity_report(model)
    assert [layer.name for layer in report.layers] == ["0.weight", "2.weight"]
    for layer, module in zip(report.layers, (model[0], model[2])):
        assert layer.zeros == int((module.weight == 0).sum())
        assert layer.numel == module.weight.numel() and layer.shape == tuple(module.weight.shape)
        assert layer.module_type == "Linear"
    assert report.layers[0].threshold == pytest.approx(1.5)
    assert report.layers[0].analytic == pytest.approx(0.8663856, abs=1e-6)
    assert report.pruned_params == 7000
    assert report.overall == pytest.approx(report.pruned_zeros / 7000)
    dense_params = 50 + 40 + 40 + 40 + 400 + 10  # biases, batch-norm affine, the small head
    assert report.total_params == 7000 + dense_params
    expected_analytic = (5000 * report.layers[0].analytic + 2000 * report.layers[1].analytic) / 7000
    assert report.analytic == pytest.approx(expected_analytic)
    assert report.overall_all_params < report.overall


def test_formats() -> None:
    report = adasparse.sparsity_report(_model())
    data = json.loads(json.dumps(report.to_dict()))
    assert data["layers"][0]["shape"] == [50, 100] and data["sparsified"] is True
    assert data["layers"][0]["actual"] == pytest.approx(report.layers[0].actual)
    markdown = report.to_markdown()
    assert markdown.splitlines()[0] == "| layer | type | shape | params | actual | analytic | r |"
    assert "| 0.weight | Linear | 50×100 | 5,000 |" in markdown
    text = str(report)
    assert "overall (pruned layers)" in text and "overall (all parameters)" in text
    header, _, first = text.splitlines()[:3]
    assert header.index("actual") == first.index(f"{report.layers[0].actual:.4f}")  # aligned columns


def test_plain_model_reports_actual_zeros_only() -> None:
    model = _model()
    sparse_report = adasparse.sparsity_report(model)
    adasparse.desparsify(model)
    plain = adasparse.sparsity_report(model)
    assert not plain.sparsified and plain.analytic is None
    assert [(layer.name, layer.zeros) for layer in plain.layers] == [
        (layer.name, layer.zeros) for layer in sparse_report.layers
    ]
    assert plain.layers[0].threshold is None and "–" in str(plain)
    assert plain.total_zeros == sparse_report.total_zeros and plain.total_params == sparse_report.total_params


def test_state_dict_report_matches_model_report() -> None:
    model = _model()
    model[3].running_mean.fill_(0.0)
    from_model = adasparse.sparsity_report(model)
    from_state = adasparse.state_dict_report(model.state_dict())
    assert [(layer.name, layer.zeros, layer.threshold) for layer in from_state.layers] == [
        (layer.name, layer.zeros, layer.threshold) for layer in from_model.layers
    ]
    assert from_state.total_params == from_model.total_params
    assert from_state.total_zeros == from_model.total_zeros
    adasparse.desparsify(model)
    plain = adasparse.state_dict_report(model.state_dict())
    assert [layer.name for layer in plain.layers] == ["0.weight", "2.weight"]
    assert plain.overall == pytest.approx(from_model.overall)


def test_report_refuses_diverged_weights() -> None:
    model = _model()
    with torch.no_grad():
        model[0].weight_orig[0, 0] = float("nan")
    with pytest.raises(ValueError, match="0.weight has non-finite values"):
        adasparse.sparsity_report(model)


def test_state_dict_report_reads_fixed_masks() -> None:
    state = {
        "fc.weight_orig": torch.ones(50, 40),
        "fc.weight_mask": (torch.arange(2000).view(50, 40) % 4 == 0).float(),
        "fc.bias": torch.ones(50),
    }
    report = adasparse.state_dict_report(state)
    assert [(layer.name, layer.zeros, layer.threshold) for layer in report.layers] == [("fc.weight", 1500, None)]
    assert report.total_params == 2050 and report.sparsified
