"""BatchNorm statistics of a finished model, recomputed on training inputs.

Training leaves each BatchNorm layer a running average of the batch statistics it saw, which evaluation uses. Where
pruning leaves a convolution nearly empty, BatchNorm's division by that convolution's small batch spread lets its
surviving weights grow by orders of magnitude under SGD (train-mode BatchNorm hides the scale from the loss), and
the running averages then trail statistics that moved by the same orders: the model classifies its training batches
well and its test set at chance. Recomputing the statistics once with the final weights (a cumulative average over
the training inputs, as ``torch.optim.swa_utils.update_bn`` does after weight averaging) gives evaluation the
statistics of the model it evaluates.

``adasparse train --recompute-batchnorm auto`` does so only where the statistics training left are *stale*
(:func:`recompute_stale_batchnorm`): some channel's stored mean lies more than :data:`STALE_MEAN` of the recomputed
standard deviations from the recomputed mean, or its stored variance is more than :data:`STALE_VARIANCE` times
off, either way. Over the 81 finished runs of the BatchNorm models measured in docs/method.md, the healthy ones
stayed under 0.44 and 1.6 (most under 0.04 and 1.1: augmented training batches against plain training inputs),
and the collapsed ones read 83-86 and up to 1e13; a model with healthy statistics keeps them bit for bit. By
default (``never``) it only measures them and warns when they are stale.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

__all__ = [
    "STALE_MEAN",
    "STALE_VARIANCE",
    "Staleness",
    "has_batchnorm",
    "recompute_batchnorm",
    "recompute_stale_batchnorm",
    "training_inputs",
]

STALE_MEAN = 3.0
"""A stored running mean this many recomputed standard deviations (``sqrt(var + eps)``) from the recomputed one is
stale."""

STALE_VARIANCE = 4.0
"""A stored running variance this many times larger or smaller than the recomputed one (both ``+ eps``) is stale."""


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has a BatchNorm layer that keeps running statistics."""
    return bool(_norms(model))


def _norms(model: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats
    ]


@dataclass(frozen=True)
class Staleness:
    """How far the running statistics a model had lay from those recomputed on its inputs, worst channel of any
    BatchNorm layer: ``mean_shift`` in recomputed standard deviations, ``variance_ratio`` as a factor (``>= 1``,
    either way), and the layers they were found in."""

    mean_shift: float
    mean_layer: str
    variance_ratio: float
    variance_layer: str
    recomputed: bool
    """Whether the recomputed statistics were kept (the stored ones were stale)."""

    @property
    def stale(self) -> bool:
        return not (self.mean_shift <= STALE_MEAN and self.variance_ratio <= STALE_VARIANCE)

    def describe(self) -> str:
        return (
            f"stored means up to {self.mean_shift:.3g} standard deviations off ({self.mean_layer or '-'}), "
            f"variances up to {self.variance_ratio:.3g}x ({self.variance_layer or '-'})"
        )


def recompute_stale_batchnorm(
    model: nn.Module, batches: Iterable[torch.Tensor], *, measure_only: bool = False
) -> Staleness:
    """Recompute every BatchNorm layer's running statistics on ``batches`` (as :func:`recompute_batchnorm`) and keep
    them only if the stored ones were stale (see the module docstring); otherwise, or always with
    ``measure_only``, every statistic and the batch counter are put back exactly as they were.

    Raises:
        ValueError: ``batches`` is empty (checked before any statistic is touched).
    """
    norms = _norms(model)
    stored = [
        (module.running_mean.clone(), module.running_var.clone(), module.num_batches_tracked.clone())  # type: ignore[union-attr]
        for _, module in norms
    ]
    recompute_batchnorm(model, batches)
    worst_mean, mean_layer, worst_ratio, variance_layer = 0.0, "", 1.0, ""
    for (name, module), (mean, variance, _) in zip(norms, stored):
        fresh_var = module.running_var.double() + module.eps  # type: ignore[union-attr]
        old_var = variance.double() + module.eps
        shift = ((mean.double() - module.running_mean.double()).abs() / fresh_var.sqrt()).max().item()  # type: ignore[union-attr]
        ratio = torch.maximum(old_var / fresh_var, fresh_var / old_var).max().item()
        shift, ratio = (math.inf if math.isnan(value) else value for value in (shift, ratio))  # NaN: not a statistic
        if shift > worst_mean:
            worst_mean, mean_layer = shift, name
        if ratio > worst_ratio:
            worst_ratio, variance_layer = ratio, name
    staleness = Staleness(worst_mean, mean_layer, worst_ratio, variance_layer, recomputed=True)
    if staleness.stale and not measure_only:
        return staleness
    with torch.no_grad():
        for (_, module), (mean, variance, count) in zip(norms, stored):
            module.running_mean.copy_(mean)  # type: ignore[union-attr]
            module.running_var.copy_(variance)  # type: ignore[union-attr]
            module.num_batches_tracked.copy_(count)  # type: ignore[union-attr]
    return replace(staleness, recomputed=False)


def recompute_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Replace every BatchNorm layer's running mean and variance by their average over ``batches`` (inputs of
    ``model``, read once, one at a time), computed with the current weights and no gradient; the model's train/eval
    mode is kept.

    Raises:
        ValueError: ``batches`` is empty (checked before any statistic is touched).
    """
    iterator = iter(batches)
    first = next(iterator, None)
    if first is None:
        raise ValueError("recompute_batchnorm needs at least one batch of inputs")
    device = next(model.parameters()).device
    update_bn(itertools.chain([first], iterator), model, device=device)


def training_inputs(
    inputs: torch.Tensor,
    batch_size: int,
    transform: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor] | None = None,
) -> Iterator[torch.Tensor]:
    """``inputs`` in their order, in batches of ``batch_size``, through ``transform(batch, None)`` when given (the
    evaluation transform: no augmentation, so the statistics are those the test inputs are normalised with). The
    batches are made as they are read, so a large training set is never transformed whole."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    batches = (inputs[start : start + batch_size] for start in range(0, len(inputs), batch_size))
    return (transform(batch, None) if transform is not None else batch.float() for batch in batches)
