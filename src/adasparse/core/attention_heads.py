"""Heads of a user's attention module, declared: separate query, key, value and output ``Linear`` layers.

``nn.MultiheadAttention`` states its heads itself (:class:`~adasparse.core.channel_sets.HeadSet`). Any other
attention module computes them from ``Linear`` projections whose rows are grouped by head: row ``h * head_dim + i``
of the query, key and value projections is dimension ``i`` of head ``h``, and the output projection reads the heads
concatenated in the same order (Hugging Face's ``BertSelfAttention``, most hand-written attention). Nothing in the
traced graph says where one head ends, so the user declares it: an :class:`AttentionHeads` per kind of attention
module, passed as ``heads={selector: AttentionHeads(...)}`` to :func:`adasparse.sparsify`, :class:`adasparse.Pruner`
and :func:`adasparse.shrink` (the selectors of ``include=``: a module type, a name or glob, a predicate).

Each declared module becomes an :class:`AttentionHeadSet` with one threshold, claimed before torch-pruning groups
the other layers (:func:`~adasparse.core.coupling.plan_channel_sets`); the channels it reads and writes (a
transformer's residual stream) stay dense, as for ``nn.MultiheadAttention``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from .channel_sets import ChannelSet, Consumer, _raw
from .operator import pruned_where_read
from .selection import Selector, _label, _matches

__all__ = [
    "AttentionHeadSet",
    "AttentionHeads",
    "DeclaredHeads",
    "HeadsArgument",
    "declared_head_sets",
    "remove_declared_heads",
    "resolve_heads",
]

_LAYERS = ("query", "key", "value", "output")


@dataclass(frozen=True)
class AttentionHeads:
    """Where the heads of an attention module live, so that ``granularity="channel"`` prunes them as heads.

    Every name is a submodule or attribute path relative to the declared module (dots descend: ``"self.query"``);
    declare on the smallest module holding all four layers (Hugging Face's ``BertAttention``, whose ``self`` holds
    the projections and ``output`` the output dense), or on the model itself (selector ``""``) with qualified names.

    Args:
        query, key, value: the ``nn.Linear`` projections, each of ``num_heads * head_dim`` outputs grouped by head.
        output: the ``nn.Linear`` reading the heads concatenated (``num_heads * head_dim`` inputs).
        num_heads: the number of heads (``>= 2``), or the name of the attribute holding it (``"num_heads"``);
            an attribute is also set to the kept count by :func:`adasparse.shrink`.
        inner_dim: the name of an attribute holding ``num_heads * head_dim`` (Hugging Face's ``all_head_size``)
            that :func:`adasparse.shrink` sets to the kept heads' width; ``None``: no such attribute.
        on_shrink: ``fn(module, kept)`` called by :func:`adasparse.shrink` after it removed heads, with the declared
            module and the indices of the kept heads (ascending): update anything else that counts heads
            (per-head scales, relative position biases).

    Example::

        >>> heads = {MyAttention: adasparse.AttentionHeads(
        ...     query="q_proj", key="k_proj", value="v_proj", output="out_proj", num_heads="num_heads")}
        >>> adasparse.sparsify(model, init_threshold=0.5, granularity="channel", example_input=x, heads=heads)
        >>> ...  # train, desparsify
        >>> smaller = adasparse.shrink(model, x, heads=heads)
    """

    query: str
    key: str
    value: str
    output: str
    num_heads: int | str
    inner_dim: str | None = None
    on_shrink: Callable[[nn.Module, list[int]], None] | None = None

    def __post_init__(self) -> None:
        for field in _LAYERS:
            path = getattr(self, field)
            if not isinstance(path, str) or not path:
                raise ValueError(
                    f"AttentionHeads.{field} must name a Linear submodule (a non-empty string such as 'q_proj' or "
                    f"'self.query'), got {path!r}"
                )
        paths = [getattr(self, field) for field in _LAYERS]
        if len(set(paths)) != len(paths):
            raise ValueError(f"AttentionHeads needs four different layers for query, key, value, output, got {paths}")
        heads = self.num_heads
        if isinstance(heads, bool) or not isinstance(heads, (int, str)) or heads == "":
            raise ValueError(
                "AttentionHeads.num_heads must be an integer >= 2 or the name of the attribute holding it, "
                f"got {heads!r}"
            )
        if isinstance(heads, int) and heads < 2:
            raise ValueError(
                f"AttentionHeads.num_heads must be an integer >= 2 (one head has nothing to prune), got {heads}"
            )
        if self.inner_dim is not None and (not isinstance(self.inner_dim, str) or not self.inner_dim):
            raise ValueError(
                f"AttentionHeads.inner_dim must be None or the name of an attribute (such as 'all_head_size'), "
                f"got {self.inner_dim!r}"
            )
        if self.on_shrink is not None and not callable(self.on_shrink):
            raise ValueError(
                f"AttentionHeads.on_shrink must be None or a function fn(module, kept), got {self.on_shrink!r}"
            )


HeadsArgument = Mapping[Selector, AttentionHeads]
"""``heads=``: per selector (module type, name or glob, predicate), the declaration of the matched modules."""


@dataclass
class DeclaredHeads:
    """One declaration resolved on one module: its qualified name, its four layers and its head count."""

    name: str
    module: nn.Module
    declaration: AttentionHeads
    layers: dict[str, tuple[str, nn.Linear]]
    heads: int

    @property
    def width(self) -> int:
        """Each head's width (``head_dim``)."""
        return self.layers["query"][1].out_features // self.heads

    def removable(self) -> list[int]:
        """The heads whose output nothing reads: their output columns are zero, or their value rows and biases."""
        width = self.width
        output, value = self.layers["output"][1], self.layers["value"][1]
        columns = output.weight.detach().reshape(output.out_features, self.heads, width)
        rows = value.weight.detach().reshape(self.heads, width, -1)
        bias = value.bias.detach().reshape(self.heads, width) if value.bias is not None else None
        return [
            head
            for head in range(self.heads)
            if not bool(columns[:, head].any())
            or (not bool(rows[head].any()) and (bias is None or not bool(bias[head].any())))
        ]

    @torch.no_grad()
    def remove(self, removed: list[int]) -> None:
        """Slice the removed heads out of the four layers and update the declared head counts."""
        kept = [head for head in range(self.heads) if head not in removed]
        width = self.width
        index = torch.tensor([head * width + i for head in kept for i in range(width)], dtype=torch.long)
        for role in ("query", "key", "value"):
            layer = self.layers[role][1]
            layer.weight = _sliced(layer.weight, 0, index)
            if layer.bias is not None:
                layer.bias = _sliced(layer.bias, 0, index)
            layer.out_features = len(index)
        output = self.layers["output"][1]
        output.weight = _sliced(output.weight, 1, index)
        output.in_features = len(index)
        declaration = self.declaration
        if isinstance(declaration.num_heads, str):
            _set_attribute(self.module, declaration.num_heads, len(kept))
        if declaration.inner_dim is not None:
            _set_attribute(self.module, declaration.inner_dim, len(index))
        if declaration.on_shrink is not None:
            declaration.on_shrink(self.module, kept)
        self.heads = len(kept)

    @property
    def claimed(self) -> set[int]:
        """``id`` of the four layers."""
        return {id(module) for _, module in self.layers.values()}


def _sliced(parameter: nn.Parameter, dim: int, index: torch.Tensor) -> nn.Parameter:
    kept = parameter.detach().index_select(dim, index.to(parameter.device))
    return nn.Parameter(kept, requires_grad=parameter.requires_grad)


def _owner(module: nn.Module, path: str) -> tuple[Any, str]:
    prefix, _, attribute = path.rpartition(".")
    return (module.get_submodule(prefix) if prefix else module), attribute


def _set_attribute(module: nn.Module, path: str, value: int) -> None:
    owner, attribute = _owner(module, path)
    setattr(owner, attribute, value)


def _read_int(module: nn.Module, name: str, field: str, path: str) -> int:
    try:
        owner, attribute = _owner(module, path)
        value = getattr(owner, attribute)
    except AttributeError:
        value = None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"AttentionHeads.{field}={path!r}: {name} has no integer attribute {path!r} (got {value!r}); give "
            "the attribute's name relative to the declared module" + (", or an integer" if field == "num_heads" else "")
        )
    return value


def _layer(module: nn.Module, name: str, field: str, path: str) -> nn.Linear:
    try:
        layer = module.get_submodule(path)
    except AttributeError:
        layer = None
    if not isinstance(layer, nn.Linear):
        linears = [child for child, sub in module.named_modules() if child and isinstance(sub, nn.Linear)]
        found = "no submodule" if layer is None else f"a {type(layer).__name__}"
        raise ValueError(
            f"AttentionHeads.{field}={path!r} names {found} of {name}; it must name an nn.Linear, one of: "
            f"{', '.join(repr(child) for child in linears) or '(none)'}"
        )
    return layer


def _resolve_one(name: str, module: nn.Module, declaration: AttentionHeads) -> DeclaredHeads:
    label = _label(name)
    layers = {}
    for field in _LAYERS:
        path = getattr(declaration, field)
        layers[field] = (f"{name}.{path}" if name else path, _layer(module, label, field, path))
    if len({id(layer) for _, layer in layers.values()}) != len(_LAYERS):
        raise ValueError(f"AttentionHeads of {label}: query, key, value and output must be four different layers")
    widths = {field: layers[field][1].out_features for field in ("query", "key", "value")}
    if len(set(widths.values())) != 1:
        raise ValueError(
            f"AttentionHeads of {label}: query, key and value must have the same out_features (num_heads * "
            f"head_dim), got {widths} (grouped-query attention is not supported)"
        )
    width = widths["value"]
    heads = declaration.num_heads
    if isinstance(heads, str):
        heads = _read_int(module, label, "num_heads", heads)
    if heads < 2:
        raise ValueError(
            f"AttentionHeads.num_heads of {label} must be >= 2 (one head has nothing to prune), got {heads}"
        )
    if width % heads:
        raise ValueError(
            f"AttentionHeads of {label}: out_features {width} of query, key and value is not divisible by "
            f"num_heads={heads}"
        )
    output = layers["output"][1]
    if output.in_features != width:
        raise ValueError(
            f"AttentionHeads of {label}: output {declaration.output!r} reads {output.in_features} features, "
            f"the value projection writes {width}; output must read the heads concatenated"
        )
    if declaration.inner_dim is not None:
        inner = _read_int(module, label, "inner_dim", declaration.inner_dim)
        if inner != width:
            raise ValueError(
                f"AttentionHeads.inner_dim={declaration.inner_dim!r} of {label} holds {inner}, not the projections' "
                f"width {width} (num_heads * head_dim)"
            )
    return DeclaredHeads(name, module, declaration, layers, heads)


def resolve_heads(model: nn.Module, heads: HeadsArgument | None) -> list[DeclaredHeads]:
    """Every module of ``model`` a declaration of ``heads`` applies to, with its layers, in module order.

    Raises:
        TypeError: ``heads`` is not a mapping of selectors to :class:`AttentionHeads`.
        ValueError: a selector matching no module, a module matched twice, a layer two declarations claim, or a
            declaration that does not fit its module (naming the field and what it accepts).
    """
    if heads is None:
        return []
    if not isinstance(heads, Mapping):
        raise TypeError(
            "heads must be a dict {selector: adasparse.AttentionHeads(...)} (a selector is a module type, a name or "
            f"glob, or a predicate fn(module, name)), got {type(heads).__name__}"
        )
    declared: list[DeclaredHeads] = []
    matched: dict[int, str] = {}
    claimed: dict[int, str] = {}
    for selector, declaration in heads.items():
        if not isinstance(declaration, AttentionHeads):
            raise TypeError(
                f"heads[{selector!r}] must be an adasparse.AttentionHeads, got {type(declaration).__name__}"
            )
        if not (isinstance(selector, (str, type)) or callable(selector)):
            raise TypeError(f"heads keys must be module types, names, globs or predicates, got {selector!r}")
        found = False
        for name, module in model.named_modules():
            if not _matches(selector, module, name):
                continue
            found = True
            if id(module) in matched:
                raise ValueError(f"heads: {_label(name)} is matched by {matched[id(module)]} and by {selector!r}")
            matched[id(module)] = repr(selector)
            resolved = _resolve_one(name, module, declaration)
            for qualified, layer in resolved.layers.values():
                if id(layer) in claimed:
                    raise ValueError(
                        f"heads: {qualified} belongs to the heads of {claimed[id(layer)]} and of {_label(name)}"
                    )
                claimed[id(layer)] = _label(name)
            declared.append(resolved)
        if not found:
            raise ValueError(f"heads: the selector {selector!r} matches no module of the model")
    return declared


class AttentionHeadSet(ChannelSet):
    """The heads of a declared attention module (:class:`AttentionHeads`), pruned as channels.

    A head's "channel" is its rows of the query, key and value projections (weights and biases) and its columns of
    the output layer. While the threshold decides, only the pruned heads' *value* rows and biases are zeroed (as for
    :class:`~adasparse.core.channel_sets.HeadSet`): such a head outputs exact zeros whatever it attends to, so the
    output layer reads nothing from it, and the threshold's gradient through its values is the first-order effect of
    bringing it back. Query and key rows and output columns are zeroed when the zeros are fixed or baked. A head's
    score combines the query, key and value rows and the output columns, each normalised over the heads.
    """

    kind = "head"

    def __init__(self, declared: DeclaredHeads) -> None:
        self.module_name = declared.name
        """The declared attention module's qualified name."""
        self.heads, self.width = declared.heads, declared.width
        members = []
        for role in ("query", "key", "value"):
            qualified, layer = declared.layers[role]
            members.append((qualified, layer, "weight"))
            if layer.bias is not None:
                members.append((qualified, layer, "bias"))
        output_name, output = declared.layers["output"]
        columns = torch.arange(output.in_features)
        self.value = declared.layers["value"][1]
        super().__init__(members, [Consumer(output_name, output, columns, columns // self.width)], [])

    def _view(self, module: nn.Module, tensor: str) -> tuple[tuple[int, ...], int]:
        raw = _raw(module, tensor)
        return (self.heads, self.width, *raw.shape[1:]), 0

    def _scored_members(self) -> list[tuple[str, nn.Module, str]]:
        return [member for member in self.members if member[2] == "weight"]

    def forward_tensor(self, module: nn.Module, tensor: str, r: torch.Tensor) -> torch.Tensor:
        raw = _raw(module, tensor)
        if module is not self.value or self._frozen_keep() is not None:
            return raw
        keep, slope = self.keep_and_slope()
        return pruned_where_read(raw, r, self.member_mask(module, tensor, keep), slope)

    def install_hooks(self) -> None:
        """Nothing to hook: the output layer reads zeros from a pruned head by construction."""

    def __repr__(self) -> str:
        return f"AttentionHeadSet(module={_label(self.module_name)}, heads={self.heads}, head_dim={self.width})"


def declared_head_sets(model: nn.Module, heads: HeadsArgument | None, allowed: set[int]) -> list[AttentionHeadSet]:
    """One :class:`AttentionHeadSet` per module ``heads`` declares (see :func:`resolve_heads`).

    Raises:
        ValueError: as :func:`resolve_heads`, or a declared projection the selection excludes (``allowed``: ``id``
            of every module it allows).
    """
    sets = []
    for declared in resolve_heads(model, heads):
        for role in ("query", "key", "value"):
            qualified, layer = declared.layers[role]
            if id(layer) not in allowed:
                raise ValueError(
                    f"heads: the {role} projection {qualified} of {_label(declared.name)} is excluded (exclude=): "
                    "declare heads only for attention modules whose projections are pruned"
                )
        sets.append(AttentionHeadSet(declared))
    return sets


def remove_declared_heads(model: nn.Module, heads: HeadsArgument | None) -> set[int]:
    """Remove, from every module ``heads`` declares, the heads whose output nothing reads (one stays if none is
    read); returns ``id`` of every declared layer (their channels are not left to torch-pruning)."""
    claimed: set[int] = set()
    for declared in resolve_heads(model, heads):
        claimed |= declared.claimed
        removable = declared.removable()
        if len(removable) == declared.heads:
            removable = removable[1:]  # one head (of zeros) stays, so every shape stays valid
        if removable:
            declared.remove(removable)
    return claimed
