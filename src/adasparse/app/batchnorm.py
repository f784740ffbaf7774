"""BatchNorm statistics of a finished model, recomputed on training inputs.

Training leaves each BatchNorm layer a running average of the batch statistics it saw, which evaluation uses. Where
pruning leaves a convolution nearly empty, BatchNorm's division by that convolution's small batch spread lets its
surviving weights grow by orders of magnitude under SGD (train-mode BatchNorm hides the scale from the loss), and
the running averages then trail statistics that moved by the same orders: the model classifies its training batches
well and its test set at chance. Recomputing the statistics once with the final weights (a cumulative average over
the training inputs, as ``torch.optim.swa_utils.update_bn`` does after weight averaging) gives evaluation the
statistics of the model it evaluates.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

__all__ = ["has_batchnorm", "recompute_batchnorm", "training_inputs"]


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has a BatchNorm layer that keeps running statistics."""
    return any(
        isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats for module in model.modules()
    )


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
