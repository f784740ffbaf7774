"""Side-by-side CPU latency of two models on the same input: the ratio, not the absolute time.

Timings on shared machines drift; measuring both models alternately in one process, many rounds, and reporting the
ratio of their medians keeps that drift out of the comparison (``docs/benchmarks.md``).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["LatencyRatio", "latency_ratio"]


@dataclass(frozen=True)
class LatencyRatio:
    """Median seconds per forward pass of each model and their ratio (``candidate / reference``)."""

    batch: int
    reference: float
    candidate: float

    @property
    def ratio(self) -> float:
        return self.candidate / self.reference


def _once(model: nn.Module, inputs: torch.Tensor) -> float:
    start = time.perf_counter()
    model(inputs)
    return time.perf_counter() - start


@torch.inference_mode()
def latency_ratio(
    reference: nn.Module,
    candidate: nn.Module,
    example: torch.Tensor,
    batch: int,
    *,
    rounds: int = 30,
    warmup: int = 3,
    threads: int | None = 1,
) -> LatencyRatio:
    """Time ``candidate`` against ``reference`` on a batch of ``batch`` copies of ``example`` (one example, its
    batch dimension of size 1 or absent), alternating the two every round, in eval mode.

    Args:
        reference, candidate: the models (not modified; put in eval mode for the measurement, then restored).
        example: one input example.
        batch: the batch size to time.
        rounds: timed forward passes of each model (the median is reported).
        warmup: untimed passes of each first.
        threads: ``torch.set_num_threads`` during the measurement (restored afterwards); ``None`` leaves it.
    """
    if example.dim() > 0 and example.shape[0] == 1:
        example = example[0]
    inputs = example.unsqueeze(0).expand(batch, *example.shape).contiguous()
    previous_threads = torch.get_num_threads()
    modes = (reference.training, candidate.training)
    reference.eval()
    candidate.eval()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        for _ in range(warmup):
            _once(reference, inputs)
            _once(candidate, inputs)
        times: tuple[list[float], list[float]] = ([], [])
        for round_index in range(rounds):
            order = ((0, reference), (1, candidate)) if round_index % 2 == 0 else ((1, candidate), (0, reference))
            for slot, model in order:
                times[slot].append(_once(model, inputs))
    finally:
        torch.set_num_threads(previous_threads)
        reference.train(modes[0])
        candidate.train(modes[1])
    return LatencyRatio(batch, statistics.median(times[0]), statistics.median(times[1]))
