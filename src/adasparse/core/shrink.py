"""Remove zeroed channels physically: a smaller plain model that computes what the pruned one computes."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from .attention_heads import AttentionHeadSet, HeadsArgument, remove_declared_heads
from .channel_sets import _input_column_squares
from .coupling import _PRODUCER_TYPES, channel_group, dependency_graph
from .granularity import channel_dim
from .parametrization import pruned_tensors
from .pruned_attention import PrunedMultiheadAttention, removable_heads
from .sparsify import desparsify

__all__ = ["shrink"]


def _unread_channels(graph: Any, module: nn.Module, names: dict[int, str]) -> list[int]:
    """Output channels of ``module`` that no layer reads (every reading column is zero), if its channels can be
    removed exactly (:func:`~adasparse.core.coupling.channel_group`) and every reader is a plain layer; else none."""
    found = channel_group(graph, module, names)
    if found is None or found.reason is not None:
        return []
    channels = int(module.weight.shape[channel_dim(module)])
    read = torch.zeros(channels, dtype=torch.bool)
    for consumer in found.consumers:
        columns = _input_column_squares(consumer.module, consumer.module.weight)
        if columns is None:
            return []
        read.index_put_((consumer.root,), columns.cpu()[consumer.index] != 0, accumulate=True)
    return [channel for channel in range(channels) if not bool(read[channel])]


def _tensors(output: Any) -> list[torch.Tensor]:
    """The tensors of a model's output: a tensor, or tuples, lists and dicts of them (a Hugging Face output)."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        return [tensor for item in output for tensor in _tensors(item)]
    return []


def _remove_heads(model: nn.Module) -> None:
    """Replace every attention layer with heads nothing reads by a :class:`PrunedMultiheadAttention` without them."""
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.MultiheadAttention):
            continue
        removable = removable_heads(module)
        if not removable:
            continue
        if len(removable) == module.num_heads:
            removable = removable[1:]  # one head (of zeros) stays, so every shape stays valid
        kept = [head for head in range(module.num_heads) if head not in removable]
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, PrunedMultiheadAttention(module, kept))


@torch.no_grad()
def shrink(
    model: nn.Module,
    example_input: Any,
    *,
    heads: HeadsArgument | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> nn.Module:
    """A copy of ``model`` without the channels nothing reads any more, computing the same outputs.

    An output channel is removed when every layer reading it does so through zero weights (after training with
    ``granularity="channel"``, the pruned channels and heads; any model with such channels works). Through
    torch-pruning's dependency graph the channel leaves every layer that carries it: the producers' rows and
    biases, the norms after them, the readers' columns, and the other layers tied to it by residual additions.
    An ``nn.MultiheadAttention`` whose pruned heads output nothing becomes a
    :class:`~adasparse.core.pruned_attention.PrunedMultiheadAttention` with the kept heads (same call, same
    outputs). The heads of a module declared with ``heads`` (:class:`~adasparse.core.attention_heads.AttentionHeads`)
    whose output nothing reads are sliced out of its query, key, value and output layers, and its declared head
    count updated. A sparsified model is desparsified first (on the copy). The copy is checked against ``model``
    on ``example_input`` in eval mode.

    Args:
        model: a trained model (sparsified or plain); it is not modified.
        example_input: a batch the model accepts (a tensor or a tuple of them), used to trace and to check.
        heads: the ``heads=`` given to :func:`adasparse.sparsify`, if any.
        atol, rtol: tolerance of the output check.

    Returns:
        The smaller plain model (its layers' ``out_channels``/``in_features``... updated), in eval mode.

    Raises:
        ValueError: the model cannot be traced on ``example_input``, or ``heads`` does not fit it.
        RuntimeError: the smaller model's outputs differ from the original's beyond the tolerance.
    """
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    reference = copy.deepcopy(model).eval()
    pruned = pruned_tensors(reference)
    if heads is None and any(isinstance(p.layout, AttentionHeadSet) for p in pruned):
        raise ValueError("the model has declared attention heads: pass shrink the heads= given to sparsify")
    if pruned:
        desparsify(reference)
    expected = reference(*inputs)
    smaller = copy.deepcopy(reference)
    declared = remove_declared_heads(smaller, heads)
    graph = dependency_graph(smaller, example_input)
    names = {id(module): name for name, module in smaller.named_modules()}
    for module in list(smaller.modules()):
        if not isinstance(module, _PRODUCER_TYPES) or id(module) not in names or id(module) in declared:
            continue
        if isinstance(module, nn.modules.conv._ConvTransposeNd) and module.groups != 1:
            continue
        unread = _unread_channels(graph, module, names)
        if len(unread) == int(module.weight.shape[channel_dim(module)]):
            unread = unread[1:]  # a layer keeps one channel (of zeros), so every shape stays valid
        if unread:
            pruner = graph.get_pruner_of_module(module)
            graph.get_pruning_group(module, pruner.prune_out_channels, idxs=unread).prune()
    _remove_heads(smaller)
    smaller.eval()
    actual, expected = _tensors(smaller(*inputs)), _tensors(expected)
    shapes_match = [a.shape for a in actual] == [e.shape for e in expected]
    if not shapes_match or not all(torch.allclose(a, e, atol=atol, rtol=rtol) for a, e in zip(actual, expected)):
        gap = (
            max((float((a - e).abs().max()) for a, e in zip(actual, expected)), default=0.0)
            if shapes_match
            else math.inf
        )
        raise RuntimeError(
            f"the shrunk model's outputs differ from the original's by up to {gap:.3g} (atol={atol}, rtol={rtol}); "
            "a layer reading the removed channels was not traced as one (please report the model)"
        )
    return smaller
