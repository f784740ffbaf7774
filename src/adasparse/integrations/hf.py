"""Pruning inside the Hugging Face ``Trainer`` (``pip install "adasparse[hf]"``).

    from adasparse.integrations.hf import SparsityTrainer
    trainer = SparsityTrainer(model=model, args=args, train_dataset=data, sparsity_target=0.9)
    trainer.train()              # the model ends desparsified, exactly 90% of its prunable weights zero

``SparsityTrainer`` is a thin adapter over :class:`adasparse.Pruner`, so it runs the life cycle of
``adasparse train`` with the same defaults (:class:`adasparse.PrunerConfig`): the pruner is built (and the model
sparsified) when the trainer is created, before any optimizer; ``create_optimizer`` keeps the thresholds out of the
optimizer (the pruner moves them itself; with ``threshold_update="optimizer"`` they get their own group at
``learning_rate * threshold_lr_scale`` without decay); ``compute_loss`` adds ``pruner.loss()`` in training (so
gradient accumulation and mixed precision treat it like the task loss); :class:`SparsityCallback` sets the
pruner's step count from ``state.max_steps`` when training begins, calls ``pruner.step()`` after every
``optimizer.step()`` (before ``zero_grad``), and ends training with ``pruner.finish()``; the zeros are fixed for
the last ``finetune`` fraction of the steps. Every log carries the measured and the analytic sparsity. Checkpoints
hold the pruner's state (``adasparse_pruner.pt``), so ``train(resume_from_checkpoint=...)`` resumes the pruning.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

try:
    from transformers import Trainer, TrainerCallback
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError('the Hugging Face integration needs transformers: pip install "adasparse[hf]"') from error

import torch

from ..control.pruner import Pruner, PrunerConfig, PrunerResult
from ..core._checks import check_fraction
from ..core.attention_heads import AttentionHeads, HeadsArgument
from ..core.report import sparsity_report
from ..core.selection import Selector
from ..core.sparsify import threshold_parameters
from . import pruner_config

__all__ = ["PRUNER_STATE_NAME", "SparsityCallback", "SparsityTrainer", "bert_heads"]

PRUNER_STATE_NAME = "adasparse_pruner.pt"
"""The pruner's state in every checkpoint directory of a :class:`SparsityTrainer`."""

_RENAMED = {
    "sparsity_mode": "mode",
    "sparsity_weight": "weight",
    "sparsity_correction": "correction",
    "sparsity_ramp": "ramp",
    "calibrate_at_end": "calibrate",
}
"""The trainer's older argument names and the :class:`adasparse.PrunerConfig` fields they set."""


def bert_heads(attention: type[torch.nn.Module] | None = None) -> HeadsArgument:
    """The ``heads=`` of Hugging Face's BERT attention, for ``granularity="channel"`` (:func:`adasparse.sparsify`,
    :class:`adasparse.Pruner`, :func:`adasparse.shrink`, :class:`SparsityTrainer`): its query, key and value
    projections ``self.query``/``self.key``/``self.value``, the output layer ``output.dense``, the head count
    ``self.num_attention_heads`` and the inner width ``self.all_head_size``.

    Args:
        attention: the attention module class to declare (default ``BertAttention``); a model whose attention has
            the same layout under another class (RoBERTa's, say) passes that class.
    """
    if attention is None:
        from transformers.models.bert.modeling_bert import BertAttention

        attention = BertAttention
    declaration = AttentionHeads(
        query="self.query",
        key="self.key",
        value="self.value",
        output="output.dense",
        num_heads="self.num_attention_heads",
        inner_dim="self.all_head_size",
    )
    return {attention: declaration}


class SparsityCallback(TrainerCallback):
    """Runs an :class:`adasparse.Pruner` along a ``Trainer``'s training: its step count from ``state.max_steps`` at
    the start (unless set), ``pruner.step()`` after every optimizer step, the pruner's state saved with every
    checkpoint and restored from ``resume_from`` (a checkpoint directory), ``pruner.finish()`` at the end
    (unless ``desparsify_at_end=False``)."""

    def __init__(self, pruner: Pruner, *, desparsify_at_end: bool = True) -> None:
        if not isinstance(pruner, Pruner):
            raise TypeError(f"pruner must be an adasparse.Pruner, got {type(pruner).__name__}")
        self.pruner = pruner
        self.desparsify_at_end = desparsify_at_end
        self.resume_from: str | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any):
        pruner = self.pruner
        if pruner.finished:
            raise RuntimeError("the pruner already finished: build a new SparsityTrainer to prune again")
        if pruner.total_steps is None:
            if not state.max_steps or state.max_steps < 1:
                raise ValueError("the Trainer does not know its number of steps: set TrainingArguments.max_steps")
            pruner.total_steps = int(state.max_steps)
        if self.resume_from is not None:
            path = os.path.join(self.resume_from, PRUNER_STATE_NAME)
            if not os.path.isfile(path):
                raise ValueError(
                    f"{self.resume_from} has no {PRUNER_STATE_NAME}: it was not written by a SparsityTrainer"
                )
            pruner.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            self.resume_from = None

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any):
        if not self.pruner.finished:
            self.pruner.step()  # after optimizer.step(), before zero_grad: the thresholds' gradients are still there

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any):
        directory = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        if state.is_world_process_zero and os.path.isdir(directory):
            torch.save(self.pruner.state_dict(), os.path.join(directory, PRUNER_STATE_NAME))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any):
        if self.desparsify_at_end and not self.pruner.finished:
            self.pruner.finish()


class SparsityTrainer(Trainer):
    """A ``transformers.Trainer`` that prunes the model to ``sparsity_target`` while it trains.

    Args:
        sparsity_target: overall sparsity of the prunable layers at the end, in ``[0, 1)``.
        sparsity_config: a :class:`adasparse.PrunerConfig` (default: its defaults, those of ``adasparse train``).
        Any :class:`adasparse.PrunerConfig` field as a keyword (``finetune=0.2``, ``threshold_update="adam"``,
            ``threshold_lr_scale``, ``min_params``, ...) overrides it; the older names ``sparsity_mode``,
            ``sparsity_weight``, ``sparsity_correction``, ``sparsity_ramp`` and ``calibrate_at_end`` set ``mode``,
            ``weight``, ``correction``, ``ramp`` and ``calibrate``.
        include, exclude: layer selection, as for :func:`adasparse.sparsify`.
        desparsify_at_end: end training with ``pruner.finish()`` (a plain model); ``False`` leaves it sparsified
            (call ``trainer.pruner.finish()`` later).
        sparsity_example_input: an input batch, needed with ``budget="flops"`` and ``granularity="channel"``.
        sparsity_heads: with ``granularity="channel"``, the heads of the model's attention modules,
            ``{BertAttention: adasparse.AttentionHeads(...)}`` (see :class:`adasparse.AttentionHeads`).
        Everything else goes to ``transformers.Trainer`` (``model_init`` is not supported: the model must exist,
        and be sparsified, before the optimizer is built).

    Attributes:
        pruner: the :class:`adasparse.Pruner`.
    """

    def __init__(
        self,
        *args: Any,
        sparsity_target: float,
        sparsity_config: PrunerConfig | None = None,
        include: Selector | Iterable[Selector] | None = None,
        exclude: Selector | Iterable[Selector] | None = None,
        desparsify_at_end: bool = True,
        sparsity_example_input: torch.Tensor | None = None,
        sparsity_heads: HeadsArgument | None = None,
        **kwargs: Any,
    ) -> None:
        target = check_fraction(sparsity_target, "sparsity_target")
        options = {_RENAMED[name]: kwargs.pop(name) for name in list(kwargs) if name in _RENAMED}
        options.update({name: kwargs.pop(name) for name in list(kwargs) if name in PrunerConfig.__dataclass_fields__})
        options = {name: value for name, value in options.items() if value is not None}
        config = pruner_config(sparsity_config, options, owner="SparsityTrainer")  # before the model is touched
        if kwargs.get("model_init") is not None:
            raise ValueError(
                "SparsityTrainer does not support model_init (the Trainer would rebuild a plain model when training "
                "starts): pass model="
            )
        super().__init__(*args, **kwargs)
        self.pruner = Pruner(
            self.model,
            target,
            None,
            config,
            include=include,
            exclude=exclude,
            example_input=sparsity_example_input,
            heads=sparsity_heads,
        )
        self.sparsity_callback = SparsityCallback(self.pruner, desparsify_at_end=desparsify_at_end)
        self.add_callback(self.sparsity_callback)

    @property
    def sparsity_result(self) -> PrunerResult | None:
        """What the final calibration measured (set by ``pruner.finish()`` at the end of training)."""
        return self.pruner.result

    @property
    def sparsity_loss(self) -> Any:
        """The pruner's :class:`adasparse.SparsityLoss` (kept for older code)."""
        return self.pruner.criterion

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):  # noqa: ANN201
        """``transformers.Trainer.train``; a resumed run also restores the pruner from the checkpoint."""
        path = resume_from_checkpoint
        if path is True:
            path = get_last_checkpoint(self.args.output_dir)
        self.sparsity_callback.resume_from = path if isinstance(path, str) else None
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def create_optimizer(self, *args: Any, **kwargs: Any):  # noqa: ANN201 - the transformers signature
        """The Trainer's optimizer without the thresholds (the pruner moves them), or, with
        ``threshold_update="optimizer"``, with the thresholds in their own group (scaled rate, no decay)."""
        optimizer = super().create_optimizer(*args, **kwargs)
        thresholds = list(threshold_parameters(self.model))
        ids = {id(p) for p in thresholds}
        for group in optimizer.param_groups:
            group["params"] = [p for p in group["params"] if id(p) not in ids]
        if self.pruner.config.threshold_update == "optimizer" and thresholds:
            rate = self.args.learning_rate * self.pruner.config.threshold_lr_scale
            optimizer.add_param_group({"params": thresholds, "lr": rate, "weight_decay": 0.0})
        return optimizer

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """The Trainer's logs, with the measured (and, before the zeros are fixed, the analytic) sparsity added."""
        if not self.pruner.finished:
            logs = {**logs, "sparsity": sparsity_report(self.model).overall}
            if not self.pruner.frozen:
                logs["sparsity_analytic"] = self.pruner.criterion.analytic_sparsity
        super().log(logs, *args, **kwargs)

    def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, **kwargs: Any):  # noqa: ANN201
        """The model's loss plus, in training, the pruner's loss (zero in the projection mode)."""
        result = super().compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)
        if not model.training or self.pruner.finished or self.pruner.frozen:
            return result
        penalty = self.pruner.loss() * self._penalty_scale(kwargs.get("num_items_in_batch"))
        if return_outputs:
            loss, outputs = result
            return loss + penalty, outputs
        return result + penalty

    def _penalty_scale(self, num_items_in_batch: Any) -> float:
        """``1 / accumulation steps`` where the Trainer will not divide the loss by them itself (a loss already
        normalised over the accumulated batch), so the penalty counts once per optimizer step either way."""
        scaled = getattr(self, "loss_is_scaled_for_ga", None)
        if scaled is None:
            scaled = (getattr(self, "model_accepts_loss_kwargs", False) and num_items_in_batch is not None) or (
                getattr(self, "compute_loss_func", None) is not None
            )
        steps = getattr(self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps)
        return 1.0 / steps if scaled else 1.0
