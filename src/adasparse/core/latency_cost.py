"""A channel budget priced in measured time: the fraction of the model's forward time removed, as a
:class:`~adasparse.core.latency_table.LatencyTable` predicts it, in place of weights or multiply-accumulates.

A FLOPs budget prices every multiply-accumulate alike, but on a CPU a narrow convolution costs several times more per
multiply-accumulate than a wide one, and the operators between layers cost in proportion to their activations: the
allocation a FLOPs budget learns is not the fastest of its FLOPs (docs/structured.md). With ``budget="latency"`` the
projection and the rounding hold the *predicted time* at the target instead, so the channels a set keeps are
priced by what they cost on the machine the table was measured on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .channel_cost import ChannelCost

if TYPE_CHECKING:
    from .latency_table import LatencyTable

__all__ = ["LatencyCost"]


class LatencyCost(ChannelCost):
    """:class:`ChannelCost` with a third budget, ``"latency"``: the fraction of the predicted forward time removed
    (``"params"`` and ``"flops"`` are counted as before)."""

    def __init__(self, cost: ChannelCost, table: LatencyTable) -> None:
        table.check_sets(cost.channel_sets)
        self.__dict__.update(cost.__dict__)
        self.table = table
        self._sizes = [int(s.channels) for s in cost.channel_sets]
        self._dense = table.dense_seconds()
        if not self._dense > 0.0:
            raise ValueError("the latency table predicts no time for the dense model")

    def _kept(self, fractions: Sequence[float]) -> list[float]:
        return [(1.0 - f) * size for f, size in zip(fractions, self._sizes)]

    def sparsity(self, fractions: Sequence[float], budget: str = "params") -> float:
        if budget != "latency":
            return super().sparsity(fractions, budget)
        return 1.0 - self.table.seconds(self._kept(fractions)) / self._dense

    def gradient(self, fractions: Sequence[float], budget: str = "params") -> list[float]:
        if budget != "latency":
            return super().gradient(fractions, budget)
        _, slopes = self.table.seconds_and_gradient(self._kept(fractions))
        return [slope * size / self._dense for slope, size in zip(slopes, self._sizes)]
