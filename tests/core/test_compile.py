"""torch.compile: the sparsified model compiles without graph breaks and computes what eager mode computes."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import adasparse

pytestmark = pytest.mark.skipif(
    shutil.which("gcc") is None and shutil.which("cc") is None, reason="torch.compile on CPU needs a C compiler"
)


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(4, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 20, 10))
    return adasparse.sparsify(model, target=0.8, min_params=100)


def test_no_graph_breaks_from_the_operator() -> None:
    model = _model()
    explanation = torch._dynamo.explain(model)(torch.randn(2, 4, 20))
    assert explanation.graph_break_count == 0, explanation.break_reasons


def test_compiled_training_step_matches_eager() -> None:
    eager, compiled_source = _model(), _model()
    compiled = torch.compile(compiled_source)
    x, y = torch.randn(8, 4, 20), torch.randint(0, 10, (8,))
    losses = []
    for model in (eager, compiled):
        criterion = adasparse.SparsityLoss(compiled_source if model is compiled else model, target=0.8)
        loss = F.cross_entropy(model(x), y) + criterion()
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-4, atol=1e-5)
    for (name, a), (_, b) in zip(eager.named_parameters(), compiled_source.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-5, msg=name)
