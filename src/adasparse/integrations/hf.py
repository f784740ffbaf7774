"""Pruning inside the Hugging Face ``Trainer`` (``pip install "adasparse[hf]"``).

    from adasparse.integrations.hf import SparsityTrainer
    trainer = SparsityTrainer(model=model, args=args, train_dataset=data, sparsity_target=0.9)
    trainer.train()              # the model ends desparsified, exactly 90% of its prunable weights zero

``SparsityTrainer`` sparsifies the model when it is created, puts the thresholds in their own optimizer group
(``learning_rate * threshold_lr_scale``, no weight decay), adds the sparsity loss in ``compute_loss`` (so
gradient accumulation and mixed precision treat it like the task loss), logs the sparsity with every log, and at
the end of training calibrates and desparsifies (:class:`SparsityCallback`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

try:
    from transformers import Trainer, TrainerCallback
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError('the Hugging Face integration needs transformers: pip install "adasparse[hf]"') from error

from .._checks import check_ramp as _check_ramp
from ..loss import SparsityLoss
from ..parametrization import pruned_tensors
from ..report import sparsity_report
from ..schedules import cubic_ramp
from ..selection import Selector
from ..sparsify import sparsify, threshold_parameters
from . import finish_pruning

__all__ = ["SparsityTrainer", "SparsityCallback"]


class SparsityCallback(TrainerCallback):
    """Advances the sparsity loss after every optimizer step (the projection mode steers there) and finishes the
    pruning when training ends: exact calibration, then desparsify."""

    def __init__(
        self, criterion: SparsityLoss, target: float, *, ramp: float, calibrate_at_end: bool, desparsify_at_end: bool
    ) -> None:
        self.criterion = criterion
        self.target = target
        self.ramp = ramp
        self.calibrate_at_end = calibrate_at_end
        self.desparsify_at_end = desparsify_at_end

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any):
        if self.ramp > 0.0 and state.max_steps:
            progress = min(state.global_step / state.max_steps, 1.0)
            self.criterion.target = cubic_ramp(progress, self.target, end=self.ramp)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any):
        self.criterion.step()

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any):
        if model is not None:
            finish_pruning(
                model, self.target, calibrate_at_end=self.calibrate_at_end, desparsify_at_end=self.desparsify_at_end
            )


class SparsityTrainer(Trainer):
    """A ``transformers.Trainer`` that prunes the model to ``sparsity_target`` while it trains.

    Args:
        sparsity_target: overall sparsity of the prunable layers, in ``[0, 1)``.
        sparsity_mode: the :class:`adasparse.SparsityLoss` mode (default ``"projection"``: the exact budget at
            every step).
        sparsity_weight: the loss weight ``lv`` (quadratic and upper modes).
        sparsity_correction: steer on the measured zero fraction instead of the Gaussian estimate.
        sparsity_ramp: raise the target along a cubic over this fraction of the training steps (default 0.3).
        threshold_lr_scale: the thresholds' learning rate over ``args.learning_rate`` (default 0.01).
        min_params, include, exclude: layer selection, as for :func:`adasparse.sparsify`.
        calibrate_at_end, desparsify_at_end: finish with the exact target and a plain model.
        Everything else goes to ``transformers.Trainer``.
    """

    def __init__(
        self,
        *args: Any,
        sparsity_target: float,
        sparsity_mode: str = "projection",
        sparsity_weight: float = 10.0,
        sparsity_correction: bool = True,
        sparsity_ramp: float = 0.3,
        threshold_lr_scale: float = 0.01,
        min_params: int = 1000,
        include: Selector | Iterable[Selector] | None = None,
        exclude: Selector | Iterable[Selector] | None = None,
        calibrate_at_end: bool = True,
        desparsify_at_end: bool = True,
        **kwargs: Any,
    ) -> None:
        ramp = _check_ramp(sparsity_ramp, "sparsity_ramp")  # before anything touches the model
        super().__init__(*args, **kwargs)
        if not pruned_tensors(self.model):
            sparsify(self.model, target=sparsity_target, min_params=min_params, include=include, exclude=exclude)
        self.sparsity_loss = SparsityLoss(
            self.model,
            target=sparsity_target,
            mode=sparsity_mode,
            weight=sparsity_weight,
            correction=sparsity_correction,
        )
        self.threshold_lr_scale = threshold_lr_scale
        self.add_callback(
            SparsityCallback(
                self.sparsity_loss,
                sparsity_target,
                ramp=ramp,
                calibrate_at_end=calibrate_at_end,
                desparsify_at_end=desparsify_at_end,
            )
        )

    def create_optimizer(self):  # noqa: ANN201 - the transformers signature
        """The Trainer's optimizer, with the thresholds moved into their own group (scaled rate, no decay)."""
        optimizer = super().create_optimizer()
        thresholds = list(threshold_parameters(self.model))
        ids = {id(p) for p in thresholds}
        for group in optimizer.param_groups:
            group["params"] = [p for p in group["params"] if id(p) not in ids]
        optimizer.add_param_group(
            {"params": thresholds, "lr": self.args.learning_rate * self.threshold_lr_scale, "weight_decay": 0.0}
        )
        return optimizer

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """The Trainer's logs, with the measured and the analytic sparsity added."""
        if pruned_tensors(self.model):
            logs = {
                **logs,
                "sparsity": sparsity_report(self.model).overall,
                "sparsity_analytic": self.sparsity_loss.analytic_sparsity,
            }
        super().log(logs, *args, **kwargs)

    def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, **kwargs: Any):  # noqa: ANN201
        """The model's loss plus the sparsity loss."""
        result = super().compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)
        if return_outputs:
            loss, outputs = result
            return loss + self.sparsity_loss(), outputs
        return result + self.sparsity_loss()
