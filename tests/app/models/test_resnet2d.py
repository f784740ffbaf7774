"""ResNet2d: shapes, layer structure, parameter count, pruning selection, training and eval passes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import adasparse
from adasparse.app.models import create_model
from adasparse.app.models.resnet2d import BasicBlock2d, ResNet2d

RESNET2D_DIGITS_PARAMS = 77_754


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _expected_count(widths: tuple[int, ...], in_channels: int, num_classes: int) -> int:
    """The parameter count from the architecture, written out by hand (bias-free convs, BN weight and bias)."""

    def block(cin: int, cout: int, stride: int) -> int:
        shortcut = cin * cout + 2 * cout if cin != cout or stride != 1 else 0
        return cin * cout * 9 + 2 * cout + cout * cout * 9 + 2 * cout + shortcut

    total = in_channels * widths[0] * 9 + 2 * widths[0]
    cin = widths[0]
    for index, width in enumerate(widths):
        total += block(cin, width, 1 if index == 0 else 2)
        cin = width
    return total + cin * num_classes + num_classes


def test_default_output_shape_and_count() -> None:
    model = ResNet2d()
    assert model(torch.randn(4, 1, 8, 8)).shape == (4, 10)
    assert _count(model) == RESNET2D_DIGITS_PARAMS == _expected_count((16, 32, 64), 1, 10)
    assert f"{RESNET2D_DIGITS_PARAMS:,}" in (ResNet2d.__doc__ or "")


@pytest.mark.parametrize(("widths", "cin", "classes"), [((8,), 3, 3), ((8, 16), 1, 5), ((4, 4, 8, 16), 3, 7)])
def test_count_matches_formula(widths: tuple[int, ...], cin: int, classes: int) -> None:
    model = ResNet2d((cin, 8, 8), classes, widths=widths)
    assert _count(model) == _expected_count(widths, cin, classes)
    assert model(torch.randn(2, cin, 8, 8)).shape == (2, classes)


def test_layer_structure() -> None:
    model = ResNet2d()
    stem = model.stem[0]
    assert (stem.in_channels, stem.out_channels, stem.kernel_size, stem.padding) == (1, 16, (3, 3), (1, 1))
    assert isinstance(model.stem[1], nn.BatchNorm2d)
    assert all(isinstance(b, BasicBlock2d) for b in model.blocks)
    shapes = [(b.conv1.in_channels, b.conv2.out_channels, b.conv1.stride) for b in model.blocks]
    assert shapes == [(16, 16, (1, 1)), (16, 32, (2, 2)), (32, 64, (2, 2))]
    assert isinstance(model.blocks[0].shortcut, nn.Identity)
    for block in list(model.blocks)[1:]:
        conv, norm = block.shortcut
        assert isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)
        assert conv.kernel_size == (1, 1) and conv.stride == block.conv1.stride
    assert all(c.bias is None for c in model.modules() if isinstance(c, nn.Conv2d))
    assert (model.head.in_features, model.head.out_features) == (64, 10)
    assert model.blocks(model.stem(torch.randn(2, 1, 8, 8))).shape == (2, 64, 2, 2)


@pytest.mark.parametrize("input_shape", [(3, 16, 16), (1, 9, 6), (1, 1, 1)])
def test_other_sizes(input_shape: tuple[int, int, int]) -> None:
    model = ResNet2d(input_shape, 3, widths=(8, 16))
    assert model(torch.randn(2, *input_shape)).shape == (2, 3)


def test_registry_name() -> None:
    model = create_model("resnet2d", num_classes=6, input_shape=(1, 8, 8))
    assert type(model) is ResNet2d
    assert model.head.out_features == 6


def test_sparsify_selects_the_large_convs() -> None:
    model = adasparse.sparsify(ResNet2d(), target=0.9)
    names = [t.name for t in adasparse.pruned_tensors(model)]
    assert names == [
        "blocks.0.conv1.weight",
        "blocks.0.conv2.weight",
        "blocks.1.conv1.weight",
        "blocks.1.conv2.weight",
        "blocks.2.conv1.weight",
        "blocks.2.conv2.weight",
        "blocks.2.shortcut.0.weight",
    ]  # the stem (144), the 16->32 shortcut (512) and the head (640) stay dense
    pruned = sum(t.raw.numel() for t in adasparse.pruned_tensors(model))
    assert pruned / RESNET2D_DIGITS_PARAMS > 0.97
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_forward_backward(training: bool, sparse: bool) -> None:
    torch.manual_seed(0)
    model = ResNet2d()
    if sparse:
        adasparse.sparsify(model, target=0.9)
    model.train(training)
    running = model.blocks[2].bn2.running_mean.clone()
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    out = model(x)
    assert out.shape == (8, 10) and torch.isfinite(out).all()
    nn.functional.cross_entropy(out, y).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert torch.equal(model.blocks[2].bn2.running_mean, running) != training  # BN statistics move only in training


def test_deterministic_with_seed() -> None:
    torch.manual_seed(3)
    first = ResNet2d().state_dict()
    torch.manual_seed(3)
    second = ResNet2d().state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="channels, height, width"):
        ResNet2d(input_shape=(1, 40))
    with pytest.raises(ValueError, match="width"):
        ResNet2d(widths=(16, 0))
