"""The model-level life cycle: :func:`sparsify` a model, train it, :func:`desparsify` it."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ._checks import check_fraction, check_nonnegative
from .attention_heads import HeadsArgument, declared_head_sets
from .channel_cost import ChannelCost
from .channel_sets import ChannelSet
from .coupling import plan_channel_sets
from .flops import layer_macs
from .granularity import BlockLayout, Granularity, parse_granularity
from .latency_cost import LatencyCost
from .operator import MAX_THRESHOLD, threshold_for_sparsity
from .parametrization import (
    attach,
    attach_tied,
    detach,
    detach_tied,
    is_sparsified,
    is_tied_user,
    pruned_tensors,
    pruning_units,
    unfreeze,
)
from .selection import LayerSelection, Selector, _as_list, _label, _matches, select_layers

if TYPE_CHECKING:
    from .latency_table import LatencyTable

__all__ = [
    "INIT_FRACTION",
    "desparsify",
    "param_groups",
    "reset_thresholds",
    "sparsify",
    "threshold_parameters",
]

INIT_FRACTION = 0.6
"""Trainable thresholds start at the Gaussian threshold of ``0.6 * target`` (the original recipe)."""


def _initial_threshold(target: float | None, init_threshold: float | None, trainable: bool) -> float:
    if init_threshold is not None:
        value = check_nonnegative(init_threshold, "init_threshold")
        if value > MAX_THRESHOLD:
            raise ValueError(f"init_threshold must be in [0, {MAX_THRESHOLD}], got {init_threshold!r}")
        return value
    if target is None:
        raise ValueError("sparsify needs target (a sparsity in [0, 1)) or init_threshold (an r in [0, 5])")
    return threshold_for_sparsity(INIT_FRACTION * target if trainable else target)


def _qualified(module_name: str, tensor_name: str) -> str:
    return f"{module_name}.{tensor_name}" if module_name else tensor_name


def _tied_users(
    model: nn.Module, layers: list[LayerSelection], exclude: Selector | Iterable[Selector] | None
) -> list[tuple[nn.Module, dict[str, tuple[nn.Module, str]]]]:
    """The other modules holding a selected ``Parameter`` (tied weights), with the owner of each such tensor.

    Raises:
        ValueError: a user that ``exclude`` names, or one that also owns pruned tensors (naming both modules).
    """
    owners = {
        id(layer.module._parameters[t]): (layer.name, layer.module, t) for layer in layers for t in layer.tensor_names
    }
    selected = {id(layer.module) for layer in layers}
    excludes = _as_list(exclude, "exclude")
    users = []
    for name, module in model.named_modules():
        tied: dict[str, tuple[nn.Module, str]] = {}
        for tensor_name, tensor in module._parameters.items():
            if tensor is None or id(tensor) not in owners:
                continue
            owner_name, owner, owner_tensor = owners[id(tensor)]
            if owner is module and owner_tensor == tensor_name:
                continue
            user, owned = _qualified(_label(name), tensor_name), _qualified(_label(owner_name), owner_tensor)
            if id(module) in selected:
                raise ValueError(
                    f"{user} is the same Parameter as {owned} (tied weights) and {_label(name)!r} has pruned tensors "
                    "of its own: a module cannot both own pruned tensors and share another's; exclude one of "
                    f"{_label(owner_name)!r} and {_label(name)!r}"
                )
            if any(_matches(selector, module, name) for selector in excludes):
                raise ValueError(
                    f"{user} is the same Parameter as {owned} (tied weights), but {_label(name)!r} is excluded: a "
                    f"shared weight is pruned for every module using it; exclude both {_label(owner_name)!r} and "
                    f"{_label(name)!r}, or neither"
                )
            tied[tensor_name] = (owner, owner_tensor)
        if tied:
            users.append((module, tied))
    return users


def sparsify(
    model: nn.Module,
    target: float | None = None,
    *,
    init_threshold: float | None = None,
    trainable: bool = True,
    min_params: int = 1000,
    include: Selector | Iterable[Selector] | None = None,
    exclude: Selector | Iterable[Selector] | None = None,
    task_gradient: bool = True,
    centred: bool = False,
    granularity: str | Granularity = "element",
    example_input: Any = None,
    heads: HeadsArgument | None = None,
    latency: LatencyTable | None = None,
) -> nn.Module:
    """Give every prunable layer of ``model`` a learned pruning threshold, in place.

    Each selected weight ``w`` (see :mod:`adasparse.selection` for which) is replaced in computation by
    ``hardshrink(w - mean(w), clamp(r, 0, 5) * std(w))`` with one trainable scalar ``r`` per tensor. Modules
    keep their class, ``forward`` and hooks; the raw weight becomes ``<name>_orig`` and ``r`` ``<name>_threshold``.

    A weight shared by several modules (tied embedding and LM head) is one pruned tensor that every module using it
    sees. On a model built on the meta device the thresholds are created there too; after ``to_empty`` load a
    sparsified ``state_dict``, or the raw weights followed by :func:`reset_thresholds`.

    Args:
        model: any ``nn.Module``; it is modified in place and returned.
        target: the overall sparsity you will train for, in ``[0, 1)``. Sets the initial ``r`` to
            ``sqrt(2)·erfinv(0.6·target)`` (trainable) or ``sqrt(2)·erfinv(target)`` (``trainable=False``).
        init_threshold: the initial ``r`` in ``[0, 5]`` for every layer; overrides ``target``.
        trainable: ``False`` freezes every ``r`` (fixed-threshold mode).
        min_params: tensors with fewer elements stay dense (default 1000, the original ``pthres``). With
            ``granularity="channel"`` it counts what a set's channels reach: a set is pruned when its layers'
            weights and the columns of the layers reading its channels are at least ``min_params`` (a first
            convolution of a few hundred weights sets the width its reader takes in).
        include: names, globs, module types or ``fn(module, name)`` predicates adding layers.
        exclude: the same, removing layers.
        task_gradient: let the task loss reach each ``r`` through the weights it prunes (the original method).
            ``False`` stops that gradient: the thresholds then move under the sparsity loss alone.
        centred: kept weights hold ``w - mean(w)`` as in the paper's ``hardshrink(w - mean(w), b)``; the default
            ``False`` keeps their own values (the zeros are the same), so a pretrained layer is unchanged where
            nothing is pruned.
        granularity: what one threshold zeroes at once: ``"element"`` (single weights, the default),
            ``"channel"`` (whole output channels, tied channels together; needs ``example_input`` and
            torch-pruning) or ``"block:RxC"`` (blocks of the weight read as a matrix); see
            :mod:`adasparse.core.granularity`.
        example_input: with ``granularity="channel"``, a batch the model accepts (traced once, not trained on).
        heads: with ``granularity="channel"``, the heads of your own attention modules (separate query, key, value
            and output ``Linear`` layers): ``{selector: adasparse.AttentionHeads(...)}``, the selector as in
            ``include`` (a module type, a name or glob, a predicate); see :class:`~adasparse.core.attention_heads.
            AttentionHeads`. ``nn.MultiheadAttention`` needs no declaration.
        latency: with ``granularity="channel"``, the model's :class:`~adasparse.LatencyTable`: the channel sets'
            cost model then also prices them in predicted time (``budget="latency"``,
            :mod:`adasparse.core.latency_cost`); a table of other channel sets is refused before anything changes.

    Returns:
        ``model``.

    Raises:
        ValueError: bad ``target``/``init_threshold``/``min_params``/``granularity``, an already sparsified model, no
            prunable layer, non-finite weights, a shared weight with one of its modules excluded, a layer whose
            weight ``R x C`` blocks do not tile, a layer named by ``include`` whose channels cannot be removed,
            ``heads`` with another granularity or not fitting its modules.
        TypeError: a selected weight that is not floating point.

    Example::

        >>> model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        >>> _ = sparsify(model, target=0.9)
        >>> [name for name, _ in model.named_parameters()]
        ['0.weight_orig', '0.weight_threshold', '0.bias', '2.weight_orig', '2.weight_threshold', '2.bias']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if target is not None:
        target = check_fraction(target, "target")
    r0 = _initial_threshold(target, init_threshold, trainable)
    already = pruned_tensors(model)
    if already:
        raise ValueError(
            f"model is already sparsified ({len(already)} pruned tensors, e.g. {already[0].name!r}); "
            "call adasparse.desparsify(model) first"
        )
    granularity = parse_granularity(granularity)
    layers = select_layers(model, min_params=min_params, include=include, exclude=exclude)
    if not layers and granularity.kind != "channel":  # a channel set counts the weights it reaches (below)
        raise ValueError(
            f"model has no prunable layer with at least min_params={min_params} weight elements "
            "(known kinds: Linear, Conv*, ConvTranspose*, Bilinear, MultiheadAttention; add others with include=)"
        )
    for layer in layers:
        for tensor_name in layer.tensor_names:
            tensor = layer.module._parameters[tensor_name]
            if not tensor.is_meta:  # no values yet: reset_thresholds checks them once they are loaded
                _check_finite(f"{layer.name}.{tensor_name}" if layer.name else tensor_name, tensor)
    if heads is not None and granularity.kind != "channel":
        raise ValueError(f"heads= declares attention heads for granularity='channel', got granularity='{granularity}'")
    if latency is not None and granularity.kind != "channel":
        raise ValueError(f"latency= prices channels: it needs granularity='channel', got granularity='{granularity}'")
    if granularity.kind == "channel":
        _attach_channel_sets(
            model, layers, r0, trainable, task_gradient, min_params, include, exclude, example_input, heads, latency
        )
        return model
    users = _tied_users(model, layers, exclude)
    for layer in layers:
        layouts = {}
        if granularity.block is not None:
            layouts = {
                t: BlockLayout(layer.module._parameters[t].shape, granularity.block, _qualified(_label(layer.name), t))
                for t in layer.tensor_names
            }
        thresholds = {t: r0 for t in layer.tensor_names}
        attach(layer.module, layer.tensor_names, thresholds, trainable, task_gradient, centred, layouts=layouts)
    for module, owners in users:
        attach_tied(module, owners)
    return model


def _check_finite(where: str, tensor: torch.Tensor) -> None:
    """``ValueError`` naming ``where`` when ``tensor`` holds NaN or inf: no threshold can be computed from it."""
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{where} has non-finite values (NaN or inf); cannot compute its threshold")


def _attach_channel_sets(
    model: nn.Module,
    layers: list[LayerSelection],
    r0: float,
    trainable: bool,
    task_gradient: bool,
    min_params: int,
    include: Selector | Iterable[Selector] | None,
    exclude: Selector | Iterable[Selector] | None,
    example_input: Any,
    heads: HeadsArgument | None,
    latency: LatencyTable | None = None,
) -> None:
    """Sparsify by output channels: one threshold per set of tied layers (see :mod:`adasparse.core.coupling`)."""
    if _tied_users(model, layers, exclude):
        raise ValueError("granularity='channel' does not prune weights shared between modules (tied weights)")
    candidates = [(_label(layer.name), layer.module, t) for layer in layers for t in layer.tensor_names]
    every_layer = select_layers(model, min_params=0, include=include, exclude=exclude)
    allowed = {id(layer.module) for layer in every_layer}
    selected = {id(layer.module) for layer in layers}
    # A layer below min_params still leads a set when the set reaches min_params weights (its readers' columns
    # included, below): its output channels set the width of the next layer. After the selected layers, so that
    # every set they lead is planned as before.
    smaller = [
        (_label(layer.name), layer.module, t)
        for layer in every_layer
        for t in layer.tensor_names
        if id(layer.module) not in selected
    ]
    declared = declared_head_sets(model, heads, allowed)
    plan = plan_channel_sets(model, candidates + smaller, allowed, example_input, claimed=declared)
    order = {id(module): index for index, module in enumerate(model.modules())}
    planned = [s for s in plan.sets if all(s is not claimed for claimed in declared)]
    plan.sets = list(declared) + sorted(  # in model order, as if every layer had been selected
        (s for s in planned if id(s.members[0][1]) in selected or s.weights_reached() >= min_params),
        key=lambda s: order[id(s.members[0][1])],
    )
    selected_names = {name for name, _, _ in candidates}
    plan.skipped = {name: reason for name, reason in plan.skipped.items() if name in selected_names}
    for channel_set in plan.sets:
        for name, module, tensor in channel_set.members:
            raw = module._parameters[tensor]
            if id(module) not in selected and not raw.is_meta:  # the selected layers were checked by sparsify
                _check_finite(f"{name}.{tensor}", raw)
    includes = _as_list(include, "include")
    refused = [
        f"{_label(layer.name)} ({plan.skipped[_label(layer.name)]})"
        for layer in layers
        if _label(layer.name) in plan.skipped and any(_matches(s, layer.module, layer.name) for s in includes)
    ]
    if refused:
        raise ValueError(f"cannot prune the output channels of {'; '.join(refused)}; remove it from include=")
    if not plan.sets and not plan.skipped:
        raise ValueError(
            f"model has no channel set reaching min_params={min_params} weights (a set counts its layers' weights "
            "and the columns of the layers reading its channels); lower min_params"
        )
    if not plan.sets:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in plan.skipped.items())
        raise ValueError(f"no layer's output channels can be removed ({reasons})")
    if plan.skipped:
        warnings.warn(
            "granularity='channel' leaves dense: "
            + "; ".join(f"{name} ({reason})" for name, reason in plan.skipped.items()),
            UserWarning,
            stacklevel=3,
        )
    params = {
        _qualified(layer.name, t): float(layer.module._parameters[t].numel())
        for layer in select_layers(model, min_params=0)
        for t in layer.tensor_names
    }
    cost = ChannelCost(plan.sets, params, layer_macs(model, example_input, min_params=0))
    if latency is not None:
        cost = LatencyCost(cost, latency)  # checks the table's sets before any layer changes
    for channel_set in plan.sets:
        channel_set.peers = plan.sets
        channel_set.cost = cost
        _, leader, first = channel_set.members[0]
        like = leader._parameters[first]
        threshold = nn.Parameter(torch.tensor(r0, dtype=like.dtype, device=like.device), requires_grad=trainable)
        modules: dict[int, tuple[nn.Module, list[str]]] = {}
        for _, module, tensor in channel_set.members:
            modules.setdefault(id(module), (module, []))[1].append(tensor)
        for module, tensors in modules.values():
            attach(
                module,
                tuple(tensors),
                dict.fromkeys(tensors, r0),
                trainable,
                task_gradient,
                centred=False,
                layouts=dict.fromkeys(tensors, channel_set),
                shared_thresholds=dict.fromkeys(tensors, threshold),
            )
        channel_set.install_hooks()


def desparsify(model: nn.Module) -> nn.Module:
    """Bake the zeros into the weights and remove every threshold, in place.

    Afterwards the model has its original module classes, its ``state_dict`` has the keys of the never-sparsified
    model (the pruned weights hold exact zeros) and, in eval mode, it computes what the sparsified model computed.
    The original ``Parameter`` objects are kept, so optimizers created before :func:`sparsify` still hold them.

    Raises:
        ValueError: ``model`` has no sparsified layer, or a pruned weight became non-finite.

    Example::

        >>> _ = sparsify(model, target=0.9)   # ... then train ...
        >>> _ = desparsify(model)
        >>> torch.save(model.state_dict(), "pruned.pt")
    """
    modules = [module for module in model.modules() if is_sparsified(module)]
    if not modules:
        raise ValueError("model has no sparsified layer: nothing to desparsify (did you call adasparse.sparsify?)")
    for pruned in pruned_tensors(model):
        if not bool(torch.isfinite(pruned.raw).all()):
            raise ValueError(f"{pruned.name} has non-finite values (NaN or inf); training diverged")
    channel_sets = {id(p.layout): p.layout for p in pruned_tensors(model) if isinstance(p.layout, ChannelSet)}
    for channel_set in channel_sets.values():
        channel_set.freeze()  # every set in one decision, before any of them writes zeros elsewhere
    for channel_set in channel_sets.values():
        channel_set.bake()
        channel_set.remove_hooks()
    # Tied users first: they take back the owner's raw Parameter, which the owner then bakes exactly once.
    for module in [module for module in model.modules() if is_tied_user(module)]:
        detach_tied(module)
    for module in modules:
        detach(module, bake=True)
    return model


def reset_thresholds(
    model: nn.Module, target: float | None = None, *, init_threshold: float | None = None
) -> nn.Module:
    """Set every threshold of a sparsified model to the value :func:`sparsify` gives it, and let it decide again.

    For a model sparsified on the meta device (``with torch.device("meta"): model = Net()``): ``to_empty``
    allocates every parameter and buffer without values, so the thresholds hold arbitrary numbers. Either load a
    ``state_dict`` of a sparsified model (it has the thresholds), or load the raw weights (``<name>_orig``) and then
    call this with the ``target``/``init_threshold`` given to :func:`sparsify`. A threshold that does not require a
    gradient (``trainable=False``) gets the fixed-threshold value. Fixed masks
    (:func:`adasparse.parametrization.freeze`) are dropped.

    Raises:
        ValueError: a plain model, a weight still on the meta device or with non-finite values, bad arguments.
    """
    if target is not None:
        target = check_fraction(target, "target")
    pruned = pruned_tensors(model)
    if not pruned:
        raise ValueError("reset_thresholds needs a sparsified model: call adasparse.sparsify(model, ...) first")
    for item in pruned:
        if item.raw.is_meta:
            raise ValueError(
                f"{item.name} is on the meta device: call model.to_empty(device=...) and load the weights first"
            )
        _check_finite(item.name, item.raw)
    values = [_initial_threshold(target, init_threshold, item.threshold.requires_grad) for item in pruned]
    with torch.no_grad():
        for item, value in zip(pruned, values):
            item.threshold.fill_(value)
            unfreeze(item.module, item.tensor_name)
    return model


def threshold_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """Iterate over the threshold parameters ``r`` of a sparsified model, in module order, each once (the layers of a
    channel set share one)."""
    for pruned in pruning_units(model):
        yield pruned.threshold


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.0,
    threshold_lr_scale: float = 0.01,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups of the original recipe: thresholds at ``lr * threshold_lr_scale``, no decay.

    Args:
        model: a sparsified model (a plain model yields a single group).
        lr: learning rate of the ordinary parameters (``> 0``).
        weight_decay: their weight decay (``>= 0``); thresholds get none.
        threshold_lr_scale: ratio of the thresholds' learning rate to ``lr`` (``>= 0``, default 0.01).

    Returns:
        A list of dicts accepted by any ``torch.optim`` optimizer, with ``"name"`` keys ``"weights"`` and
        ``"thresholds"``.

    Example::

        >>> optimizer = torch.optim.SGD(param_groups(model, lr=0.1, weight_decay=5e-4), momentum=0.9)
    """
    lr = check_nonnegative(lr, "lr")
    weight_decay = check_nonnegative(weight_decay, "weight_decay")
    threshold_lr_scale = check_nonnegative(threshold_lr_scale, "threshold_lr_scale")
    thresholds = list(threshold_parameters(model))
    threshold_ids = {id(p) for p in thresholds}
    others = [p for p in model.parameters() if id(p) not in threshold_ids]
    groups: list[dict[str, Any]] = []
    if others:
        groups.append({"params": others, "lr": lr, "weight_decay": weight_decay, "name": "weights"})
    if thresholds:
        groups.append({"params": thresholds, "lr": lr * threshold_lr_scale, "weight_decay": 0.0, "name": "thresholds"})
    return groups
