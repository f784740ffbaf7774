"""A small pre-LayerNorm transformer encoder for MNIST-1D, reading the signal as a sequence of tokens."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["EncoderBlock", "Transformer1d"]


class EncoderBlock(nn.Module):
    """Pre-LayerNorm encoder block: ``x + attention(LN(x))``, then ``x + MLP(LN(x))`` with a GELU MLP.

    The attention is an ``nn.MultiheadAttention`` (batch first), so adasparse prunes its packed ``in_proj_weight``
    and its ``out_proj`` Linear.
    """

    def __init__(self, d_model: int, heads: int, mlp_ratio: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_ratio * d_model),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(mlp_ratio * d_model, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class Transformer1d(nn.Module):
    """Conv1d token embedding, learned positional embedding, pre-LN encoder blocks, final LN, mean pool, Linear.

    Takes inputs of shape ``(batch, *input_shape)`` with ``input_shape = (channels, length)``. The embedding is a
    ``Conv1d(channels, d_model, patch, stride)`` (padded by ``patch // 2``) whose output positions are the tokens:
    on MNIST-1D (length 40) the defaults (``patch=5, stride=2``) give 20 overlapping tokens of ``d_model=64``.
    With the defaults (2 blocks, 4 heads, MLP ratio 2) and 10 classes it has 69,386 parameters; the attention
    projections and the MLP Linears (98% of the weights) have at least 1000 weights each, the embedding and the
    head stay below. Linears are initialised truncated-normal (std 0.02) with zero bias, the positional embedding
    likewise.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...] = (1, 40),
        num_classes: int = 10,
        d_model: int = 64,
        heads: int = 4,
        depth: int = 2,
        mlp_ratio: int = 2,
        patch: int = 5,
        stride: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(input_shape) != 2:
            raise ValueError(f"Transformer1d needs input_shape (channels, length), got {tuple(input_shape)}")
        if d_model < 1 or heads < 1 or d_model % heads != 0:
            raise ValueError(f"Transformer1d needs d_model divisible by heads, got d_model={d_model}, heads={heads}")
        if depth < 1 or mlp_ratio < 1 or patch < 1 or stride < 1:
            raise ValueError("Transformer1d needs depth, mlp_ratio, patch and stride of at least 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"Transformer1d dropout must be in [0, 1), got {dropout}")
        channels, length = input_shape
        padding = patch // 2
        tokens = (length + 2 * padding - patch) // stride + 1
        if tokens < 1:
            raise ValueError(f"Transformer1d input length {length} is too short for patch {patch}")
        self.tokens = tokens
        self.embed = nn.Conv1d(channels, d_model, patch, stride=stride, padding=padding)
        self.pos = nn.Parameter(torch.zeros(1, tokens, d_model))
        self.blocks = nn.Sequential(*(EncoderBlock(d_model, heads, mlp_ratio, dropout) for _ in range(depth)))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)
        nn.init.trunc_normal_(self.pos, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).transpose(1, 2) + self.pos  # (batch, tokens, d_model)
        return self.head(self.norm(self.blocks(tokens)).mean(dim=1))
