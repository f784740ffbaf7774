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
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._version import __version__
from ..core._io import atomic_torch_save, atomic_write_json, atomic_write_text
from ..core.flops import layer_macs
from ..core.report import SparsityReport, sparsity_report
from . import distributed
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
from .methods import Method, create_method
from .models import create_model

# The configuration and the checkpoint handling live in .config and .checkpoints; their public names are
# re-exported here, where earlier versions defined them.
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
    metrics: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("metrics")
        return data


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


LAYER_FIELDS = ("epoch", "layer", "numel", "actual", "analytic", "threshold")


def _build(
    config: TrainConfig,
    dataset: Dataset,
    device: torch.device,
    total_steps: int,
    init: dict[str, torch.Tensor] | None = None,
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
    return model, create_method(config.method, model, config, example, total_steps), example


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


@torch.no_grad()
def evaluate(model: nn.Module, loader: BatchLoader) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` (put in eval mode) over ``loader``."""
    model.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=loader.device)
    correct = torch.zeros((), dtype=torch.int64, device=loader.device)
    count = 0
    for x, y in loader:
        logits = model(x)
        total_loss += F.cross_entropy(logits, y, reduction="sum").double()
        correct += (logits.argmax(1) == y).sum()
        count += len(y)
    return float(total_loss) / max(count, 1), int(correct) / max(count, 1)


def _write_csv(path: Path, rows: list[dict[str, Any]], fields: tuple[str, ...]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: row.get(key, "") for key in fields})
    atomic_write_text(path, buffer.getvalue())


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
    model, method, example = _build(config, dataset, device, steps, init)
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
    trainer = _Trainer(model, method, ctx, device)

    for epoch in range(start_epoch, config.epochs):  # type: ignore[arg-type]
        try:
            row = _train_epoch(trainer, optimizer, train_loader, epoch, config, progress)
        except Exception as error:
            _check_not_diverged(model, epoch, config, cause=error)
            raise
        _check_not_diverged(model, epoch, config, loss=row["train_loss"])
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
        _write_csv(run_dir / "metrics.csv", metrics, METRIC_FIELDS)
        if layer_rows:
            _write_csv(run_dir / "layers.csv", layer_rows, LAYER_FIELDS)
        if writer is not None:
            for key, value in row.items():
                if key != "epoch" and not math.isnan(value):
                    writer.add_scalar(key, value, epoch + 1)
            writer.flush()
        log(_epoch_line(row, config))
    if writer is not None:
        writer.close()
    result = _finish(
        model, method, example, config, run_dir, test_loader, metrics, elapsed_before, start_time, log, ctx
    )
    distributed.barrier(ctx)
    return result


def _check_not_diverged(
    model: nn.Module, epoch: int, config: TrainConfig, *, loss: float = 0.0, cause: Exception | None = None
) -> None:
    """``ValueError`` saying the training diverged when a parameter (named) or the epoch's loss is NaN or inf.

    Called after every epoch and when an epoch fails, so every method and mode reports divergence the same way.
    """
    problem = next(
        (
            f"{name} has non-finite values (NaN or inf)"
            for name, parameter in model.named_parameters()
            if not bool(torch.isfinite(parameter).all())
        ),
        None,
    )
    if problem is None and not math.isfinite(loss):
        problem = f"the training loss is {loss}"
    if problem is not None:
        raise ValueError(
            f"training diverged in epoch {epoch + 1} of {config.epochs}: {problem}; "
            f"try a lower learning rate than lr={config.lr:g}"
        ) from cause


def _silent(message: str) -> None:
    """The logger of ranks other than 0."""


class _Trainer:
    """The model as the training step calls it: wrapped in DistributedDataParallel when distributed. No method
    changes the model's parameters during training (fixed masks are buffers), so one wrapper serves the run."""

    def __init__(self, model: nn.Module, method: Method, ctx: distributed.Context, device: torch.device) -> None:
        self.model, self.method, self.ctx = model, method, ctx
        self.forward_model = distributed.wrap(model, ctx, device)


def _epoch_line(row: dict[str, float], config: TrainConfig) -> str:
    text = (
        f"epoch {int(row['epoch']):3d}/{config.epochs}  loss {row['train_loss']:.4f}  "
        f"test acc {row['test_accuracy']:.4f}"
    )
    if not math.isnan(row["analytic_sparsity"]):
        text += f"  sparsity {row['actual_sparsity']:.4f} (analytic {row['analytic_sparsity']:.4f})"
    elif row["actual_sparsity"] > 0.0:
        text += f"  sparsity {row['actual_sparsity']:.4f}"
    return text + f"  {row['epoch_seconds']:.1f}s"


def _train_epoch(
    trainer: _Trainer,
    optimizer: torch.optim.Optimizer,
    loader: BatchLoader,
    epoch: int,
    config: TrainConfig,
    progress: bool,
) -> dict[str, float]:
    from tqdm.auto import tqdm

    model, method = trainer.model, trainer.method
    model.train()
    device = loader.device
    task_sum = torch.zeros((), dtype=torch.float64, device=device)
    sparsity_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    data_seconds = 0.0
    epoch_start = time.perf_counter()
    bar = tqdm(total=len(loader), desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, disable=not progress)
    total_steps = len(loader) * config.epochs  # type: ignore[operator]
    step = epoch * len(loader)
    batches = iter(loader)
    while True:
        data_start = time.perf_counter()
        try:
            x, y = next(batches)
        except StopIteration:
            break
        data_seconds += time.perf_counter() - data_start
        method.begin_step(step, total_steps)
        logits = trainer.forward_model(x)
        task_loss = F.cross_entropy(logits, y)
        loss = task_loss
        sparsity_loss = method.loss()
        if sparsity_loss is not None:
            loss = task_loss + sparsity_loss
            sparsity_sum += sparsity_loss.detach().double() * len(y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        method.end_step(step, total_steps)
        task_sum += task_loss.detach().double() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        count += len(y)
        bar.update(1)
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    task_sum, sparsity_sum, correct, total = distributed.all_reduce_sum(
        [task_sum, sparsity_sum, correct, torch.tensor(count, device=device)], trainer.ctx
    )
    count = int(total)
    task_mean = float(task_sum) / count
    sparsity_mean = float(sparsity_sum) / count
    lrs = {group.get("name", "weights"): group["lr"] for group in optimizer.param_groups}
    return {
        "epoch": epoch + 1,
        "train_loss": task_mean + sparsity_mean,
        "task_loss": task_mean,
        "sparsity_loss": sparsity_mean,
        "train_accuracy": int(correct) / count,
        "lr": float(lrs.get("weights", float("nan"))),
        "threshold_lr": float(lrs.get("thresholds", method.threshold_step())),
        "epoch_seconds": time.perf_counter() - epoch_start,
        "data_seconds": data_seconds,
    }


def _target_reached(
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


def _finish(
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
) -> RunResult:
    from .plots import plot_curves, plot_layer_sparsity

    _, accuracy_before = evaluate(model, test_loader)
    sparse = method.sparse
    finish = method.finish(log)
    if finish.message:
        log(finish.message)
    _, accuracy = evaluate(model, test_loader)
    report = finish.report or sparsity_report(model, min_params=config.pthres)
    macs = layer_macs(model, example, min_params=config.pthres)
    total_macs = sum(macs.get(layer.name, 0.0) for layer in report.layers)
    flops_sparsity = sum(macs.get(layer.name, 0.0) * layer.actual for layer in report.layers) / max(total_macs, 1.0)
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
        target_reached=_target_reached(config, report, macs, finish.sparsity_after, flops_sparsity) if sparse else None,
        report_text=str(report),
        metrics=metrics,
    )
    if ctx.main:
        atomic_write_json(run_dir / "summary.json", result.to_dict())
    return result
