"""The budget of a model pruned by channels, as the sparsity loss and the projection see it: the fraction of the
model's weights or multiply-accumulates removed once the pruned channels are, in the order of its pruning units
(:mod:`adasparse.core.channel_cost` holds the cost model itself)."""

from __future__ import annotations

from collections.abc import Mapping

from ..core._checks import check_choice
from ..core.channel_cost import ChannelCost
from ..core.channel_sets import ChannelSet
from ..core.latency_cost import LatencyCost
from ..core.parametrization import PrunedTensor

__all__ = ["ChannelBudget"]


class ChannelBudget:
    """The budget of a model pruned by channels, in the order of its pruning units: the fraction of the model's
    weights or multiply-accumulates (``kind``) removed when unit ``i`` prunes ``fractions[i]`` of its channels."""

    def __init__(self, cost: ChannelCost, kind: str, units: list[PrunedTensor]) -> None:
        self.cost = cost
        self.kind = check_choice(kind, "budget", ("params", "flops", "latency"))
        if self.kind == "latency" and not isinstance(cost, LatencyCost):
            raise ValueError(
                "budget='latency' needs the model's channel sets priced by a latency table: "
                "Pruner(..., budget='latency', latency=adasparse.measure_latency(model, batch))"
            )
        index = {id(channel_set): position for position, channel_set in enumerate(cost.channel_sets)}
        self._order = [index[id(unit.layout)] for unit in units]

    @classmethod
    def of(cls, units: list[PrunedTensor], budget: str | Mapping[str, float]) -> ChannelBudget | None:
        """The budget of ``units`` if they are channel sets (``None`` otherwise).

        Raises:
            ValueError: a model mixing channel sets with other pruned tensors, or a budget other than
                ``"params"``/``"flops"`` for channel sets.
        """
        channel = [isinstance(unit.layout, ChannelSet) for unit in units]
        if not any(channel):
            return None
        if not all(channel):
            raise ValueError("a model pruned by channels cannot also have tensors pruned weight by weight or by block")
        if not isinstance(budget, str):
            raise ValueError(
                "a model pruned by channels takes budget='params', 'flops' or 'latency', not a mapping of costs"
            )
        return cls(units[0].layout.cost, budget, units)

    def _in_cost_order(self, fractions: list[float]) -> list[float]:
        ordered = [0.0] * len(fractions)
        for value, position in zip(fractions, self._order):
            ordered[position] = value
        return ordered

    def sparsity(self, fractions: list[float]) -> float:
        return self.cost.sparsity(self._in_cost_order(fractions), self.kind)

    def channel_cost(self, fractions: list[float]) -> float:
        """The largest share of the cost one channel carries at ``fractions`` (how closely the budget can be met)."""
        return self.cost.channel_cost(self._in_cost_order(fractions), self.kind)

    def gradient(self, fractions: list[float]) -> list[float]:
        gradient = self.cost.gradient(self._in_cost_order(fractions), self.kind)
        return [gradient[position] for position in self._order]
