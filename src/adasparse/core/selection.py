"""Which layers (and which of their tensors) get a pruning threshold.

By default every module of a known prunable kind whose weight has at least ``min_params`` elements (and at least
one: a zero-element weight has nothing to prune):
``nn.Linear`` and its subclasses, every convolution and transposed convolution (``nn.modules.conv._ConvNd``),
``nn.Bilinear``, ``nn.MultiheadAttention`` and the smaller attention :func:`adasparse.shrink` leaves (their packed
``in_proj_weight``, or ``q/k/v_proj_weight`` when the key/value dimensions differ; ``out_proj`` is an ``nn.Linear``
child and is selected as one).

``include`` adds modules and ``exclude`` removes them. Each takes one selector or a list of them:

- a string: the module's qualified name (``"features.0"``) or a glob over it (``"blocks.*.attn"``);
- a module type: every instance (subclasses included);
- a callable ``fn(module, name) -> bool`` (the ``filter_fn`` of torchao's ``sparsify_``).

An included module of another kind is pruned through its ``weight`` parameter.
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Union

from torch import nn

from .pruned_attention import PrunedMultiheadAttention

__all__ = ["PRUNABLE_TYPES", "LayerSelection", "Selector", "default_tensor_names", "select_layers"]

Selector = Union[str, type, Callable[[nn.Module, str], bool]]
"""A module name or glob, a module type, or a predicate ``fn(module, name) -> bool``."""

PRUNABLE_TYPES: tuple[type, ...] = (
    nn.Linear,
    nn.modules.conv._ConvNd,
    nn.Bilinear,
    nn.MultiheadAttention,
    PrunedMultiheadAttention,
)


@dataclass(frozen=True)
class LayerSelection:
    """One module chosen for pruning and the names of its tensors to prune."""

    name: str
    module: nn.Module
    tensor_names: tuple[str, ...]


def default_tensor_names(module: nn.Module) -> tuple[str, ...]:
    """The tensors pruned on a module of a known kind (``("weight",)`` for any other module)."""
    if isinstance(module, PrunedMultiheadAttention):
        return ("in_proj_weight",)
    if isinstance(module, nn.MultiheadAttention):
        if module._qkv_same_embed_dim:
            return ("in_proj_weight",)
        return ("q_proj_weight", "k_proj_weight", "v_proj_weight")
    return ("weight",)


def _as_list(selectors: Selector | Iterable[Selector] | None, argument: str) -> list[Selector]:
    if selectors is None:
        return []
    if isinstance(selectors, (str, type)) or callable(selectors):
        items = [selectors]
    elif isinstance(selectors, Iterable):
        items = list(selectors)
    else:
        raise TypeError(f"{argument} must be a name, glob, module type, predicate or a list of them, got {selectors!r}")
    for item in items:
        if not (isinstance(item, (str, type)) or callable(item)):
            raise TypeError(f"{argument} entries must be names, globs, module types or predicates, got {item!r}")
    return items


def _name_matches(pattern: str, name: str) -> bool:
    return name == pattern or fnmatch.fnmatchcase(name, pattern)


def _matches(selector: Selector, module: nn.Module, name: str) -> bool:
    if isinstance(selector, str):
        return _name_matches(selector, name)
    if isinstance(selector, type):
        return isinstance(module, selector)
    return bool(selector(module, name))


def select_layers(
    model: nn.Module,
    *,
    min_params: int = 1000,
    include: Selector | Iterable[Selector] | None = None,
    exclude: Selector | Iterable[Selector] | None = None,
) -> list[LayerSelection]:
    """List the layers :func:`adasparse.sparsify` would prune, in module order.

    Args:
        model: any module.
        min_params: a tensor with fewer elements stays dense (``>= 0``).
        include: selectors adding modules beyond the default kinds.
        exclude: selectors removing modules (applied after ``include``).

    Raises:
        ValueError: a string in ``include``/``exclude`` that matches no module name (a typo), a lazy module
            that has not been materialised.
        TypeError: a selected tensor that is not a floating ``nn.Parameter``.
    """
    if isinstance(min_params, bool) or not isinstance(min_params, int) or min_params < 0:
        raise ValueError(f"min_params must be an integer >= 0, got {min_params!r}")
    includes = _as_list(include, "include")
    excludes = _as_list(exclude, "exclude")
    named = list(model.named_modules())
    names = [name for name, _ in named]
    for argument, selectors in (("include", includes), ("exclude", excludes)):
        for selector in selectors:
            if isinstance(selector, str) and not any(_name_matches(selector, n) for n in names):
                raise ValueError(f"{argument} entry {selector!r} matches no module name of the model")

    selected: list[LayerSelection] = []
    seen: dict[int, str] = {}
    for name, module in named:
        default_kind = isinstance(module, PRUNABLE_TYPES)
        included = any(_matches(s, module, name) for s in includes)
        if not (default_kind or included) or any(_matches(s, module, name) for s in excludes):
            continue
        tensor_names = default_tensor_names(module)
        chosen: list[str] = []
        for tensor_name in tensor_names:
            chosen_name = _check_tensor(module, name, tensor_name, required=included and not default_kind)
            if chosen_name is None:
                continue
            tensor = module._parameters[tensor_name]
            if tensor.numel() < min_params or tensor.numel() == 0:  # nothing to prune in a zero-element tensor
                continue
            if id(tensor) in seen:
                warnings.warn(
                    f"{_label(name)}.{tensor_name} is the same Parameter as {seen[id(tensor)]} (tied weights); "
                    "it is selected once, and sparsify prunes it as one tensor for both modules",
                    stacklevel=3,
                )
                continue
            seen[id(tensor)] = f"{_label(name)}.{tensor_name}"
            chosen.append(tensor_name)
        if chosen:
            selected.append(LayerSelection(name, module, tuple(chosen)))
    return selected


def _label(name: str) -> str:
    return name or "<model>"


def _check_tensor(module: nn.Module, name: str, tensor_name: str, required: bool) -> str | None:
    """Validate one candidate tensor; return its name, or None when a default-kind module simply lacks it."""
    tensor = module._parameters.get(tensor_name)
    if tensor is None:
        if required:
            raise TypeError(
                f"included module {_label(name)!r} ({type(module).__name__}) has no {tensor_name!r} parameter to prune"
            )
        if tensor_name in module._parameters or not hasattr(module, tensor_name):
            return None
        warnings.warn(
            f"{_label(name)}.{tensor_name} is not a plain parameter (another parametrization?); it is left dense",
            stacklevel=4,
        )
        return None
    if isinstance(tensor, nn.parameter.UninitializedParameter):
        raise ValueError(
            f"{_label(name)}.{tensor_name} is uninitialized (a lazy module): run one forward pass before sparsify"
        )
    if not tensor.is_floating_point():
        raise TypeError(f"{_label(name)}.{tensor_name} has dtype {tensor.dtype}; only floating weights can be pruned")
    return tensor_name
