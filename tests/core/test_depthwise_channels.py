"""Channels through depthwise convolutions (mobilenet2d): a depthwise conv is pruned with the conv that feeds it,
residual-tied projections share one set, and training with the Pruner, finishing and shrinking keep the outputs
and the predicted cost exact."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import adasparse
from adasparse.app.models import create_model
from adasparse.app.models.mobilenet2d import MobileNet2d
from adasparse.core.channel_sets import ChannelSet
from adasparse.core.flops import layer_macs
from adasparse.core.sparsify import sparsify
from tests.loops import train_with_pruner

pytest.importorskip("torch_pruning")


pytestmark = pytest.mark.usefixtures("one_thread")


def _sets(model: nn.Module) -> dict[frozenset[str], ChannelSet]:
    layouts = {id(p.layout): p.layout for p in adasparse.pruned_tensors(model)}
    return {frozenset(s.names): s for s in layouts.values()}


def _sparsified(model: nn.Module, x: torch.Tensor, r: float = 1.0) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sparsify(model, init_threshold=r, min_params=100, granularity="channel", example_input=x)


def test_a_depthwise_conv_is_pruned_with_the_expand_conv_and_projections_are_tied_by_the_residuals() -> None:
    torch.manual_seed(0)
    model = create_model("mobilenet2d", num_classes=10, input_shape=(1, 8, 8))
    sets = _sets(_sparsified(model, torch.randn(4, 1, 8, 8)))
    tied = [
        {"stem.0", "blocks.0.layers.6"},  # stem + block 0 (stride 1, 16 -> 16)
        {"blocks.1.layers.6", "blocks.2.layers.6"},  # block 1 (16 -> 24, stride 2) + block 2 (24 -> 24)
        {"blocks.3.layers.6", "blocks.4.layers.6"},
    ]
    expanded = [{f"blocks.{b}.layers.0", f"blocks.{b}.layers.3"} for b in range(5)]
    assert set(sets) == {frozenset(names) for names in tied + expanded}
    for block in range(5):
        hidden = sets[frozenset(expanded[block])]
        depthwise = model.blocks[block].layers[3]
        assert depthwise.groups == depthwise.in_channels == hidden.channels
        assert [c.name for c in hidden.consumers] == [f"blocks.{block}.layers.6"]  # not the depthwise conv
        assert sorted(name for name, _ in hidden.companions) == [f"blocks.{block}.layers.1", f"blocks.{block}.layers.4"]
        assert depthwise.weight_threshold is model.blocks[block].layers[0].weight_threshold
    last = sets[frozenset(tied[2])]
    assert sorted(c.name for c in last.consumers) == ["blocks.4.layers.0", "head"]


def test_a_depthwise_conv_reading_a_residual_stream_joins_its_set() -> None:
    """Expansion 1 (MobileNetV2's first block): the depthwise conv reads the stem directly."""
    torch.manual_seed(0)
    model = MobileNet2d(blocks=((1, 16, 1), (4, 24, 2)))
    x = torch.randn(4, 1, 8, 8)
    sets = _sets(_sparsified(model, x))
    assert frozenset({"stem.0", "blocks.0.layers.0", "blocks.0.layers.3"}) in sets
    model.train()
    model(x).sum().backward()
    model.eval()
    with torch.no_grad():
        expected = model(x)
    smaller = adasparse.shrink(model, x)
    assert smaller.stem[0].out_channels == smaller.blocks[0].layers[0].groups < 16
    with torch.no_grad():
        assert torch.allclose(smaller(x), expected, atol=1e-5, rtol=1e-4)


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 1, 8, 8, generator=generator)
    y = (x[:, 0, :4].sum(dim=(1, 2)) > x[:, 0, 4:].sum(dim=(1, 2))).long()
    return x, y


def _pruned_rows(module: nn.Module) -> torch.Tensor:
    return module.weight.detach().flatten(1).abs().sum(dim=1) == 0


@pytest.mark.parametrize("target", [0.5, 0.75])
def test_training_finishing_and_shrinking_keep_outputs_and_cost(target: float) -> None:
    torch.manual_seed(0)
    model = create_model("mobilenet2d", num_classes=2, input_shape=(1, 8, 8))
    x, y = _data()
    example = x[:4]
    dense_macs = sum(layer_macs(model, example, min_params=0).values())
    dense_params = {name: p.numel() for name, p in model.named_parameters() if p.dim() > 1}
    steps = 40
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = adasparse.Pruner(
            model, target, steps, granularity="channel", budget="flops", example_input=example, min_params=100
        )
    cost = adasparse.pruned_tensors(model)[0].layout.cost
    optimizer = torch.optim.AdamW(pruner.param_groups(lr=3e-3))
    train_with_pruner(model, pruner, optimizer, x, y, steps)
    plain = pruner.finish()
    assert pruner.result is not None and pruner.result.reached
    fractions = [int(_pruned_rows(s.members[0][1]).sum()) / s.channels for s in cost.channel_sets]
    assert all(fraction < 1.0 for fraction in fractions)
    for channel_set in cost.channel_sets:  # every member (the depthwise conv too) lost the same channels
        rows = [_pruned_rows(module) for _, module, _ in channel_set.members]
        assert all(torch.equal(row, rows[0]) for row in rows)
    smaller = adasparse.shrink(plain, example)
    plain.eval()
    with torch.no_grad():
        assert torch.allclose(smaller(x), plain(x), atol=1e-5, rtol=1e-4)
    for block in smaller.blocks:
        depthwise = block.layers[3]
        assert depthwise.groups == depthwise.in_channels == depthwise.out_channels == block.layers[0].out_channels
    macs = sum(layer_macs(smaller, example, min_params=0).values())
    assert cost.sparsity(fractions, "flops") == pytest.approx(1.0 - macs / dense_macs, abs=1e-9)
    assert pruner.result.sparsity == pytest.approx(1.0 - macs / dense_macs, abs=1e-9)
    small_params = sum(p.numel() for name, p in smaller.named_parameters() if name in dense_params)
    assert cost.sparsity(fractions, "params") == pytest.approx(
        1.0 - small_params / sum(dense_params.values()), abs=1e-9
    )
