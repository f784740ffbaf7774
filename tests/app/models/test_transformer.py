"""Transformer1d: shapes, layer structure, parameter count, pruning selection, training and eval passes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import adasparse
from adasparse.app.models import create_model
from adasparse.app.models.transformer import EncoderBlock, Transformer1d

TRANSFORMER_MNIST1D_PARAMS = 69_386


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _expected_count(channels: int, tokens: int, d: int, depth: int, ratio: int, patch: int, num_classes: int) -> int:
    """The parameter count from the architecture, written out by hand."""
    embed = channels * d * patch + d + tokens * d
    attention = 3 * d * d + 3 * d + d * d + d
    mlp = d * ratio * d + ratio * d + ratio * d * d + d
    block = 2 * d + attention + 2 * d + mlp
    return embed + depth * block + 2 * d + d * num_classes + num_classes


def test_default_output_shape_and_count() -> None:
    model = Transformer1d()
    assert model(torch.randn(4, 1, 40)).shape == (4, 10)
    assert model.tokens == 20
    assert _count(model) == TRANSFORMER_MNIST1D_PARAMS == _expected_count(1, 20, 64, 2, 2, 5, 10)
    assert f"{TRANSFORMER_MNIST1D_PARAMS:,}" in (Transformer1d.__doc__ or "")


@pytest.mark.parametrize(
    ("kwargs", "channels", "length", "tokens"),
    [
        ({"d_model": 16, "heads": 2, "depth": 1}, 1, 40, 20),
        ({"d_model": 8, "heads": 4, "depth": 3, "mlp_ratio": 4, "patch": 4, "stride": 4}, 2, 40, 11),
        ({"d_model": 12, "heads": 3, "patch": 3, "stride": 1}, 3, 7, 7),
        ({"d_model": 8, "heads": 1}, 1, 1, 1),
    ],
)
def test_other_sizes(kwargs: dict, channels: int, length: int, tokens: int) -> None:
    model = Transformer1d((channels, length), 5, **kwargs)
    assert model.tokens == tokens
    assert model.pos.shape == (1, tokens, kwargs["d_model"])
    expected = _expected_count(
        channels,
        tokens,
        kwargs["d_model"],
        kwargs.get("depth", 2),
        kwargs.get("mlp_ratio", 2),
        kwargs.get("patch", 5),
        5,
    )
    assert _count(model) == expected
    assert model(torch.randn(2, channels, length)).shape == (2, 5)


def test_layer_structure() -> None:
    model = Transformer1d()
    assert (model.embed.in_channels, model.embed.out_channels) == (1, 64)
    assert (model.embed.kernel_size, model.embed.stride, model.embed.padding) == ((5,), (2,), (2,))
    assert len(model.blocks) == 2 and all(isinstance(b, EncoderBlock) for b in model.blocks)
    for block in model.blocks:
        assert isinstance(block.attn, nn.MultiheadAttention)
        assert block.attn.batch_first and block.attn.num_heads == 4 and block.attn.embed_dim == 64
        assert block.attn._qkv_same_embed_dim
        linears = [m for m in block.mlp if isinstance(m, nn.Linear)]
        assert [(m.in_features, m.out_features) for m in linears] == [(64, 128), (128, 64)]
    assert isinstance(model.norm, nn.LayerNorm)
    assert (model.head.in_features, model.head.out_features) == (64, 10)


def test_registry_name() -> None:
    model = create_model("transformer", num_classes=6, input_shape=(1, 40))
    assert type(model) is Transformer1d
    assert model.head.out_features == 6


def test_sparsify_selects_attention_and_mlp() -> None:
    model = adasparse.sparsify(Transformer1d(), target=0.9)
    names = [t.name for t in adasparse.pruned_tensors(model)]
    per_block = ["attn.in_proj_weight", "attn.out_proj.weight", "mlp.0.weight", "mlp.3.weight"]
    assert names == [f"blocks.{i}.{n}" for i in range(2) for n in per_block]
    pruned = sum(t.raw.numel() for t in adasparse.pruned_tensors(model))
    assert pruned / TRANSFORMER_MNIST1D_PARAMS > 0.94
    assert model(torch.randn(3, 1, 40)).shape == (3, 10)
    with torch.no_grad():
        assert model.eval()(torch.randn(3, 1, 40)).shape == (3, 10)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_forward_backward(training: bool, sparse: bool) -> None:
    torch.manual_seed(0)
    model = Transformer1d()
    if sparse:
        adasparse.sparsify(model, target=0.9)
    model.train(training)
    x, y = torch.randn(8, 1, 40), torch.randint(0, 10, (8,))
    out = model(x)
    assert out.shape == (8, 10) and torch.isfinite(out).all()
    nn.functional.cross_entropy(out, y).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_dropout_changes_training_output_only() -> None:
    torch.manual_seed(0)
    model = Transformer1d(dropout=0.5)
    x = torch.randn(4, 1, 40)
    with torch.no_grad():
        assert not torch.equal(model.train()(x), model(x))
        assert torch.equal(model.eval()(x), model(x))


def test_deterministic_with_seed() -> None:
    torch.manual_seed(3)
    first = Transformer1d().state_dict()
    torch.manual_seed(3)
    second = Transformer1d().state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"input_shape": (1, 8, 8)}, "channels, length"),
        ({"d_model": 30, "heads": 4}, "divisible"),
        ({"depth": 0}, "at least 1"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Transformer1d(**kwargs)
