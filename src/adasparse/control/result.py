"""The end of pruning: the final calibration (:func:`calibrated`) and what a :class:`~adasparse.control.pruner.Pruner`
measured when it fixed the zeros or finished (:class:`PrunerResult`, :func:`measured_result`), with its checkpoint
form."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from ..core.calibrate import CalibrationResult, calibrate
from ..core.channel_rounding import round_kept_channels
from ..core.distribution import unit_costs
from ..core.parametrization import PrunedTensor
from ..core.report import SparsityReport, sparsity_report
from .loss import SparsityLoss

__all__ = ["PrunerResult", "calibrated", "measured_result", "result_from_dict", "result_to_dict"]


@dataclass(frozen=True)
class PrunerResult:
    """What :meth:`Pruner.finish` (or the freeze before fine-tuning) measured.

    Attributes:
        target: the requested sparsity.
        sparsity_before: the actual overall sparsity before the final calibration.
        sparsity: the final actual overall sparsity.
        analytic: the Gaussian estimate before the calibration.
        reached: whether the final sparsity is the target to within one weight (of the budget's cost).
        report: the per-layer report of the final pruned model (thresholds included while they were known).
        message: what the calibration did (empty when none ran).
    """

    target: float
    sparsity_before: float
    sparsity: float
    analytic: float | None
    reached: bool
    report: SparsityReport
    message: str = ""

    def __str__(self) -> str:
        text = f"sparsity: target {self.target:.4f}, reached {self.sparsity_before:.4f}, final {self.sparsity:.4f}"
        return text if self.reached else text + " (target NOT reached)"


def calibrated(
    model: nn.Module,
    criterion: SparsityLoss,
    target: float,
    costs: Mapping[str, float] | str | None,
    calibrate_zeros: bool,
    channel_multiple: int = 1,
) -> tuple[SparsityReport, CalibrationResult | None]:
    """The report before the final calibration and the calibration's result (``None`` unless ``calibrate_zeros``).

    A corrected projection first projects onto ``target`` on fresh distributions (its final projection), so the
    budget is exact before the calibration. With ``channel_multiple > 1`` (a model pruned by channels) every
    channel set's kept count is then rounded to a multiple of it (:func:`~adasparse.core.channel_rounding.
    round_kept_channels`), closest to ``target``."""
    if criterion.mode == "projection" and criterion.correction:
        criterion.target = target
        criterion.measure_distributions()
        criterion.project(final=True)
    before = sparsity_report(model)
    result = calibrate(model, target, budget=costs) if calibrate_zeros else None
    if channel_multiple > 1:
        round_kept_channels(model, channel_multiple, target, costs if isinstance(costs, str) else "params")
        if result is not None:
            result = replace(result, after=sparsity_report(model))
    return before, result


def measured_result(
    model: nn.Module,
    tensors: list[PrunedTensor],
    target: float,
    costs: Mapping[str, float] | str | None,
    before: SparsityReport,
    calibration: CalibrationResult | None,
    channel_multiple: int = 1,
) -> PrunerResult:
    """The :class:`PrunerResult` of a sparsified ``model`` (its pruned ``tensors``): ``before`` the calibration, after
    it (or now, without one); ``reached`` when the zeros are the target to within one weight (of the cost in
    ``costs``, a mapping of tensor name to cost, or ``None`` for the weight count). For a model pruned by channels
    ``costs`` is ``"params"`` or ``"flops"`` and the sparsities are the fractions of that cost the pruned channels
    take off, met to within one channel (``channel_multiple`` channels when the kept counts were rounded)."""
    after = calibration.after if calibration is not None else sparsity_report(model)
    if isinstance(costs, str):  # pruned by channels: the fraction of the model's cost removed once shrunk
        cost = tensors[0].layout.cost
        fractions = cost.fractions()
        sparsity = cost.sparsity(fractions, costs)
        return PrunerResult(
            target=target,
            sparsity_before=before.shrunk[costs] if before.shrunk else sparsity,
            sparsity=sparsity,
            analytic=None,
            reached=abs(sparsity - target) <= channel_multiple * cost.channel_cost(fractions, costs) + 1e-9,
            report=after,
            message=str(calibration) if calibration is not None else "",
        )
    units = unit_costs(tensors, costs)  # after.layers are the pruned tensors, in the same order
    total = sum(u * layer.numel for u, layer in zip(units, after.layers))
    achieved = sum(u * layer.zeros for u, layer in zip(units, after.layers))
    unit = max(units)
    reached = abs(achieved - target * total) <= unit + 1e-9 * total
    return PrunerResult(
        target=target,
        sparsity_before=before.overall,
        sparsity=after.overall,
        analytic=before.analytic,
        reached=reached,
        report=after,
        message=str(calibration) if calibration is not None else "",
    )


def result_to_dict(result: PrunerResult) -> dict[str, Any]:
    """``result`` as plain values (its report as :meth:`SparsityReport.to_dict`), for a checkpoint."""
    return {
        "target": result.target,
        "sparsity_before": result.sparsity_before,
        "sparsity": result.sparsity,
        "analytic": result.analytic,
        "reached": result.reached,
        "report": result.report.to_dict(),
        "message": result.message,
    }


def result_from_dict(data: Mapping[str, Any]) -> PrunerResult:
    """The :class:`PrunerResult` that :func:`result_to_dict` wrote (``message`` may be missing)."""
    return PrunerResult(
        target=float(data["target"]),
        sparsity_before=float(data["sparsity_before"]),
        sparsity=float(data["sparsity"]),
        analytic=None if data["analytic"] is None else float(data["analytic"]),
        reached=bool(data["reached"]),
        report=SparsityReport.from_dict(data["report"]),
        message=str(data.get("message", "")),
    )
