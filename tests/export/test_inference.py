"""Sparse CPU inference: SparseLinear equals dense, replacement follows the break-even rule, no training."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

import adasparse
from adasparse.app.models import create_model
from adasparse.export.inference import BREAK_EVEN, SparseLinear, break_even_sparsity, to_sparse_inference

from ..zoo import ScaledLinear


def _pruned_linear(in_features: int, out_features: int, sparsity: float, bias: bool = True) -> nn.Linear:
    layer = nn.Linear(in_features, out_features, bias=bias)
    with torch.no_grad():
        zeros = torch.randperm(layer.weight.numel())[: round(sparsity * layer.weight.numel())]
        layer.weight.view(-1)[zeros] = 0.0
    return layer.eval()


@pytest.mark.parametrize(
    "shape", [(1, 96), (32, 96), (4, 7, 96), (96,), (0, 96)], ids=["b1", "b32", "3d", "1d", "empty"]
)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sparse_linear_equals_dense(shape: tuple[int, ...], bias: bool, dtype: torch.dtype) -> None:
    dense = _pruned_linear(96, 40, 0.9, bias=bias).to(dtype)
    sparse = SparseLinear.from_linear(dense)
    x = torch.randn(shape, dtype=dtype)
    with torch.no_grad():
        out = sparse(x)
        torch.testing.assert_close(out, dense(x))
    assert out.shape == (*shape[:-1], 40)
    assert sparse.nnz == int(torch.count_nonzero(dense.weight))
    assert sparse.sparsity == pytest.approx(0.9, abs=1e-3)
    assert sparse.crow_indices.dtype == sparse.col_indices.dtype == torch.int32
    assert sparse.weight.layout == torch.sparse_csr


def test_sparse_linear_copies_pickles_and_converts_back() -> None:
    dense = _pruned_linear(64, 32, 0.8)
    sparse = SparseLinear.from_linear(dense)
    x = torch.randn(3, 64)
    with torch.no_grad():
        for clone in (copy.deepcopy(sparse), pickle.loads(pickle.dumps(sparse))):
            torch.testing.assert_close(clone(x), dense(x))
        restored = SparseLinear.from_linear(nn.Linear(64, 32))
        restored.load_state_dict(sparse.state_dict())
        torch.testing.assert_close(restored(x), dense(x))
    back = sparse.to_linear()
    assert torch.equal(back.weight, dense.weight) and torch.equal(back.bias, dense.bias)
    assert f"sparsity={sparse.sparsity:.4f}" in repr(sparse) and abs(sparse.sparsity - 0.8) < 1e-3


def test_sparse_linear_refuses_training_and_gradients() -> None:
    sparse = SparseLinear.from_linear(_pruned_linear(16, 8, 0.5))
    assert not sparse.training and not list(sparse.parameters())
    x = torch.randn(2, 16, requires_grad=True)
    with pytest.raises(RuntimeError, match="inference-only.*input requires grad.*torch.no_grad"):
        sparse(x)
    with torch.no_grad():
        sparse(x)
    with torch.inference_mode():
        sparse(torch.randn(2, 16))
    sparse(torch.randn(2, 16))  # grad mode on, nothing requires grad: no graph is built either way
    sparse.train()
    with pytest.raises(RuntimeError, match="inference-only.*training mode.*model.eval"), torch.no_grad():
        sparse(torch.randn(2, 16))


def test_sparse_linear_input_errors() -> None:
    sparse = SparseLinear.from_linear(_pruned_linear(16, 8, 0.5))
    with torch.no_grad():
        with pytest.raises(ValueError, match=r"expects inputs \(\.\.\., 16\), got \(2, 15\)"):
            sparse(torch.randn(2, 15))
        with pytest.raises(ValueError, match="float32 weights, got a torch.float64 input"):
            sparse(torch.randn(2, 16, dtype=torch.float64))
    with pytest.raises(ValueError, match="float32 or float64"):
        SparseLinear(torch.zeros(4, 4, dtype=torch.float16))
    with pytest.raises(ValueError, match="dense 2-D"):
        SparseLinear(torch.zeros(4))
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\)"):
        SparseLinear(torch.zeros(4, 4), torch.zeros(3))
    with pytest.raises(TypeError, match="needs an nn.Linear"):
        SparseLinear.from_linear(nn.Conv1d(2, 2, 1))  # type: ignore[arg-type]


def test_break_even_matches_the_table_at_its_points_and_interpolates_between() -> None:
    for side, row in BREAK_EVEN.items():
        for batch, value in row.items():
            assert break_even_sparsity(side, side, batch) == value
        expected_any = None if None in row.values() else max(v for v in row.values() if v is not None)
        assert break_even_sparsity(side, side, None) == expected_any
    for batch in (1, 32):
        low, high = BREAK_EVEN[1024][batch], BREAK_EVEN[2048][batch]
        between = break_even_sparsity(1448, 1448, batch)
        if low is not None and high is not None:
            assert between is not None and min(low, high) - 1e-9 <= between <= max(low, high) + 1e-9
    assert break_even_sparsity(2048, 512, 32) == BREAK_EVEN[1024][32]  # equivalent square side
    assert break_even_sparsity(8192, 8192, 32) == BREAK_EVEN[4096][32]  # clamped at the table's edges
    assert break_even_sparsity(1024, 1024, 1000) == BREAK_EVEN[1024][256]
    with pytest.raises(ValueError, match="out_features"):
        break_even_sparsity(0, 5)
    with pytest.raises(ValueError, match="batch_size"):
        break_even_sparsity(5, 5, batch_size=0)


def _layers(model: nn.Module) -> dict[str, type]:
    return {name: type(module) for name, module in model.named_modules() if name}


def test_replaced_only_above_the_break_even() -> None:
    batch = 32
    threshold = break_even_sparsity(1024, 1024, batch)
    sparsities = [0.3, 0.99, 0.6, 0.97]
    model = nn.Sequential(*[_pruned_linear(1024, 1024, s) for s in sparsities], nn.Linear(1024, 10))
    reference = copy.deepcopy(model)
    result = to_sparse_inference(model, batch_size_hint=batch)
    assert result is model
    for index, sparsity in enumerate(sparsities):
        expected = SparseLinear if threshold is not None and sparsity >= threshold else nn.Linear
        assert type(model[index]) is expected, (index, sparsity, threshold)
    x = torch.randn(batch, 1024)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-4)


def test_min_sparsity_overrides_the_rule_and_convs_stay_dense() -> None:
    model = create_model("cnn2d", num_classes=10, input_shape=(1, 8, 8))
    adasparse.sparsify(model, target=0.9, trainable=False, min_params=100)
    reference = adasparse.desparsify(copy.deepcopy(model)).eval()
    to_sparse_inference(model, min_sparsity=0.5)
    assert not adasparse.pruned_tensors(model) and not model.training
    kinds = _layers(model)
    assert kinds["features.0"] is nn.Conv2d and kinds["features.3"] is nn.Conv2d
    assert kinds["classifier.1"] is SparseLinear and kinds["classifier.3"] is SparseLinear
    for shape in ((1, 1, 8, 8), (32, 1, 8, 8)):
        x = torch.randn(shape)
        with torch.no_grad():
            torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-5)


def test_sparsified_model_input_uses_the_effective_weights() -> None:
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    adasparse.sparsify(model, target=0.9, trainable=False)
    x = torch.randn(3, 5, 64)
    with torch.no_grad():
        expected = model.eval()(x)
    to_sparse_inference(model, min_sparsity=0.0)
    assert isinstance(model[0], SparseLinear) and isinstance(model[2], SparseLinear)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model(x[0, :1]), expected[0, :1], rtol=1e-5, atol=1e-6)


def test_only_plain_linear_modules_are_replaced() -> None:
    shared = _pruned_linear(32, 32, 0.9)
    model = nn.ModuleDict(
        {
            "subclass": ScaledLinear(32, 32),
            "attention": nn.MultiheadAttention(32, 4),
            "first": shared,
            "again": shared,
            "float16": _pruned_linear(32, 32, 0.9).half(),
        }
    )
    to_sparse_inference(model, min_sparsity=0.0)
    assert type(model["subclass"]) is ScaledLinear
    assert type(model["attention"].out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear
    assert isinstance(model["first"], SparseLinear) and model["first"] is model["again"]
    assert type(model["float16"]) is nn.Linear


def test_root_linear_and_argument_errors() -> None:
    layer = _pruned_linear(32, 16, 0.9)
    assert isinstance(to_sparse_inference(copy.deepcopy(layer), min_sparsity=0.5), SparseLinear)
    assert to_sparse_inference(layer, min_sparsity=0.95) is layer
    with pytest.raises(ValueError, match="min_sparsity"):
        to_sparse_inference(layer, min_sparsity=1.5)
    with pytest.raises(ValueError, match="batch_size_hint"):
        to_sparse_inference(layer, batch_size_hint=0)
    with pytest.raises(TypeError, match="nn.Module"):
        to_sparse_inference("model")  # type: ignore[arg-type]


def test_converted_model_refuses_training() -> None:
    model = to_sparse_inference(nn.Sequential(_pruned_linear(32, 16, 0.9), nn.ReLU()), min_sparsity=0.5)
    model.train()
    with pytest.raises(RuntimeError, match="training mode"), torch.no_grad():
        model(torch.randn(2, 32))
    model.eval()
    x = torch.randn(2, 32, requires_grad=True)
    with pytest.raises(RuntimeError, match="requires grad"):
        model(x).sum().backward()
