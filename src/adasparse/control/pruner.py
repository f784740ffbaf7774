"""One object for any training loop: :class:`Pruner` runs adasparse's whole pruning life cycle.

    pruner = adasparse.Pruner(model, target=0.9, total_steps=len(loader) * epochs)   # sparsifies in place
    optimizer = torch.optim.AdamW(pruner.param_groups(lr=3e-4, weight_decay=0.01))   # or SGD, ...
    for x, y in loader:
        loss = task_loss(model(x), y) + pruner.loss()   # zero for the default; the penalty for the original modes
        optimizer.zero_grad(); loss.backward(); optimizer.step()
        pruner.step()                                   # thresholds, ramp, projection, freeze at 80%, ...
    model = pruner.finish()                             # plain model, exactly `target` of the pruned weights zero

The life cycle, as :class:`PrunerConfig`'s defaults set it (every default of the library, the CLI and the
integrations is stated there once):

1. :func:`adasparse.sparsify` gives every prunable layer a threshold ``r``, starting where the sparsity schedule
   starts (0 with a ramp, so a pretrained model is untouched at step 0);
2. after every optimizer step, :meth:`Pruner.step` moves the thresholds by their own scale-free update (an Adam
   step on ``r`` alone, so neither the optimizer of the weights, its learning-rate schedule nor the scale of the
   task gradient decides how fast a threshold moves), keeps every ``r`` inside ``[0, 5]``, raises the target along
   a cubic ramp and projects the thresholds onto the exact budget (:class:`adasparse.SparsityLoss`, mode
   ``"projection"``); on the layers a BatchNorm reads (found on the model's first forward pass), every pruned
   weight's straight-through gradient is clamped to 3 times the root mean square of its layer's kept weights'
   gradients (``pruned_gradient_bound``: an emptied channel otherwise gets BatchNorm's ``1 / sqrt(eps)``);
3. at ``1 - finetune`` of the steps (80%; 50% when ``channel_multiple`` rounds the channel counts there) the zeros
   are calibrated to exactly the target and fixed (a mask inside the parametrization: no parameter or
   ``state_dict`` key changes), and the remaining steps fine-tune the surviving weights;
4. :meth:`Pruner.finish` bakes the zeros into a plain model.

``mode="adaptive", ramp=0, finetune=0, threshold_update="optimizer"`` is the original method of the paper with
the same object.

The settings live in :mod:`adasparse.control.config` (re-exported here), the final calibration and the measured
outcome in :mod:`adasparse.control.result` (:class:`PrunerResult` re-exported here).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ..core._checks import check_fraction, check_int
from ..core._no_grad import no_grad
from ..core.attention_heads import HeadsArgument
from ..core.calibrate import CalibrationResult
from ..core.flops import layer_macs
from ..core.granularity import parse_granularity
from ..core.latency_table import LatencyTable
from ..core.norm_inputs import NormInputs
from ..core.operator import threshold_for_sparsity
from ..core.parametrization import PrunedTensor, freeze, pruned_tensors, pruning_units
from ..core.report import SparsityReport, sparsity_report
from ..core.schedules import cubic_ramp
from ..core.selection import Selector
from ..core.sparsify import desparsify, param_groups, sparsify
from ..core.state_keys import ORIG_SUFFIX
from .config import BUDGETS, THRESHOLD_UPDATES, PrunerConfig, check_same_settings, configured
from .loss import SparsityLoss
from .projection import update_idle
from .result import PrunerResult, calibrated, measured_result, result_from_dict, result_to_dict
from .thresholds import ThresholdVersions, adam_step, threshold_versions

__all__ = ["BUDGETS", "THRESHOLD_UPDATES", "Pruner", "PrunerConfig", "PrunerResult"]


class Pruner:
    """Prune ``model`` to ``target`` while it trains in your own loop (see the module docstring).

    Args:
        model: a plain ``nn.Module``; sparsified in place now (so build the optimizer afterwards, from
            :meth:`param_groups`).
        target: overall sparsity of the prunable layers at the end, in ``[0, 1)``.
        total_steps: optimizer steps the training will take (``>= 1``); the ramp and the fine-tuning phase are
            fractions of it. More calls of :meth:`step` keep the final target (with a warning). ``None`` when the
            step count is known only once training starts (a framework's trainer): set :attr:`total_steps` before
            the first :meth:`step` (the model is sparsified now either way, so the optimizer can be built).
        config: a :class:`PrunerConfig`; keyword ``options`` override its fields (``mode="adaptive"``, ...).
        include, exclude: layer selection, as for :func:`adasparse.sparsify`.
        example_input: an input batch, needed with ``budget="flops"`` to measure each layer's cost.
        heads: with ``granularity="channel"``, the heads of your own attention modules, as for
            :func:`adasparse.sparsify` (``{selector: adasparse.AttentionHeads(...)}``).
        latency: with ``budget="latency"``, the model's :class:`~adasparse.LatencyTable`
            (:func:`adasparse.measure_latency` on this plain model, with the same ``min_params``, ``include``,
            ``exclude`` and ``heads``, at the batch size it will run at): ``target`` is then the fraction of the
            forward time it predicts that is removed. With another budget and ``channel_multiple > 1``, the table
            only picks the fastest of the equally close roundings when the zeros are fixed.

    Example::

        >>> pruner = Pruner(model, target=0.9, total_steps=1000)
        >>> optimizer = torch.optim.SGD(pruner.param_groups(lr=0.1, weight_decay=5e-4), momentum=0.9)
    """

    def __init__(
        self,
        model: nn.Module,
        target: float,
        total_steps: int | None = None,
        config: PrunerConfig | None = None,
        *,
        include: Selector | Iterable[Selector] | None = None,
        exclude: Selector | Iterable[Selector] | None = None,
        example_input: torch.Tensor | None = None,
        heads: HeadsArgument | None = None,
        latency: LatencyTable | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self.config = configured(config, options, "unknown Pruner option")
        self.target = check_fraction(target, "target")
        self._total_steps = None if total_steps is None else check_int(total_steps, "total_steps", 1)
        if pruned_tensors(model):
            raise ValueError("model is already sparsified: build the Pruner on a plain model (desparsify it first)")
        config = self.config
        costs: dict[str, float] | str | None = None
        channels = parse_granularity(config.granularity).kind == "channel"
        if config.budget == "flops" and example_input is None:
            raise ValueError("budget='flops' needs example_input (an input batch) to measure each layer's cost")
        if config.budget == "latency" and latency is None:
            raise ValueError(
                "budget='latency' needs latency= the model's table (adasparse.measure_latency(model, batch))"
            )
        if latency is not None and config.budget != "latency" and config.channel_multiple <= 1:
            raise ValueError(
                f"latency= with budget={config.budget!r} only picks the fastest of the roundings to channel_multiple "
                "that meet the budget: give channel_multiple > 1, or budget='latency' to prune to a time budget"
            )
        if latency is not None and not isinstance(latency, LatencyTable):
            raise TypeError(f"latency must be a LatencyTable, got {type(latency).__name__}")
        sparsify(
            model,
            init_threshold=threshold_for_sparsity(self._initial_sparsity()),
            min_params=config.min_params,
            include=include,
            exclude=exclude,
            trainable=not config.allocates_by_level,  # set from the weights: no gradient (DDP needs none unused)
            task_gradient=config.task_gradient and not config.allocates_by_level,
            centred=config.centred,
            granularity=config.granularity,
            example_input=example_input,
            heads=heads,
            latency=latency,
        )
        if channels:
            costs = config.budget  # the channel cost model knows all three (adasparse.core.channel_cost)
        elif example_input is not None and config.budget == "flops":
            costs = layer_macs(model, example_input, min_params=0)
        self.model = model
        self.costs = costs
        self.criterion = SparsityLoss(
            model,
            target=self._target_at(0),
            mode=config.mode,
            weight=config.weight,
            dual_step=config.dual_step,
            correction=config.correction,
            correction_interval=config.correction_interval,
            budget=costs if costs is not None else "params",
            projection_slope=config.projection_slope,
        )
        self._tensors: list[PrunedTensor] = pruning_units(model)
        self._raw_keys = [pruned.tensor_name + ORIG_SUFFIX for pruned in self._tensors]
        self._moves_thresholds = config.threshold_update == "adam" and not config.allocates_by_level
        self._bounded: list[bool] | None = None  # which tensors take the pruned-gradient bound, once known
        self._norm_inputs: NormInputs | None = None
        if config.pruned_gradient_bound is not None:
            if config.pruned_gradient_bound_layers == "all":
                self._set_bounded([True] * len(self._tensors))
            else:  # found on the model's next forward pass
                self._norm_inputs = NormInputs(model, [t.module for t in self._tensors], self._set_bounded)
        self._identity = self._signature()
        self._versions = self._parameter_versions()
        self._moments = [[0.0, 0.0] for _ in self._tensors]
        self._reached = [False] * len(self._tensors)  # whether the loss has ever reached the layer's weights
        self.steps = 0
        self.frozen = False
        self.finished = False
        self.freeze_result: PrunerResult | None = None
        self.result: PrunerResult | None = None
        self._warned: set[str] = set()
        self._clamped: ThresholdVersions | None = None  # the thresholds' versions after the last clamp (fine-tuning)

    # -- schedule ---------------------------------------------------------------------------------------------
    @property
    def total_steps(self) -> int | None:
        """The optimizer steps of the whole training (``None`` until set, when the Pruner was built without).

        Settable before the first :meth:`step` (``ValueError`` unless an integer ``>= 1``); afterwards only to the
        same value (``RuntimeError``): the ramp and the freeze are fractions of it."""
        return self._total_steps

    @total_steps.setter
    def total_steps(self, value: int) -> None:
        value = check_int(value, "total_steps", 1)
        if self.steps > 0 and value != self._total_steps:
            raise RuntimeError(
                f"Pruner.total_steps cannot change after the first step (it is {self._total_steps}, got {value}): "
                "the ramp and the freeze are fractions of it"
            )
        self._total_steps = value

    def _planned_steps(self) -> int:
        if self._total_steps is None:
            raise RuntimeError(
                "the Pruner was built without total_steps: set pruner.total_steps (the optimizer steps of the whole "
                "training) before the first pruner.step()"
            )
        return self._total_steps

    def _initial_sparsity(self) -> float:
        if self.config.ramp > 0.0:
            return cubic_ramp(0.0, self.target, end=self.config.ramp)
        return self.config.init_fraction * self.target

    def _target_at(self, step: int) -> float:
        if self.config.ramp <= 0.0:
            return self.target
        progress = 0.0 if step == 0 else min(step / self._planned_steps(), 1.0)
        if progress >= self.config.ramp:
            return self.target  # what the ramp returns from its end on
        return cubic_ramp(progress, self.target, end=self.config.ramp)

    @property
    def freeze_step(self) -> int | None:
        """The step after which the zeros are fixed (``None`` without fine-tuning or while :attr:`total_steps` is
        unknown)."""
        if self.config.finetune <= 0.0 or self._total_steps is None:
            return None
        return max(1, round((1.0 - self.config.finetune) * self._total_steps))

    @property
    def current_target(self) -> float:
        """The target of the ramp at the current step."""
        return self.criterion.target

    # -- the optimizer's view -----------------------------------------------------------------------------------
    def param_groups(self, lr: float, weight_decay: float = 0.0) -> list[dict[str, Any]]:
        """Optimizer parameter groups: every parameter of the model at ``lr`` and ``weight_decay``; with
        ``threshold_update="optimizer"`` the thresholds form a second group at ``lr * threshold_lr_scale`` without
        decay, otherwise they are left out (the pruner moves them itself).

        Example::

            >>> optimizer = torch.optim.AdamW(pruner.param_groups(lr=3e-4, weight_decay=0.01))
        """
        groups = param_groups(self.model, lr, weight_decay, self.config.threshold_lr_scale)
        if self.config.threshold_update == "optimizer":
            return groups
        return [group for group in groups if group["name"] != "thresholds"]

    @property
    def penalises(self) -> bool:
        """Whether :meth:`loss` is a penalty now (the ``adaptive``/``fixed``/``upper``/``constraint`` modes before
        the zeros are fixed). Otherwise it is a constant zero, which a loop may leave out of its loss: adding it only
        adds an autograd node per step, and the same gradients."""
        return not (self.frozen or self.config.mode == "projection")

    def loss(self) -> torch.Tensor:
        """The sparsity term to add to the task loss: the penalty of the ``adaptive``/``fixed``/``upper``/
        ``constraint`` modes, a zero tensor in the projection mode and once the zeros are fixed."""
        if self.finished:
            raise _after_finish("loss")
        if not self.penalises:
            threshold = self._tensors[0].threshold
            return torch.zeros((), dtype=threshold.dtype, device=threshold.device)
        return self.criterion()

    # -- the step -----------------------------------------------------------------------------------------------
    def _raw_weights(self) -> list[nn.Parameter | None]:
        """The raw weights the model holds now (``None`` for a desparsified layer)."""
        return [pruned.module._parameters.get(key) for pruned, key in zip(self._tensors, self._raw_keys)]

    def _signature(self) -> tuple[int, ...]:
        """The raw weights' identities (a replaced or desparsified layer has another, or none)."""
        return tuple(map(id, self._raw_weights()))

    def _parameter_versions(self) -> tuple[int, ...]:
        """The raw weights' version counters; ``RuntimeError`` (see :meth:`_check_open`) when the model changed."""
        raws = self._raw_weights()
        if tuple(map(id, raws)) != self._identity:
            raise _model_changed()
        return tuple(raw._version for raw in raws)  # type: ignore[union-attr]

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, UserWarning, stacklevel=3)

    def _check_open(self, method: str) -> None:
        if self.finished:
            raise _after_finish(method)
        if self._signature() != self._identity:
            raise _model_changed()

    def step(self) -> None:
        """Advance the life cycle by one optimizer step; call it right after ``optimizer.step()`` (and before
        ``optimizer.zero_grad()`` when that comes after the step).

        A call with no optimizer step since the last one (none at all yet, or one ``torch.amp.GradScaler``
        skipped) does not advance the pruner. Raises ``RuntimeError`` after :meth:`finish` or when the model's
        pruned layers were replaced or :attr:`total_steps` was never set, and ``ValueError`` when a threshold or
        weight is no longer finite.
        """
        if self.finished:
            raise _after_finish("step")
        versions = self._parameter_versions()  # and the check that the model was not changed
        total_steps = self._planned_steps()
        if self._norm_inputs is not None and not self._norm_inputs.done:
            self._norm_inputs.finish()  # the model's forward ran (a step follows one) but not through its root
        if versions == self._versions:
            self._warn_once(
                "no-step",
                "Pruner.step() was called but no pruned weight changed since the last call (no optimizer.step() "
                "yet, or a GradScaler skipped it): the pruner does not advance for this call",
            )
            return
        if self.steps >= total_steps:
            self._warn_once(
                "overrun",
                f"Pruner.step() called more than total_steps={total_steps} times: the final target "
                f"{self.target} is kept",
            )
        if self.frozen:
            if threshold_versions(self._tensors) != self._clamped:  # an optimizer's momentum may still move them
                self.criterion.clamp_thresholds()
                self._clamped = threshold_versions(self._tensors)
        elif self._takes_threshold_steps or self.steps % self.config.correction_interval == 0:
            self._advance()
        else:
            self.criterion.step()  # divergence check, thresholds back into [0, 5], then the projection
        self.steps += 1
        if not self.frozen and self.steps == self.freeze_step:
            self.freeze()
            versions = self._parameter_versions()  # fixing the zeros wrote the weights
        if not self.frozen:
            target = self._target_at(self.steps)
            if target != self.criterion.target:
                self.criterion.target = target
        self._versions = versions

    @no_grad
    def _advance(self) -> None:
        """The pruning phase's step with the thresholds' own update or the unreached-layer check due."""
        if self._takes_threshold_steps:
            self._update_thresholds()
        if self.config.mode == "projection" and self.steps % self.config.correction_interval == 0:
            self._release_unreached()
            if self.config.allocates_by_level and self.steps < self.config.ramp * self._planned_steps():
                self._plan_ramp()
        self.criterion.step()

    def _plan_ramp(self) -> None:
        """At a measurement inside the ramp: hand the projection the targets of the steps up to the next one, which
        it solves together (:meth:`SparsityLoss.plan`; the same thresholds as solving each when its step comes)."""
        steps = range(self.steps, self.steps + self.config.correction_interval)
        self.criterion.plan([self.criterion.target, *(self._target_at(step) for step in steps[1:])])

    @property
    def _takes_threshold_steps(self) -> bool:
        """Whether the pruner moves the thresholds by their own Adam step (not when they follow the level)."""
        return self._moves_thresholds

    def _release_unreached(self) -> None:
        """Mark the layers the loss never reaches as idle: the projection prunes them first (see
        :func:`.projection.update_idle`)."""
        if not update_idle(self._tensors, self._reached, self.criterion.idle):
            self._warn_once(
                "cleared",
                "no pruned weight has a gradient at Pruner.step(): call it after optimizer.step() and before "
                "optimizer.zero_grad()",
            )

    def _update_thresholds(self) -> None:
        """One scale-free (Adam) step on every threshold from its gradient (see :func:`.thresholds.adam_step`)."""
        step_size = self.config.threshold_lr / self._planned_steps()
        if step_size <= 0.0:
            return
        distributions = self.criterion.structured_distributions()
        any_gradient = adam_step(self._tensors, self._moments, step_size, self.steps + 1, distributions)
        if not any_gradient and (self.config.task_gradient or self.config.mode not in ("projection",)):
            self._warn_once(
                "no-gradient",
                "no threshold has a gradient at Pruner.step(): call it after optimizer.step() and before "
                "optimizer.zero_grad(), and add pruner.loss() to the loss you back-propagate",
            )

    # -- the pruned-gradient bound --------------------------------------------------------------------------------
    def _set_bounded(self, flags: list[bool]) -> None:
        """Bound the pruned-weight gradients of the tensors flagged (single weights only) and of no other."""
        bound = self.config.pruned_gradient_bound
        self._bounded = [bool(flag) and pruned.layout is None for flag, pruned in zip(flags, self._tensors)]
        for flag, pruned in zip(self._bounded, self._tensors):
            if pruned.layout is None:
                pruned.set_gradient_bound(bound if flag else None)

    @property
    def bounded_layers(self) -> list[str] | None:
        """The pruned tensors whose pruned weights' gradients are bounded (``pruned_gradient_bound``), by name;
        ``None`` until known (with ``pruned_gradient_bound_layers="normalized"``, after the first forward pass)."""
        if self._bounded is None:
            return None
        return [pruned.name for flag, pruned in zip(self._bounded, self._tensors) if flag]

    # -- fixing the zeros and finishing -------------------------------------------------------------------------
    def _calibrated(self) -> tuple[SparsityReport, CalibrationResult | None]:
        return calibrated(
            self.model, self.criterion, self.target, self.costs, self.config.calibrate, self.config.channel_multiple
        )

    def _result(self, before: SparsityReport, calibration: CalibrationResult | None) -> PrunerResult:
        return measured_result(
            self.model, self._tensors, self.target, self.costs, before, calibration, self.config.channel_multiple
        )

    @torch.no_grad()
    def freeze(self) -> PrunerResult:
        """Calibrate to the exact target (``calibrate=True``) and fix the zeros; the remaining steps fine-tune the
        surviving weights. Called by :meth:`step` at the fine-tuning step; returns what it measured."""
        self._check_open("freeze")
        if self.frozen:
            raise RuntimeError("Pruner.freeze(): the zeros are already fixed")
        before, calibration = self._calibrated()
        for pruned in self._tensors:
            freeze(pruned.module, pruned.tensor_name)
        self.frozen = True
        self.freeze_result = self._result(before, calibration)
        return self.freeze_result

    @torch.no_grad()
    def finish(self) -> nn.Module:
        """End pruning: calibrate (if the zeros are not fixed yet), bake the zeros into a plain model and return
        it. :attr:`result` then holds the final figures. A second call raises ``RuntimeError``."""
        if self.finished:
            raise RuntimeError("Pruner.finish() was already called")
        self._check_open("finish")
        if self.frozen:
            assert self.freeze_result is not None
            final = sparsity_report(self.model)
            frozen = self.freeze_result
            sparsity = final.shrunk[self.costs] if isinstance(self.costs, str) and final.shrunk else final.overall
            self.result = replace(frozen, sparsity=sparsity, report=frozen.report)
        else:
            before, calibration = self._calibrated()
            self.result = self._result(before, calibration)
        if self._norm_inputs is not None:
            self._norm_inputs.cancel()
        desparsify(self.model)
        self.finished = True
        return self.model

    def report(self) -> SparsityReport:
        """The per-layer sparsity of the model now (:func:`adasparse.sparsity_report`)."""
        return sparsity_report(self.model)

    # -- checkpoints --------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The pruner's state (its settings, step, phase, the loss's state and the thresholds' update state);
        ``torch.save``-able and ``weights_only`` safe. The masks and thresholds live in the model's own
        ``state_dict``, so the two can be saved and restored in any order."""
        state: dict[str, Any] = {
            "config": self.config.to_dict(),
            "target": self.target,
            "total_steps": self.total_steps,
            "steps": self.steps,
            "frozen": self.frozen,
            "finished": self.finished,
            "moments": [list(m) for m in self._moments],
            "reached": list(self._reached),
            "criterion": self.criterion.state_dict(),
            "warned": sorted(self._warned),
            "bounded": None if self._bounded is None else list(self._bounded),
        }
        if self.freeze_result is not None:
            state["freeze_result"] = result_to_dict(self.freeze_result)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (``ValueError`` when it was written for other settings or another model)."""
        if not isinstance(state, Mapping) or "steps" not in state or "criterion" not in state:
            raise ValueError("not a Pruner state_dict (it has no 'steps' and 'criterion')")
        if self._total_steps is None:
            raise ValueError(
                f"set pruner.total_steps before loading a Pruner state (the state's is {state.get('total_steps')!r})"
            )
        check_same_settings(state, self.config, self.target, self.total_steps)
        moments = state.get("moments", [])
        if len(moments) != len(self._tensors):
            raise ValueError(f"the Pruner state has {len(moments)} thresholds, the model {len(self._tensors)}")
        self.criterion.load_state_dict(state["criterion"])
        self._moments = [[float(a), float(b)] for a, b in moments]
        self._reached = [bool(flag) for flag in state.get("reached", [True] * len(self._tensors))]
        self.steps = int(state["steps"])
        self.frozen = bool(state["frozen"])
        self.finished = bool(state.get("finished", False))
        self._warned = set(state.get("warned", []))
        frozen_result = state.get("freeze_result")
        self.freeze_result = result_from_dict(frozen_result) if frozen_result is not None else None
        self._versions = self._parameter_versions()
        self._clamped = None
        bounded = state.get("bounded")
        if bounded is not None and self.config.pruned_gradient_bound is not None:
            if len(bounded) != len(self._tensors):
                raise ValueError(f"the Pruner state bounds {len(bounded)} tensors, the model has {len(self._tensors)}")
            if self._norm_inputs is not None:
                self._norm_inputs.cancel()
            self._set_bounded([bool(flag) for flag in bounded])

    def __repr__(self) -> str:
        phase = "finished" if self.finished else "fine-tuning" if self.frozen else "pruning"
        return (
            f"Pruner(target={self.target}, step {self.steps}/{self._total_steps or '?'}, {phase}, "
            f"mode={self.config.mode!r}, layers={len(self._tensors)})"
        )


def _after_finish(method: str) -> RuntimeError:
    return RuntimeError(f"Pruner.{method}() after finish(): the model is already a plain pruned model")


def _model_changed() -> RuntimeError:
    return RuntimeError(
        "the model changed after the Pruner was built (a pruned layer was replaced, desparsified or re-sparsified): "
        "build a new Pruner for the new model"
    )
