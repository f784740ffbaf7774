"""Pruning methods as the training loop sees them: ours (learned thresholds) and the baselines users compare to.

Every method follows one life cycle: ``prepare`` the model, add a ``loss`` term each step, react at the end of
each step (prune, ramp a target), report the sparsity reached, save its state with the checkpoint, and
``finish`` by leaving a plain model with the zeros baked in.

- ``adasparse``: :class:`adasparse.Pruner` (learned thresholds, the default controller or the paper's losses);
- ``gmp`` / ``gmp-layer``: gradual magnitude pruning with the cubic schedule of Zhu & Gupta (2017), global or
  uniform per layer, pruning every few steps between 10% and 70% of training;
- ``oneshot``: train dense, prune the smallest weights globally at the end (no fine-tuning);
- ``oneshot-ft``: train dense for the first half (one cosine cycle), prune globally, fine-tune the second half;
  from a pretrained model (``init_from``), prune before the first step and fine-tune the whole run;
- ``l1-channels`` / ``l1-channels-uniform``: structured, for ``granularity="channel"`` comparisons: the smallest-L1
  channels of the starting model (torch-pruning's magnitude importance), ranked globally or the same fraction in
  every layer, fixed at the first step to the target's share of the model's cost, then fine-tuned the whole run;
- ``dense``: no pruning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..baselines.channels import magnitude_channel_prune
from ..baselines.magnitude import MagnitudePruner
from ..control.pruner import Pruner
from ..core.channel_sets import ChannelSet
from ..core.latency_table import LatencyTable
from ..core.parametrization import pruned_tensors, pruning_units
from ..core.report import SparsityReport, sparsity_report
from ..core.schedules import cubic_ramp
from ..core.sparsify import desparsify, param_groups

if TYPE_CHECKING:
    from .config import TrainConfig

__all__ = ["METHODS", "Method", "Finish", "create_method", "GMP_START", "GMP_END", "GMP_EVENTS"]

METHODS = ("adasparse", "gmp", "gmp-layer", "oneshot", "oneshot-ft", "l1-channels", "l1-channels-uniform", "dense")

GMP_START, GMP_END = 0.1, 0.7
"""Gradual magnitude pruning ramps the sparsity between these fractions of the training steps."""

GMP_EVENTS = 100
"""About this many pruning steps along the ramp."""


@dataclass
class Finish:
    """Sparsity before and after the method's final step (calibration, one-shot pruning, ...)."""

    sparsity_before: float
    sparsity_after: float
    analytic: float | None = None
    message: str = ""
    report: SparsityReport | None = None
    """The final per-layer report, when the method has more to say than the plain model's zeros."""
    reached: bool | None = None
    """Whether the target was met, when the method knows better than a count of zeros (channels: within one)."""


class Method:
    """Base class: dense training (no pruning)."""

    name = "dense"
    sparse = False

    def __init__(self, model: nn.Module, config: TrainConfig) -> None:
        self.model = model
        self.config = config

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """The optimizer's parameter groups (named ``"weights"`` and, where thresholds are learnt by the
        optimizer, ``"thresholds"``)."""
        return param_groups(self.model, lr, weight_decay)

    def threshold_step(self) -> float:
        """The thresholds' step size where the method moves them itself (not the optimizer); NaN otherwise."""
        return float("nan")

    def begin_step(self, step: int, total_steps: int) -> None:
        """Called before each training step's forward pass."""

    def loss(self) -> torch.Tensor | None:
        """Extra loss term for this step, or ``None``."""
        return None

    def end_step(self, step: int, total_steps: int) -> None:
        """Called after each optimizer step; ``step`` counts completed steps."""

    def sparsity(self) -> float:
        """Actual overall sparsity of the pruned tensors now."""
        return sparsity_report(self.model, min_params=self.config.pthres).overall

    def analytic(self) -> float | None:
        return None

    def layer_sparsities(self) -> list[dict[str, Any]]:
        """Per pruned tensor: name, size, actual and analytic sparsity, threshold (empty when not tracked)."""
        return []

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""

    def finish(self, log: Callable[[str], None]) -> Finish:
        """Leave a plain model (zeros baked in); report the sparsity before and after the final step."""
        sparsity = self.sparsity()
        return Finish(sparsity, sparsity)


class LearnedThresholds(Method):
    """Ours: one learned threshold per layer, the whole life cycle run by :class:`adasparse.Pruner`."""

    name = "adasparse"
    sparse = True

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        example_input: torch.Tensor | None = None,
        total_steps: int = 1,
        latency: LatencyTable | None = None,
    ) -> None:
        super().__init__(model, config)
        self.pruner = Pruner(
            model, config.target, total_steps, config.pruner_config(), example_input=example_input, latency=latency
        )
        self.criterion = self.pruner.criterion

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        return self.pruner.param_groups(lr, weight_decay)

    def threshold_step(self) -> float:
        if self.pruner.config.threshold_update != "adam" or self.pruner.frozen:
            return float("nan")
        return self.pruner.config.threshold_lr / self.pruner.total_steps

    def loss(self) -> torch.Tensor | None:
        return self.pruner.loss() if self.pruner.penalises else None

    def end_step(self, step: int, total_steps: int) -> None:
        self.pruner.step()

    def sparsity(self) -> float:
        return _budget_sparsity(sparsity_report(self.model), self.config.budget)

    def analytic(self) -> float | None:
        if self.pruner.frozen or self.pruner.criterion.mode == "projection" and _by_channels(self.model):
            return None
        return self.criterion.analytic_sparsity

    def layer_sparsities(self) -> list[dict[str, Any]]:
        frozen = self.pruner.frozen
        return [
            {
                "layer": layer.name,
                "numel": layer.numel,
                "actual": layer.actual,
                "analytic": None if frozen else layer.analytic,
                "threshold": None if frozen else layer.threshold,
            }
            for layer in sparsity_report(self.model).layers
        ]

    def state_dict(self) -> dict[str, Any]:
        return {"pruner": self.pruner.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "pruner" not in state:
            raise ValueError("the checkpoint was written by an older adasparse (no pruner state): start a new run")
        self.pruner.load_state_dict(state["pruner"])

    def finish(self, log: Callable[[str], None]) -> Finish:
        frozen = self.pruner.frozen
        self.pruner.finish()
        result = self.pruner.result
        assert result is not None
        message = result.message
        if frozen:
            message = f"fine-tuning with fixed masks; {message}" if message else "fine-tuning with fixed masks"
        return Finish(result.sparsity_before, result.sparsity, result.analytic, message, result.report, result.reached)


def _by_channels(model: nn.Module) -> bool:
    return any(isinstance(p.layout, ChannelSet) for p in pruned_tensors(model))


def _budget_sparsity(report: SparsityReport, budget: str) -> float:
    """The sparsity the target refers to: the zero fraction of the pruned weights, or for a model pruned by
    channels the fraction of its cost (``budget``) removed once they are."""
    return report.shrunk[budget] if report.shrunk is not None else report.overall


class MagnitudeChannels(Method):
    """L1-norm channel pruning of the starting model, fine-tuned with the channels fixed (see the module
    docstring)."""

    sparse = True

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        example_input: torch.Tensor | None,
        allocation: str,
        latency: LatencyTable | None = None,
    ):
        super().__init__(model, config)
        self.name = "l1-channels" if allocation == "global" else "l1-channels-uniform"
        if example_input is None:
            raise ValueError(f"method {self.name} needs an example input to trace the model")
        magnitude_channel_prune(
            model,
            example_input,
            config.target,
            budget=config.budget,
            allocation=allocation,
            min_params=config.pthres,
            channel_multiple=config.channel_multiple,
            latency=latency,
        )

    def sparsity(self) -> float:
        return _budget_sparsity(sparsity_report(self.model), self.config.budget)

    def finish(self, log: Callable[[str], None]) -> Finish:
        report = sparsity_report(self.model)
        sparsity = _budget_sparsity(report, self.config.budget)
        cost = pruning_units(self.model)[0].layout.cost
        one_channel = cost.channel_cost(cost.fractions(), self.config.budget)
        reached = abs(sparsity - self.config.target) <= self.config.channel_multiple * one_channel
        desparsify(self.model)
        return Finish(sparsity, sparsity, report=report, reached=reached)


class Magnitude(Method):
    """Magnitude-pruning baselines (see the module docstring)."""

    def __init__(self, model: nn.Module, config: TrainConfig, schedule: str, scope: str) -> None:
        super().__init__(model, config)
        self.name = {"gradual": "gmp", "oneshot": "oneshot", "oneshot-ft": "oneshot-ft"}[schedule]
        if schedule == "gradual" and scope == "layer":
            self.name = "gmp-layer"
        self.schedule = schedule
        self.sparse = True
        self.pruner = MagnitudePruner(model, scope=scope, min_params=config.pthres)

    def begin_step(self, step: int, total_steps: int) -> None:
        if self.schedule == "oneshot-ft" and step == 0 and self._prune_step(total_steps) == 0:
            self.pruner.prune_to(self.config.target)

    def end_step(self, step: int, total_steps: int) -> None:
        if self.schedule == "gradual":
            start, end = round(GMP_START * total_steps), round(GMP_END * total_steps)
            interval = max(1, (end - start) // GMP_EVENTS)
            if start < step <= end and ((step - start) % interval == 0 or step == end):
                self.pruner.prune_to(cubic_ramp(step / total_steps, self.config.target, start=GMP_START, end=GMP_END))
        elif self.schedule == "oneshot-ft" and step == self._prune_step(total_steps):
            self.pruner.prune_to(self.config.target)

    def _prune_step(self, total_steps: int) -> int:
        """The step after which one-shot + fine-tuning prunes: half time, or 0 (before the first step) for a
        pretrained start."""
        if self.config.init_from is not None:
            return 0
        epochs = self.config.epochs
        return (epochs // 2) * (total_steps // epochs)

    def sparsity(self) -> float:
        return self.pruner.sparsity()

    def finish(self, log: Callable[[str], None]) -> Finish:
        before = self.pruner.sparsity()
        self.pruner.prune_to(self.config.target)  # one-shot prunes here; the others are already at the target
        after = self.pruner.sparsity()
        self.pruner.remove()
        return Finish(before, after)


def create_method(
    method: str,
    model: nn.Module,
    config: TrainConfig,
    example_input: torch.Tensor | None = None,
    total_steps: int = 1,
    latency: LatencyTable | None = None,
) -> Method:
    """The :class:`Method` named ``method`` (one of :data:`METHODS`), prepared on ``model`` for a training of
    ``total_steps`` optimizer steps; ``latency`` prices the channels of the channel methods in time."""
    if method == "dense" or config.sparsity == "none":
        return Method(model, config)
    if method == "adasparse":
        return LearnedThresholds(model, config, example_input, total_steps, latency)
    if method in ("gmp", "gmp-layer"):
        return Magnitude(model, config, "gradual", "layer" if method == "gmp-layer" else "global")
    if method in ("oneshot", "oneshot-ft"):
        return Magnitude(model, config, method, "global")
    if method in ("l1-channels", "l1-channels-uniform"):
        allocation = "global" if method == "l1-channels" else "uniform"
        return MagnitudeChannels(model, config, example_input, allocation, latency)
    raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
