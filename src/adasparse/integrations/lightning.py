"""A Lightning callback that prunes a ``LightningModule`` while it trains (``pip install "adasparse[lightning]"``).

    from adasparse.integrations.lightning import SparsityCallback, param_groups

    class Module(lightning.LightningModule):
        ...
        def configure_optimizers(self):
            return torch.optim.AdamW(param_groups(self, lr=3e-4, weight_decay=0.01))  # the pruner's groups

    trainer = lightning.Trainer(max_epochs=10, callbacks=[SparsityCallback(target=0.9)])
    trainer.fit(module)          # the module ends desparsified, exactly 90% of its prunable weights zero

The callback is a thin adapter over :class:`adasparse.Pruner`, so a fit runs the life cycle of ``adasparse train``
with the same defaults (:class:`adasparse.PrunerConfig`): ``setup`` builds the pruner, which sparsifies the module
before ``configure_optimizers`` runs; the optimizer takes its groups from the pruner (:func:`param_groups`, or
``callback.pruner.param_groups(lr, weight_decay)``), which leaves the thresholds out: the pruner moves them itself.
The number of optimizer steps is ``trainer.estimated_stepping_batches`` (gradient accumulation and ``max_steps``
included), read when training starts. The callback adds ``pruner.loss()`` to the loss ``training_step`` returns (so
AMP scaling and gradient accumulation treat it like the task loss), calls ``pruner.step()`` once per optimizer step
(after it, before the next ``zero_grad``), fixes the zeros for the last ``finetune`` fraction of the steps, logs the
sparsity, and ends the fit with ``pruner.finish()``: a plain module at exactly the target. Its ``state_dict`` is the
pruner's, so Lightning checkpoints resume the pruning exactly.
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

import torch

from ..control.pruner import Pruner, PrunerConfig, PrunerResult
from ..core._checks import check_fraction, check_int
from ..core.attention_heads import HeadsArgument
from ..core.report import sparsity_report
from ..core.selection import Selector
from ..core.sparsify import threshold_parameters
from . import pruner_config

__all__ = ["SparsityCallback", "param_groups"]


class SparsityCallback(pl.Callback):
    """Prune a LightningModule to ``target`` during ``fit`` with an :class:`adasparse.Pruner`.

    Args:
        target: overall sparsity of the prunable layers at the end, in ``[0, 1)``.
        mode, weight: :class:`adasparse.PrunerConfig` fields, kept positional for older code (default: the
            config's, ``"projection"`` and 10).
        config: a :class:`adasparse.PrunerConfig`; keyword ``pruner_options`` override its fields (``ramp``,
            ``finetune``, ``min_params``, ``correction``, ``threshold_update``, ``threshold_lr``, ...).
        include, exclude: layer selection, as for :func:`adasparse.sparsify`.
        calibrate_at_end: the config's ``calibrate`` under its older name: calibrate to exactly the target before
            fixing the zeros (or at the end, without fine-tuning).
        desparsify_at_end: end the fit with ``pruner.finish()`` (a plain module, :attr:`result` set); ``False``
            leaves the module sparsified so that ``callback.pruner.finish()`` can be called later.
        total_steps: the optimizer steps of the fit, when ``trainer.estimated_stepping_batches`` cannot say it (an
            endless fit) or should not be used.
        example_input: an input batch, needed with ``budget="flops"`` and ``granularity="channel"``.
        heads: with ``granularity="channel"``, the heads of the module's own attention layers
            (:class:`adasparse.AttentionHeads`, as for :class:`adasparse.Pruner`); give ``adasparse.shrink`` the same.

    Attributes:
        pruner: the :class:`adasparse.Pruner` (``None`` before ``setup``).
    """

    def __init__(
        self,
        target: float,
        mode: str | None = None,
        weight: float | None = None,
        *,
        config: PrunerConfig | None = None,
        include: Selector | Iterable[Selector] | None = None,
        exclude: Selector | Iterable[Selector] | None = None,
        calibrate_at_end: bool | None = None,
        desparsify_at_end: bool = True,
        total_steps: int | None = None,
        example_input: torch.Tensor | None = None,
        heads: HeadsArgument | None = None,
        **pruner_options: Any,
    ) -> None:
        self.target = check_fraction(target, "target")
        for name, value in (("mode", mode), ("weight", weight), ("calibrate", calibrate_at_end)):
            if value is not None:
                pruner_options[name] = value
        self.config = pruner_config(config, pruner_options, owner="SparsityCallback")
        self.selection = {"include": include, "exclude": exclude}
        self.desparsify_at_end = desparsify_at_end
        self.total_steps = None if total_steps is None else check_int(total_steps, "total_steps", 1)
        self.example_input = example_input
        self.heads = heads
        self.pruner: Pruner | None = None
        self._pending_state: dict[str, Any] | None = None
        self._optimizer_steps = 0
        self._original_training_step: Any = None

    @property
    def result(self) -> PrunerResult | None:
        """What the final calibration measured (set by ``pruner.finish()`` at the end of the fit)."""
        return None if self.pruner is None else self.pruner.result

    @property
    def criterion(self) -> Any:
        """The pruner's :class:`adasparse.SparsityLoss` (``None`` before ``setup``; kept for older code)."""
        return None if self.pruner is None else self.pruner.criterion

    def param_groups(self, lr: float, weight_decay: float = 0.0) -> list[dict[str, Any]]:
        """The optimizer groups of the pruner (:meth:`adasparse.Pruner.param_groups`); available from ``setup``."""
        if self.pruner is None:
            raise RuntimeError("SparsityCallback.param_groups() before setup: call it from configure_optimizers")
        return self.pruner.param_groups(lr, weight_decay)

    # -- building the pruner ------------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if self.pruner is None:
            self.pruner = Pruner(
                pl_module,
                self.target,
                None,
                self.config,
                example_input=self.example_input,
                heads=self.heads,
                **self.selection,
            )
        if self.pruner.finished or self._original_training_step is not None:
            return
        pruner = self.pruner
        original = pl_module.training_step
        self._original_training_step = original

        def training_step(*args: Any, **kwargs: Any) -> Any:
            output = original(*args, **kwargs)
            if output is None or pruner.finished:
                return output
            sparsity_loss = pruner.loss()
            pl_module.log("sparsity/loss", sparsity_loss.detach(), on_step=True, on_epoch=False)
            if isinstance(output, dict):
                return {**output, "loss": output["loss"] + sparsity_loss}
            return output + sparsity_loss

        pl_module.training_step = training_step  # type: ignore[method-assign]
        if not pl_module.automatic_optimization:
            warnings.warn(
                "manual optimization: add callback.pruner.loss() to the loss you back-propagate",
                UserWarning,
                stacklevel=2,
            )

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and self._original_training_step is not None:
            pl_module.__dict__.pop("training_step", None)  # the class's own training_step again
            self._original_training_step = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.pruner is None:
            return
        if self.pruner.total_steps is None:
            self.pruner.total_steps = self._planned_steps(trainer)
        if self._pending_state is not None:
            self.pruner.load_state_dict(self._pending_state)
            self._pending_state = None
        self._optimizer_steps = trainer.global_step
        self._check_optimizers(trainer, pl_module)

    def _planned_steps(self, trainer: pl.Trainer) -> int:
        if self.total_steps is not None:
            return self.total_steps
        estimate = trainer.estimated_stepping_batches
        if not math.isfinite(estimate):
            raise ValueError(
                "SparsityCallback: the fit has no step limit, so the pruning schedule has no length: set "
                "max_epochs or max_steps on the Trainer, or pass SparsityCallback(total_steps=...)"
            )
        return max(1, int(estimate))

    def _check_optimizers(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert self.pruner is not None
        optimized = {
            id(p) for optimizer in trainer.optimizers for group in optimizer.param_groups for p in group["params"]
        }
        thresholds = list(threshold_parameters(pl_module))
        inside = [p for p in thresholds if id(p) in optimized]
        if self.pruner.config.threshold_update == "adam":
            if inside:
                raise ValueError(
                    f"SparsityCallback: {len(inside)} pruning thresholds are in the optimizer, but the pruner moves "
                    "them itself (threshold_update='adam'); build the optimizer in configure_optimizers from "
                    "adasparse.integrations.lightning.param_groups(self, lr, weight_decay) (the pruner's groups), "
                    "or pass threshold_update='optimizer' to let the optimizer train them"
                )
        elif len(inside) < len(thresholds):
            warnings.warn(
                f"{len(thresholds) - len(inside)} pruning thresholds are in no optimizer group: they will not learn; "
                "build the optimizer from adasparse.integrations.lightning.param_groups(self, lr, weight_decay)",
                UserWarning,
                stacklevel=2,
            )

    # -- every step ---------------------------------------------------------------------------------------------
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # After the optimizer step and before the next zero_grad (Lightning zeroes the gradients inside the next
        # step's closure), so the pruner still reads the thresholds' gradients. With gradient accumulation this
        # hook runs for every micro-batch, the optimizer only every few: advance once per optimizer step.
        if self.pruner is None or self.pruner.finished or trainer.global_step == self._optimizer_steps:
            return
        self._optimizer_steps = trainer.global_step
        self.pruner.step()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.pruner is None or self.pruner.finished:
            return
        pl_module.log("sparsity/actual", sparsity_report(pl_module).overall)
        if not self.pruner.frozen:
            pl_module.log("sparsity/analytic", self.pruner.criterion.analytic_sparsity)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.pruner is not None and self.desparsify_at_end and not self.pruner.finished:
            self.pruner.finish()

    # -- checkpoints --------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The pruner's :meth:`adasparse.Pruner.state_dict` (empty before ``setup``)."""
        if self.pruner is None:
            return dict(self._pending_state or {})
        return self.pruner.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the pruner's state when training starts (once its number of steps is known)."""
        if state_dict:
            self._pending_state = dict(state_dict)


def param_groups(module: pl.LightningModule, lr: float, weight_decay: float = 0.0) -> list[dict[str, Any]]:
    """The optimizer groups for ``module``'s ``configure_optimizers``: those of the :class:`SparsityCallback` of
    its trainer (every parameter at ``lr``/``weight_decay``; the thresholds only with
    ``threshold_update="optimizer"``). Without such a callback, the module's parameters in one group.

    Example::

        def configure_optimizers(self):
            return torch.optim.SGD(param_groups(self, lr=0.05, weight_decay=5e-4), momentum=0.9)
    """
    trainer = module._trainer  # None outside a fit; module.trainer raises there
    callbacks = [c for c in (trainer.callbacks if trainer is not None else []) if isinstance(c, SparsityCallback)]
    if len(callbacks) > 1:
        raise ValueError("the trainer has more than one SparsityCallback: use callback.param_groups(lr, weight_decay)")
    if callbacks and callbacks[0].pruner is not None:
        return callbacks[0].param_groups(lr, weight_decay)
    return [{"params": [p for p in module.parameters() if p.requires_grad], "lr": lr, "weight_decay": weight_decay}]
