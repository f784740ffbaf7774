"""Integrations with training frameworks (optional extras): :mod:`.lightning` and :mod:`.hf`.

Both are thin adapters over :class:`adasparse.Pruner`: the same life cycle (ramp, thresholds moved by the pruner,
projection, fixed-mask fine-tuning, exact final calibration) with exactly the defaults of :class:`PrunerConfig`,
which are also those of ``adasparse train``.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from ..control.pruner import PrunerConfig

__all__ = ["pruner_config"]


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
