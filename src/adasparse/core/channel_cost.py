"""What a model costs once its pruned channels are removed: weights or multiply-accumulates, as a function of the
fraction of channels each channel set prunes.

Removing a channel shrinks two layers: its producers lose a row and its readers a column. A weight layer ``L``
producing the channels of set ``o`` and reading sets ``i`` therefore costs ``c_L * (1 - s_o) * (1 - sum_i a_Li s_i)``
after shrinking, where ``s`` is a set's pruned fraction of channels, ``c_L`` the layer's dense cost (weights, or
multiply-accumulates per example from :func:`~adasparse.core.flops.layer_macs`) and ``a_Li`` the share of the
layer's input features that carry set ``i``'s channels. Layers that no set touches (a classifier, attention) keep
their cost, so a budget is a fraction of the whole model, as a user states it ("half the FLOPs").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._checks import check_choice
from .channel_sets import ChannelSet, input_width

__all__ = ["ChannelCost", "ChannelCostLayer", "shared_cost"]


@dataclass(frozen=True)
class ChannelCostLayer:
    """One weight layer's dense cost and the sets it produces (``output``) and reads (``inputs``: set, share)."""

    name: str
    params: float
    macs: float
    output: int | None
    inputs: tuple[tuple[int, float], ...] = field(default_factory=tuple)


class ChannelCost:
    """The cost model of a model pruned by channels (see the module docstring).

    Args:
        sets: the model's channel sets, in the order of the fractions passed to :meth:`sparsity`.
        params: every weight tensor's dense weight count, by qualified tensor name (``"features.0.weight"``).
        macs: every weight tensor's multiply-accumulates per example, by the same names
            (:func:`~adasparse.core.flops.layer_macs`).
    """

    def __init__(self, sets: Sequence[ChannelSet], params: dict[str, float], macs: dict[str, float]) -> None:
        produced = {
            _key(name, tensor): index
            for index, s in enumerate(sets)
            for name, _, tensor in s.members
            if _key(name, tensor) in params  # a bias carries the channels but costs no multiply-accumulates
        }
        read: dict[str, list[tuple[int, float]]] = {}
        for index, channel_set in enumerate(sets):
            for consumer in channel_set.consumers:
                key = _key(consumer.name, "weight")
                if produced.get(key) == index:
                    continue  # a grouped convolution carrying the set's own channels: counted once, as a producer
                read.setdefault(key, []).append((index, len(consumer.index) / input_width(consumer.module)))
        missing = [key for key in [*produced, *read] if key not in params]
        if missing:
            raise ValueError(f"no cost for {', '.join(missing)}, which carry pruned channels")
        self.layers = [
            ChannelCostLayer(
                key, float(params[key]), float(macs.get(key, 0.0)), produced.get(key), tuple(read.get(key, ()))
            )
            for key in params
        ]
        self.sets = len(sets)
        self.channel_sets = list(sets)
        """The sets, in the order every ``fractions`` argument follows."""

    def _costs(self, budget: str) -> list[float]:
        budget = check_choice(budget, "budget", ("params", "flops"))
        return [layer.params if budget == "params" else layer.macs for layer in self.layers]

    def sparsity(self, fractions: Sequence[float], budget: str = "params") -> float:
        """The fraction of the dense cost removed when set ``k`` prunes ``fractions[k]`` of its channels."""
        costs = self._costs(budget)
        total = sum(costs)
        kept = sum(cost * _kept(layer, fractions) for cost, layer in zip(costs, self.layers))
        return 1.0 - kept / total if total else 0.0

    def fractions(self) -> list[float]:
        """Each set's pruned fraction of channels now (from its threshold, or its fixed masks), counted exactly (a
        float32 mean of 31 of 96 channels is off in the eighth digit)."""
        return [1.0 - int(keep.sum()) / keep.numel() for keep in (s.current_keep() for s in self.channel_sets)]

    def channel_cost(self, fractions: Sequence[float], budget: str = "params") -> float:
        """The largest share of the cost one channel carries at ``fractions`` (how closely a budget can be met)."""
        gradient = self.gradient(fractions, budget)
        return max(g / s.channels for g, s in zip(gradient, self.channel_sets))

    def gradient(self, fractions: Sequence[float], budget: str = "params") -> list[float]:
        """``d sparsity / d fractions[k]`` at ``fractions``: how much cost one more pruned fraction of set ``k``
        removes (the projection's direction)."""
        costs = self._costs(budget)
        total = sum(costs) or 1.0
        gradient = [0.0] * self.sets
        for cost, layer in zip(costs, self.layers):
            kept_in = 1.0 - sum(share * fractions[k] for k, share in layer.inputs)
            kept_out = 1.0 - fractions[layer.output] if layer.output is not None else 1.0
            if layer.output is not None:
                gradient[layer.output] += cost * kept_in / total
            for k, share in layer.inputs:
                gradient[k] += cost * kept_out * share / total
        return gradient


def _kept(layer: ChannelCostLayer, fractions: Sequence[float]) -> float:
    kept_in = 1.0 - sum(share * fractions[k] for k, share in layer.inputs)
    kept_out = 1.0 - fractions[layer.output] if layer.output is not None else 1.0
    return kept_out * kept_in


def _key(module_name: str, tensor: str) -> str:
    return f"{module_name}.{tensor}" if module_name else tensor


def shared_cost(tensors: Iterable[Any]) -> ChannelCost | None:
    """The cost model the channel sets among ``tensors`` (pruned tensors, each with its ``layout``) share, or
    ``None`` when none of them is pruned by channels."""
    return next((t.layout.cost for t in tensors if isinstance(t.layout, ChannelSet)), None)
