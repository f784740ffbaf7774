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

from ..loss import SparsityLoss
from ..parametrization import pruned_tensors
from ..report import sparsity_report
from ..selection import Selector
from ..sparsify import sparsify, threshold_parameters
from . import finish_pruning

__all__ = ["SparsityTrainer", "SparsityCallback"]


class SparsityCallback(TrainerCallback):
    """Finishes the pruning when training ends: exact calibration, then desparsify."""

    def __init__(self, target: float, *, calibrate_at_end: bool, desparsify_at_end: bool) -> None:
        self.target = target
        self.calibrate_at_end = calibrate_at_end
        self.desparsify_at_end = desparsify_at_end

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any):
        if model is not None:
            finish_pruning(
                model, self.target, calibrate_at_end=self.calibrate_at_end, desparsify_at_end=self.desparsify_at_end
            )


class SparsityTrainer(Trainer):
    """A ``transformers.Trainer`` that prunes the model to ``sparsity_target`` while it trains.

    Args:
        sparsity_target: overall sparsity of the prunable layers, in ``[0, 1)``.
        sparsity_mode: the :class:`adasparse.SparsityLoss` mode (default ``"constraint"``).
        sparsity_weight: the loss weight ``lv``.
        threshold_lr_scale: the thresholds' learning rate over ``args.learning_rate`` (default 0.01).
        min_params, include, exclude: layer selection, as for :func:`adasparse.sparsify`.
        calibrate_at_end, desparsify_at_end: finish with the exact target and a plain model.
        Everything else goes to ``transformers.Trainer``.
    """

    def __init__(
        self,
        *args: Any,
        sparsity_target: float,
        sparsity_mode: str = "constraint",
        sparsity_weight: float = 10.0,
        threshold_lr_scale: float = 0.01,
        min_params: int = 1000,
        include: Selector | Iterable[Selector] | None = None,
        exclude: Selector | Iterable[Selector] | None = None,
        calibrate_at_end: bool = True,
        desparsify_at_end: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if not pruned_tensors(self.model):
            sparsify(self.model, target=sparsity_target, min_params=min_params, include=include, exclude=exclude)
        self.sparsity_loss = SparsityLoss(
            self.model, target=sparsity_target, mode=sparsity_mode, weight=sparsity_weight
        )
        self.threshold_lr_scale = threshold_lr_scale
        self.add_callback(
            SparsityCallback(sparsity_target, calibrate_at_end=calibrate_at_end, desparsify_at_end=desparsify_at_end)
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
