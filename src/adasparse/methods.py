"""Pruning methods as the training loop sees them: ours (learned thresholds) and the baselines users compare to.

Every method follows one life cycle: ``prepare`` the model, add a ``loss`` term each step, react at the end of
each step (prune, ramp a target), report the sparsity reached, save its state with the checkpoint, and
``finish`` by leaving a plain model with the zeros baked in.

- ``adasparse``: :func:`adasparse.sparsify` + :class:`adasparse.SparsityLoss`, optionally calibrated at the end;
- ``gmp`` / ``gmp-layer``: gradual magnitude pruning with the cubic schedule of Zhu & Gupta (2017), global or
  uniform per layer, pruning every few steps between 10% and 70% of training;
- ``oneshot``: train dense, prune the smallest weights globally at the end (no fine-tuning);
- ``oneshot-ft``: train dense for the first half (one cosine cycle), prune globally, fine-tune the second half;
- ``dense``: no pruning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .calibrate import calibrate
from .flops import layer_macs
from .loss import SparsityLoss
from .magnitude import MagnitudePruner
from .operator import threshold_for_sparsity
from .report import SparsityReport, sparsity_report
from .schedules import cubic_ramp
from .sparsify import desparsify, sparsify

__all__ = ["METHODS", "Method", "Finish", "create_method", "GMP_START", "GMP_END", "GMP_EVENTS"]

METHODS = ("adasparse", "gmp", "gmp-layer", "oneshot", "oneshot-ft", "dense")

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


class Method:
    """Base class: dense training (no pruning)."""

    name = "dense"
    sparse = False

    def __init__(self, model: nn.Module, config: Any) -> None:
        self.model = model
        self.config = config

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
    """Ours: one learned threshold per layer, trained with the sparsity loss (any of its modes)."""

    name = "adasparse"
    sparse = True

    def __init__(self, model: nn.Module, config: Any, example_input: torch.Tensor | None = None) -> None:
        super().__init__(model, config)
        init = threshold_for_sparsity(config.init_fraction * config.target)
        sparsify(model, init_threshold=init, min_params=config.pthres, task_gradient=config.task_gradient)
        budget: Any = "params"
        self.costs: dict[str, float] | None = None
        if config.budget == "flops":
            if example_input is None:
                raise ValueError("budget='flops' needs an example input to measure each layer's cost")
            budget = self.costs = layer_macs(model, example_input)
        self.criterion = SparsityLoss(
            model,
            target=config.target,
            mode=config.sparsity,
            weight=config.lv,
            dual_step=config.dual_step,
            correction=config.correction,
            budget=budget,
        )

        self.frozen: MagnitudePruner | None = None
        self.frozen_report: SparsityReport | None = None
        self.frozen_before: float | None = None
        self.frozen_analytic: float | None = None
        self.messages: list[str] = []

    def _freeze_step(self, total_steps: int) -> int | None:
        if self.config.finetune <= 0.0:
            return None
        return round((1.0 - self.config.finetune) * total_steps)

    def begin_step(self, step: int, total_steps: int) -> None:
        if self.config.ramp > 0.0 and self.frozen is None:
            self.criterion.target = cubic_ramp(step / total_steps, self.config.target, end=self.config.ramp)

    def loss(self) -> torch.Tensor | None:
        return None if self.frozen is not None else self.criterion()

    def end_step(self, step: int, total_steps: int) -> None:
        if self.frozen is None:
            self.criterion.step()
            if step == self._freeze_step(total_steps):
                self.freeze()

    @torch.no_grad()
    def freeze(self, *, calibrate_first: bool = True) -> None:
        """Calibrate to the exact target, bake the zeros in and keep them with fixed masks for fine-tuning."""
        before = sparsity_report(self.model)
        self.frozen_before, self.frozen_analytic = before.overall, before.analytic
        report = before
        if calibrate_first:
            result = calibrate(self.model, self.config.target, budget=self.costs)
            self.messages.append(f"fine-tuning with fixed masks; {result}")
            report = result.after
        self.frozen_report = report
        desparsify(self.model)
        self.frozen = MagnitudePruner(self.model, min_params=self.config.pthres)
        self.frozen.freeze_zeros()

    def sparsity(self) -> float:
        if self.frozen is not None:
            return self.frozen.sparsity()
        return sparsity_report(self.model).overall

    def analytic(self) -> float | None:
        return None if self.frozen is not None else self.criterion.analytic_sparsity

    def layer_sparsities(self) -> list[dict[str, Any]]:
        if self.frozen is not None:
            return self.frozen.layer_rows()
        return [
            {
                "layer": layer.name,
                "numel": layer.numel,
                "actual": layer.actual,
                "analytic": layer.analytic,
                "threshold": layer.threshold,
            }
            for layer in sparsity_report(self.model).layers
        ]

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"loss": self.criterion.state_dict(), "frozen": self.frozen is not None}
        if self.frozen is not None:
            state.update(
                frozen_before=self.frozen_before,
                frozen_analytic=self.frozen_analytic,
                frozen_report=self.frozen_report.to_dict() if self.frozen_report else None,
                messages=list(self.messages),
            )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the loss state; a checkpoint taken after the freeze restructures the model the same way
        (masks and weights then come from the model's own state_dict)."""
        self.criterion.load_state_dict(state["loss"])
        if state.get("frozen") and self.frozen is None:
            self.freeze(calibrate_first=False)
            self.frozen_before = state["frozen_before"]
            self.frozen_analytic = state["frozen_analytic"]
            self.frozen_report = SparsityReport.from_dict(state["frozen_report"]) if state["frozen_report"] else None
            self.messages = list(state["messages"])

    def finish(self, log: Callable[[str], None]) -> Finish:
        if self.frozen is not None:
            after = self.frozen.sparsity()
            self.frozen.remove()
            return Finish(self.frozen_before, after, self.frozen_analytic, "\n".join(self.messages), self.frozen_report)
        before = sparsity_report(self.model)
        after = before.overall
        message = ""
        report = before
        if self.config.calibrate:
            result = calibrate(self.model, self.config.target, budget=self.costs)
            after, report = result.after.overall, result.after
            message = str(result)
        desparsify(self.model)
        return Finish(before.overall, after, before.analytic, message, report)


class Magnitude(Method):
    """Magnitude-pruning baselines (see the module docstring)."""

    def __init__(self, model: nn.Module, config: Any, schedule: str, scope: str) -> None:
        super().__init__(model, config)
        self.name = {"gradual": "gmp", "oneshot": "oneshot", "oneshot-ft": "oneshot-ft"}[schedule]
        if schedule == "gradual" and scope == "layer":
            self.name = "gmp-layer"
        self.schedule = schedule
        self.sparse = True
        self.pruner = MagnitudePruner(model, scope=scope, min_params=config.pthres)

    def end_step(self, step: int, total_steps: int) -> None:
        if self.schedule == "gradual":
            start, end = round(GMP_START * total_steps), round(GMP_END * total_steps)
            interval = max(1, (end - start) // GMP_EVENTS)
            if start < step <= end and ((step - start) % interval == 0 or step == end):
                self.pruner.prune_to(cubic_ramp(step / total_steps, self.config.target, start=GMP_START, end=GMP_END))
        elif self.schedule == "oneshot-ft" and step == self._prune_step(total_steps):
            self.pruner.prune_to(self.config.target)

    def _prune_step(self, total_steps: int) -> int:
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


def create_method(method: str, model: nn.Module, config: Any, example_input: torch.Tensor | None = None) -> Method:
    """The :class:`Method` named ``method`` (one of :data:`METHODS`), prepared on ``model``."""
    if method == "dense" or config.sparsity == "none":
        return Method(model, config)
    if method == "adasparse":
        return LearnedThresholds(model, config, example_input)
    if method in ("gmp", "gmp-layer"):
        return Magnitude(model, config, "gradual", "layer" if method == "gmp-layer" else "global")
    if method in ("oneshot", "oneshot-ft"):
        return Magnitude(model, config, method, "global")
    raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
