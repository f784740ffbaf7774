"""A Lightning callback that prunes a ``LightningModule`` while it trains (``pip install "adasparse[lightning]"``).

    from adasparse.integrations.lightning import SparsityCallback
    trainer = lightning.Trainer(callbacks=[SparsityCallback(target=0.9)])
    trainer.fit(module)          # the module ends desparsified, exactly 90% of its prunable weights zero

The callback sparsifies the module in ``setup`` (before ``configure_optimizers`` runs, so the thresholds are
parameters the optimizer sees; give them the recipe's group with :func:`adasparse.param_groups`), adds the
sparsity loss to the loss ``training_step`` returns (so AMP scaling and gradient accumulation treat it like the
task loss), logs the sparsity, and at the end of fitting calibrates and desparsifies.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

try:
    import lightning.pytorch as pl
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError('the Lightning integration needs lightning: pip install "adasparse[lightning]"') from error

from .._checks import check_fraction, check_ramp
from ..loss import SparsityLoss
from ..parametrization import pruned_tensors
from ..report import sparsity_report
from ..schedules import cubic_ramp
from ..selection import Selector
from ..sparsify import sparsify, threshold_parameters
from . import finish_pruning

__all__ = ["SparsityCallback"]


class SparsityCallback(pl.Callback):
    """Prune a LightningModule to ``target`` during ``fit``.

    Args:
        target: overall sparsity of the prunable layers, in ``[0, 1)``.
        mode: the :class:`adasparse.SparsityLoss` mode (default ``"projection"``: the exact budget at every step;
            the callback calls its ``step()`` after every training batch).
        weight: the loss weight ``lv``.
        correction: steer on measured zeros (see :class:`adasparse.SparsityLoss`).
        ramp: raise the target along the cubic of gradual magnitude pruning over this fraction of the fit's
            optimizer steps (default 0.3; 0 demands the full target from the first step, which on a freshly
            initialised network prunes it before it has learnt anything).
        min_params, include, exclude: layer selection, as for :func:`adasparse.sparsify`.
        calibrate_at_end: scale the thresholds to the exact target when fitting ends.
        desparsify_at_end: bake the zeros in and remove the thresholds when fitting ends.
    """

    def __init__(
        self,
        target: float,
        mode: str = "projection",
        weight: float = 10.0,
        *,
        correction: bool = True,
        ramp: float = 0.3,
        min_params: int = 1000,
        include: Selector | Iterable[Selector] | None = None,
        exclude: Selector | Iterable[Selector] | None = None,
        calibrate_at_end: bool = True,
        desparsify_at_end: bool = True,
    ) -> None:
        self.target = check_fraction(target, "target")
        self.ramp = check_ramp(ramp, "ramp")
        self.options = {"mode": mode, "weight": weight, "correction": correction}
        self.selection = {"min_params": min_params, "include": include, "exclude": exclude}
        self.calibrate_at_end = calibrate_at_end
        self.desparsify_at_end = desparsify_at_end
        self.criterion: SparsityLoss | None = None
        self._pending_state: dict[str, Any] | None = None
        self._warned_endless = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or self.criterion is not None:
            return
        if not pruned_tensors(pl_module):
            sparsify(pl_module, target=self.target, **self.selection)
        self.criterion = SparsityLoss(pl_module, target=self.target, **self.options)
        if self._pending_state is not None:
            self.criterion.load_state_dict(self._pending_state)
        original = pl_module.training_step
        criterion = self.criterion

        def training_step(*args: Any, **kwargs: Any) -> Any:
            output = original(*args, **kwargs)
            if output is None:
                return output
            sparsity_loss = criterion()
            pl_module.log("sparsity/loss", sparsity_loss.detach(), on_step=True, on_epoch=False)
            if isinstance(output, dict):
                return {**output, "loss": output["loss"] + sparsity_loss}
            return output + sparsity_loss

        pl_module.training_step = training_step  # type: ignore[method-assign]
        if not pl_module.automatic_optimization:
            warnings.warn(
                "manual optimization: add callback.criterion() to your loss yourself", UserWarning, stacklevel=2
            )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        optimized = {
            id(p) for optimizer in trainer.optimizers for group in optimizer.param_groups for p in group["params"]
        }
        missing = [p for p in threshold_parameters(pl_module) if id(p) not in optimized]
        if missing:
            warnings.warn(
                f"{len(missing)} pruning thresholds are in no optimizer group: they will not learn; build the "
                "optimizer from adasparse.param_groups(self, lr, weight_decay)",
                UserWarning,
                stacklevel=2,
            )

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.criterion is None or self.ramp <= 0.0:
            return
        total = trainer.estimated_stepping_batches
        if not math.isfinite(total):  # an endless fit: there is no fraction of training to ramp over
            if not self._warned_endless:
                self._warned_endless = True
                warnings.warn("the fit has no step limit: the sparsity target is not ramped", UserWarning, stacklevel=2)
            return
        progress = min(trainer.global_step / max(total, 1), 1.0)
        self.criterion.target = cubic_ramp(progress, self.target, end=self.ramp)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.criterion is not None:
            self.criterion.step()  # after the optimizer step: the projection mode moves the thresholds here

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.criterion is None:
            return
        pl_module.log("sparsity/actual", sparsity_report(pl_module).overall)
        pl_module.log("sparsity/analytic", self.criterion.analytic_sparsity)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        finish_pruning(
            pl_module, self.target, calibrate_at_end=self.calibrate_at_end, desparsify_at_end=self.desparsify_at_end
        )

    def state_dict(self) -> dict[str, Any]:
        return self.criterion.state_dict() if self.criterion is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        if self.criterion is not None:
            self.criterion.load_state_dict(state_dict)
        else:
            self._pending_state = dict(state_dict)
