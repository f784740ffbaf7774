"""Channel sets: output channels (or attention heads) shared by tied layers, pruned as one where they are read.

A :class:`ChannelSet` is what one threshold decides with ``granularity="channel"``: the producers whose outputs
share channels (several when a residual addition ties them), the layers reading them and the norms in between; a
:class:`HeadSet` is the heads of one ``nn.MultiheadAttention``. :mod:`~adasparse.core.coupling` finds them,
:mod:`~adasparse.core.granularity` states the rule (a group is zero when its score is at most ``clamp(r, 0, 5)``
times the root mean square of the scores).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .granularity import _keep_and_slope, channel_dim
from .operator import pruned_where_read
from .state_keys import MASK_SUFFIX, ORIG_SUFFIX, THRESHOLD_SUFFIX

__all__ = ["ChannelSet", "Consumer", "HeadSet"]


def input_feature_dim(module: nn.Module) -> int:
    """The dimension of a module's *input* that holds features: -1 for ``Linear``, 1 for convolutions."""
    return -1 if isinstance(module, nn.Linear) else 1


def _input_column_squares(module: nn.Module, weight: torch.Tensor) -> torch.Tensor | None:
    """Each input feature's sum of squared weights, for a ``Linear`` or an ungrouped convolution (else ``None``)."""
    squares = weight.detach().float().pow(2)
    if isinstance(module, nn.Linear):
        return squares.sum(dim=0)
    if isinstance(module, nn.modules.conv._ConvNd) and module.groups == 1:
        dim = 0 if isinstance(module, nn.modules.conv._ConvTransposeNd) else 1
        return squares.sum(dim=[d for d in range(weight.dim()) if d != dim])
    return None


def input_width(module: nn.Module) -> int:
    """The input features a Linear or convolution reads (``ValueError`` for another layer)."""
    if isinstance(module, nn.Linear):
        return module.in_features
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.in_channels
    raise ValueError(f"{type(module).__name__} reads pruned channels but has no known input width")


@dataclass
class Consumer:
    """A layer reading the set's channels: input feature ``index[k]`` carries channel ``root[k]``."""

    name: str
    module: nn.Module
    index: torch.Tensor
    root: torch.Tensor


class _InputMask:
    """Forward pre-hook zeroing the pruned channels where a consumer reads them (see :class:`ChannelSet`)."""

    def __init__(self, channel_set: ChannelSet, consumer: Consumer) -> None:
        self.channel_set = channel_set
        self.consumer = consumer

    def __call__(self, module: nn.Module, args: tuple) -> tuple | None:
        if not args or not isinstance(args[0], torch.Tensor):
            raise TypeError(
                f"{self.consumer.name} must receive its input as the first positional tensor to have its pruned "
                "channels masked (granularity='channel')"
            )
        return (self.channel_set.mask_input(self.consumer, args[0]), *args[1:])


class ChannelSet:
    """Output channels shared by one or more layers (several when a residual addition ties them), pruned as one.

    A pruned channel is zeroed where it is *read*: a forward pre-hook on every consumer (the layers taking the
    channel as input) multiplies the channel by zero. The producers compute every channel as before, so a pruned
    channel's activation stays what it would be and the shared threshold ``r`` gets an informative gradient,
    ``-(rms / b) * <grad, pruned activations>`` (the first-order change of the loss if they came back); the pruned
    activations themselves get none (:func:`~adasparse.core.operator.pruned_where_read`). Since
    nothing reads a pruned channel, zeroing the producers' rows, the norms' entries and the consumers' columns
    (:meth:`bake`) and then removing them changes no output.

    A channel's score combines everything that carries it: the producers' rows, the consumers' columns and the
    affine scale of the norms in between, each normalised over the channels (see :meth:`scores`).

    Args:
        members: ``(qualified name, module, tensor name)`` of each producer; the first holds the threshold.
        consumers: every layer reading the channels.
        companions: ``(qualified name, module)`` of each norm acting on the channels.
    """

    kind = "channel"

    def __init__(
        self,
        members: list[tuple[str, nn.Module, str]],
        consumers: list[Consumer],
        companions: list[tuple[str, nn.Module]],
    ) -> None:
        self.members = members
        self.consumers = consumers
        self.companions = companions
        self._cache_key: tuple | None = None
        self._cache: tuple[torch.Tensor, float] | None = None
        self._scores: torch.Tensor | None = None
        self._scores_key: tuple | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self.peers: list[ChannelSet] = [self]
        """Every channel set of the model (one list, shared): their scores overlap, so they are frozen together."""
        self.cost: Any = None
        """The model's :class:`~adasparse.core.channel_cost.ChannelCost` (shared by the peers), set by ``sparsify``."""
        sizes = {self._view(module, tensor)[0][self._view(module, tensor)[1]] for _, module, tensor in members}
        if len(sizes) != 1:
            names = ", ".join(name for name, _, _ in members)
            raise ValueError(f"tied layers {names} have different channel counts {sorted(sizes)}")
        self.channels = sizes.pop()

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.members]

    def weights_reached(self) -> int:
        """How many weights removing all the set's channels would remove: the producers' tensors and, of each
        consumer, the columns reading the channels (its weight's share of the input features they are).
        :func:`adasparse.sparsify` compares it with ``min_params``."""
        total = sum(_raw(module, tensor).numel() for _, module, tensor in self.members)
        for consumer in self.consumers:
            weight = _raw(consumer.module, "weight")
            total += weight.numel() * len(consumer.index) // max(input_width(consumer.module), 1)
        return int(total)

    def _view(self, module: nn.Module, tensor: str) -> tuple[tuple[int, ...], int]:
        """How a member tensor holds the channels: the shape to read it in, and the dimension of the channels."""
        raw = _raw(module, tensor)
        return tuple(raw.shape), channel_dim(module)

    def _group_squares(self, module: nn.Module, tensor: str) -> torch.Tensor:
        shape, dim = self._view(module, tensor)
        squares = _raw(module, tensor).detach().float().pow(2).reshape(shape)
        reduce = [d for d in range(len(shape)) if d != dim]
        return squares.sum(dim=reduce) if reduce else squares

    def forward_tensor(self, module: nn.Module, tensor: str, r: torch.Tensor) -> torch.Tensor:
        """What a member computes with while the threshold decides: its raw tensor (pruned channels are zeroed where
        they are read, by the consumers' pre-hooks)."""
        return _raw(module, tensor)

    def scores(self) -> torch.Tensor:
        """Each channel's score (1-D, float): the root mean square, over every tensor carrying the channel (the
        producers' rows, the consumers' columns, the norms' scales), of the channel's norm in that tensor divided by
        the tensor's root mean square over channels. Each tensor counts the same, whatever its size or scale (a
        convolution followed by BatchNorm has rows of arbitrary scale). Computed once per change of the weights:
        the forward pass and the pruner's measurement after the optimizer step share it."""
        key = self._versions()
        if self._scores is None or key != self._scores_key or torch.compiler.is_compiling():
            self._scores, self._scores_key = self._computed_scores(), key
        return self._scores

    def _computed_scores(self) -> torch.Tensor:
        parts = [self._group_squares(module, tensor).cpu() for _, module, tensor in self._scored_members()]
        for consumer in self.consumers:
            columns = _input_column_squares(consumer.module, _raw(consumer.module, "weight"))
            if columns is not None:
                part = torch.zeros(self.channels, dtype=torch.float32)
                parts.append(part.index_add_(0, consumer.root, columns.cpu()[consumer.index]))
        for _, module in self.companions:
            scale = getattr(module, "weight", None)
            if isinstance(scale, torch.Tensor) and scale.numel() == self.channels:
                parts.append(scale.detach().float().pow(2).cpu())
        total = torch.zeros(self.channels, dtype=torch.float32)
        for squares in parts:
            mean = float(squares.double().mean())
            if mean > 0.0:
                total += squares / mean
        return (total / len(parts)).sqrt()

    def _scored_members(self) -> list[tuple[str, nn.Module, str]]:
        """The member tensors a score reads (all of them)."""
        return self.members

    def threshold(self) -> torch.Tensor:
        """The set's threshold ``r`` (a parameter of the first member)."""
        _, module, tensor = self.members[0]
        return module._parameters[tensor + THRESHOLD_SUFFIX]

    @property
    def frozen(self) -> bool:
        _, module, tensor = self.members[0]
        return bool(module._buffers[tensor + MASK_SUFFIX].numel())

    @torch.no_grad()
    def freeze(self) -> None:
        """Fix the kept channels of this set and of every peer in one decision: each set's scores read weights that
        freezing another set changes, so all keeps are taken before any weight is written."""
        keeps = [(peer, peer.keep_and_slope()[0]) for peer in self.peers if not peer.frozen]
        for peer, keep in keeps:
            peer.fix(keep)

    @torch.no_grad()
    def fix(self, keep: torch.Tensor) -> None:
        """Fix this set's kept channels to ``keep`` (a boolean per channel): the pruned rows of every member are
        zeroed and masked, and from now on the threshold no longer decides."""
        keep = torch.as_tensor(keep, dtype=torch.bool).cpu()
        if keep.shape != (self.channels,):
            raise ValueError(f"keep must hold one flag per channel ({self.channels}), got shape {tuple(keep.shape)}")
        for _, module, tensor in self.members:
            raw = _raw(module, tensor)
            mask = self.member_mask(module, tensor, keep)
            raw.mul_(mask)
            module._buffers[tensor + MASK_SUFFIX].resize_(raw.shape).copy_(mask)

    def unfreeze(self) -> None:
        """Let the threshold decide this set's channels again."""
        for _, module, tensor in self.members:
            module._buffers[tensor + MASK_SUFFIX].resize_(0)

    def _frozen_keep(self) -> torch.Tensor | None:
        _, module, tensor = self.members[0]
        mask = module._buffers[tensor + MASK_SUFFIX]
        if not mask.numel():
            return None
        shape, dim = self._view(module, tensor)
        reduce = [d for d in range(len(shape)) if d != dim]
        view = mask.reshape(shape)
        return (view.any(dim=reduce) if reduce else view.clone()).cpu()

    def _versions(self) -> tuple:
        tensors = [_raw(module, tensor) for _, module, tensor in self.members]
        tensors += [_raw(consumer.module, "weight") for consumer in self.consumers]
        tensors += [module.weight for _, module in self.companions if isinstance(module.weight, torch.Tensor)]
        return tuple((t._version, t.data_ptr()) for t in tensors)

    def keep_and_slope(self) -> tuple[torch.Tensor, float]:
        """Which channels the threshold keeps (a CPU boolean per channel) and its slope ``-rms / b``; computed once
        per change of the weights or the threshold, however many consumers ask."""
        r = self.threshold()
        key = (r._version, float(r.detach()), self._versions())
        if self._cache is None or key != self._cache_key or torch.compiler.is_compiling():
            self._cache = _keep_and_slope(self.scores(), float(r.detach()))
            self._cache_key = key
        return self._cache

    def current_keep(self) -> torch.Tensor:
        """The channels kept now: from the fixed masks once frozen, else from the threshold."""
        frozen = self._frozen_keep()
        return frozen if frozen is not None else self.keep_and_slope()[0]

    def member_mask(self, module: nn.Module, tensor: str, keep: torch.Tensor) -> torch.Tensor:
        """``keep`` as a boolean mask of a member tensor's shape (its pruned channels ``False``)."""
        raw = _raw(module, tensor)
        shape, dim = self._view(module, tensor)
        broadcast = [1] * len(shape)
        broadcast[dim] = keep.numel()
        return keep.to(raw.device).reshape(broadcast).expand(shape).reshape(raw.shape)

    def _input_keep(self, consumer: Consumer, keep: torch.Tensor, features: int) -> torch.Tensor:
        flags = torch.ones(features, dtype=torch.bool)
        flags[consumer.index] = keep[consumer.root]
        return flags

    def mask_input(self, consumer: Consumer, value: torch.Tensor) -> torch.Tensor:
        """A consumer's input with the pruned channels zeroed (the threshold's gradient kept while it decides)."""
        dim = input_feature_dim(consumer.module) % value.dim()
        frozen = self._frozen_keep()
        keep, slope = (frozen, 0.0) if frozen is not None else self.keep_and_slope()
        shape = [1] * value.dim()
        shape[dim] = value.shape[dim]
        flags = self._input_keep(consumer, keep, value.shape[dim]).to(value.device).reshape(shape)
        r = self.threshold()
        _, leader, _ = self.members[0]
        if frozen is None and not leader.__dict__.get("_adasparse_task_gradient", True):
            r = r.detach()
        if frozen is None:
            return pruned_where_read(value, r, flags, slope)
        return value * flags

    def install_hooks(self) -> None:
        """Register the pre-hooks that zero the pruned channels at every consumer."""
        self.remove_hooks()
        for consumer in self.consumers:
            self._handles.append(consumer.module.register_forward_pre_hook(_InputMask(self, consumer)))

    def remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @torch.no_grad()
    def bake(self) -> None:
        """Write the pruned channels' zeros everywhere they live: producers' biases, norms' affine entries and
        consumers' columns (the producers' rows are baked by their parametrization)."""
        keep = self.current_keep()
        vectors = [getattr(module, "bias", None) for _, module, _ in self.members]
        for _, module in self.companions:
            vectors += [getattr(module, "weight", None), getattr(module, "bias", None)]
        for vector in vectors:
            if isinstance(vector, torch.Tensor) and vector.dim() == 1 and vector.numel() == keep.numel():
                vector.mul_(keep.to(device=vector.device, dtype=vector.dtype))
        for consumer in self.consumers:
            if isinstance(consumer.module, nn.modules.conv._ConvNd) and consumer.module.groups != 1:
                continue  # a grouped convolution reading these channels is a producer of them too
            weight = _raw(consumer.module, "weight")
            dim = 0 if isinstance(consumer.module, nn.modules.conv._ConvTransposeNd) else 1
            flags = self._input_keep(consumer, keep, weight.shape[dim])
            shape = [1] * weight.dim()
            shape[dim] = flags.numel()
            weight.mul_(flags.to(device=weight.device, dtype=weight.dtype).reshape(shape))

    def __repr__(self) -> str:
        consumers = [consumer.name for consumer in self.consumers]
        companions = [name for name, _ in self.companions]
        return (
            f"ChannelSet(members={self.names}, consumers={consumers}, companions={companions}, "
            f"channels={self.channels})"
        )


def _raw(module: nn.Module, tensor: str) -> torch.Tensor:
    parameter = module._parameters.get(tensor + ORIG_SUFFIX)
    return parameter if parameter is not None else module._parameters[tensor]


class HeadSet(ChannelSet):
    """The heads of an ``nn.MultiheadAttention`` (packed projections), pruned as channels.

    A head's "channel" is its rows of the query, key and value projections (``in_proj_weight`` and
    ``in_proj_bias``) and its columns of ``out_proj``. While the threshold decides, only the pruned heads' *value*
    rows and biases are zeroed: such a head outputs exact zeros whatever it attends to, so ``out_proj`` reads nothing
    from it, while its attention pattern stays the real one and the threshold's gradient through its values is the
    first-order effect of bringing it back. Its query and key rows are unused and are zeroed when the zeros are
    fixed or baked. :func:`adasparse.shrink` then rebuilds the layer with fewer heads.
    """

    kind = "head"

    def __init__(self, name: str, attention: nn.MultiheadAttention) -> None:
        heads, width = attention.num_heads, attention.head_dim
        members = [(name, attention, "in_proj_weight")]
        if attention.in_proj_bias is not None:
            members.append((name, attention, "in_proj_bias"))
        columns = torch.arange(attention.embed_dim)
        consumer = Consumer(f"{name}.out_proj" if name else "out_proj", attention.out_proj, columns, columns // width)
        self.heads, self.width = heads, width
        super().__init__(members, [consumer], [])

    def _view(self, module: nn.Module, tensor: str) -> tuple[tuple[int, ...], int]:
        raw = _raw(module, tensor)
        return (3, self.heads, self.width, *raw.shape[1:]), 1

    def forward_tensor(self, module: nn.Module, tensor: str, r: torch.Tensor) -> torch.Tensor:
        raw = _raw(module, tensor)
        frozen = self._frozen_keep()
        if frozen is not None:
            return raw
        keep, slope = self.keep_and_slope()
        shape, _ = self._view(module, tensor)
        flags = torch.ones(3, self.heads, dtype=torch.bool)
        flags[2] = keep
        broadcast = [3, self.heads] + [1] * (len(shape) - 2)
        mask = flags.to(raw.device).reshape(broadcast).expand(shape).reshape(raw.shape)
        return pruned_where_read(raw, r, mask, slope)

    def install_hooks(self) -> None:
        """Nothing to hook: ``out_proj`` reads zeros from a pruned head by construction."""

    def __repr__(self) -> str:
        return f"HeadSet(layer={self.names[0]}, heads={self.heads}, head_dim={self.width})"
