"""The sparsity loss: the analytic (Gaussian) sparsity of every pruned layer, driven toward a target."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ._checks import check_choice, check_fraction, check_nonnegative
from .operator import MAX_THRESHOLD, analytic_sparsity
from .parametrization import PrunedTensor, pruned_tensors

__all__ = ["MODES", "SparsityLoss"]

MODES = ("adaptive", "fixed", "upper")

_SQRT_HALF = math.sqrt(0.5)
_DENSITY_SCALE = math.sqrt(2.0 / math.pi)


def _loss_and_gradient(
    mode: str, r_values: list[float], shares: list[float], target: float, weight: float
) -> tuple[float, list[float]]:
    """The loss and its gradient in every ``r``, in closed form on Python floats (the CPU eager path)."""
    sparsities, slopes = [], []
    for r in r_values:
        a = min(max(r, 0.0), MAX_THRESHOLD)
        sparsities.append(math.erf(a * _SQRT_HALF))
        slopes.append(_DENSITY_SCALE * math.exp(-0.5 * a * a) if 0.0 <= r <= MAX_THRESHOLD else 0.0)
    if mode == "fixed":
        count = len(r_values)
        loss = weight * sum((s - target) ** 2 for s in sparsities) / count
        return loss, [2.0 * weight * (s - target) / count * d for s, d in zip(sparsities, slopes)]
    overall = sum(p * s for p, s in zip(shares, sparsities))
    if mode == "adaptive":
        factor = 2.0 * weight * (overall - target)
        return weight * (overall - target) ** 2, [factor * p * d for p, d in zip(shares, slopes)]
    factor = -weight if target > overall else 0.0
    return weight * max(target - overall, 0.0), [factor * p * d for p, d in zip(shares, slopes)]


class _FusedLoss(torch.autograd.Function):
    """One autograd node for the whole loss (instead of a dozen tiny ones): forward and backward in closed form."""

    @staticmethod
    def forward(ctx, criterion: SparsityLoss, *thresholds: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        values = [r.item() for r in thresholds]
        loss, gradient = _loss_and_gradient(
            criterion.mode, values, criterion._share_list, criterion.target, criterion.weight
        )
        ctx.gradient = gradient
        ctx.dtypes = [r.dtype for r in thresholds]
        return torch.tensor(loss, dtype=thresholds[0].dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        scale = grad.item()
        return (None, *(torch.tensor(scale * g, dtype=dtype) for g, dtype in zip(ctx.gradient, ctx.dtypes)))


class SparsityLoss:
    """Callable returning the sparsity loss of a sparsified model, to add to the task loss.

    With ``s_i = erf(clamp(r_i, 0, 5) / sqrt(2))`` the analytic sparsity of layer ``i`` and ``n_i`` its weight
    count, and ``S = sum(n_i s_i) / sum(n_i)`` the overall analytic sparsity:

    - ``"adaptive"``: ``weight * (S - target)**2`` — only the overall budget is constrained; the network chooses
      how to spread it over layers;
    - ``"fixed"``: ``weight * mean_i (s_i - target)**2`` — every layer is driven to the target;
    - ``"upper"``: ``weight * relu(target - S)`` — penalises only a model less sparse than the target.

    The quadratic forms settle slightly below the target (about ``1/weight`` in sparsity points, see the docs);
    :func:`adasparse.calibrate` reaches the exact target after training.

    Args:
        model: a model prepared by :func:`adasparse.sparsify`. The pruned layers are collected now.
        target: sparsity in ``[0, 1)``; may be changed later through the ``target`` attribute (e.g. a ramp).
        mode: ``"adaptive"`` (default), ``"fixed"`` or ``"upper"``.
        weight: the loss weight ``lv`` (``>= 0``, default 10).

    Example::

        >>> criterion = SparsityLoss(model, target=0.9, mode="adaptive", weight=10.0)
        >>> loss = F.cross_entropy(model(x), y) + criterion()
        >>> criterion.analytic_sparsity   # float
    """

    def __init__(self, model: nn.Module, target: float, mode: str = "adaptive", weight: float = 10.0) -> None:
        self.mode = check_choice(mode, "mode", MODES)
        self.target = target
        self.weight = weight
        self._tensors: list[PrunedTensor] = pruned_tensors(model)
        if not self._tensors:
            raise ValueError("SparsityLoss needs a sparsified model: call adasparse.sparsify(model, ...) first")
        self._counts = torch.tensor([float(t.numel) for t in self._tensors], dtype=torch.float64)
        self._share_list = (self._counts / self._counts.sum()).tolist()
        self._shares: torch.Tensor | None = None

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

    def _thresholds(self) -> torch.Tensor:
        return torch.stack([t.threshold for t in self._tensors])

    def layer_sparsities(self) -> torch.Tensor:
        """Analytic sparsity of each pruned tensor, a differentiable 1-D tensor."""
        return analytic_sparsity(self._thresholds())

    def _weight_shares(self, like: torch.Tensor) -> torch.Tensor:
        shares = self._shares
        if shares is None or shares.device != like.device or shares.dtype != like.dtype:
            shares = (self._counts / self._counts.sum()).to(device=like.device, dtype=like.dtype)
            self._shares = shares
        return shares

    def overall(self) -> torch.Tensor:
        """Parameter-weighted overall analytic sparsity ``S``, a differentiable scalar tensor."""
        sparsities = self.layer_sparsities()
        return torch.dot(sparsities, self._weight_shares(sparsities))

    @property
    def analytic_sparsity(self) -> float:
        """The overall analytic sparsity ``S`` as a float."""
        with torch.no_grad():
            return self.overall().item()

    def __call__(self) -> torch.Tensor:
        """The loss, a scalar tensor on the thresholds' device."""
        thresholds = [t.threshold for t in self._tensors]
        if thresholds[0].device.type == "cpu" and not torch.compiler.is_compiling():
            if torch.is_grad_enabled() and any(r.requires_grad for r in thresholds):
                return _FusedLoss.apply(self, *thresholds)
            values = [r.item() for r in thresholds]
            loss = _loss_and_gradient(self.mode, values, self._share_list, self.target, self.weight)[0]
            return torch.tensor(loss, dtype=thresholds[0].dtype)
        if self.mode == "fixed":
            return self.weight * torch.mean((self.layer_sparsities() - self.target) ** 2)
        overall = self.overall()
        if self.mode == "adaptive":
            return self.weight * (overall - self.target) ** 2
        return self.weight * torch.relu(self.target - overall)

    def state_dict(self) -> dict[str, Any]:
        """The loss's settings (JSON-safe), for checkpoints."""
        return {"mode": self.mode, "target": self.target, "weight": self.weight}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mode = check_choice(state["mode"], "mode", MODES)
        self.target = state["target"]
        self.weight = state["weight"]

    def __repr__(self) -> str:
        return (
            f"SparsityLoss(mode={self.mode!r}, target={self.target}, weight={self.weight}, layers={len(self._tensors)})"
        )
