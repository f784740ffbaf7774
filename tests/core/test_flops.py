"""layer_macs: multiply-accumulates per example for each layer kind."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import adasparse
from adasparse.core.flops import layer_macs


def test_conv_linear_and_transposed_conv() -> None:
    model = nn.Sequential(
        nn.Conv2d(8, 16, 3, padding=1, groups=2),  # 16*4*9 = 576 weights, 10x10 outputs
        nn.ConvTranspose2d(16, 8, 2, stride=2),  # 16*8*4 = 512 weights, 10x10 inputs
        nn.Flatten(),
        nn.Linear(8 * 20 * 20, 10),
    )
    macs = layer_macs(model, torch.randn(4, 8, 10, 10), min_params=100)
    assert macs == {"0.weight": 576 * 100, "1.weight": 512 * 100, "3.weight": 3200 * 10}
    adasparse.sparsify(model, target=0.5, min_params=100)
    assert layer_macs(model, torch.randn(2, 8, 10, 10)) == macs  # same keys on a sparsified model


def test_attention_and_sequence_linear() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(32, 4, kdim=16, vdim=16, batch_first=True)
            self.fc = nn.Linear(32, 64)

        def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
            out, _ = self.attn(x, key=memory, value=memory)
            return self.fc(out)

    macs = layer_macs(Block(), (torch.randn(3, 5, 32), torch.randn(3, 7, 16)), min_params=100)
    assert macs["attn.q_proj_weight"] == 32 * 32 * 5
    assert macs["attn.k_proj_weight"] == 32 * 16 * 7 and macs["attn.v_proj_weight"] == 32 * 16 * 7
    assert macs["attn.out_proj.weight"] == 32 * 32 * 5 and macs["fc.weight"] == 32 * 64 * 5


def test_flops_budget_in_the_loss() -> None:
    model = nn.Sequential(nn.Conv1d(4, 32, 5, padding=2), nn.Flatten(), nn.Linear(32 * 50, 10))
    adasparse.sparsify(model, target=0.9, min_params=100)
    macs = layer_macs(model, torch.randn(1, 4, 50))
    criterion = adasparse.SparsityLoss(model, target=0.9, budget=macs)
    conv, linear = 640 * 50, 16000
    assert criterion.shares == pytest.approx([conv / (conv + linear), linear / (conv + linear)])


def test_layer_that_does_not_run() -> None:
    model = nn.ModuleDict({"used": nn.Linear(50, 50), "unused": nn.Linear(50, 50)})
    adasparse.sparsify(model, target=0.5)
    assert layer_macs(model["used"], torch.randn(1, 50)) == {"weight": 2500}
    with pytest.raises(ValueError, match="did not run in the forward pass: inner.unused.weight"):
        layer_macs(_Only(model), torch.randn(1, 50))


class _Only(nn.Module):
    def __init__(self, inner: nn.ModuleDict) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner["used"](x)
