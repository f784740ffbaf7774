"""The training loop behind ``adasparse train``: the original recipe, checkpoints, resume, logs and reports.

A run lives in one directory::

    config.json          resolved configuration (what a resume reads)
    metrics.csv          one row per epoch
    checkpoint.pt        model, thresholds, optimizer, scheduler, loss and RNG states; rewritten atomically
    report.json / .md    per-layer sparsity of the final sparsified model
    summary.json         final figures (accuracy, sparsity before/after calibration, timings)
    model_sparse.pt      the desparsified model's state_dict (plain modules, zeros baked in)
    sparsity_per_layer.png, curves.png   (with the optional matplotlib)

Everything a run writes is written atomically; a run killed at any moment resumes from its last complete epoch
and, on CPU, ends with exactly the weights of an uninterrupted run.

This module sets a run up, loops over the epochs and checkpoints each one; one epoch's training and evaluation are
in :mod:`.epoch`, the end of a run (calibration, report, ``summary.json``) in :mod:`.finish`.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._version import __version__
from ..core._io import atomic_torch_save, atomic_write_json, atomic_write_text
from ..core.latency_table import LatencyTable, measure_latency
from . import distributed
from .batchnorm import training_inputs
from .checkpoints import (
    check_checkpoint,
    load_checkpoint,
    load_init_weights,
    load_run_config,
    restore,
    rng_state,
)
from .config import (
    BUDGETS,
    CHECKPOINT_FORMAT,
    FORMAT_VERSION,
    OPTIMIZERS,
    RECIPES,
    RUN_FORMAT,
    SPARSITY_CHOICES,
    THRESHOLD_SCHEDULES,
    Recipe,
    TrainConfig,
    resolve_device,
)
from .data import Dataset, load_dataset
from .data.loader import BatchLoader
from .epoch import Trainer, check_not_diverged, epoch_line, evaluate, train_epoch
from .finish import RunResult, finish_run
from .latency import _batch_of
from .methods import Method, create_method
from .models import create_model

# The configuration, the checkpoint handling, the epoch and the end of a run live in .config, .checkpoints, .epoch
# and .finish; their public names are re-exported here, where earlier versions defined them.
__all__ = [
    "BUDGETS",
    "RECIPES",
    "OPTIMIZERS",
    "SPARSITY_CHOICES",
    "THRESHOLD_SCHEDULES",
    "CHECKPOINT_FORMAT",
    "FORMAT_VERSION",
    "RUN_FORMAT",
    "Recipe",
    "RunResult",
    "TrainConfig",
    "load_run_config",
    "load_init_weights",
    "resolve_device",
    "run_training",
]


METRIC_FIELDS = (
    "epoch",
    "train_loss",
    "task_loss",
    "sparsity_loss",
    "train_accuracy",
    "test_loss",
    "test_accuracy",
    "actual_sparsity",
    "analytic_sparsity",
    "lr",
    "threshold_lr",
    "epoch_seconds",
    "data_seconds",
)


LATENCY_TABLE = "latency-table.json"
"""The run's latency table (``latency_batch``), measured when it starts and read again on resume."""

LAYER_FIELDS = ("epoch", "layer", "numel", "actual", "analytic", "threshold")


def _build(
    config: TrainConfig,
    dataset: Dataset,
    device: torch.device,
    total_steps: int,
    init: dict[str, torch.Tensor] | None = None,
    run_dir: Path | None = None,
    ctx: distributed.Context | None = None,
) -> tuple[nn.Module, Method, torch.Tensor]:
    torch.manual_seed(config.seed)
    model = create_model(config.model, num_classes=dataset.num_classes, input_shape=dataset.input_shape)  # type: ignore[arg-type]
    if init is not None:
        try:
            model.load_state_dict(init)
        except RuntimeError as error:
            reason = str(error).strip().splitlines()[0]
            raise ValueError(f"init_from: {config.init_from} does not fit the {config.model} ({reason})") from error
    model.to(device)
    example = dataset.x_test[:1].to(device)
    if dataset.test_transform is not None:
        example = dataset.test_transform(example, None)
    latency = _latency_table(config, model, example, run_dir, ctx)
    return model, create_method(config.method, model, config, example, total_steps, latency), example


def _latency_table(
    config: TrainConfig,
    model: nn.Module,
    example: torch.Tensor,
    run_dir: Path | None,
    ctx: distributed.Context | None,
) -> LatencyTable | None:
    """The run's latency table (``config.latency_batch``): read from the run directory when it holds one (a resumed
    run), else measured on a CPU copy of the starting model by the main process and saved there."""
    pruned_by_channels = config.method in ("adasparse", "l1-channels", "l1-channels-uniform")
    if config.latency_batch is None or config.sparsity == "none" or not pruned_by_channels:
        return None
    path = None if run_dir is None else run_dir / LATENCY_TABLE
    if path is not None and path.exists():
        return LatencyTable.load(path)
    if ctx is None or ctx.main:
        batch = _batch_of(example.detach().cpu(), config.latency_batch)
        table = measure_latency(
            copy.deepcopy(model).cpu().eval(),
            batch,
            multiple=config.channel_multiple if config.channel_multiple > 1 else 8,
            min_params=config.pthres,  # type: ignore[arg-type]
        )
        if path is not None:
            table.save(path)
    if ctx is not None:
        distributed.barrier(ctx)
        if not ctx.main:
            return LatencyTable.load(path)  # type: ignore[arg-type]
    return table


class WarmRestartCosine:
    """Learning-rate factor of ``CosineAnnealingWarmRestarts(T_0=period)`` (eta_min 0), by epoch."""

    def __init__(self, period: int) -> None:
        self.period = period

    def __call__(self, epoch: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * (epoch % self.period) / self.period))


class Constant:
    """Learning-rate factor 1 (the thresholds keep their learning rate)."""

    def __call__(self, epoch: int) -> float:
        return 1.0


def _optimizer(groups: list[dict[str, Any]], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)  # type: ignore[arg-type]
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)  # type: ignore[arg-type]


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """The recipe's cosine with one warm restart; a fine-tuning run (``init_from``) decays once."""
    period = config.epochs if config.init_from is not None else max(1, config.epochs // 2)  # type: ignore[operator]
    cosine = WarmRestartCosine(period)  # type: ignore[arg-type]
    factors = [
        Constant() if group.get("name") == "thresholds" and config.threshold_schedule == "constant" else cosine
        for group in optimizer.param_groups
    ]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors)


def _write_csv(path: Path, rows: list[dict[str, Any]], fields: tuple[str, ...], durable: bool = True) -> None:
    """Write ``rows`` whole, atomically. ``metrics.csv`` and ``layers.csv`` are views of the checkpoint's rows,
    rewritten at every epoch (a resumed run rewrites them from the checkpoint), so only the last epoch's are
    flushed to disk (``durable``): the others skip two ``fsync`` calls each (0.2-0.4 s of a 60-epoch run)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: row.get(key, "") for key in fields})
    atomic_write_text(path, buffer.getvalue(), durable=durable)


def _prepare_run_dir(run_dir: Path, config: TrainConfig, dataset_info: dict[str, Any]) -> None:
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ValueError(
            f"output directory {run_dir} already exists and is not empty: pass --resume {run_dir} or a new --out"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        run_dir / "config.json",
        {
            "format": RUN_FORMAT,
            "version": FORMAT_VERSION,
            "adasparse": __version__,
            "torch": torch.__version__,
            "config": config.to_dict(),
            "dataset": dataset_info,
        },
    )


def _tensorboard_writer(run_dir: Path, log: Callable[[str], None]) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log("tensorboard is not installed (pip install tensorboard): TensorBoard logging skipped")
        return None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def run_training(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> RunResult:
    """Train one model as ``config`` says, writing everything into ``run_dir``.

    Args:
        config: the run's configuration (resolved and validated here).
        run_dir: output directory; must be new or empty unless ``resume``.
        resume: continue the run in ``run_dir`` from its last complete checkpoint, with its saved configuration
            (``config`` is ignored). A finished run is not trained again; its summary is returned.
        progress: show a tqdm progress bar per epoch.
        log: receives one line per epoch and the final messages.

    Returns:
        The final :class:`RunResult`.
    """
    start_time = time.perf_counter()
    run_dir = Path(run_dir)
    checkpoint = None
    if resume:
        config = load_run_config(run_dir)
        checkpoint = load_checkpoint(run_dir)
        for stray in run_dir.glob(".*.tmp"):  # a write interrupted by a kill: the file it replaced is intact
            stray.unlink()
        summary_path = run_dir / "summary.json"
        if summary_path.exists() and (run_dir / "model_sparse.pt").exists():
            log(f"{run_dir} is already complete; nothing to resume")
            return RunResult(**json.loads(summary_path.read_text()))
    config = config.resolved()
    if checkpoint is not None:
        check_checkpoint(checkpoint, config, run_dir / "checkpoint.pt")
    device = resolve_device(config.device)
    ctx = distributed.context(device)
    if ctx.distributed and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
    if not ctx.main:
        progress, log = False, _silent
    dataset = load_dataset(config.dataset, data_dir=config.data_dir, download=config.download, seed=config.seed)
    init = load_init_weights(config) if config.init_from is not None and checkpoint is None else None
    if not resume and ctx.main:
        info = {**dataset.info, "num_classes": dataset.num_classes, "input_shape": list(dataset.input_shape)}
        info["world_size"] = ctx.world_size
        _prepare_run_dir(run_dir, config, info)
    distributed.barrier(ctx)

    generator = torch.Generator().manual_seed(config.seed)
    train_loader = BatchLoader(
        dataset.x_train,
        dataset.y_train,
        config.batch_size,  # type: ignore[arg-type]
        shuffle=True,
        generator=generator,
        transform=dataset.train_transform,
        device=device,
        prefetch=config.workers,
        shard=(ctx.rank, ctx.world_size),
    )
    test_loader = BatchLoader(
        dataset.x_test, dataset.y_test, 1000, transform=dataset.test_transform, device=device, prefetch=config.workers
    )
    steps = len(train_loader) * config.epochs  # type: ignore[operator]
    model, method, example = _build(config, dataset, device, steps, init, run_dir, ctx)
    optimizer = _optimizer(method.param_groups(config.lr, config.weight_decay), config)  # type: ignore[arg-type]
    scheduler = _scheduler(optimizer, config)
    metrics: list[dict[str, float]] = []
    layer_rows: list[dict[str, Any]] = []
    start_epoch = 0
    elapsed_before = 0.0
    if checkpoint is not None:
        restore(checkpoint, run_dir / "checkpoint.pt", model, method, optimizer, scheduler, generator, device)
        metrics = list(checkpoint["metrics"])
        layer_rows = list(checkpoint.get("layers", []))
        start_epoch = int(checkpoint["epoch"])
        elapsed_before = float(checkpoint.get("elapsed_seconds", 0.0))
        log(f"resuming {run_dir} after epoch {start_epoch} of {config.epochs}")

    writer = _tensorboard_writer(run_dir, log) if config.tensorboard and ctx.main else None
    trainer = Trainer(model, method, ctx, device)

    for epoch in range(start_epoch, config.epochs):  # type: ignore[arg-type]
        try:
            row = train_epoch(trainer, optimizer, train_loader, epoch, config, progress)
        except Exception as error:
            check_not_diverged(model, epoch, config, cause=error)
            raise
        check_not_diverged(model, epoch, config, loss=row["train_loss"])
        row["test_loss"], row["test_accuracy"] = evaluate(model, test_loader)
        layers = method.layer_sparsities()
        row["actual_sparsity"] = method.sparsity()
        analytic = method.analytic()
        row["analytic_sparsity"] = float("nan") if analytic is None else analytic
        layer_rows.extend({"epoch": epoch + 1, **layer} for layer in layers)
        scheduler.step()
        metrics.append(row)
        elapsed = elapsed_before + time.perf_counter() - start_time
        if not ctx.main:
            continue
        atomic_torch_save(
            {
                "format": CHECKPOINT_FORMAT,
                "version": FORMAT_VERSION,
                "epoch": epoch + 1,
                "config": config.to_dict(),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "method": method.state_dict(),
                "rng": rng_state(generator, device),
                "metrics": metrics,
                "layers": layer_rows,
                "elapsed_seconds": elapsed,
            },
            run_dir / "checkpoint.pt",
        )
        last = epoch + 1 == config.epochs
        _write_csv(run_dir / "metrics.csv", metrics, METRIC_FIELDS, durable=last)
        if layer_rows:
            _write_csv(run_dir / "layers.csv", layer_rows, LAYER_FIELDS, durable=last)
        if writer is not None:
            for key, value in row.items():
                if key != "epoch" and not math.isnan(value):
                    writer.add_scalar(key, value, epoch + 1)
            writer.flush()
        log(epoch_line(row, config))
    if writer is not None:
        writer.close()
    result = finish_run(
        model,
        method,
        example,
        config,
        run_dir,
        test_loader,
        metrics,
        elapsed_before,
        start_time,
        log,
        ctx,
        statistics_batches=lambda: training_inputs(dataset.x_train, config.batch_size, dataset.test_transform),
    )
    distributed.barrier(ctx)
    return result


def _silent(message: str) -> None:
    """The logger of ranks other than 0."""
