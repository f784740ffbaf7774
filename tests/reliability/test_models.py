"""Models of unusual structure: shared (tied) weights, models built on the meta device, zero-element weights.

Each case failed before it was fixed (docs/reliability.md, "Models")."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import adasparse


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


# -- meta device ----------------------------------------------------------------------------------------------------


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32))


def test_sparsify_on_meta_then_to_empty_and_load_a_sparsified_state() -> None:
    torch.manual_seed(0)
    reference = adasparse.sparsify(_mlp(), target=0.7)
    with torch.no_grad():
        next(adasparse.threshold_parameters(reference)).add_(0.5)
    with torch.device("meta"):
        model = _mlp()
    adasparse.sparsify(model, target=0.7)
    assert all(t.is_meta for t in adasparse.threshold_parameters(model))
    model.to_empty(device="cpu")
    model.load_state_dict(reference.state_dict())
    x = torch.randn(8, 64)
    assert torch.equal(_outputs(model, x), _outputs(reference, x))
    report = adasparse.sparsity_report(model)
    assert report.pruned_zeros == adasparse.sparsity_report(reference).pruned_zeros


def test_sparsify_on_meta_then_real_weights_and_reset_thresholds() -> None:
    torch.manual_seed(0)
    plain = _mlp()
    reference = adasparse.sparsify(copy.deepcopy(plain), target=0.7)
    with torch.device("meta"):
        model = _mlp()
    adasparse.sparsify(model, target=0.7)
    with pytest.raises(ValueError, match="meta"):
        adasparse.reset_thresholds(model, target=0.7)
    model.to_empty(device="cpu")
    with torch.no_grad():
        for module, source in zip(model, plain):
            for name, value in source.named_parameters():
                key = name + "_orig" if adasparse.is_sparsified(module) and name == "weight" else name
                module._parameters[key].copy_(value)
    adasparse.reset_thresholds(model, target=0.7)
    for mine, theirs in zip(adasparse.threshold_parameters(model), adasparse.threshold_parameters(reference)):
        assert torch.equal(mine, theirs) and mine.requires_grad
    x = torch.randn(8, 64)
    assert torch.equal(_outputs(model, x), _outputs(reference, x))


def test_sparsify_inside_the_meta_device_context() -> None:
    with torch.device("meta"):
        model = adasparse.sparsify(_mlp(), target=0.7)
        assert all(t.is_meta for t in adasparse.threshold_parameters(model))
    reference = adasparse.sparsify(_mlp(), target=0.7)
    model.to_empty(device="cpu")
    model.load_state_dict(reference.state_dict())
    x = torch.randn(8, 64)
    assert torch.equal(_outputs(model, x), _outputs(reference, x))


# -- zero-element weights -------------------------------------------------------------------------------------------


class WithEmptyLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(16, 8)
        self.empty = nn.Linear(0, 8)  # a zero-element weight: its output is its bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.empty(x[:, :0])


def test_zero_element_weight_with_min_params_zero_works_end_to_end() -> None:
    torch.manual_seed(0)
    model = WithEmptyLayer()
    adasparse.sparsify(model, target=0.5, min_params=0)
    assert [p.name for p in adasparse.pruned_tensors(model)] == ["body.weight"]
    x = torch.randn(4, 16)
    criterion = adasparse.SparsityLoss(model, target=0.5)
    (model(x).sum() + criterion()).backward()
    adasparse.calibrate(model, 0.5)
    report = adasparse.sparsity_report(model)
    assert report.pruned_params == 16 * 8
    before = _outputs(model, x)
    adasparse.desparsify(model)
    assert torch.equal(_outputs(model, x), before)
    assert adasparse.sparsity_report(model, min_params=0).pruned_params == 16 * 8
