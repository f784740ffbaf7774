"""ResNet1d: shapes, layer structure, parameter count, pruning selection, training and eval passes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import adasparse
from adasparse.app.models import create_model
from adasparse.app.models.resnet1d import BasicBlock1d, ResNet1d

RESNET1D_MNIST1D_PARAMS = 111_338


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _expected_count(widths: tuple[int, ...], in_channels: int, num_classes: int) -> int:
    """The parameter count from the architecture, written out by hand (bias-free convs, BN weight and bias)."""

    def block(cin: int, cout: int, stride: int) -> int:
        shortcut = cin * cout + 2 * cout if cin != cout or stride != 1 else 0
        return cin * cout * 3 + 2 * cout + cout * cout * 3 + 2 * cout + shortcut

    total = in_channels * widths[0] * 5 + 2 * widths[0]
    cin = widths[0]
    for index, width in enumerate(widths):
        total += block(cin, width, 1 if index == 0 else 2)
        cin = width
    return total + cin * num_classes + num_classes


def test_default_output_shape_and_count() -> None:
    model = ResNet1d()
    assert model(torch.randn(4, 1, 40)).shape == (4, 10)
    assert _count(model) == RESNET1D_MNIST1D_PARAMS == _expected_count((32, 64, 128), 1, 10)
    assert f"{RESNET1D_MNIST1D_PARAMS:,}" in (ResNet1d.__doc__ or "")


@pytest.mark.parametrize(("widths", "cin", "classes"), [((8,), 2, 3), ((8, 16), 1, 5), ((4, 4, 8, 16), 3, 7)])
def test_count_matches_formula(widths: tuple[int, ...], cin: int, classes: int) -> None:
    model = ResNet1d((cin, 40), classes, widths=widths)
    assert _count(model) == _expected_count(widths, cin, classes)
    assert model(torch.randn(2, cin, 40)).shape == (2, classes)


def test_layer_structure() -> None:
    model = ResNet1d()
    stem = model.stem[0]
    assert (stem.in_channels, stem.out_channels, stem.kernel_size, stem.padding) == (1, 32, (5,), (2,))
    assert isinstance(model.stem[1], nn.BatchNorm1d)
    assert all(isinstance(b, BasicBlock1d) for b in model.blocks)
    shapes = [(b.conv1.in_channels, b.conv2.out_channels, b.conv1.stride) for b in model.blocks]
    assert shapes == [(32, 32, (1,)), (32, 64, (2,)), (64, 128, (2,))]
    assert isinstance(model.blocks[0].shortcut, nn.Identity)
    for block in list(model.blocks)[1:]:
        conv, norm = block.shortcut
        assert isinstance(conv, nn.Conv1d) and isinstance(norm, nn.BatchNorm1d)
        assert conv.kernel_size == (1,) and conv.stride == block.conv1.stride
    assert all(c.bias is None for c in model.modules() if isinstance(c, nn.Conv1d))
    assert (model.head.in_features, model.head.out_features) == (128, 10)
    assert model.blocks(model.stem(torch.randn(2, 1, 40))).shape == (2, 128, 10)


@pytest.mark.parametrize("length", [40, 64, 7, 1])
def test_other_lengths(length: int) -> None:
    model = ResNet1d((2, length), 3, widths=(8, 16))
    assert model(torch.randn(2, 2, length)).shape == (2, 3)


def test_registry_name() -> None:
    model = create_model("resnet1d", num_classes=6, input_shape=(1, 40))
    assert type(model) is ResNet1d
    assert model.head.out_features == 6


def test_sparsify_selects_every_conv_but_the_stem() -> None:
    model = adasparse.sparsify(ResNet1d(), target=0.9)
    names = [t.name for t in adasparse.pruned_tensors(model)]
    assert names == [
        "blocks.0.conv1.weight",
        "blocks.0.conv2.weight",
        "blocks.1.conv1.weight",
        "blocks.1.conv2.weight",
        "blocks.1.shortcut.0.weight",
        "blocks.2.conv1.weight",
        "blocks.2.conv2.weight",
        "blocks.2.shortcut.0.weight",
        "head.weight",
    ]
    pruned = sum(t.raw.numel() for t in adasparse.pruned_tensors(model))
    assert pruned / RESNET1D_MNIST1D_PARAMS > 0.98
    assert model(torch.randn(3, 1, 40)).shape == (3, 10)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_forward_backward(training: bool, sparse: bool) -> None:
    torch.manual_seed(0)
    model = ResNet1d()
    if sparse:
        adasparse.sparsify(model, target=0.9)
    model.train(training)
    running = model.blocks[2].bn2.running_mean.clone()
    x, y = torch.randn(8, 1, 40), torch.randint(0, 10, (8,))
    out = model(x)
    assert out.shape == (8, 10) and torch.isfinite(out).all()
    nn.functional.cross_entropy(out, y).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert torch.equal(model.blocks[2].bn2.running_mean, running) != training  # BN statistics move only in training


def test_deterministic_with_seed() -> None:
    torch.manual_seed(3)
    first = ResNet1d().state_dict()
    torch.manual_seed(3)
    second = ResNet1d().state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="channels, length"):
        ResNet1d(input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="width"):
        ResNet1d(widths=())
