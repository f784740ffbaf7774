"""The sparsity loss: the analytic (Gaussian) sparsity of every pruned layer, driven toward a target."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ._checks import check_choice, check_fraction, check_nonnegative, check_positive
from .operator import MAX_THRESHOLD, analytic_sparsity
from .parametrization import PrunedTensor, pruned_tensors

__all__ = ["MODES", "SparsityLoss", "DEFAULT_DUAL_STEP", "DEFAULT_CORRECTION_INTERVAL"]

MODES = ("adaptive", "fixed", "upper", "constraint")

DEFAULT_DUAL_STEP = 0.5
"""Dual ascent step of the ``"constraint"`` mode (per optimizer step, in units of the sparsity gap)."""

DEFAULT_CORRECTION_INTERVAL = 20
"""With ``correction=True``, the measured-minus-analytic offsets are refreshed every this many training calls."""

_SQRT_HALF = math.sqrt(0.5)
_DENSITY_SCALE = math.sqrt(2.0 / math.pi)


def _loss_and_gradient(
    mode: str,
    r_values: list[float],
    shares: list[float],
    offsets: list[float],
    target: float,
    weight: float,
    multiplier: float,
) -> tuple[float, float, list[float]]:
    """Loss, overall (corrected) sparsity and the loss's gradient in every ``r``, on Python floats.

    The CPU eager path: one autograd node instead of a dozen tiny tensor operations.
    """
    sparsities, slopes = [], []
    for r, offset in zip(r_values, offsets):
        a = min(max(r, 0.0), MAX_THRESHOLD)
        sparsities.append(math.erf(a * _SQRT_HALF) + offset)
        slopes.append(_DENSITY_SCALE * math.exp(-0.5 * a * a))  # straight-through clamp, as in the operator
    overall = sum(p * s for p, s in zip(shares, sparsities))
    if mode == "fixed":
        count = len(r_values)
        loss = weight * sum((s - target) ** 2 for s in sparsities) / count
        return loss, overall, [2.0 * weight * (s - target) / count * d for s, d in zip(sparsities, slopes)]
    if mode == "adaptive":
        factor = 2.0 * weight * (overall - target)
        loss = weight * (overall - target) ** 2
    elif mode == "upper":
        factor = -weight if target > overall else 0.0
        loss = weight * max(target - overall, 0.0)
    else:
        factor = 2.0 * weight * (overall - target) - multiplier
        loss = weight * (overall - target) ** 2 + multiplier * (target - overall)
    return loss, overall, [factor * p * d for p, d in zip(shares, slopes)]


def _use_fused(threshold: torch.Tensor) -> bool:
    """Python-float evaluation on CPU in eager mode; tensor operations elsewhere (no host sync on GPUs)."""
    return threshold.device.type == "cpu" and not torch.compiler.is_compiling()


class _FusedLoss(torch.autograd.Function):
    """The whole loss as one autograd node, forward and backward in closed form (CPU)."""

    @staticmethod
    def forward(ctx, criterion: SparsityLoss, *thresholds: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        loss, overall, gradient = criterion._evaluate_floats([r.item() for r in thresholds])
        ctx.gradient = gradient
        ctx.dtypes = [r.dtype for r in thresholds]
        criterion._last_overall = overall
        return torch.tensor(loss, dtype=thresholds[0].dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        scale = grad.item()
        return (None, *(torch.tensor(scale * g, dtype=dtype) for g, dtype in zip(ctx.gradient, ctx.dtypes)))


class SparsityLoss:
    """Callable returning the sparsity loss of a sparsified model, to add to the task loss.

    With ``s_i = erf(clamp(r_i, 0, 5) / sqrt(2))`` the analytic sparsity of layer ``i``, ``p_i`` its share of the
    budget (``n_i / sum(n)`` for the parameter budget) and ``S = sum(p_i s_i)`` the overall analytic sparsity:

    - ``"adaptive"``: ``weight * (S - target)**2`` — only the overall budget is constrained; the network chooses
      how to spread it over layers (the original method);
    - ``"fixed"``: ``weight * mean_i (s_i - target)**2`` — every layer is driven to the target;
    - ``"upper"``: ``weight * relu(target - S)`` — penalises only a model less sparse than the target;
    - ``"constraint"``: the augmented Lagrangian ``weight * (S - target)**2 + lambda * (target - S)`` of the
      constraint ``S = target``, with the multiplier ``lambda`` updated by dual ascent after every training call,
      ``lambda <- lambda + dual_step * (target - S)``. ``lambda`` grows until it balances the task loss's pull
      (and turns negative after an overshoot), so the steady state is ``S = target``: no ``1/weight`` undershoot;
      the quadratic term only damps the approach, so ``weight`` needs no tuning. The knob is ``dual_step``.
      Start the thresholds near the target (``sparsify(model, init_threshold=threshold_for_sparsity(target))``)
      or ramp the target: a large initial gap winds the multiplier up and overshoots.

    The quadratic forms settle below the target by about ``1/weight`` in sparsity points; the Gaussian ``s_i`` also
    differs from the actual zero fraction (trained weights are heavy-tailed). ``correction=True`` replaces each
    ``s_i`` by ``s_i + (actual_i - s_i)`` with the offset measured on the real zero count (refreshed every
    ``correction_interval`` training calls, gradient still through ``s_i``), so the constraint is on the real
    sparsity. :func:`adasparse.calibrate` reaches the exact target after training.

    Args:
        model: a model prepared by :func:`adasparse.sparsify`. The pruned layers are collected now.
        target: sparsity in ``[0, 1)``; may be changed later through the ``target`` attribute (e.g. a ramp).
        mode: one of :data:`MODES` (default ``"adaptive"``).
        weight: the loss weight ``lv`` of the quadratic and upper modes (``>= 0``, default 10).
        dual_step: the multiplier's step of the ``"constraint"`` mode (``> 0``, default 0.5).
        correction: steer on the measured zero fraction instead of the Gaussian estimate.
        correction_interval: training calls between two measurements (``>= 1``).
        budget: ``"params"`` (each layer weighs its weight count) or a mapping from pruned-tensor name to its cost
            (e.g. multiply-accumulates from :func:`adasparse.flops.layer_macs`) to make the target a compute budget.

    Example::

        >>> criterion = SparsityLoss(model, target=0.9, mode="adaptive", weight=10.0)
        >>> loss = F.cross_entropy(model(x), y) + criterion()
        >>> criterion.analytic_sparsity   # float
    """

    def __init__(
        self,
        model: nn.Module,
        target: float,
        mode: str = "adaptive",
        weight: float = 10.0,
        *,
        dual_step: float = DEFAULT_DUAL_STEP,
        correction: bool = False,
        correction_interval: int = DEFAULT_CORRECTION_INTERVAL,
        budget: str | Mapping[str, float] = "params",
    ) -> None:
        self.mode = check_choice(mode, "mode", MODES)
        self.target = target
        self.weight = weight
        self.dual_step = check_positive(dual_step, "dual_step")
        if isinstance(correction_interval, bool) or not isinstance(correction_interval, int) or correction_interval < 1:
            raise ValueError(f"correction_interval must be an integer >= 1, got {correction_interval!r}")
        self.correction = bool(correction)
        self.correction_interval = correction_interval
        self._tensors: list[PrunedTensor] = pruned_tensors(model)
        if not self._tensors:
            raise ValueError("SparsityLoss needs a sparsified model: call adasparse.sparsify(model, ...) first")
        costs = self._costs(budget)
        total = sum(costs)
        self._share_list = [cost / total for cost in costs]
        self._offsets = [0.0] * len(self._tensors)
        self.multiplier = 0.0
        self._calls = 0
        self._last_overall: float | None = None
        self._cache: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def _costs(self, budget: str | Mapping[str, float]) -> list[float]:
        if isinstance(budget, str):
            check_choice(budget, "budget", ("params",))
            return [float(t.numel) for t in self._tensors]
        if not isinstance(budget, Mapping):
            raise TypeError(f"budget must be 'params' or a mapping of layer name to cost, got {type(budget).__name__}")
        missing = [t.name for t in self._tensors if t.name not in budget]
        if missing:
            raise ValueError(f"budget has no cost for {', '.join(missing)}")
        costs = [float(budget[t.name]) for t in self._tensors]
        if any(not math.isfinite(c) or c < 0 for c in costs) or sum(costs) <= 0:
            raise ValueError("budget costs must be finite, >= 0, and not all 0")
        return costs

    @property
    def target(self) -> float:
        """The target sparsity in ``[0, 1)``."""
        return self._target

    @target.setter
    def target(self, value: float) -> None:
        self._target = check_fraction(value, "target")

    @property
    def weight(self) -> float:
        """The loss weight (``lv``), ``>= 0``."""
        return self._weight

    @weight.setter
    def weight(self, value: float) -> None:
        self._weight = check_nonnegative(value, "weight")

    @property
    def layer_names(self) -> list[str]:
        """Qualified names of the pruned tensors, in the order of :meth:`layer_sparsities`."""
        return [t.name for t in self._tensors]

    @property
    def shares(self) -> list[float]:
        """Each pruned tensor's share of the budget (sums to 1)."""
        return list(self._share_list)

    def _thresholds(self) -> list[torch.Tensor]:
        return [t.threshold for t in self._tensors]

    def _shares_like(self, like: torch.Tensor) -> torch.Tensor:
        key = (like.device, like.dtype)
        shares = self._cache.get(key)
        if shares is None:
            shares = self._cache[key] = torch.tensor(self._share_list, dtype=like.dtype, device=like.device)
        return shares

    def layer_sparsities(self) -> torch.Tensor:
        """Sparsity of each pruned tensor as the loss sees it (analytic, plus the offsets when ``correction``);
        a differentiable 1-D tensor."""
        sparsities = analytic_sparsity(torch.stack(self._thresholds()))
        if self.correction:
            sparsities = sparsities + torch.tensor(self._offsets, dtype=sparsities.dtype, device=sparsities.device)
        return sparsities

    def overall(self) -> torch.Tensor:
        """Budget-weighted overall sparsity ``S`` as the loss sees it, a differentiable scalar tensor."""
        sparsities = self.layer_sparsities()
        return torch.dot(sparsities, self._shares_like(sparsities))

    @property
    def analytic_sparsity(self) -> float:
        """The overall sparsity ``S`` as the loss sees it, as a float."""
        with torch.no_grad():
            return self.overall().item()

    def actual_sparsity(self) -> float:
        """The budget-weighted fraction of exact zeros in the effective weights (measured, not estimated)."""
        return sum(p * a for p, a in zip(self._share_list, self._measure()))

    def _measure(self) -> list[float]:
        actual = []
        for pruned in self._tensors:
            effective = pruned.effective()
            actual.append(1.0 - int(torch.count_nonzero(effective)) / effective.numel())
        return actual

    def update_correction(self) -> list[float]:
        """Measure every layer's zero fraction now and store ``actual - analytic`` as its offset; returns them."""
        with torch.no_grad():
            analytic = analytic_sparsity(torch.stack(self._thresholds())).tolist()
        self._offsets = [a - s for a, s in zip(self._measure(), analytic)]
        return list(self._offsets)

    def _evaluate_floats(self, r_values: list[float]) -> tuple[float, float, list[float]]:
        offsets = self._offsets if self.correction else [0.0] * len(r_values)
        return _loss_and_gradient(
            self.mode, r_values, self._share_list, offsets, self.target, self.weight, self.multiplier
        )

    def _tensor_loss(self) -> tuple[torch.Tensor, torch.Tensor]:
        sparsities = self.layer_sparsities()
        overall = torch.dot(sparsities, self._shares_like(sparsities))
        if self.mode == "fixed":
            loss = self.weight * torch.mean((sparsities - self.target) ** 2)
        elif self.mode == "adaptive":
            loss = self.weight * (overall - self.target) ** 2
        elif self.mode == "upper":
            loss = self.weight * torch.relu(self.target - overall)
        else:
            loss = self.weight * (overall - self.target) ** 2 + self.multiplier * (self.target - overall)
        return loss, overall

    def __call__(self) -> torch.Tensor:
        """The loss, a scalar tensor on the thresholds' device.

        In grad mode (training) a call also advances the loss's state: the ``"constraint"`` multiplier takes its
        dual step and, with ``correction``, the offsets are refreshed every ``correction_interval`` calls.
        """
        training = torch.is_grad_enabled()
        if training and self.correction and self._calls % self.correction_interval == 0:
            self.update_correction()
        thresholds = self._thresholds()
        if _use_fused(thresholds[0]):
            if training and any(r.requires_grad for r in thresholds):
                loss = _FusedLoss.apply(self, *thresholds)
                overall = self._last_overall
            else:
                value, overall, _ = self._evaluate_floats([r.item() for r in thresholds])
                loss = torch.tensor(value, dtype=thresholds[0].dtype)
        else:
            loss, overall_tensor = self._tensor_loss()
            overall = overall_tensor.detach()
        if training:
            self._calls += 1
            if self.mode == "constraint":
                self._dual_step(overall)
        return loss

    def _dual_step(self, overall: float | torch.Tensor) -> None:
        if isinstance(overall, torch.Tensor):
            overall = overall.item()
        self.multiplier += self.dual_step * (self.target - float(overall))

    def state_dict(self) -> dict[str, Any]:
        """The loss's settings and state (JSON-safe), for checkpoints."""
        return {
            "mode": self.mode,
            "target": self.target,
            "weight": self.weight,
            "dual_step": self.dual_step,
            "multiplier": self.multiplier,
            "correction": self.correction,
            "correction_interval": self.correction_interval,
            "offsets": list(self._offsets),
            "calls": self._calls,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (keys missing from older checkpoints keep their current values)."""
        self.mode = check_choice(state["mode"], "mode", MODES)
        self.target = state["target"]
        self.weight = state["weight"]
        self.dual_step = check_positive(state.get("dual_step", self.dual_step), "dual_step")
        self.multiplier = float(state.get("multiplier", self.multiplier))
        self.correction = bool(state.get("correction", self.correction))
        self.correction_interval = int(state.get("correction_interval", self.correction_interval))
        offsets = state.get("offsets", self._offsets)
        if len(offsets) != len(self._tensors):
            raise ValueError(
                f"state has {len(offsets)} layer offsets, the model has {len(self._tensors)} pruned tensors"
            )
        self._offsets = [float(v) for v in offsets]
        self._calls = int(state.get("calls", self._calls))

    def __repr__(self) -> str:
        return (
            f"SparsityLoss(mode={self.mode!r}, target={self.target}, weight={self.weight}, layers={len(self._tensors)})"
        )
