"""Integrations with training frameworks (optional extras): :mod:`.lightning` and :mod:`.hf`."""

from __future__ import annotations

import torch
from torch import nn

from ..calibrate import calibrate
from ..parametrization import pruned_tensors
from ..sparsify import desparsify

__all__ = ["finish_pruning"]


def finish_pruning(model: nn.Module, target: float, *, calibrate_at_end: bool, desparsify_at_end: bool) -> None:
    """End of training in a framework: the exact target, then a plain model (each step optional)."""
    if not pruned_tensors(model):
        return
    with torch.no_grad():
        if calibrate_at_end:
            calibrate(model, target)
        if desparsify_at_end:
            desparsify(model)
