"""The sparsity loss: the analytic (Gaussian) sparsity of every pruned layer, driven toward a target.

:class:`SparsityLoss` holds the budget (each pruned tensor's share), the measured offsets of ``correction`` and the
training-call counters, and composes the mode's penalty (:mod:`adasparse.control.penalties`) or the projection
(:mod:`adasparse.control.projection`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..core._checks import check_choice, check_fraction, check_nonnegative
from ..core._no_grad import no_grad
from ..core.channel_sets import ChannelSet
from ..core.distribution import MagnitudeDistribution, budget_costs
from ..core.operator import analytic_sparsity
from ..core.parametrization import PrunedTensor, pruning_units
from .channel_budget import ChannelBudget
from .penalties import PENALTIES, ConstraintPenalty, Penalty, closed_form_loss
from .projection import SLOPE_FLOOR as SLOPE_FLOOR  # defined here before: still importable from this module
from .projection import UNREACHABLE_GAP as UNREACHABLE_GAP
from .projection import Projection, check_slope_needs_correction
from .thresholds import ThresholdVersions, check_finite, clamp_thresholds, threshold_versions

__all__ = ["MODES", "SparsityLoss", "DEFAULT_DUAL_STEP", "DEFAULT_CORRECTION_INTERVAL"]

MODES = ("adaptive", "fixed", "upper", "constraint", "projection")

DEFAULT_DUAL_STEP = 0.5
"""Dual ascent step of the ``"constraint"`` mode (per optimizer step, in units of the sparsity gap)."""

DEFAULT_CORRECTION_INTERVAL = 20
"""With ``correction=True``, the measured-minus-analytic offsets are refreshed every this many training calls."""


def _use_fused(threshold: torch.Tensor) -> bool:
    """Python-float evaluation on CPU in eager mode; tensor operations elsewhere (no host sync on GPUs)."""
    return threshold.device.type == "cpu" and not torch.compiler.is_compiling()


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
    - ``"projection"``: the constraint ``S = target`` held exactly at every step (projected gradient descent). The
      loss itself is zero: the task loss alone trains the thresholds (moving sparsity to where it costs least), and
      :meth:`step`, called after every ``optimizer.step()``, moves all thresholds along the constraint's gradient
      ``p_i * s_i'`` until ``S`` equals the (possibly ramped) target again. No weight, no multiplier, no
      oscillation: with ``correction`` the measured sparsity follows the target to within the drift of a few steps.

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
        correction: steer on the measured zero fraction instead of the Gaussian estimate (the quadratic and
            constraint modes add a measured offset to each ``s_i``; the projection mode solves for the sparsity of
            each layer's recorded weight distribution).
        correction_interval: training calls (steps, in the projection mode) between two measurements (``>= 1``).
        budget: ``"params"`` (each layer weighs its weight count) or a mapping from pruned-tensor name to its cost
            (e.g. multiply-accumulates from :func:`adasparse.flops.layer_macs`) to make the target a compute budget.
            For a model pruned by channels (``sparsify(..., granularity="channel")``), ``"params"`` or ``"flops"``:
            the target is the fraction of the model's weights or multiply-accumulates that removing the pruned
            channels takes off (:class:`ChannelBudget`), held by ``mode="projection"``.
        projection_slope: the slope ``ds/dr`` the projection moves each threshold along, ``"gaussian"`` (default)
            or ``"measured"`` (each layer's measured one, with ``correction``; see
            :data:`~adasparse.control.projection.PROJECTION_SLOPES`).

    Example::

        >>> criterion = SparsityLoss(model, target=0.9, mode="adaptive", weight=10.0)
        >>> loss = F.cross_entropy(model(x), y) + criterion()
        >>> criterion.analytic_sparsity   # float

        The projection mode (the default of ``adasparse train``) needs one more call per step::

            criterion = SparsityLoss(model, target=0.9, mode="projection", correction=True)
            loss = F.cross_entropy(model(x), y) + criterion()   # zero: the task loss trains the thresholds
            loss.backward(); optimizer.step()
            criterion.step()                                    # thresholds back onto the exact budget
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
        projection_slope: str = "gaussian",
    ) -> None:
        check_choice(mode, "mode", MODES)
        self.target = target
        self.weight = weight
        self._constraint = ConstraintPenalty(dual_step)
        self._penalty: Penalty | None = None
        self.mode = mode
        if isinstance(correction_interval, bool) or not isinstance(correction_interval, int) or correction_interval < 1:
            raise ValueError(f"correction_interval must be an integer >= 1, got {correction_interval!r}")
        self.correction = bool(correction)
        self.correction_interval = correction_interval
        self._tensors: list[PrunedTensor] = pruning_units(model)
        if not self._tensors:
            raise ValueError("SparsityLoss needs a sparsified model: call adasparse.sparsify(model, ...) first")
        self._channels = ChannelBudget.of(self._tensors, budget)
        self._structured = any(t.layout is not None for t in self._tensors)
        if self._channels is not None:
            if mode != "projection":
                raise ValueError(
                    f"a model pruned by channels is held to its budget by mode='projection', got mode={mode!r}"
                )
            costs = self._channels.gradient([0.0] * len(self._tensors))
        else:
            costs = budget_costs(self._tensors, budget)
        total = sum(costs)
        self._share_list = [cost / total for cost in costs]
        self._offsets = [0.0] * len(self._tensors)
        self._calls = 0
        self._steps = 0
        self._warned_no_step = False
        self._checked: ThresholdVersions | None = None
        """The thresholds' versions when they last passed the divergence check and the clamp unchanged."""
        check_slope_needs_correction(projection_slope, self.correction, mode)
        self._projection = Projection(self._tensors, self._share_list, self._channels, projection_slope)
        self._cache: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    @property
    def mode(self) -> str:
        """One of :data:`MODES`."""
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        self._mode = check_choice(value, "mode", MODES)
        if value == "projection":
            self._penalty = None
        else:
            self._penalty = self._constraint if value == ConstraintPenalty.name else PENALTIES[value]()

    @property
    def dual_step(self) -> float:
        """The multiplier's step of the ``"constraint"`` mode, ``> 0``."""
        return self._constraint.dual_step

    @dual_step.setter
    def dual_step(self, value: float) -> None:
        self._constraint.dual_step = value

    @property
    def multiplier(self) -> float:
        """The ``"constraint"`` mode's Lagrange multiplier (0 until that mode takes a dual step)."""
        return self._constraint.multiplier

    @multiplier.setter
    def multiplier(self, value: float) -> None:
        self._constraint.multiplier = value

    @property
    def idle(self) -> list[bool]:
        """Per pruned tensor: the loss does not reach it (set by :class:`adasparse.Pruner`), so the projection
        prunes it first: the idle tensors alone carry the target while they can, the others only the rest."""
        return self._projection.idle

    @idle.setter
    def idle(self, value: list[bool]) -> None:
        self._projection.idle = value

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
        """The budget-weighted fraction of exact zeros in the effective weights (measured, not estimated); for a
        model pruned by channels, the fraction of its cost the pruned channels take off."""
        if self._channels is not None:
            return self._channels.sparsity(self._measure())
        return sum(p * a for p, a in zip(self._share_list, self._measure()))

    def _measure(self) -> list[float]:
        actual = []
        for pruned in self._tensors:
            if isinstance(pruned.layout, ChannelSet):
                keep = pruned.layout.current_keep()
                actual.append(1.0 - int(keep.sum()) / keep.numel())  # exact, as ChannelCost.fractions()
                continue
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
        return self._active_penalty().loss_and_gradient(r_values, self._share_list, offsets, self.target, self.weight)

    def _active_penalty(self) -> Penalty:
        assert self._penalty is not None, "the projection mode has no penalty"
        return self._penalty

    def _tensor_loss(self) -> tuple[torch.Tensor, torch.Tensor]:
        sparsities = self.layer_sparsities()
        overall = torch.dot(sparsities, self._shares_like(sparsities))
        return self._active_penalty().loss(sparsities, overall, self.target, self.weight), overall

    def __call__(self) -> torch.Tensor:
        """The loss, a scalar tensor on the thresholds' device.

        In grad mode (training) a call also advances the loss's state: the ``"constraint"`` multiplier takes its
        dual step and, with ``correction``, the offsets are refreshed every ``correction_interval`` calls.
        """
        training = torch.is_grad_enabled()
        thresholds = self._thresholds()
        if self.mode == "projection":
            if training:
                self._calls += 1
                if not self._warned_no_step and self._steps == 0 and self._calls > self.correction_interval:
                    self._warned_no_step = True
                    warnings.warn(
                        "SparsityLoss(mode='projection') steers only in step(): call criterion.step() after every "
                        "optimizer.step(), or the sparsity never moves toward the target",
                        stacklevel=2,
                    )
            return torch.zeros((), dtype=thresholds[0].dtype, device=thresholds[0].device)
        if training and self.correction and self._calls % self.correction_interval == 0:
            self.update_correction()
        if _use_fused(thresholds[0]):
            value, overall, gradient = self._evaluate_floats([r.item() for r in thresholds])
            if training and any(r.requires_grad for r in thresholds):
                loss = closed_form_loss(value, gradient, thresholds)
            else:
                loss = torch.tensor(value, dtype=thresholds[0].dtype)
        else:
            loss, overall_tensor = self._tensor_loss()
            overall = overall_tensor.detach()
        if training:
            self._calls += 1
            self._active_penalty().after_training_call(overall, self.target)
        return loss

    def step(self) -> None:
        """Advance the loss after ``optimizer.step()``. Every mode: check that the training has not diverged and
        put each threshold parameter back into ``[0, 5]`` (its forward value is clamped anyway; a parameter pushed far
        outside by one large gradient would otherwise stay there). In ``"projection"`` mode also: re-measure the
        layers' weight distributions (with ``correction``, every ``correction_interval`` steps) and project the
        thresholds onto ``S = target``.

        A step that would change nothing (projection mode, no measurement due, no threshold written since the last
        check, the last solution still standing) only counts itself: the thresholds hold values already checked; one
        whose target was solved ahead (:meth:`plan`) only writes that solution, whose values need no check.

        Raises:
            ValueError: a threshold or weight is NaN or infinite (the training diverged), naming the layer.
        """
        versions = threshold_versions(self._tensors)
        if (
            self.mode == "projection"
            and not self._structured
            and self._steps % self.correction_interval != 0
            and self._checked == versions
        ):
            if self._projection.is_current(self.target, self.correction, versions):
                self._steps += 1
                return
            written = self._projection.put_back(self.target, self.correction)  # a ramp's target solved ahead
            if written is not None:
                self._steps += 1
                self._checked = written
                return
        self._full_step(versions)

    @no_grad
    def _full_step(self, checked: ThresholdVersions) -> None:
        # Thresholds every step; the weights (a pass over all of them) every correction_interval steps.
        values = check_finite(self._tensors, weights=self._steps % self.correction_interval == 0)
        clamp_thresholds(self._tensors, values)
        if self.mode != "projection":
            return
        if self.correction and self._steps % self.correction_interval == 0:
            self.measure_distributions()
        elif self._structured:
            self._projection.measure(structured_only=True)
        self._steps += 1
        self._projection.project(self.target, self.correction)  # checked for divergence above
        # Checked values that nothing rewrote (neither the clamp nor the projection) need no check next step, nor do
        # the values of a layer-adaptive solution in [0, 5] that the projection wrote.
        versions = threshold_versions(self._tensors)
        if versions != checked:
            checked = self._projection.written_in_range()
        self._checked = checked if versions == checked else None

    def plan(self, targets: list[float]) -> None:
        """The targets the coming steps will set, in order (a ramp's, up to the next measurement of the weights): in
        ``"projection"`` mode with ``projection_slope="lamp"`` they are solved together with the next one solved.
        Only a saving: every target gets the same thresholds, bit for bit, planned or not."""
        if self.mode == "projection":
            self._projection.plan(targets)

    def structured_distributions(self) -> list[MagnitudeDistribution | None]:
        """Per pruned tensor: the distribution of its group scores measured now if it is pruned by groups
        (channels, heads, blocks), else ``None`` (see :func:`.thresholds.adam_step`)."""
        if not self._structured:
            return [None] * len(self._tensors)
        measured = self._projection.measure(structured_only=True)
        return [m if t.layout is not None else None for t, m in zip(self._tensors, measured)]

    def clamp_thresholds(self) -> None:
        """Put every threshold parameter back into ``[0, 5]``: its forward value is clamped anyway, but a
        parameter pushed far outside by one large gradient (or an optimizer's momentum) would stay there."""
        clamp_thresholds(self._tensors)

    @no_grad
    def measure_distributions(self) -> None:
        """Record every layer's distribution of ``|w_c| / std`` for the corrected projection."""
        self._projection.measure()

    @no_grad
    def project(self, final: bool = False) -> float:
        """Move the thresholds (in place) so that the overall sparsity equals the target; returns the new overall.

        With ``correction`` the sparsity is the measured one (see :meth:`measure_distributions`, taken now if never
        taken), otherwise the Gaussian estimate. ``final``: the last projection before the zeros are fixed (for a
        model pruned by channels, the fine sets then narrow a gap a coarse set leaves). A NaN or infinite threshold
        or weight raises ``ValueError`` (the training diverged), naming the layer.
        """
        check_finite(self._tensors)
        return self._projection.project(self.target, self.correction, final)

    def state_dict(self) -> dict[str, Any]:
        """The loss's settings and state, for checkpoints: JSON-safe, except that the projection mode with
        ``correction`` adds its measured weight distributions as tensors (``torch.save`` / ``weights_only`` safe),
        so that a resumed run projects exactly as an uninterrupted one."""
        state: dict[str, Any] = {
            "mode": self.mode,
            "target": self.target,
            "weight": self.weight,
            "dual_step": self.dual_step,
            "multiplier": self.multiplier,
            "correction": self.correction,
            "correction_interval": self.correction_interval,
            "offsets": list(self._offsets),
            "calls": self._calls,
            "steps": self._steps,
            "idle": list(self.idle),
        }
        measured = self._projection.measured_state()
        if measured is not None:
            state["measured"] = measured
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (keys missing from older checkpoints keep their current values)."""
        self.mode = state["mode"]
        self.target = state["target"]
        self.weight = state["weight"]
        self.dual_step = state.get("dual_step", self.dual_step)
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
        self._steps = int(state.get("steps", self._steps))
        self._checked = None
        idle = state.get("idle", [False] * len(self._tensors))
        if len(idle) != len(self._tensors):
            raise ValueError(f"state has {len(idle)} idle flags, the model has {len(self._tensors)} pruned tensors")
        self.idle = [bool(flag) for flag in idle]
        measured = state.get("measured")
        if measured is not None:
            self._projection.load_measured_state(measured)

    def __repr__(self) -> str:
        return (
            f"SparsityLoss(mode={self.mode!r}, target={self.target}, weight={self.weight}, layers={len(self._tensors)})"
        )
