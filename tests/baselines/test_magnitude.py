"""MagnitudePruner: exact counts, global vs per layer, masks only grow, pruned weights get no gradient."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adasparse.baselines.magnitude import MagnitudePruner


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(100, 80), nn.ReLU(), nn.Linear(80, 40), nn.ReLU(), nn.Linear(40, 5))  # 8000, 3200


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.9, 0.98])
def test_global_prunes_exactly_the_smallest(sparsity: float) -> None:
    model = _model()
    weights = torch.cat([model[0].weight.detach().abs().flatten(), model[2].weight.detach().abs().flatten()])
    pruner = MagnitudePruner(model)
    pruner.prune_to(sparsity)
    zeros = round(sparsity * 11_200)
    assert pruner.sparsity() == pytest.approx(zeros / 11_200)
    kept = torch.cat([(m.weight_mask != 0).flatten() for m in (model[0], model[2])])
    if zeros:
        assert weights[~kept].max() <= weights[kept].min()
    assert pruner.names == ["0.weight", "2.weight"]


def test_layer_scope_is_uniform_and_masks_only_grow() -> None:
    model = _model()
    pruner = MagnitudePruner(model, scope="layer")
    pruner.prune_to(0.5)
    first = [m.weight_mask.clone() for m in (model[0], model[2])]
    assert pruner.layer_sparsities() == pytest.approx([0.5, 0.5])
    with torch.no_grad():
        model[0].weight_orig.mul_(-3.0)  # change magnitudes: previously pruned weights must stay pruned
    pruner.prune_to(0.8)
    for mask, module in zip(first, (model[0], model[2])):
        assert bool(((mask == 0) <= (module.weight_mask == 0)).all())
    assert pruner.layer_sparsities() == pytest.approx([0.8, 0.8])


def test_pruned_weights_get_no_gradient_and_remove_bakes_zeros() -> None:
    model = _model()
    pruner = MagnitudePruner(model)
    pruner.prune_to(0.9)
    model(torch.randn(4, 100)).sum().backward()
    assert float((model[0].weight_orig.grad * (1 - model[0].weight_mask)).abs().sum()) == 0.0
    state = model.state_dict()
    assert "0.weight_mask" in state and "0.weight_orig" in state
    pruner.remove()
    assert sorted(name for name, _ in model.named_parameters()) == [
        "0.bias",
        "0.weight",
        "2.bias",
        "2.weight",
        "4.bias",
        "4.weight",
    ]
    assert float((model[0].weight == 0).float().mean()) > 0.8


def test_freeze_zeros_and_bad_sparsity() -> None:
    model = _model()
    with torch.no_grad():
        model[0].weight[:10] = 0.0
    pruner = MagnitudePruner(model)
    pruner.freeze_zeros()
    assert pruner.sparsity() == pytest.approx(1000 / 11_200)
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        pruner.prune_to(1.0)


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(64, 4, batch_first=True)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.attn(x, x, x, need_weights=False)[0].mean(1))


def test_attention_projections_are_masked_at_every_step() -> None:
    """``nn.MultiheadAttention`` reads ``out_proj.weight`` without calling ``out_proj``: its mask must still be
    applied with the current ``weight_orig`` at every forward, through training steps, and baked in by ``remove``."""
    torch.manual_seed(0)
    model = _Attention()
    pruner = MagnitudePruner(model, scope="layer")
    assert pruner.names == ["attn.in_proj_weight", "attn.out_proj.weight"]
    pruner.prune_to(0.75)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(8, 5, 64)
    for _ in range(3):  # a stale out_proj.weight fails here (a graph freed by the previous backward)
        loss = model(x).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    out_proj = model.attn.out_proj
    reference = model.head(
        nn.functional.multi_head_attention_forward(
            *(x.transpose(0, 1),) * 3,
            64,
            4,
            model.attn.in_proj_weight_orig * model.attn.in_proj_weight_mask,
            model.attn.in_proj_bias,
            None,
            None,
            False,
            0.0,
            out_proj.weight_orig * out_proj.weight_mask,
            out_proj.bias,
            training=False,
            need_weights=False,
        )[0]
        .transpose(0, 1)
        .mean(1)
    )
    assert torch.allclose(model(x), reference, atol=1e-6)
    assert pruner.layer_sparsities() == pytest.approx([0.75, 0.75])
    pruner.remove()
    assert float((out_proj.weight == 0).float().mean()) == pytest.approx(0.75)
    assert not model.attn._forward_pre_hooks and not hasattr(out_proj, "weight_orig")
    assert torch.allclose(model(x), reference, atol=1e-6)
