"""The training loop the Pruner tests share: cross-entropy plus the pruner's loss, then the pruner's step."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def train_with_pruner(
    model: nn.Module,
    pruner: object,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: range | int,
    batch: int = 16,
) -> None:
    """Train ``model`` for ``steps`` (a count, or the step numbers to run) on consecutive batches of ``batch``
    examples of ``(x, y)`` (wrapping around), with ``pruner.loss()`` added and ``pruner.step()`` after each
    optimizer step."""
    for step in range(steps) if isinstance(steps, int) else steps:
        start = (step * batch) % len(x)
        loss = F.cross_entropy(model(x[start : start + batch]), y[start : start + batch]) + pruner.loss()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        pruner.step()
