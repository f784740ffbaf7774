"""Integrations with training frameworks (optional extras): :mod:`.lightning` and :mod:`.hf`.

Both are thin adapters over :class:`adasparse.Pruner`: the same life cycle (ramp, thresholds moved by the pruner,
projection, fixed-mask fine-tuning, exact final calibration) with exactly the defaults of :class:`PrunerConfig`,
which are also those of ``adasparse train``.
"""

from __future__ import annotations

from typing import Any

from ..control.config import PrunerConfig, configured

__all__ = ["pruner_config"]


def pruner_config(config: PrunerConfig | None, options: dict[str, Any], *, owner: str) -> PrunerConfig:
    """``config`` with the keyword ``options`` applied and checked (see :func:`adasparse.control.config.configured`),
    errors naming ``owner``."""
    return configured(config, options, f"{owner}: unknown pruning option")
