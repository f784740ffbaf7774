"""The thresholds' upkeep between optimizer steps: the divergence check, the clamp into ``[0, 5]`` and the
scale-free (Adam) update that :class:`adasparse.Pruner` moves them with by default."""

from __future__ import annotations

import math

import torch

from ..core._no_grad import no_grad
from ..core.distribution import MagnitudeDistribution
from ..core.operator import MAX_THRESHOLD
from ..core.parametrization import PrunedTensor

__all__ = [
    "ADAM_BETAS",
    "ADAM_EPS",
    "adam_step",
    "check_finite",
    "clamp_thresholds",
    "threshold_versions",
    "ThresholdVersions",
]

ADAM_BETAS = (0.9, 0.999)
"""The moment decay rates of :func:`adam_step`."""

ADAM_EPS = 1e-12
"""Added to the root of the second moment in :func:`adam_step`."""


ThresholdVersions = tuple[tuple[int, int], ...]
"""Each threshold's identity and version counter (:func:`threshold_versions`)."""


def threshold_versions(tensors: list[PrunedTensor]) -> ThresholdVersions:
    """Each threshold parameter's identity and version counter: equal tuples mean no threshold was written in place
    (every optimizer, ``fill_``, ``clamp_`` and ``load_state_dict`` writes in place) or replaced by another
    parameter (``load_state_dict(..., assign=True)``) in between."""
    return tuple((id(threshold), threshold._version) for threshold in (pruned.threshold for pruned in tensors))


@no_grad
def check_finite(tensors: list[PrunedTensor], weights: bool = True) -> list[float]:
    """``ValueError`` naming the first tensor whose threshold (or, with ``weights``, weights) are NaN or infinite;
    returns the thresholds' values (for :func:`clamp_thresholds`, so that they are read once per step).

    The thresholds are read as Python floats (one scalar each); a NaN or inf in the weights makes their sum
    non-finite: one reduction per tensor and one host sync per call. The per-tensor search runs only then.
    """
    values = [pruned.threshold.item() for pruned in tensors]
    finite = all(map(math.isfinite, values))
    if finite and weights and tensors:
        total = torch.stack([pruned.raw.sum() for pruned in tensors]).sum()
        finite = math.isfinite(float(total))
    if finite:
        return values
    for pruned in tensors:
        if not bool(torch.isfinite(pruned.threshold).all()):
            raise ValueError(
                f"training diverged: the threshold of {pruned.name} is {pruned.threshold.item()}; "
                "a lower learning rate may help"
            )
        if weights and not bool(torch.isfinite(pruned.raw).all()):
            raise ValueError(
                f"training diverged: {pruned.name} has non-finite values (NaN or inf); a lower learning rate may help"
            )
    return values  # every value finite, only their sum overflowed


@no_grad
def clamp_thresholds(tensors: list[PrunedTensor], values: list[float] | None = None) -> None:
    """Put every threshold parameter back into ``[0, 5]`` (touching only those outside); ``values``: the
    thresholds as just read by :func:`check_finite` (read here when not given)."""
    if values is None:
        values = [pruned.threshold.item() for pruned in tensors]
    for pruned, value in zip(tensors, values):
        if not 0.0 <= value <= MAX_THRESHOLD:
            pruned.threshold.clamp_(0.0, MAX_THRESHOLD)


def _move_by_equivalent(distribution: MagnitudeDistribution, r: torch.Tensor, step: float) -> None:
    """Move a structured threshold by ``step`` on the Gaussian-equivalent scale
    (:meth:`MagnitudeDistribution.gaussian_equivalent`): its pruned fraction changes as a Gaussian layer's at the
    same sparsity would, read on the groups' measured scores."""
    if len(distribution) == 0:
        return
    equivalent = distribution.gaussian_equivalent(distribution.position(r.item()))
    r.fill_(distribution.threshold_at(distribution.position_at_equivalent(equivalent + step)))


@no_grad
def adam_step(
    tensors: list[PrunedTensor],
    moments: list[list[float]],
    step_size: float,
    count: int,
    distributions: list[MagnitudeDistribution | None] | None = None,
) -> bool:
    """One Adam step on every threshold that has a finite gradient; returns whether any had one.

    Invariant to the gradient's scale, so a layer whose loss is very sensitive to its threshold (a convolution
    before a normalisation) moves as fast as any. ``moments`` holds each threshold's first and second moment
    (updated in place), ``count`` is the step's number from 1 (for the bias corrections). A gradient that was used
    is consumed (set to ``None``): no optimizer zeroes it.

    ``distributions`` gives, for a tensor pruned by groups (channels, heads, blocks), its groups' scores measured
    now: its step is then taken on the Gaussian-equivalent scale the channel projection shifts on
    (:meth:`MagnitudeDistribution.gaussian_equivalent`), so its pruned fraction moves as a Gaussian layer's at the
    same sparsity would. A step in ``r`` itself moves a set with concentrated scores across many groups at once (a
    0.001 step crossed 2-3 of 64 channels in a measured case), and a step on another scale than the projection's
    leaves a drift that the projection passes on to the other sets.
    """
    beta1, beta2 = ADAM_BETAS
    correction1, correction2 = 1.0 - beta1**count, 1.0 - beta2**count
    any_gradient = False
    for index, (pruned, moment) in enumerate(zip(tensors, moments)):
        r = pruned.threshold
        if r.grad is None:
            continue
        gradient = float(r.grad)
        if not math.isfinite(gradient):
            continue
        any_gradient = True
        moment[0] = beta1 * moment[0] + (1.0 - beta1) * gradient
        moment[1] = beta2 * moment[1] + (1.0 - beta2) * gradient * gradient
        denominator = math.sqrt(moment[1] / correction2) + ADAM_EPS
        step = -step_size * (moment[0] / correction1) / denominator
        distribution = distributions[index] if distributions is not None else None
        if distribution is None:
            r.add_(step)
        else:
            _move_by_equivalent(distribution, r, step)
        r.grad = None
    return any_gradient
