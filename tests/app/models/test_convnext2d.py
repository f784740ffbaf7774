"""ConvNeXt2d: shapes, layer structure (depthwise 7x7, channel LayerNorm, per-pixel MLP, residual), parameter count."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adasparse.app.models import create_model
from adasparse.app.models.convnext2d import STAGES, ConvNeXt2d, ConvNeXtBlock, LayerNorm2d


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _expected_count(in_channels: int, stages: tuple[tuple[int, int], ...], classes: int) -> int:
    """The parameter count written out by hand (convs and Linear layers with biases, LayerNorm weight and bias)."""
    first = stages[0][0]
    total = in_channels * first * 9 + first + 2 * first  # stem conv, its LayerNorm
    cin = first
    for index, (width, blocks) in enumerate(stages):
        if index > 0:
            total += 2 * cin + cin * width * 4 + width  # LayerNorm, 2x2 stride-2 conv
        block = width * 49 + width + 2 * width + width * 4 * width + 4 * width + 4 * width * width + width
        total += blocks * block
        cin = width
    return total + 2 * cin + cin * classes + classes


def test_default_output_shape_and_parameter_count() -> None:
    model = create_model("convnext2d", num_classes=10, input_shape=(1, 8, 8))
    assert isinstance(model, ConvNeXt2d)
    assert model(torch.randn(4, 1, 8, 8)).shape == (4, 10)
    assert _count(model) == 102_346 == _expected_count(1, STAGES, 10)  # quoted in the class docstring


def test_stages_downsample_and_stack_blocks() -> None:
    model = ConvNeXt2d()
    assert [type(m) for m in model.stem] == [nn.Conv2d, LayerNorm2d]
    kinds = [type(m) for m in model.stages]
    assert kinds == [ConvNeXtBlock, ConvNeXtBlock, LayerNorm2d, nn.Conv2d, ConvNeXtBlock, ConvNeXtBlock]
    down = model.stages[3]
    assert (down.in_channels, down.out_channels, down.kernel_size, down.stride) == (32, 64, (2, 2), (2, 2))
    for block, width in zip([m for m in model.stages if isinstance(m, ConvNeXtBlock)], (32, 32, 64, 64)):
        assert (block.depthwise.groups, block.depthwise.kernel_size, block.depthwise.padding) == (width, (7, 7), (3, 3))
        assert (block.expand.in_features, block.expand.out_features) == (width, 4 * width)
        assert (block.project.in_features, block.project.out_features) == (4 * width, width)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert (model.head.in_features, model.head.out_features) == (64, 10)


def test_the_block_adds_its_input_and_normalises_each_pixel_over_the_channels() -> None:
    torch.manual_seed(0)
    block = ConvNeXtBlock(8).eval()
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        hidden = block.depthwise(x).permute(0, 2, 3, 1)
        expected = x + block.project(block.activation(block.expand(block.norm(hidden)))).permute(0, 3, 1, 2)
        assert torch.allclose(block(x), expected)
    norm = LayerNorm2d(8)
    out = norm(x)
    assert torch.allclose(out.mean(dim=1), torch.zeros(2, 5, 5), atol=1e-5)
    assert torch.allclose(out.var(dim=1, unbiased=False), torch.ones(2, 5, 5), atol=1e-3)


def test_other_shapes_and_stages() -> None:
    model = ConvNeXt2d(input_shape=(3, 12, 10), num_classes=4, stages=((8, 1), (12, 1), (16, 2)))
    assert _count(model) == _expected_count(3, ((8, 1), (12, 1), (16, 2)), 4)
    assert model(torch.randn(2, 3, 12, 10)).shape == (2, 4)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"input_shape": (1, 40)}, "channels, height, width"),
        ({"stages": ()}, "at least one stage"),
        ({"stages": ((0, 2),)}, "positive width and blocks"),
        ({"stages": ((8, 0),)}, "positive width and blocks"),
    ],
)
def test_bad_arguments_raise(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ConvNeXt2d(**options)


def test_bad_block_arguments_raise() -> None:
    with pytest.raises(ValueError, match="positive width and expansion"):
        ConvNeXtBlock(0)
