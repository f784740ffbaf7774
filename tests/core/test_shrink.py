"""shrink: the pruned channels leave the model physically; outputs stay the same."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import adasparse
from adasparse.app.models import create_model
from adasparse.core.shrink import shrink

from ..zoo import by_channels

pytest.importorskip("torch_pruning")


def _trained_like(name: str, shape: tuple[int, ...], seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    model, x = by_channels(name, shape, 6, seed=seed)
    model.train()
    model(x).sum().backward()  # BatchNorm statistics move away from their defaults
    return model, x


def _blank(model: nn.Module) -> nn.Module:
    """``model`` with every parameter and floating buffer zeroed: what a loaded state must fill in."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.zero_()
    return model


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("mlp", (40,)),
        ("cnn2d", (1, 8, 8)),
        ("resnet1d", (1, 40)),
        ("transformer", (1, 40)),
        ("wrn-16-2", (3, 8, 8)),
        ("mobilenet2d", (1, 8, 8)),
    ],
)
def test_the_smaller_model_computes_what_the_pruned_one_computes(name: str, shape: tuple[int, ...]) -> None:
    model, x = _trained_like(name, shape)
    model.eval()
    with torch.no_grad():
        expected = model(x)
    smaller = shrink(model, x)
    assert _count(smaller) < 0.8 * _count(model)
    assert not adasparse.pruned_tensors(smaller)
    with torch.no_grad():
        assert torch.allclose(smaller(x), expected, atol=1e-5, rtol=1e-4)
        assert torch.equal(model(x), expected)  # the original is not changed


def test_channels_leave_every_layer_that_carries_them() -> None:
    model, x = _trained_like("resnet1d", (1, 40))
    tied = next(p.layout for p in adasparse.pruned_tensors(model) if p.name == "stem.0.weight")
    kept = int(tied.current_keep().sum())
    smaller = shrink(model, x)
    assert smaller.stem[0].out_channels == kept
    assert smaller.stem[1].num_features == kept
    assert smaller.blocks[0].conv1.in_channels == kept


def test_a_model_without_unread_channels_keeps_its_size() -> None:
    torch.manual_seed(0)
    model = create_model("cnn2d", num_classes=10, input_shape=(1, 8, 8))
    x = torch.randn(2, 1, 8, 8)
    assert _count(shrink(model, x)) == _count(model)


def test_the_smaller_model_saves_and_exports() -> None:
    model, x = _trained_like("cnn2d", (1, 8, 8))
    smaller = shrink(model, x)
    buffer = io.BytesIO()
    torch.save(smaller.state_dict(), buffer)
    buffer.seek(0)
    again = _blank(shrink(model, x))
    again.load_state_dict(torch.load(buffer, weights_only=True))
    with torch.no_grad():
        assert torch.equal(again(x), smaller(x))


@pytest.mark.parametrize(("name", "shape"), [("transformer", (1, 40)), ("mobilenet2d", (1, 8, 8))])
def test_the_smaller_model_saves_as_safetensors(name: str, shape: tuple[int, ...], tmp_path) -> None:
    safetensors_torch = pytest.importorskip("safetensors.torch")
    model, x = _trained_like(name, shape)
    smaller = shrink(model, x).eval()
    assert _count(smaller) < _count(model)
    safetensors_torch.save_file(smaller.state_dict(), str(tmp_path / "small.safetensors"))
    again = _blank(shrink(model, x)).eval()
    again.load_state_dict(safetensors_torch.load_file(str(tmp_path / "small.safetensors")))
    with torch.no_grad():
        assert torch.equal(again(x), smaller(x))


def test_the_smaller_model_exports_to_onnx(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from adasparse.export.onnx_export import compare_onnx_outputs, export_onnx

    model, x = _trained_like("resnet1d", (1, 40))
    smaller = shrink(model, x)
    path = export_onnx(smaller, x, tmp_path / "small.onnx")
    assert compare_onnx_outputs(path, smaller, x) < 1e-4
