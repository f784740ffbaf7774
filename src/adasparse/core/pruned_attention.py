"""Multi-head attention with some heads removed: what :func:`adasparse.shrink` puts in place of an
``nn.MultiheadAttention`` whose pruned heads output nothing.

``nn.MultiheadAttention`` ties its inner width to its embedding width (``embed_dim == num_heads * head_dim``), so
it cannot hold fewer heads of the same size. :class:`PrunedMultiheadAttention` keeps the kept heads' rows of the
packed projection and their columns of ``out_proj`` and takes the same call as the layer it replaces.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PrunedMultiheadAttention", "removable_heads"]


class PrunedMultiheadAttention(nn.Module):
    """The kept heads of an ``nn.MultiheadAttention`` (packed projections), computing the same outputs.

    Takes ``(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False)`` like the original and returns ``(output, weights)``; the
    returned attention weights are those of the kept heads (averaged over them by default). A 3-D ``attn_mask`` of
    the original's ``batch * num_heads`` rows is accepted and read for the kept heads.

    Args:
        source: the attention layer to copy from (its weights are copied, not shared).
        kept: indices of the heads to keep, ascending.
    """

    def __init__(self, source: nn.MultiheadAttention, kept: list[int]) -> None:
        super().__init__()
        if not source._qkv_same_embed_dim or source.bias_k is not None:
            raise ValueError("only attention with packed projections and no add_bias_kv can lose heads")
        self.embed_dim = source.embed_dim
        self.head_dim = source.head_dim
        self.num_heads = len(kept)
        self.original_heads = source.num_heads
        self.batch_first = source.batch_first
        self.dropout = source.dropout
        self.register_buffer("kept_heads", torch.tensor(kept, dtype=torch.long))
        rows = torch.tensor(
            [
                block * source.embed_dim + head * self.head_dim + i
                for block in range(3)
                for head in kept
                for i in range(self.head_dim)
            ],
            dtype=torch.long,
        )
        columns = torch.tensor([head * self.head_dim + i for head in kept for i in range(self.head_dim)])
        with torch.no_grad():
            self.in_proj_weight = nn.Parameter(source.in_proj_weight.detach()[rows].clone())
            bias = source.in_proj_bias
            self.in_proj_bias = nn.Parameter(bias.detach()[rows].clone()) if bias is not None else None
            inner = self.num_heads * self.head_dim
            self.out_proj = nn.Linear(inner, self.embed_dim, bias=source.out_proj.bias is not None)
            self.out_proj.weight.copy_(source.out_proj.weight.detach()[:, columns])
            if source.out_proj.bias is not None:
                self.out_proj.bias.copy_(source.out_proj.bias.detach())
        self.out_proj.to(device=source.out_proj.weight.device, dtype=source.out_proj.weight.dtype)

    def _mask(
        self, key_padding_mask: torch.Tensor | None, attn_mask: torch.Tensor | None, batch: int, like: torch.Tensor
    ) -> torch.Tensor | None:
        """One additive float mask of shape broadcastable to ``(batch, heads, target, source)``."""
        total = None
        for mask, shape in ((attn_mask, None), (key_padding_mask, (batch, 1, 1, -1))):
            if mask is None:
                continue
            if mask.dtype == torch.bool:
                mask = torch.zeros(mask.shape, dtype=like.dtype, device=like.device).masked_fill(mask, -math.inf)
            mask = mask.to(like.dtype)
            if shape is not None:
                mask = mask.reshape(shape)
            elif mask.dim() == 3:
                mask = mask.reshape(batch, self.original_heads, *mask.shape[1:])[:, self.kept_heads]
            total = mask if total is None else total + mask
        return total

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batched = query.dim() == 3
        if not batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        if not self.batch_first or not batched:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        batch, target, _ = query.shape
        inner = self.num_heads * self.head_dim
        weight, bias = self.in_proj_weight, self.in_proj_bias
        projected = []
        for block, tensor in enumerate((query, key, value)):
            part = F.linear(
                tensor,
                weight[block * inner : (block + 1) * inner],
                bias[block * inner : (block + 1) * inner] if bias is not None else None,
            )
            projected.append(part.reshape(batch, -1, self.num_heads, self.head_dim).transpose(1, 2))
        q, k, v = projected
        mask = self._mask(key_padding_mask, attn_mask, batch, q)
        if is_causal and mask is None:
            causal = torch.ones(target, k.shape[2], dtype=torch.bool, device=q.device).tril()
            mask = torch.zeros(causal.shape, dtype=q.dtype, device=q.device).masked_fill(~causal, -math.inf)
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
            if mask is not None:
                scores = scores + mask
            weights = torch.softmax(scores, dim=-1)
            output = F.dropout(weights, dropout, self.training) @ v
            if average_attn_weights:
                weights = weights.mean(dim=1)
        else:
            output = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        output = self.out_proj(output.transpose(1, 2).reshape(batch, target, inner))
        if not self.batch_first or not batched:
            output = output.transpose(0, 1)
        if not batched:
            output = output.squeeze(1)
            weights = weights.squeeze(0) if weights is not None else None
        return output, weights

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, heads={self.num_heads} of {self.original_heads}, head_dim={self.head_dim}"


def removable_heads(attention: nn.MultiheadAttention) -> list[int]:
    """The heads whose output nothing reads: their ``out_proj`` columns are zero, or their value rows and biases."""
    if not attention._qkv_same_embed_dim or attention.bias_k is not None or attention.num_heads < 2:
        return []
    width, embed = attention.head_dim, attention.embed_dim
    columns = attention.out_proj.weight.detach().reshape(embed, attention.num_heads, width)
    values = attention.in_proj_weight.detach()[2 * embed :].reshape(attention.num_heads, width, embed)
    bias = attention.in_proj_bias
    value_bias = bias.detach()[2 * embed :].reshape(attention.num_heads, width) if bias is not None else None
    removable = []
    for head in range(attention.num_heads):
        unread = not bool(columns[:, head].any())
        silent = not bool(values[head].any()) and (value_bias is None or not bool(value_bias[head].any()))
        if unread or silent:
            removable.append(head)
    return removable
