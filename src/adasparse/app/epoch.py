"""One epoch of a run: the training pass (through DistributedDataParallel when distributed), the test evaluation,
the divergence check and the epoch's log line."""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .config import TrainConfig
from .data.loader import BatchLoader
from .methods import Method

__all__ = ["Trainer", "check_not_diverged", "epoch_line", "evaluate", "train_epoch"]


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


class Trainer:
    """The model as the training step calls it: wrapped in DistributedDataParallel when distributed. No method
    changes the model's parameters during training (fixed masks are buffers), so one wrapper serves the run."""

    def __init__(self, model: nn.Module, method: Method, ctx: distributed.Context, device: torch.device) -> None:
        self.model, self.method, self.ctx = model, method, ctx
        self.forward_model = distributed.wrap(model, ctx, device)


def train_epoch(
    trainer: Trainer,
    optimizer: torch.optim.Optimizer,
    loader: BatchLoader,
    epoch: int,
    config: TrainConfig,
    progress: bool,
) -> dict[str, float]:
    """Train one epoch (``epoch`` counts from 0); the row of ``metrics.csv`` it fills: losses and accuracy summed
    over every rank, learning rates, timings. The test columns are the caller's."""
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


def check_not_diverged(
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


def epoch_line(row: dict[str, float], config: TrainConfig) -> str:
    """The log line of a finished epoch's ``metrics.csv`` row."""
    text = (
        f"epoch {int(row['epoch']):3d}/{config.epochs}  loss {row['train_loss']:.4f}  "
        f"test acc {row['test_accuracy']:.4f}"
    )
    if not math.isnan(row["analytic_sparsity"]):
        text += f"  sparsity {row['actual_sparsity']:.4f} (analytic {row['analytic_sparsity']:.4f})"
    elif row["actual_sparsity"] > 0.0:
        text += f"  sparsity {row['actual_sparsity']:.4f}"
    return text + f"  {row['epoch_seconds']:.1f}s"
