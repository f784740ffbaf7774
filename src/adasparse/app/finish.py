"""The end of a run: the test accuracy before and after the method's finish (calibration, fine-tuning), the
per-layer report, the plots, ``model_sparse.pt`` and the :class:`RunResult` written as ``summary.json``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core._io import atomic_torch_save, atomic_write_json, atomic_write_text
from ..core.flops import layer_macs
from ..core.report import SparsityReport, sparsity_report
from . import distributed
from .batchnorm import has_batchnorm, recompute_batchnorm, recompute_stale_batchnorm
from .config import TrainConfig
from .data.loader import BatchLoader
from .epoch import evaluate
from .methods import Finish, Method

__all__ = ["RunResult", "finish_run", "target_reached"]


@dataclass
class RunResult:
    """Final figures of a run (also written to ``summary.json``)."""

    run_dir: str
    config: dict[str, Any]
    epochs_run: int
    test_accuracy: float
    test_accuracy_before_calibration: float | None
    target: float | None
    sparsity_before_calibration: float | None
    sparsity: float | None
    analytic_sparsity: float | None
    flops_sparsity: float | None
    wall_seconds: float
    data_fraction: float
    target_reached: bool | None = None
    """Whether the final sparsity is the target to within one weight (within the cost of one weight for the FLOPs
    budget); ``None`` for a dense run."""
    report_text: str = ""
    test_accuracy_running_batchnorm: float | None = None
    """When the BatchNorm statistics were recomputed (``recompute_batchnorm="always"``, or ``"auto"`` and they were
    stale): the test accuracy with the statistics training left (``None`` otherwise, or without BatchNorm)."""
    batchnorm_staleness: dict[str, Any] | None = None
    """With BatchNorm and ``recompute_batchnorm`` ``"auto"`` or ``"never"``: how far the statistics training left lay
    from those of the final weights (:class:`adasparse.app.batchnorm.Staleness` as a dict, ``recomputed`` saying
    whether they were replaced); ``None`` otherwise."""
    metrics: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("metrics")
        return data


def target_reached(
    config: TrainConfig, report: SparsityReport, macs: dict[str, float], sparsity: float, flops_sparsity: float
) -> bool:
    """Whether the final sparsity is ``config.target`` to within one weight of the pruned layers; for the FLOPs
    budget, the compute sparsity to within the largest cost of one weight (as :func:`adasparse.calibrate`)."""
    if config.budget == "flops":
        total = sum(macs.get(layer.name, 0.0) for layer in report.layers)
        tolerance = max((macs.get(layer.name, 0.0) / max(layer.numel, 1) for layer in report.layers), default=0.0)
        gap = abs(flops_sparsity - config.target) * total
    else:
        tolerance = 1.0
        gap = abs(sparsity - config.target) * report.pruned_params
    return gap <= tolerance * (1.0 + 1e-9) + 1e-9


def _reached(config: TrainConfig, report: SparsityReport, macs: dict[str, float], finish: Finish, flops: float) -> bool:
    if finish.reached is not None:  # the method's own test (channels: within one channel's cost)
        return finish.reached
    return target_reached(config, report, macs, finish.sparsity_after, flops)


def finish_run(
    model: nn.Module,
    method: Method,
    example: torch.Tensor,
    config: TrainConfig,
    run_dir: Path,
    test_loader: BatchLoader,
    metrics: list[dict[str, float]],
    elapsed_before: float,
    start_time: float,
    log: Callable[[str], None],
    ctx: distributed.Context,
    statistics_batches: Callable[[], Iterable[torch.Tensor]] | None = None,
) -> RunResult:
    """Let ``method`` finish the trained ``model`` (calibration, fine-tuning with fixed masks), measure it, write
    the run's final files (rank 0 only) and return its :class:`RunResult`. The BatchNorm statistics of the finished
    model are recomputed on ``statistics_batches()`` first as ``config.recompute_batchnorm`` says (``auto``: only
    where the stored ones are stale; ``never``: measured, a warning where they are stale)."""
    from .plots import plot_curves, plot_layer_sparsity

    _, accuracy_before = evaluate(model, test_loader)
    sparse = method.sparse
    finish = method.finish(log)
    if finish.message:
        log(finish.message)
    _, accuracy = evaluate(model, test_loader)
    accuracy_running = None
    staleness_figures = None
    recompute = config.recompute_batchnorm
    if statistics_batches is not None and has_batchnorm(model):
        if recompute == "always":
            recompute_batchnorm(model, statistics_batches())
            recomputed, reason = True, ""
        else:
            staleness = recompute_stale_batchnorm(model, statistics_batches(), measure_only=recompute == "never")
            staleness_figures = asdict(staleness)
            recomputed, reason = staleness.recomputed, f" (stale: {staleness.describe()})"
            if staleness.stale and not recomputed:
                log(
                    f"warning: the BatchNorm statistics training left are stale ({staleness.describe()}); the test "
                    "accuracy is read with them: --recompute-batchnorm auto recomputes them (docs/method.md)"
                )
        if recomputed:
            accuracy_running = accuracy
            _, accuracy = evaluate(model, test_loader)
            log(f"BatchNorm statistics recomputed{reason}: test accuracy {accuracy_running:.4f} -> {accuracy:.4f}")
    report = finish.report or sparsity_report(model, min_params=config.pthres)
    macs = layer_macs(model, example, min_params=config.pthres)
    total_macs = sum(macs.get(layer.name, 0.0) for layer in report.layers)
    flops_sparsity = sum(macs.get(layer.name, 0.0) * layer.actual for layer in report.layers) / max(total_macs, 1.0)
    if report.shrunk is not None:  # pruned by channels: what removing them takes off the whole model
        flops_sparsity = report.shrunk["flops"]
    if ctx.main:
        atomic_write_json(run_dir / "report.json", report.to_dict())
        atomic_write_text(run_dir / "report.md", report.to_markdown() + "\n")
        plots = [
            plot_layer_sparsity(report, run_dir / "sparsity_per_layer.png"),
            plot_curves(metrics, run_dir / "curves.png"),
        ]
        if not all(plots):
            log("matplotlib is not installed (pip install matplotlib): plots skipped")
        atomic_torch_save(model.state_dict(), run_dir / "model_sparse.pt")
    epoch_seconds = sum(row["epoch_seconds"] for row in metrics)
    data_seconds = sum(row["data_seconds"] for row in metrics)
    result = RunResult(
        run_dir=str(run_dir),
        config=config.to_dict(),
        epochs_run=len(metrics),
        test_accuracy=accuracy,
        test_accuracy_before_calibration=accuracy_before if sparse else None,
        target=config.target if sparse else None,
        sparsity_before_calibration=finish.sparsity_before if sparse else None,
        sparsity=finish.sparsity_after if sparse else None,
        analytic_sparsity=finish.analytic,
        flops_sparsity=flops_sparsity if sparse else None,
        wall_seconds=elapsed_before + time.perf_counter() - start_time,
        data_fraction=data_seconds / epoch_seconds if epoch_seconds else 0.0,
        target_reached=(
            (
                finish.reached
                if finish.reached is not None
                else target_reached(config, report, macs, finish.sparsity_after, flops_sparsity)
            )
            if sparse
            else None
        ),
        report_text=str(report),
        test_accuracy_running_batchnorm=accuracy_running,
        batchnorm_staleness=staleness_figures,
        metrics=metrics,
    )
    if ctx.main:
        atomic_write_json(run_dir / "summary.json", result.to_dict())
    return result
