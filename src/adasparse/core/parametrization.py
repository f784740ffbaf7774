"""Attach the pruning operator to a module's weight tensors, and take it off again.

The mechanism follows ``torch.nn.utils.parametrize``: the module's class is swapped for a subclass whose
``weight`` (or other tensor) is a property computing the effective weight from two parameters registered in its
place, ``<name>_orig`` (the raw, trainable weight: the very ``Parameter`` object the module had) and
``<name>_threshold`` (the scalar ``r``), plus a boolean buffer ``<name>_mask``: empty while the threshold decides
which weights are zero, the weight's shape once the zeros are fixed (:func:`freeze`). Freezing changes no
parameter and no ``state_dict`` key, so optimizers, data-parallel wrappers and compiled models stay valid. The
module keeps its class for ``isinstance``, its own ``forward``, its hooks and every other attribute. Unlike
``parametrize``:

- the generated subclass is cached per (class, tensor names) and is never mutated, so a model and its
  ``copy.deepcopy`` can be sparsified and desparsified independently;
- instances pickle (and so ``torch.save(model)`` works): they reduce to a rebuild of the cached subclass;
- the subclass keeps the name, qualified name and module of the original class (``repr``, ``torch.fx`` leaf
  detection and class-name checks see the original layer).

Shared (tied) weights: a ``Parameter`` used by several modules (an embedding and its language-model head) is one
pruned tensor. Its owner (the module :func:`adasparse.sparsify` selected) carries the operator as above; every other
module using it is a *tied user* (:func:`attach_tied`): its class is swapped too, its entry in ``_parameters`` is
kept as ``None`` (so it has no ``state_dict`` key of its own) and its ``weight`` property returns the owner's
effective weight, read through a reference to the owner. Every user therefore sees the same pruned weight, with one
threshold and one mask, and the tie survives ``.to()``, ``to_empty``, ``deepcopy`` and pickling (which replace
buffers, and with ``to_empty`` parameters, module by module).

Length: about 570 lines, over the ~400 the project aims at, because the owner classes, the tied-user classes,
freezing and the structured layouts' dispatch are one mechanism whose generated classes, pickling and
``state_dict`` keys must agree; the key codec lives in :mod:`~adasparse.core.state_keys`, the structured layouts in
:mod:`~adasparse.core.granularity` and :mod:`~adasparse.core.channel_sets`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from .channel_sets import ChannelSet
from .granularity import BlockLayout
from .operator import bound_pruned_gradient, effective_weight, grouped_weight, masked_weight
from .state_keys import (
    CENTRED_SUFFIX,
    LAYOUT_SUFFIX,
    MASK_SUFFIX,
    ORIG_SUFFIX,
    THRESHOLD_SUFFIX,
    effective_from_state,
    is_companion_key,
)

__all__ = [
    "CENTRED_SUFFIX",
    "MASK_SUFFIX",
    "ORIG_SUFFIX",
    "THRESHOLD_SUFFIX",
    "PrunedTensor",
    "attach",
    "attach_tied",
    "detach",
    "detach_tied",
    "effective_from_state",
    "freeze",
    "is_companion_key",
    "unfreeze",
    "is_sparsified",
    "is_tied_user",
    "original_class",
    "pruned_tensors",
    "pruning_units",
    "sparsified_tensor_names",
    "tied_users",
]

_CLASS_CACHE: dict[tuple[type, tuple[str, ...]], type] = {}


def is_sparsified(module: nn.Module) -> bool:
    """Whether ``module`` itself (not its children) carries the pruning operator."""
    return getattr(type(module), "_adasparse_tensors", None) is not None


def is_tied_user(module: nn.Module) -> bool:
    """Whether ``module`` uses a pruned tensor that another module owns (see :func:`attach_tied`)."""
    return getattr(type(module), "_adasparse_tied", None) is not None


def sparsified_tensor_names(module: nn.Module) -> tuple[str, ...]:
    """Names of the tensors of ``module`` that are pruned (empty for a plain module)."""
    return getattr(type(module), "_adasparse_tensors", None) or ()


def original_class(module: nn.Module) -> type:
    """The class the module had before it was sparsified (its own class for a plain module)."""
    return getattr(type(module), "_adasparse_base", type(module))


def _rebuild(base: type, tensor_names: tuple[str, ...]) -> nn.Module:
    """Unpickling entry point: an empty instance of the cached sparse subclass (state is set afterwards)."""
    cls = _sparse_class(base, tensor_names)
    return cls.__new__(cls)


TASK_GRADIENT_ATTRIBUTE = "_adasparse_task_gradient"
CENTRED_ATTRIBUTE = "_adasparse_centred"
"""Per tensor name, the value of its ``<name>_centred`` buffer as a Python bool (read every forward, no sync)."""
GRADIENT_BOUND_ATTRIBUTE = "_adasparse_gradient_bounds"
"""Per tensor name, the ``bound`` of :func:`~adasparse.core.operator.bound_pruned_gradient` applied to its
straight-through gradient (absent: none). A training setting, not state: the :class:`~adasparse.Pruner` sets it."""
_NO_BOUNDS: dict[str, float] = {}
LAYOUT_ATTRIBUTE = "_adasparse_layouts"
"""Per tensor name, its :class:`~adasparse.core.granularity.BlockLayout` or ``ChannelSet`` (absent: single weights)."""
TIED_ATTRIBUTE = "_adasparse_tied_to"
_TIED_CACHE: dict[tuple[type, tuple[str, ...]], type] = {}


def _empty_mask(like: torch.Tensor) -> torch.Tensor:
    return torch.zeros(0, dtype=torch.bool, device=like.device)


def _make_property(name: str) -> property:
    orig_key, threshold_key, mask_key = name + ORIG_SUFFIX, name + THRESHOLD_SUFFIX, name + MASK_SUFFIX

    def fget(self: nn.Module) -> torch.Tensor:
        params = self._parameters
        r = params[threshold_key]
        if not self.__dict__[TASK_GRADIENT_ATTRIBUTE]:
            r = r.detach()  # the threshold then learns from the sparsity loss alone
        mask = self._buffers[mask_key]
        if mask.numel():
            return masked_weight(params[orig_key], mask, r)
        layout = self.__dict__[LAYOUT_ATTRIBUTE].get(name)
        if isinstance(layout, ChannelSet):
            return layout.forward_tensor(self, name, r)  # pruned channels are zeroed where they are read
        if layout is not None:
            return _grouped(self, name, layout, r)
        weight = effective_weight(params[orig_key], r, centred=self.__dict__[CENTRED_ATTRIBUTE][name])
        bound = self.__dict__.get(GRADIENT_BOUND_ATTRIBUTE, _NO_BOUNDS).get(name)
        return weight if bound is None else bound_pruned_gradient(weight, bound)

    def fset(self: nn.Module, value: Any) -> None:
        if not isinstance(value, nn.Parameter):
            raise TypeError(
                f"cannot assign {type(value).__name__} to the sparsified tensor {name!r}: "
                f"assign an nn.Parameter (it becomes the raw weight {orig_key!r}) or call desparsify first"
            )
        current = self._parameters[orig_key]
        if value.shape != current.shape:
            raise ValueError(f"{name!r} must keep its shape {tuple(current.shape)}, got {tuple(value.shape)}")
        self._parameters[orig_key] = value

    return property(fget, fset, doc=f"Effective (pruned) {name}, computed from {orig_key} and {threshold_key}.")


def _grouped(module: nn.Module, name: str, layout: BlockLayout | ChannelSet, r: torch.Tensor) -> torch.Tensor:
    """The effective tensor of a structured granularity (one flag per group, see :mod:`~adasparse.core.granularity`):
    for a channel set, the producer's weight with the pruned rows zero (what :func:`freeze` and ``desparsify`` bake;
    during training nothing reads those rows)."""
    raw = module._parameters[name + ORIG_SUFFIX]
    if isinstance(layout, ChannelSet):
        keep, slope = layout.keep_and_slope()
        return grouped_weight(raw, r, layout.member_mask(module, name, keep), slope)
    keep, slope = layout.keep_and_slope(raw, float(r.detach()))
    return grouped_weight(raw, r, keep.to(raw.device), slope)


def _subclass(
    base: type,
    tensor_names: tuple[str, ...],
    kind: str,
    rebuild: Callable[[type, tuple[str, ...]], nn.Module],
    make_property: Callable[[str], property],
) -> type:
    """The generated subclass of ``base`` whose ``tensor_names`` are properties (``kind``: ``"sparsified"`` for an
    owner, ``"tied"`` for a tied user): same name, qualified name, module and docstring as ``base``; assignments to
    those names go through the properties; instances pickle as ``rebuild(base, tensor_names)`` plus their state."""

    def __setattr__(self: nn.Module, attr: str, value: Any) -> None:
        if attr in tensor_names:
            object.__setattr__(self, attr, value)  # the property's setter (a tied user's refuses)
        else:
            base.__setattr__(self, attr, value)

    def __reduce_ex__(self: nn.Module, protocol: int) -> tuple:
        return (rebuild, (base, tensor_names), self.__getstate__())

    def extra_repr(self: nn.Module) -> str:
        text = base.extra_repr(self)
        names = ", ".join(tensor_names)
        return f"{text}, {kind}=({names})" if text else f"{kind}=({names})"

    namespace: dict[str, Any] = {
        "_adasparse_tensors" if kind == "sparsified" else "_adasparse_tied": tensor_names,
        "_adasparse_base": base,
        "__setattr__": __setattr__,
        "__reduce_ex__": __reduce_ex__,
        "extra_repr": extra_repr,
        "__module__": base.__module__,
        "__qualname__": base.__qualname__,
        "__doc__": base.__doc__,
    }
    for name in tensor_names:
        namespace[name] = make_property(name)
    return type(base.__name__, (base,), namespace)


def _sparse_class(base: type, tensor_names: tuple[str, ...]) -> type:
    key = (base, tensor_names)
    cls = _CLASS_CACHE.get(key)
    if cls is not None:
        return cls

    def _load_from_state_dict(
        self: nn.Module,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # A mask is empty (thresholds decide) or the weight's shape (fixed zeros): take whichever the state holds;
        # a state without masks (written before masks existed) means thresholds decide.
        absent = []
        for name in tensor_names:
            key = prefix + name + MASK_SUFFIX
            mask = self._buffers[name + MASK_SUFFIX]
            value = state_dict.get(key)
            if value is None:
                mask.resize_(0)
                absent.append(key)
            elif isinstance(value, torch.Tensor) and (
                value.numel() == 0 or value.shape == self._parameters[name + ORIG_SUFFIX].shape
            ):
                mask.resize_(value.shape)
            else:
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                error_msgs.append(
                    f"{key}: a mask must be empty or of the weight's shape "
                    f"{tuple(self._parameters[name + ORIG_SUFFIX].shape)}, got {shape}"
                )
        centred = self.__dict__[CENTRED_ATTRIBUTE]
        for name in tensor_names:
            key = prefix + name + CENTRED_SUFFIX
            value = state_dict.get(key)
            if value is None:
                self._buffers[name + CENTRED_SUFFIX].fill_(True)
                absent.append(key)
            elif isinstance(value, torch.Tensor) and value.numel() == 1:
                self._buffers[name + CENTRED_SUFFIX].fill_(bool(value.reshape(())))
            else:
                error_msgs.append(f"{key}: must be a one-element tensor (True or False), got {value!r}")
                continue
            centred[name] = bool(self._buffers[name + CENTRED_SUFFIX])
        base._load_from_state_dict(
            self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        for key in absent:
            if key in missing_keys:
                missing_keys.remove(key)

    cls = _subclass(base, tensor_names, "sparsified", _rebuild, _make_property)
    cls._load_from_state_dict = _load_from_state_dict
    _CLASS_CACHE[key] = cls
    return cls


def _rebuild_tied(base: type, tensor_names: tuple[str, ...]) -> nn.Module:
    """Unpickling entry point of a tied user (see :func:`_rebuild`)."""
    cls = _tied_class(base, tensor_names)
    return cls.__new__(cls)


def _make_tied_property(name: str) -> property:
    def fget(self: nn.Module) -> torch.Tensor:
        owner, owner_name = self.__dict__[TIED_ATTRIBUTE][name]
        return getattr(owner, owner_name)

    def fset(self: nn.Module, value: Any) -> None:
        raise TypeError(
            f"cannot assign to {name!r}: it is a pruned weight shared with another module (tied weights); "
            "assign the owner's weight, or call desparsify first"
        )

    return property(fget, fset, doc=f"Effective (pruned) {name}, shared with the module that owns it.")


def _tied_class(base: type, tensor_names: tuple[str, ...]) -> type:
    key = (base, tensor_names)
    cls = _TIED_CACHE.get(key)
    if cls is not None:
        return cls

    cls = _subclass(base, tensor_names, "tied", _rebuild_tied, _make_tied_property)
    _TIED_CACHE[key] = cls
    return cls


def _replace_parameters(module: nn.Module, mapping: dict[str, dict[str, nn.Parameter]]) -> None:
    """Rebuild ``module._parameters`` in order, replacing each key of ``mapping`` by the parameters it maps to."""
    rebuilt: dict[str, nn.Parameter | None] = {}
    for key, value in module._parameters.items():
        if key in mapping:
            rebuilt.update(mapping[key])
        else:
            rebuilt[key] = value
    module._parameters.clear()
    module._parameters.update(rebuilt)


def attach(
    module: nn.Module,
    tensor_names: tuple[str, ...],
    thresholds: dict[str, float],
    trainable: bool,
    task_gradient: bool = True,
    centred: bool = True,
    layouts: dict[str, BlockLayout | ChannelSet] | None = None,
    shared_thresholds: dict[str, nn.Parameter] | None = None,
) -> None:
    """Sparsify the named tensors of one module in place.

    Args:
        module: a plain (not yet sparsified) module owning each named tensor as a floating ``nn.Parameter``.
        tensor_names: e.g. ``("weight",)``.
        thresholds: initial ``r`` per tensor name.
        trainable: whether the thresholds receive gradients.
        task_gradient: whether the gradient of the loss computed from the module's output reaches the thresholds
            (through the weights they prune); without it only the sparsity loss moves them.
        centred: kept weights hold ``w - mean(w)`` (the paper) or their own value ``w``.
        layouts: per tensor name, a structured granularity (see :mod:`~adasparse.core.granularity`); absent names
            are pruned weight by weight.
        shared_thresholds: per tensor name, an existing threshold ``Parameter`` to use instead of a new one (the
            members of a ``ChannelSet`` share one).
    """
    layouts = dict(layouts or {})
    shared_thresholds = shared_thresholds or {}
    if is_sparsified(module):
        raise ValueError(
            f"{type(module).__name__} is already sparsified ({', '.join(sparsified_tensor_names(module))})"
        )
    mapping: dict[str, dict[str, nn.Parameter]] = {}
    for name in tensor_names:
        weight = module._parameters[name]
        assert weight is not None
        threshold = shared_thresholds.get(name)
        if threshold is None:
            r = torch.tensor(float(thresholds[name]), dtype=weight.dtype, device=weight.device)
            threshold = nn.Parameter(r, requires_grad=trainable)
        mapping[name] = {name + ORIG_SUFFIX: weight, name + THRESHOLD_SUFFIX: threshold}
    _replace_parameters(module, mapping)
    for name in tensor_names:
        raw = module._parameters[name + ORIG_SUFFIX]
        module._buffers[name + MASK_SUFFIX] = _empty_mask(raw)
        module._buffers[name + CENTRED_SUFFIX] = torch.tensor(bool(centred), device=raw.device)
        if name in layouts:
            module._buffers[name + LAYOUT_SUFFIX] = layout_code(layouts[name]).to(raw.device)
    object.__setattr__(module, TASK_GRADIENT_ATTRIBUTE, bool(task_gradient))
    object.__setattr__(module, LAYOUT_ATTRIBUTE, layouts)
    object.__setattr__(module, CENTRED_ATTRIBUTE, dict.fromkeys(tensor_names, bool(centred)))
    module.__class__ = _sparse_class(type(module), tuple(tensor_names))


def detach(module: nn.Module, bake: bool = True) -> None:
    """Remove the operator from one module, restoring its class and its original parameter names.

    With ``bake`` the effective weight is written into the original ``Parameter`` object (zeros baked in);
    otherwise the raw weight is restored unchanged.
    """
    tensor_names = sparsified_tensor_names(module)
    if not tensor_names:
        raise ValueError(f"{type(module).__name__} is not sparsified")
    mapping: dict[str, dict[str, nn.Parameter]] = {}
    for name in tensor_names:
        raw = module._parameters[name + ORIG_SUFFIX]
        assert raw is not None
        if bake:
            with torch.no_grad():
                raw.copy_(_effective(module, name))
        mapping[name + ORIG_SUFFIX] = {name: raw}
        mapping[name + THRESHOLD_SUFFIX] = {}
        module._buffers.pop(name + MASK_SUFFIX, None)
        module._buffers.pop(name + CENTRED_SUFFIX, None)
        module._buffers.pop(name + LAYOUT_SUFFIX, None)
    _replace_parameters(module, mapping)
    module.__dict__.pop(TASK_GRADIENT_ATTRIBUTE, None)
    module.__dict__.pop(LAYOUT_ATTRIBUTE, None)
    module.__dict__.pop(CENTRED_ATTRIBUTE, None)
    module.__dict__.pop(GRADIENT_BOUND_ATTRIBUTE, None)
    module.__class__ = original_class(module)


def attach_tied(module: nn.Module, owners: dict[str, tuple[nn.Module, str]]) -> None:
    """Make the named tensors of ``module`` read the pruned tensors of their owners (tied weights), in place.

    Args:
        module: a plain module whose ``_parameters[name]`` is the very ``Parameter`` its owner prunes.
        owners: per tensor name, ``(owner module, owner tensor name)``; the owner is sparsified (:func:`attach`).
    """
    if is_sparsified(module) or is_tied_user(module):
        raise ValueError(f"{type(module).__name__} is already sparsified or tied")
    for name, (owner, owner_name) in owners.items():
        if module._parameters.get(name) is not owner._parameters.get(owner_name + ORIG_SUFFIX):
            raise ValueError(f"{type(module).__name__}.{name} is not the Parameter its owner prunes")
    for name in owners:
        module._parameters[name] = None  # keeps the key order; no state_dict key while the owner holds the tensor
    object.__setattr__(module, TIED_ATTRIBUTE, dict(owners))
    module.__class__ = _tied_class(type(module), tuple(owners))


def detach_tied(module: nn.Module) -> None:
    """Give a tied user back its plain class and the owner's raw ``Parameter`` (whatever the owner holds now)."""
    owners = module.__dict__.get(TIED_ATTRIBUTE)
    if not is_tied_user(module) or owners is None:
        raise ValueError(f"{type(module).__name__} is not a tied user")
    for name, (owner, owner_name) in owners.items():
        module._parameters[name] = owner._parameters[owner_name + ORIG_SUFFIX]
    module.__dict__.pop(TIED_ATTRIBUTE, None)
    module.__class__ = original_class(module)


def tied_users(model: nn.Module) -> list[tuple[str, nn.Module, str, nn.Module, str]]:
    """Every tied user tensor of ``model``: ``(module name, module, tensor name, owner module, owner tensor name)``."""
    return [
        (module_name, module, name, owner, owner_name)
        for module_name, module in model.named_modules()
        if is_tied_user(module)
        for name, (owner, owner_name) in module.__dict__[TIED_ATTRIBUTE].items()
    ]


def _effective(module: nn.Module, name: str) -> torch.Tensor:
    """The effective tensor ``name`` of a sparsified module, computed without autograd."""
    raw = module._parameters[name + ORIG_SUFFIX]
    r = module._parameters[name + THRESHOLD_SUFFIX]
    mask = module._buffers[name + MASK_SUFFIX]
    with torch.no_grad():
        if mask.numel():
            return masked_weight(raw, mask, r)
        layout = module.__dict__[LAYOUT_ATTRIBUTE].get(name)
        if layout is not None:
            return _grouped(module, name, layout, r)
        return effective_weight(raw, r, centred=module.__dict__[CENTRED_ATTRIBUTE][name])


@torch.no_grad()
def freeze(module: nn.Module, name: str) -> None:
    """Fix the zeros of one pruned tensor: bake the effective weight into the raw one and keep its non-zero
    pattern as the mask. From then on the tensor is ``raw * mask``: pruned weights stay zero and get no gradient,
    the others train freely, and the threshold no longer acts."""
    layout = module.__dict__[LAYOUT_ATTRIBUTE].get(name)
    if isinstance(layout, ChannelSet):
        layout.freeze()  # every channel set of the model in one decision (their scores overlap)
        return
    raw = module._parameters[name + ORIG_SUFFIX]
    effective = _effective(module, name)
    raw.copy_(effective)
    mask = module._buffers[name + MASK_SUFFIX]
    mask.resize_(raw.shape).copy_(effective != 0)


def unfreeze(module: nn.Module, name: str) -> None:
    """Let the threshold decide the zeros of one pruned tensor again (the raw weight keeps its values); for a channel
    set, of every member of the set."""
    layout = module.__dict__.get(LAYOUT_ATTRIBUTE, {}).get(name)
    if isinstance(layout, ChannelSet):
        layout.unfreeze()
        return
    module._buffers[name + MASK_SUFFIX].resize_(0)


@dataclass(frozen=True)
class PrunedTensor:
    """One pruned tensor of a model: the module that owns it and the tensor's name on that module."""

    module_name: str
    module: nn.Module
    tensor_name: str

    @property
    def name(self) -> str:
        """Qualified name of the effective tensor, e.g. ``"features.0.weight"``."""
        return f"{self.module_name}.{self.tensor_name}" if self.module_name else self.tensor_name

    def __post_init__(self) -> None:
        # The parameters' keys, made once: raw and threshold are read many times per step.
        object.__setattr__(self, "_raw_key", self.tensor_name + ORIG_SUFFIX)
        object.__setattr__(self, "_threshold_key", self.tensor_name + THRESHOLD_SUFFIX)

    def _desparsified(self) -> ValueError:
        return ValueError(f"{self.name} is no longer sparsified (the model was desparsified)")

    @property
    def raw(self) -> nn.Parameter:
        """The raw trainable weight (``<name>_orig``)."""
        parameter = self.module._parameters.get(self._raw_key)
        if parameter is None:
            raise self._desparsified()
        return parameter

    @property
    def threshold(self) -> nn.Parameter:
        """The scalar threshold ``r`` (``<name>_threshold``), in units of the weight's standard deviation."""
        parameter = self.module._parameters.get(self._threshold_key)
        if parameter is None:
            raise self._desparsified()
        return parameter

    @property
    def numel(self) -> int:
        return self.raw.numel()

    def scores(self) -> tuple[torch.Tensor, float | torch.Tensor]:
        """What the threshold compares, and its scale: ``(|w - mean|, std)`` per weight, or ``(norms, rms)`` per
        block or channel (:mod:`~adasparse.core.granularity`); the values flat, not sorted."""
        layout = self.layout
        if layout is None:
            raise ValueError(f"{self.name} is pruned weight by weight: use sorted_magnitudes on its raw weight")
        values = layout.scores() if isinstance(layout, ChannelSet) else layout.scores(self.raw)
        return values, math.sqrt(float(values.double().pow(2).mean())) if values.numel() else 0.0

    @property
    def centred(self) -> bool:
        """Whether kept weights hold ``w - mean(w)`` (the paper's operator) rather than their own value ``w``."""
        return self.module.__dict__[CENTRED_ATTRIBUTE][self.tensor_name]

    @property
    def gradient_bound(self) -> float | None:
        """The bound on the pruned weights' straight-through gradient (see
        :func:`~adasparse.core.operator.bound_pruned_gradient`), or ``None``."""
        return self.module.__dict__.get(GRADIENT_BOUND_ATTRIBUTE, _NO_BOUNDS).get(self.tensor_name)

    def set_gradient_bound(self, bound: float | None) -> None:
        """Bound the pruned weights' straight-through gradient from the next forward pass on (``None``: no bound);
        ``ValueError`` for a tensor pruned by blocks or channels."""
        if self.layout is not None and bound is not None:
            raise ValueError(f"{self.name} is pruned by blocks or channels: a gradient bound applies to single weights")
        if bound is None and GRADIENT_BOUND_ATTRIBUTE not in self.module.__dict__:
            return  # nothing to take off: a model pruned without a bound carries no attribute for it
        bounds = dict(self.module.__dict__.get(GRADIENT_BOUND_ATTRIBUTE, _NO_BOUNDS))
        if bound is None:
            bounds.pop(self.tensor_name, None)
        else:
            bounds[self.tensor_name] = float(bound)
        object.__setattr__(self.module, GRADIENT_BOUND_ATTRIBUTE, bounds)

    @property
    def layout(self) -> BlockLayout | ChannelSet | None:
        """The tensor's structured granularity, or ``None`` when single weights are pruned."""
        return self.module.__dict__.get(LAYOUT_ATTRIBUTE, {}).get(self.tensor_name)

    @property
    def frozen(self) -> bool:
        """Whether the zeros are fixed by a mask (see :func:`freeze`) rather than decided by the threshold."""
        return bool(self.module._buffers[self.tensor_name + MASK_SUFFIX].numel())

    def effective(self) -> torch.Tensor:
        """The effective (pruned) weight, computed without autograd."""
        if self.module._parameters.get(self._raw_key) is None:
            raise self._desparsified()
        return _effective(self.module, self.tensor_name)


def layout_code(layout: BlockLayout | ChannelSet) -> torch.Tensor:
    """The ``<name>_layout`` buffer of a structured tensor: ``[1, 0, 0]`` channels, ``[2, R, C]`` blocks."""
    if isinstance(layout, ChannelSet):
        return torch.tensor([1, 0, 0], dtype=torch.int64)
    return torch.tensor([2, *layout.block], dtype=torch.int64)


def pruning_units(model: nn.Module) -> list[PrunedTensor]:
    """One pruned tensor per threshold, in module order: every tensor, except that the tensors of a channel set
    (which share one threshold) are represented by the first of them; its ``layout`` is the set."""
    seen: set[int] = set()
    units = []
    for item in pruned_tensors(model):
        if id(item.threshold) not in seen:
            seen.add(id(item.threshold))
            units.append(item)
    return units


def pruned_tensors(model: nn.Module) -> list[PrunedTensor]:
    """Every pruned tensor of ``model``, in module order (empty for a plain model)."""
    return [
        PrunedTensor(module_name, module, tensor_name)
        for module_name, module in model.named_modules()
        for tensor_name in sparsified_tensor_names(module)
    ]
