"""Compute cost of each pruned layer: multiply-accumulates per example, measured with one forward pass."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .parametrization import pruned_tensors, tied_users
from .pruned_attention import PrunedMultiheadAttention
from .selection import select_layers

__all__ = ["layer_macs"]


def _tokens(tensor: torch.Tensor, batch: int) -> int:
    """Positions per example at which a feature vector (the last dimension) is processed."""
    return tensor.numel() // max(tensor.shape[-1], 1) // batch


def _macs(
    module: nn.Module, tensor_name: str, numel: int, inputs: list[torch.Tensor], output: Any, batch: int
) -> float:
    """Multiply-accumulates one example spends on one weight tensor."""
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return 0.0  # a lookup (its weight may be tied to a head that does the multiplications)
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return float(numel * inputs[0].shape[2:].numel())  # every input position scatters through the kernel
    if isinstance(module, nn.modules.conv._ConvNd):
        return float(numel * output.shape[2:].numel())  # one kernel application per output position
    if isinstance(module, (nn.MultiheadAttention, PrunedMultiheadAttention)):
        query, key, value = inputs[0], inputs[1], inputs[2]
        if tensor_name == "in_proj_weight":  # q from the query, k and v from the key/value sequences
            third = numel // 3
            return float(third * _tokens(query, batch) + third * _tokens(key, batch) + third * _tokens(value, batch))
        source = {"q_proj_weight": query, "k_proj_weight": key, "v_proj_weight": value}[tensor_name]
        return float(numel * _tokens(source, batch))
    if inputs and inputs[0].dim() >= 2:
        return float(numel * _tokens(inputs[0], batch))  # Linear, Bilinear and the like: once per position
    return float(numel)


def layer_macs(model: nn.Module, example_input: Any, *, min_params: int = 1000) -> dict[str, float]:
    """Multiply-accumulates per example of every pruned weight tensor (of every prunable one, for a plain model).

    One forward pass on ``example_input`` (a tensor or a tuple of positional inputs, batch dimension first) under
    ``torch.no_grad`` records each layer's input and output shapes: a convolution costs its weight count times its
    output positions, a transposed convolution times its input positions, a linear layer times the positions it
    sees. The keys are the pruned tensors' names (``"features.0.weight"``), so the result can be passed as
    ``SparsityLoss(..., budget=layer_macs(model, x))`` to make the target a compute budget.

    Raises:
        ValueError: a pruned layer did not run during the forward pass.
    """
    pruned = pruned_tensors(model)
    if pruned:
        targets = [(p.module, p.tensor_name, p.name, p.numel) for p in pruned]
    else:
        targets = [
            (s.module, t, f"{s.name}.{t}" if s.name else t, s.module._parameters[t].numel())
            for s in select_layers(model, min_params=min_params)
            for t in s.tensor_names
        ]
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    batch = int(inputs[0].shape[0])
    costs: dict[str, float] = {}

    def recorder(tensor_name: str, name: str, numel: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            out = output if isinstance(output, torch.Tensor) else output[0]
            costs[name] = _macs(module, tensor_name, numel, tensors, out, batch)

        return hook

    # MultiheadAttention uses out_proj.weight without calling out_proj: record its query positions instead.
    query_tokens: dict[int, int] = {}

    def attention_hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        query = args[0] if args else kwargs["query"]
        query_tokens[id(module.out_proj)] = _tokens(query, batch)

    # A shared (tied) tensor costs what every module using it spends on it.
    owner_names = {(id(p.module), p.tensor_name): p.name for p in pruned}
    tied = [
        (user, tensor_name, owner_names[(id(owner), owner_tensor)], next(t[3] for t in targets if t[0] is owner))
        for _, user, tensor_name, owner, owner_tensor in tied_users(model)
    ]
    tied_costs: dict[tuple[int, str], float] = {}

    def tied_recorder(tensor_name: str, name: str, numel: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            out = output if isinstance(output, torch.Tensor) else output[0]
            tied_costs[(id(module), name)] = _macs(module, tensor_name, numel, tensors, out, batch)

        return hook

    handles = [m.register_forward_hook(recorder(t, n, k), with_kwargs=True) for m, t, n, k in targets]
    handles += [m.register_forward_hook(tied_recorder(t, n, k), with_kwargs=True) for m, t, n, k in tied]
    handles += [
        m.register_forward_hook(attention_hook, with_kwargs=True)
        for m in model.modules()
        if isinstance(m, nn.MultiheadAttention)
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(*inputs)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    for module, _, name, numel in targets:
        if name not in costs and id(module) in query_tokens:
            costs[name] = float(numel * query_tokens[id(module)])
    for (_, name), cost in tied_costs.items():
        if name in costs:
            costs[name] += cost
    missing = [name for _, _, name, _ in targets if name not in costs]
    if missing:
        raise ValueError(f"these layers did not run in the forward pass: {', '.join(missing)}")
    return costs
