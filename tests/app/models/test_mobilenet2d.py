"""MobileNet2d: shapes, layer structure (depthwise convolutions, residual additions), parameter count."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adasparse.app.models import create_model
from adasparse.app.models.mobilenet2d import BLOCKS, InvertedResidual, MobileNet2d


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _expected_count(in_channels: int, stem: int, blocks: tuple[tuple[int, int, int], ...], classes: int) -> int:
    """The parameter count written out by hand (bias-free convs, BN weight and bias)."""
    total = in_channels * stem * 9 + 2 * stem
    cin = stem
    for expansion, width, _ in blocks:
        hidden = cin * expansion
        if expansion != 1:
            total += cin * hidden + 2 * hidden
        total += hidden * 9 + 2 * hidden + hidden * width + 2 * width
        cin = width
    return total + cin * classes + classes


def test_default_output_shape_and_parameter_count() -> None:
    model = create_model("mobilenet2d", num_classes=10, input_shape=(1, 8, 8))
    assert isinstance(model, MobileNet2d)
    assert model(torch.randn(4, 1, 8, 8)).shape == (4, 10)
    assert _count(model) == 29_370 == _expected_count(1, 16, BLOCKS, 10)  # quoted in the class docstring


def test_blocks_expand_filter_depthwise_and_project() -> None:
    model = MobileNet2d()
    assert [type(m) for m in model.stem] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU6]
    assert all(isinstance(block, InvertedResidual) for block in model.blocks)
    cin = 16
    for block, (expansion, width, stride) in zip(model.blocks, BLOCKS):
        expand, depthwise, project = (m for m in block.layers if isinstance(m, nn.Conv2d))
        hidden = cin * expansion
        assert (expand.in_channels, expand.out_channels, expand.kernel_size) == (cin, hidden, (1, 1))
        assert (depthwise.in_channels, depthwise.out_channels, depthwise.groups) == (hidden, hidden, hidden)
        assert (depthwise.kernel_size, depthwise.stride) == ((3, 3), (stride, stride))
        assert (project.in_channels, project.out_channels, project.kernel_size) == (hidden, width, (1, 1))
        assert [type(m) for m in block.layers][-1] is nn.BatchNorm2d  # linear bottleneck: no activation
        assert block.residual == (stride == 1 and cin == width)
        cin = width
    assert [block.residual for block in model.blocks] == [True, False, True, False, True]
    assert (model.head.in_features, model.head.out_features) == (32, 10)


def test_the_residual_adds_the_input() -> None:
    torch.manual_seed(0)
    block = InvertedResidual(8, 8, 1, 2).eval()
    x = torch.randn(2, 8, 4, 4)
    with torch.no_grad():
        assert torch.allclose(block(x), x + block.layers(x))
    assert InvertedResidual(8, 8, 2, 2)(x).shape == (2, 8, 2, 2)


def test_expansion_one_has_no_expand_conv() -> None:
    model = MobileNet2d(input_shape=(3, 12, 10), num_classes=4, stem=8, blocks=((1, 8, 1), (6, 12, 2)))
    first = [m for m in model.blocks[0].layers if isinstance(m, nn.Conv2d)]
    assert len(first) == 2 and first[0].groups == 8
    assert _count(model) == _expected_count(3, 8, ((1, 8, 1), (6, 12, 2)), 4)
    assert model(torch.randn(2, 3, 12, 10)).shape == (2, 4)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"input_shape": (1, 40)}, "channels, height, width"),
        ({"stem": 0}, "positive stem width"),
        ({"blocks": ()}, "at least one block"),
        ({"blocks": ((4, 16, 3),)}, "stride 1 or 2"),
        ({"blocks": ((0, 16, 1),)}, "expansion of at least 1"),
    ],
)
def test_bad_arguments_raise(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MobileNet2d(**options)
