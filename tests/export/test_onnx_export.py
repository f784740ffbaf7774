"""ONNX export: passes onnx.checker, onnxruntime matches torch, the sparsified input model is left alone."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

import adasparse
from adasparse.app.models import create_model
from adasparse.export.onnx_export import compare_onnx_outputs, export_onnx

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")


def test_sparsified_cnn_exports_checks_and_matches_onnxruntime(tmp_path: Path) -> None:
    model = create_model("cnn2d", num_classes=10, input_shape=(1, 8, 8))
    adasparse.sparsify(model, target=0.9, trainable=False)
    model.train()
    before = copy.deepcopy(model.state_dict())
    path = export_onnx(model, torch.randn(1, 1, 8, 8), tmp_path / "cnn.onnx")
    assert path == tmp_path / "cnn.onnx" and path.is_file()
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    assert adasparse.pruned_tensors(model) and model.training, "the input model is not changed"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    for batch in (1, 7):  # exported with a dynamic batch dimension
        difference = compare_onnx_outputs(path, model, torch.randn(batch, 1, 8, 8))
        assert 0.0 <= difference < 1e-4
    initializers = {init.name: init for init in onnx.load(str(path)).graph.initializer}
    zeros = sum(int((torch.from_numpy(onnx.numpy_helper.to_array(i).copy()) == 0).sum()) for i in initializers.values())
    assert zeros > 0.8 * adasparse.sparsity_report(model).pruned_zeros, "plain ONNX stores the zeros densely"
    assert [p.name for p in tmp_path.iterdir()] == ["cnn.onnx"]


def test_comparison_detects_a_different_model_and_plain_models_export(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 4))
    path = export_onnx(model, torch.randn(3, 20), tmp_path / "mlp.onnx", opset=18)
    assert onnx.load(str(path)).opset_import[0].version == 18
    x = torch.randn(5, 20)
    assert compare_onnx_outputs(path, model, x) < 1e-5
    other = copy.deepcopy(model)
    with torch.no_grad():
        other[2].bias.add_(1.0)
    with pytest.raises(ValueError, match=r"output 0 of .*mlp\.onnx differs from torch by up to 1"):
        compare_onnx_outputs(path, other, x)
    with pytest.raises(ValueError, match="takes 1 inputs, got 2"):
        compare_onnx_outputs(path, model, (x, x))


def test_export_errors(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(8, 8))
    with pytest.raises(ValueError, match="opset"):
        export_onnx(model, torch.randn(1, 8), tmp_path / "m.onnx", opset=3)
    with pytest.raises(TypeError, match="example_input"):
        export_onnx(model, [], tmp_path / "m.onnx")
    converted = adasparse.to_sparse_inference(copy.deepcopy(model), min_sparsity=0.0)
    with pytest.raises(ValueError, match="before adasparse.to_sparse_inference"):
        export_onnx(converted, torch.randn(1, 8), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
