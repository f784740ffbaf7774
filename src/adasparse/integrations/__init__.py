"""Integrations with training frameworks (optional extras): :mod:`.lightning` and :mod:`.hf`.

Both are thin adapters over :class:`adasparse.Pruner`: the same life cycle (ramp, thresholds moved by the pruner,
projection, fixed-mask fine-tuning, exact final calibration) with exactly the defaults of :class:`PrunerConfig`,
which are also those of ``adasparse train``.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

import torch
from torch import nn

from ..calibrate import calibrate
from ..parametrization import pruned_tensors
from ..pruner import PrunerConfig
from ..sparsify import desparsify

__all__ = ["finish_pruning", "pruner_config"]


def pruner_config(config: PrunerConfig | None, options: dict[str, Any], *, owner: str) -> PrunerConfig:
    """``config`` (default :class:`PrunerConfig`) with the keyword ``options`` applied and every value checked:
    ``TypeError`` naming an unknown option, ``ValueError`` naming a bad value, both before the model is touched."""
    if config is None:
        config = PrunerConfig()
    elif not isinstance(config, PrunerConfig):
        raise TypeError(f"config must be a PrunerConfig, got {type(config).__name__}")
    known = {f.name for f in fields(PrunerConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(
            f"{owner}: unknown pruning option(s) {', '.join(unknown)} (PrunerConfig has: {', '.join(sorted(known))})"
        )
    return replace(config, **options).validated()


def finish_pruning(model: nn.Module, target: float, *, calibrate_at_end: bool, desparsify_at_end: bool) -> None:
    """End of training in a framework: the exact target, then a plain model (each step optional)."""
    if not pruned_tensors(model):
        return
    with torch.no_grad():
        if calibrate_at_end:
            calibrate(model, target)
        if desparsify_at_end:
            desparsify(model)
