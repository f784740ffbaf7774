"""Which output channels must be pruned together, found with torch-pruning's dependency graph.

Removing an output channel of a convolution also removes the matching input channel of every layer that reads
it, the channel of the BatchNorm after it, and — through a residual addition — the same channel of every other
layer whose output is added to it. ``torch_pruning.DependencyGraph`` traces the model once on an example input
and lists those dependencies; this module turns them into :class:`~adasparse.core.granularity.ChannelSet` objects
(the layers whose outputs share channels, plus the norms acting on them and the layers reading them), makes the
heads of every ``nn.MultiheadAttention`` a :class:`~adasparse.core.granularity.HeadSet` (the heads of attention modules
the user declares, :mod:`~adasparse.core.attention_heads`, come in as sets already made), and names every layer whose
channels cannot be removed without changing what the model computes:

- its outputs are the model's outputs (a classifier);
- a norm that mixes channels acts on them (``LayerNorm``, ``GroupNorm``), or attention's embedding dimension
  does (the residual stream of a transformer);
- the channels are re-indexed on the way (a producer reached with other indices).

torch-pruning is an optional dependency: ``pip install "adasparse[structured]"``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .channel_sets import ChannelSet, Consumer, HeadSet
from .granularity import channel_dim

__all__ = ["ChannelGroup", "ChannelPlan", "channel_group", "dependency_graph", "plan_channel_sets"]

_PRODUCER_TYPES = (nn.Linear, nn.modules.conv._ConvNd)
_COMPANION_TYPES = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
_MIXING_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.MultiheadAttention, nn.Embedding, nn.RNNBase)


def _torch_pruning() -> Any:
    try:
        import torch_pruning
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "granularity='channel' needs torch-pruning to find which channels are tied together: "
            'pip install "adasparse[structured]" (or pip install torch-pruning)'
        ) from error
    return torch_pruning


def dependency_graph(model: nn.Module, example_input: Any) -> Any:
    """``torch_pruning.DependencyGraph`` of ``model`` traced on ``example_input`` (a tensor or a tuple of them).

    Raises:
        ValueError: the model cannot be traced on that input (the message carries torch-pruning's reason).
    """
    torch_pruning = _torch_pruning()
    if example_input is None:
        raise ValueError("granularity='channel' needs example_input: a batch the model accepts, to trace its graph")
    was_training = model.training
    try:
        model.eval()
        with torch.enable_grad(), warnings.catch_warnings():  # the graph is read from autograd
            warnings.simplefilter("ignore")  # about parameters it would prune itself: it prunes nothing here
            return torch_pruning.DependencyGraph().build_dependency(model, example_inputs=example_input)
    except Exception as error:
        raise ValueError(f"cannot trace the model to find tied channels: {type(error).__name__}: {error}") from error
    finally:
        model.train(was_training)


@dataclass
class ChannelGroup:
    """What carries one layer's output channels, read from torch-pruning's pruning group: the layers producing them
    (with the indices they produce them at), the norms acting on them and the layers reading them; ``reason`` says
    why they cannot be removed exactly (``None`` when they can)."""

    producers: list[tuple[str, nn.Module, list[int]]]
    companions: list[tuple[str, nn.Module]]
    consumers: list[Consumer]
    reason: str | None = None


def channel_group(
    graph: Any, module: nn.Module, names: dict[int, str], reserved: frozenset[int] | set[int] = frozenset()
) -> ChannelGroup | None:
    """The :class:`ChannelGroup` of ``module``'s output channels in ``graph`` (``None`` when the traced input does
    not reach it). ``names`` maps ``id`` of each module to its qualified name; a group touching a module in
    ``reserved`` (the layers of declared attention heads) is refused. Used before training to plan the channel sets
    and after it to find the channels nothing reads any more (:func:`adasparse.shrink`)."""
    pruner = graph.get_pruner_of_module(module)
    if pruner is None or module not in graph.module2node:
        return None
    channels = int(module.weight.shape[channel_dim(module)])
    group = graph.get_pruning_group(module, pruner.prune_out_channels, idxs=list(range(channels)))
    found = ChannelGroup([], [], [])
    for item in group.items:
        target, idxs = item.dep.target.module, [int(i) for i in item.idxs]
        target_name = names.get(id(target), type(target).__name__)
        out = graph.is_out_channel_pruning_fn(item.dep.handler)
        if isinstance(target, _MIXING_TYPES):
            found.reason = f"tied to {target_name} ({type(target).__name__} mixes these channels)"
        elif id(target) in reserved:
            found.reason = f"tied to {target_name} (a layer of declared attention heads)"
        elif isinstance(target, _COMPANION_TYPES):
            if all(norm is not target for _, norm in found.companions):
                found.companions.append((target_name, target))
        elif out and isinstance(target, _PRODUCER_TYPES):
            if all(member is not target for _, member, _ in found.producers):
                found.producers.append((target_name, target, idxs))
        elif not out and id(target) in names:
            roots = getattr(item, "root_idxs", None)
            if not isinstance(target, _PRODUCER_TYPES):
                found.reason = f"read by {target_name} ({type(target).__name__}), whose input cannot be masked"
            elif roots is None or len(roots) != len(idxs):
                found.reason = f"read by {target_name} through channels torch-pruning does not map back"
            else:
                index = torch.tensor(idxs, dtype=torch.long)
                root = torch.tensor([int(i) for i in roots], dtype=torch.long)
                found.consumers.append(Consumer(target_name, target, index, root))
        if found.reason is not None:
            return found
    if not found.consumers:
        found.reason = "its outputs are the model's outputs"
    return found


@dataclass
class ChannelPlan:
    """The channel sets of a model and the selected layers left dense, each with the reason."""

    sets: list[ChannelSet]
    skipped: dict[str, str]


def _head_reason(attention: nn.MultiheadAttention) -> str | None:
    """Why the heads of an attention layer cannot be pruned, or ``None``."""
    if not attention._qkv_same_embed_dim:
        return "attention with separate key/value widths (kdim/vdim): its heads are not supported yet"
    if attention.bias_k is not None:
        return "attention with add_bias_kv: its heads are not supported yet"
    if attention.num_heads < 2:
        return "attention with a single head"
    return None


def plan_channel_sets(
    model: nn.Module,
    candidates: list[tuple[str, nn.Module, str]],
    allowed: set[int],
    example_input: Any,
    claimed: list[ChannelSet] | None = None,
) -> ChannelPlan:
    """Group the candidate layers' output channels into channel sets.

    Args:
        model: the plain model.
        candidates: ``(qualified name, module, tensor name)`` of each selected layer.
        allowed: ``id`` of every module the selection allows to be pruned (a tied layer outside it keeps its set
            dense: it cannot lose channels the others lose).
        example_input: an input batch for tracing.
        claimed: sets built beforehand (declared attention heads): their layers join no other set, and a set that
            would tie channels to one of them is refused, as one tied to ``nn.MultiheadAttention``.
    """
    graph = dependency_graph(model, example_input)
    names = {id(module): name for name, module in model.named_modules()}
    sets: list[ChannelSet] = list(claimed or [])
    reserved = {
        id(module) for s in sets for module in [*(m for _, m, _ in s.members), *(c.module for c in s.consumers)]
    }
    assigned: set[int] = set(reserved)
    skipped: dict[str, str] = {}
    for name, module, tensor in candidates:
        if id(module) in assigned:
            continue
        if isinstance(module, nn.MultiheadAttention):
            reason = _head_reason(module)
            if reason is not None:
                skipped[name] = reason
            else:
                sets.append(HeadSet(name, module))
                assigned.update((id(module), id(module.out_proj)))
            continue
        if tensor != "weight" or not isinstance(module, _PRODUCER_TYPES):
            skipped[name] = f"{type(module).__name__}.{tensor} has no output channels to remove"
            continue
        if isinstance(module, nn.modules.conv._ConvTransposeNd) and module.groups != 1:
            skipped[name] = "a grouped transposed convolution (its output channels are interleaved by group)"
            continue
        channels = int(module.weight.shape[channel_dim(module)])
        found = channel_group(graph, module, names, reserved)
        if found is None:
            skipped[name] = "not reached by the example input"
            continue
        reason = found.reason
        members: list[tuple[str, nn.Module, str]] = []
        for producer_name, producer, idxs in found.producers:
            if reason is None and sorted(idxs) != list(range(channels)):
                reason = f"tied to {producer_name} through re-indexed channels"
            elif reason is None and id(producer) not in allowed:
                reason = f"tied to {producer_name}, which is not pruned (exclude= or not a weight layer)"
            members.append((producer_name, producer, "weight"))
        if reason is not None:
            for member_name, member, _ in members or [(name, module, tensor)]:
                skipped.setdefault(member_name, reason)
                assigned.add(id(member))
            skipped.setdefault(name, reason)
            assigned.add(id(module))
            continue
        members.sort(key=lambda item: 0 if item[1] is module else 1)
        sets.append(ChannelSet(members, found.consumers, found.companions))
        assigned.update(id(member) for _, member, _ in members)
    return ChannelPlan(sets, skipped)
