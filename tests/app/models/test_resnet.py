"""ResNet1d and ResNet2d (one implementation, models/resnet.py): shapes, layer structure, parameter count, pruning
selection, training and eval passes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

import adasparse
from adasparse.app.models import create_model
from adasparse.app.models.resnet import ResidualBlock, ResNet
from adasparse.app.models.resnet1d import BasicBlock1d, ResNet1d
from adasparse.app.models.resnet2d import BasicBlock2d, ResNet2d


@dataclass(frozen=True)
class Case:
    """What differs between the 1-d and the 2-d network."""

    name: str
    model: type[ResNet]
    block: type[ResidualBlock]
    conv: type[nn.Module]
    norm: type[nn.Module]
    input_shape: tuple[int, ...]
    params: int
    """Parameters with the defaults (quoted in the class docstring)."""
    widths: tuple[int, ...]
    stem: tuple[Any, ...]
    """``(in_channels, out_channels, kernel_size, padding)`` of the stem conv."""
    blocks: list[tuple[Any, ...]]
    """``(conv1 in_channels, conv2 out_channels, conv1 stride)`` of each block."""
    features: tuple[int, ...]
    """The shape of the last block's output for a batch of 2."""
    pruned: list[str]
    """The tensors ``sparsify`` selects with its defaults."""
    pruned_fraction: float
    """A lower bound on the fraction of the parameters in those tensors."""
    wrong_shape: tuple[int, ...]
    shape_message: str
    bad_widths: tuple[int, ...]

    @property
    def spatial(self) -> tuple[int, ...]:
        return self.input_shape[1:]


CASES = [
    Case(
        "resnet1d",
        ResNet1d,
        BasicBlock1d,
        nn.Conv1d,
        nn.BatchNorm1d,
        (1, 40),
        111_338,
        (32, 64, 128),
        (1, 32, (5,), (2,)),
        [(32, 32, (1,)), (32, 64, (2,)), (64, 128, (2,))],
        (2, 128, 10),
        [
            "blocks.0.conv1.weight",
            "blocks.0.conv2.weight",
            "blocks.1.conv1.weight",
            "blocks.1.conv2.weight",
            "blocks.1.shortcut.0.weight",
            "blocks.2.conv1.weight",
            "blocks.2.conv2.weight",
            "blocks.2.shortcut.0.weight",
            "head.weight",
        ],
        0.98,
        (1, 8, 8),
        "channels, length",
        (),
    ),
    Case(
        "resnet2d",
        ResNet2d,
        BasicBlock2d,
        nn.Conv2d,
        nn.BatchNorm2d,
        (1, 8, 8),
        77_754,
        (16, 32, 64),
        (1, 16, (3, 3), (1, 1)),
        [(16, 16, (1, 1)), (16, 32, (2, 2)), (32, 64, (2, 2))],
        (2, 64, 2, 2),
        [
            "blocks.0.conv1.weight",
            "blocks.0.conv2.weight",
            "blocks.1.conv1.weight",
            "blocks.1.conv2.weight",
            "blocks.2.conv1.weight",
            "blocks.2.conv2.weight",
            "blocks.2.shortcut.0.weight",
        ],  # the stem (144), the 16->32 shortcut (512) and the head (640) stay dense
        0.97,
        (1, 40),
        "channels, height, width",
        (16, 0),
    ),
]

by_case = pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _expected_count(case: Case, widths: tuple[int, ...], in_channels: int, num_classes: int) -> int:
    """The parameter count from the architecture, written out by hand (bias-free convs, BN weight and bias)."""
    kernel, stem = 3 ** len(case.spatial), math.prod(case.stem[2])

    def block(cin: int, cout: int, stride: int) -> int:
        shortcut = cin * cout + 2 * cout if cin != cout or stride != 1 else 0
        return cin * cout * kernel + 2 * cout + cout * cout * kernel + 2 * cout + shortcut

    total = in_channels * widths[0] * stem + 2 * widths[0]
    cin = widths[0]
    for index, width in enumerate(widths):
        total += block(cin, width, 1 if index == 0 else 2)
        cin = width
    return total + cin * num_classes + num_classes


@by_case
def test_default_output_shape_and_count(case: Case) -> None:
    model = case.model()
    assert model(torch.randn(4, *case.input_shape)).shape == (4, 10)
    assert _count(model) == case.params == _expected_count(case, case.widths, 1, 10)
    assert f"{case.params:,}" in (case.model.__doc__ or "")


@by_case
@pytest.mark.parametrize(
    ("widths", "cin", "classes"), [((8,), 2, 3), ((8,), 3, 3), ((8, 16), 1, 5), ((4, 4, 8, 16), 3, 7)]
)
def test_count_matches_formula(case: Case, widths: tuple[int, ...], cin: int, classes: int) -> None:
    model = case.model((cin, *case.spatial), classes, widths=widths)
    assert _count(model) == _expected_count(case, widths, cin, classes)
    assert model(torch.randn(2, cin, *case.spatial)).shape == (2, classes)


@by_case
def test_layer_structure(case: Case) -> None:
    model = case.model()
    stem = model.stem[0]
    assert (stem.in_channels, stem.out_channels, stem.kernel_size, stem.padding) == case.stem
    assert isinstance(model.stem[1], case.norm)
    assert all(isinstance(b, case.block) and isinstance(b, ResidualBlock) for b in model.blocks)
    shapes = [(b.conv1.in_channels, b.conv2.out_channels, b.conv1.stride) for b in model.blocks]
    assert shapes == case.blocks
    assert isinstance(model.blocks[0].shortcut, nn.Identity)
    ones = (1,) * len(case.spatial)
    for block in list(model.blocks)[1:]:
        conv, norm = block.shortcut
        assert isinstance(conv, case.conv) and isinstance(norm, case.norm)
        assert conv.kernel_size == ones and conv.stride == block.conv1.stride
    assert all(c.bias is None for c in model.modules() if isinstance(c, case.conv))
    assert (model.head.in_features, model.head.out_features) == (case.widths[-1], 10)
    assert model.blocks(model.stem(torch.randn(2, *case.input_shape))).shape == case.features


@pytest.mark.parametrize(
    ("case", "input_shape"),
    [(CASES[0], (2, length)) for length in (40, 64, 7, 1)]
    + [(CASES[1], s) for s in ((3, 16, 16), (1, 9, 6), (1, 1, 1))],
    ids=lambda value: value.name if isinstance(value, Case) else "x".join(map(str, value)),
)
def test_other_input_sizes(case: Case, input_shape: tuple[int, ...]) -> None:
    model = case.model(input_shape, 3, widths=(8, 16))
    assert model(torch.randn(2, *input_shape)).shape == (2, 3)


@by_case
def test_registry_name(case: Case) -> None:
    model = create_model(case.name, num_classes=6, input_shape=case.input_shape)
    assert type(model) is case.model
    assert model.head.out_features == 6


@by_case
def test_sparsify_selection(case: Case) -> None:
    model = adasparse.sparsify(case.model(), target=0.9)
    names = [t.name for t in adasparse.pruned_tensors(model)]
    assert names == case.pruned
    pruned = sum(t.raw.numel() for t in adasparse.pruned_tensors(model))
    assert pruned / case.params > case.pruned_fraction
    assert model(torch.randn(3, *case.input_shape)).shape == (3, 10)


@by_case
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_forward_backward(case: Case, training: bool, sparse: bool) -> None:
    torch.manual_seed(0)
    model = case.model()
    if sparse:
        adasparse.sparsify(model, target=0.9)
    model.train(training)
    running = model.blocks[2].bn2.running_mean.clone()
    x, y = torch.randn(8, *case.input_shape), torch.randint(0, 10, (8,))
    out = model(x)
    assert out.shape == (8, 10) and torch.isfinite(out).all()
    nn.functional.cross_entropy(out, y).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert torch.equal(model.blocks[2].bn2.running_mean, running) != training  # BN statistics move only in training


@by_case
def test_deterministic_with_seed(case: Case) -> None:
    torch.manual_seed(3)
    first = case.model().state_dict()
    torch.manual_seed(3)
    second = case.model().state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


@by_case
def test_bad_arguments_raise(case: Case) -> None:
    with pytest.raises(ValueError, match=f"{case.model.__name__} needs input_shape \\({case.shape_message}\\)"):
        case.model(input_shape=case.wrong_shape)
    with pytest.raises(ValueError, match="width"):
        case.model(widths=case.bad_widths)
