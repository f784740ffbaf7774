"""PrunedMultiheadAttention computes what the attention it replaces computes; heads pruned as channels."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import adasparse
from adasparse.core.channel_sets import HeadSet
from adasparse.core.pruned_attention import PrunedMultiheadAttention, removable_heads

from ..zoo import by_channels


def _silenced(attention: nn.MultiheadAttention, heads: list[int]) -> None:
    """Zero the value rows and biases of ``heads`` (their outputs become exact zeros)."""
    embed, width = attention.embed_dim, attention.head_dim
    with torch.no_grad():
        for head in heads:
            rows = slice(2 * embed + head * width, 2 * embed + (head + 1) * width)
            attention.in_proj_weight[rows] = 0
            attention.in_proj_bias[rows] = 0


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
def test_same_outputs_with_masks(batch_first: bool, need_weights: bool) -> None:
    torch.manual_seed(0)
    attention = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    _silenced(attention, [1, 3])
    assert removable_heads(attention) == [1, 3]
    smaller = PrunedMultiheadAttention(attention, [0, 2]).eval()
    batch, length = 3, 5
    x = torch.randn(batch, length, 16) if batch_first else torch.randn(length, batch, 16)
    padding = torch.zeros(batch, length, dtype=torch.bool)
    padding[0, -2:] = True
    causal = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)
    per_head = torch.randn(batch * 4, length, length)
    for kwargs in ({}, {"key_padding_mask": padding}, {"attn_mask": causal}, {"attn_mask": per_head}):
        expected, _ = attention(x, x, x, need_weights=need_weights, **kwargs)
        actual, weights = smaller(x, x, x, need_weights=need_weights, **kwargs)
        assert torch.allclose(actual, expected, atol=1e-5), kwargs
        assert (weights is not None) == need_weights


def test_unbatched_input_and_cross_attention() -> None:
    torch.manual_seed(1)
    attention = nn.MultiheadAttention(8, 2).eval()
    _silenced(attention, [0])
    smaller = PrunedMultiheadAttention(attention, [1]).eval()
    query, memory = torch.randn(4, 8), torch.randn(6, 8)
    assert torch.allclose(smaller(query, memory, memory)[0], attention(query, memory, memory)[0], atol=1e-5)


def test_heads_are_a_head_set_and_get_a_task_gradient() -> None:
    model, x = by_channels("transformer", (1, 40), 4)
    heads = [p.layout for p in adasparse.pruned_tensors(model) if isinstance(p.layout, HeadSet)]
    assert {p.names[0] for p in heads} == {"blocks.0.attn", "blocks.1.attn"}
    attention = model.blocks[0].attn
    assert attention.in_proj_weight_threshold is attention.in_proj_bias_threshold
    keep = heads[0].current_keep()
    assert 0 < int(keep.sum()) < 4
    weight = attention.in_proj_weight.detach().reshape(3, 4, 16, 64)
    assert bool((weight[2][~keep] == 0).all())  # values of pruned heads: zero while training
    assert bool((weight[0][~keep] != 0).any())  # queries: untouched until the zeros are fixed
    model(x).sum().backward()
    assert float(attention.in_proj_weight_threshold.grad) != 0.0
