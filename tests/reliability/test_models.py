"""Models of unusual structure: shared (tied) weights, models built on the meta device, zero-element weights.

Each case failed before it was fixed (docs/reliability.md, "Models")."""

from __future__ import annotations

import torch
from torch import nn

import adasparse


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


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
