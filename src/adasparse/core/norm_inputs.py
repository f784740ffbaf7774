"""Which layers' outputs a normalization with per-channel statistics reads, found on one forward pass.

BatchNorm (and InstanceNorm, GroupNorm) divides each channel by its own spread over the batch. An output channel
whose weights are all pruned is a constant zero there, BatchNorm divides it by ``sqrt(eps)``, and the straight-
through estimator hands that gradient to every pruned weight of the channel (docs/method.md). So the pruned-gradient
bound matters where a pruned layer's output reaches such a norm, and nowhere else needs to pay for it.

:class:`NormInputs` finds those layers at run time, with module hooks, on the next forward pass of the model:
a layer's output tensor is followed through element-wise modules (activations, dropout, ``nn.Identity``) and
recorded when it is a norm's input. Nothing is traced symbolically, so any model that calls its modules works;
a tensor that passes a functional op (``torch.relu(x)``, an addition) on the way is another tensor and is not
followed: a residual sum is not a constant zero, so that is the intended reading. The hooks (global ones, acting on
this model's modules only: nothing is stored on the model) remove themselves once the model's forward ends (or at
:meth:`NormInputs.finish`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils.hooks import RemovableHandle

__all__ = ["NORM_TYPES", "PASS_THROUGH_TYPES", "NormInputs"]

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.GroupNorm,
)
"""Normalizations whose statistics are taken per channel (or per small group of channels)."""

PASS_THROUGH_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Tanh,
    nn.Identity,
    nn.modules.dropout._DropoutNd,
)
"""Element-wise modules: a channel that is a constant before them is a constant after them."""


class NormInputs:
    """Watch the next forward pass of ``model`` and report which of ``layers`` feed a normalization.

    The hooks are global module hooks (``torch.nn.modules.module.register_module_forward_hook``) that act only on
    this model's modules, so nothing is stored on the model: it still pickles (``torch.save(model)``), and a copy
    made meanwhile (``copy.deepcopy``, an EMA model) is neither watched nor left with hooks. A model compiled with
    ``torch.compile(model)`` before its first forward pass makes torch warn once that global hooks exist; they ignore
    the compiled wrapper and leave after that pass.

    Args:
        model: the model whose forward pass is watched (its end removes the hooks).
        layers: the modules to follow (pruned layers).
        on_found: called once, with one flag per layer of ``layers`` (whether its output reached a norm of
            :data:`NORM_TYPES`), when the watched forward ends or :meth:`finish` is called.
    """

    def __init__(self, model: nn.Module, layers: Sequence[nn.Module], on_found: Callable[[list[bool]], None]) -> None:
        self._model = model
        self._on_found = on_found
        self._feeds = [False] * len(layers)
        self._producers: dict[int, frozenset[int]] = {}
        for index, layer in enumerate(layers):
            self._producers[id(layer)] = self._producers.get(id(layer), frozenset()) | {index}
        modules = list(model.modules())
        self._watched = [*modules, *layers]  # held, so that no other module takes one of their ids meanwhile
        self._norms = {id(module) for module in modules if isinstance(module, NORM_TYPES)}
        self._passes = {id(module) for module in modules if isinstance(module, PASS_THROUGH_TYPES)}
        self._sources: dict[int, tuple[torch.Tensor, frozenset[int]]] = {}  # id(output) -> (output, layer indices)
        self._handles: list[RemovableHandle] = [
            register_module_forward_pre_hook(self._before),
            register_module_forward_hook(self._after),
        ]
        self.done = False

    def _record(self, output: Any, indices: frozenset[int]) -> None:
        if isinstance(output, torch.Tensor) and indices:
            known = self._sources.get(id(output))
            merged = indices | known[1] if known is not None and known[0] is output else indices
            self._sources[id(output)] = (output, merged)  # the tensor is held: its id cannot be reused meanwhile

    def _sources_of(self, value: Any) -> frozenset[int]:
        if not isinstance(value, torch.Tensor):
            return frozenset()
        known = self._sources.get(id(value))
        return known[1] if known is not None and known[0] is value else frozenset()

    def _before(self, module: nn.Module, inputs: tuple[Any, ...]) -> None:
        if id(module) in self._norms and inputs:
            for index in self._sources_of(inputs[0]):
                self._feeds[index] = True

    def _after(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        key = id(module)
        if key in self._producers:
            self._record(output, self._producers[key])
        elif key in self._passes and inputs:
            self._record(output, self._sources_of(inputs[0]))
        if module is self._model:
            self.finish()

    def _remove(self) -> None:
        self.done = True
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._sources.clear()
        self._watched.clear()

    def finish(self) -> None:
        """Remove the hooks and report what was seen (nothing seen yet: no layer feeds a norm); only once."""
        if self.done:
            return
        self._remove()
        self._on_found(list(self._feeds))

    def cancel(self) -> None:
        """Remove the hooks without reporting (the answer came from elsewhere, e.g. a loaded state)."""
        self._remove()
