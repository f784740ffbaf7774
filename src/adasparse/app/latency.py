"""Side-by-side CPU latency of models on the same input: ratios, not absolute times.

Timings on shared machines drift; measuring the models alternately in one process, many rounds, and reporting the
ratio of their medians keeps that drift out of the comparison (``docs/benchmarks.md``). :func:`onnxruntime_medians`
times the same models exported to ONNX and run by ONNX Runtime, whose per-operator cost is a fraction of eager
PyTorch's.

:func:`one_channel_model` builds the floor of channel pruning for a model: the same graph with every prunable
channel set (and head set) down to one channel, i.e. the per-operator cost no channel-pruning implementation of that
graph goes below. :func:`fold_batchnorm` folds every BatchNorm into the layer before it, to time models without
those operators (the dense model and the shrunk one alike). :func:`steady_allocator` fixes the C library's
allocator in the regime a long-running process settles in, so that what a process allocated before does not move the
measured times.
"""

from __future__ import annotations

import copy
import functools
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from ..core.allocator import STEADY_MMAP_THRESHOLD, steady_allocator
from ..core.attention_heads import HeadsArgument

__all__ = [
    "LatencyRatio",
    "OnnxRuntimeModel",
    "STEADY_MMAP_THRESHOLD",
    "fold_batchnorm",
    "latency_medians",
    "latency_ratio",
    "one_channel_model",
    "onnxruntime_medians",
    "steady_allocator",
]


@dataclass(frozen=True)
class LatencyRatio:
    """Median seconds per forward pass of each model and their ratio (``candidate / reference``)."""

    batch: int
    reference: float
    candidate: float

    @property
    def ratio(self) -> float:
        return self.candidate / self.reference


def _alternate(runs: Sequence[Callable[[], Any]], rounds: int, warmup: int) -> list[float]:
    """Median seconds of each callable, timed alternately: every round runs each once, the order rotated and
    reversed from round to round so that none always follows the same one."""
    for _ in range(warmup):
        for run in runs:
            run()
    count = len(runs)
    times: list[list[float]] = [[] for _ in runs]
    for round_index in range(rounds):
        order = [(round_index // 2 + k) % count for k in range(count)]
        if round_index % 2:
            order.reverse()
        for slot in order:
            start = time.perf_counter()
            runs[slot]()
            times[slot].append(time.perf_counter() - start)
    return [statistics.median(slot_times) for slot_times in times]


def _batch_of(example: torch.Tensor, batch: int) -> torch.Tensor:
    """``batch`` copies of one example (its batch dimension of size 1 or absent)."""
    if example.dim() > 0 and example.shape[0] == 1:
        example = example[0]
    return example.unsqueeze(0).expand(batch, *example.shape).contiguous()


@torch.inference_mode()
def latency_medians(
    models: Sequence[nn.Module],
    example: torch.Tensor,
    batch: int,
    *,
    rounds: int = 30,
    warmup: int = 3,
    threads: int | None = 1,
) -> list[float]:
    """Median seconds per forward pass of each model on a batch of ``batch`` copies of ``example`` (one example, its
    batch dimension of size 1 or absent), in eval mode, timed alternately: every round runs each model once, the
    order rotated and reversed from round to round so that no model always follows the same one.

    Args:
        models: the models (not modified; put in eval mode for the measurement, then restored).
        example: one input example.
        batch: the batch size to time.
        rounds: timed forward passes of each model (the median is reported).
        warmup: untimed passes of each first.
        threads: ``torch.set_num_threads`` during the measurement (restored afterwards); ``None`` leaves it.

    Returns:
        One median per model, in the order given.
    """
    if not models:
        raise ValueError("latency_medians needs at least one model")
    inputs = _batch_of(example, batch)
    previous_threads = torch.get_num_threads()
    modes = [model.training for model in models]
    for model in models:
        model.eval()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        return _alternate([functools.partial(model, inputs) for model in models], rounds, warmup)
    finally:
        torch.set_num_threads(previous_threads)
        for model, mode in zip(models, modes):
            model.train(mode)


class OnnxRuntimeModel(nn.Module):
    """``model`` exported to ONNX (:func:`adasparse.export_onnx`, a dynamic batch) and run by ONNX Runtime's CPU
    provider: called like the model on one tensor, it returns the first output as a tensor. ``threads`` intra-op
    threads, one inter-op thread, sequential execution.

    Raises:
        ImportError: ``onnx``, ``onnxscript`` or ``onnxruntime`` missing (``pip install "adasparse[onnx]"``).
        ValueError: ``threads`` below 1, or a model the exporter cannot export.
    """

    def __init__(self, model: nn.Module, example: torch.Tensor, *, threads: int = 1) -> None:
        super().__init__()
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
        from ..export.onnx_export import _require, export_onnx

        onnxruntime = _require("onnxruntime", "ONNX Runtime timing")

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        with tempfile.TemporaryDirectory() as folder:
            # two examples: torch.export would take a batch of one for a constant
            path = export_onnx(model, _batch_of(example, 2), Path(folder) / "model.onnx")
            self._session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self._session.run(None, {self._input: inputs.contiguous().numpy()})[0])


def onnxruntime_medians(
    models: Sequence[nn.Module],
    example: torch.Tensor,
    batch: int,
    *,
    rounds: int = 30,
    warmup: int = 3,
    threads: int = 1,
) -> list[float]:
    """:func:`latency_medians` of the models run by ONNX Runtime (:class:`OnnxRuntimeModel`, ``threads`` threads):
    the same graphs without eager PyTorch's per-operator dispatch. Models already wrapped are used as they are.

    Raises:
        ImportError, ValueError: as :class:`OnnxRuntimeModel`.
    """
    if not models:
        raise ValueError("onnxruntime_medians needs at least one model")
    wrapped = [m if isinstance(m, OnnxRuntimeModel) else OnnxRuntimeModel(m, example, threads=threads) for m in models]
    return latency_medians(wrapped, example, batch, rounds=rounds, warmup=warmup, threads=None)


def latency_ratio(
    reference: nn.Module,
    candidate: nn.Module,
    example: torch.Tensor,
    batch: int,
    *,
    rounds: int = 30,
    warmup: int = 3,
    threads: int | None = 1,
) -> LatencyRatio:
    """Time ``candidate`` against ``reference`` (:func:`latency_medians` of the two): the ratio of their medians."""
    reference_time, candidate_time = latency_medians(
        (reference, candidate), example, batch, rounds=rounds, warmup=warmup, threads=threads
    )
    return LatencyRatio(batch, reference_time, candidate_time)


@torch.no_grad()
def one_channel_model(
    model: nn.Module, example_input: Any, *, min_params: int = 1000, heads: HeadsArgument | None = None
) -> nn.Module:
    """The floor of channel pruning for ``model``: a shrunk copy with every channel set and head set that
    ``sparsify(..., granularity="channel", min_params=min_params)`` would prune down to one channel (or head).

    The kept channel of each set is its highest-scoring one; the copy's outputs are meaningless, its graph (every
    operator of the model, each on one channel where channel pruning can go) is what a pruned model of any budget
    keeps, so its time is the per-operator cost no channel-pruning implementation of the graph goes below.

    Args:
        model: a plain model (not sparsified); it is not modified.
        example_input: a batch the model accepts, to trace its dependencies.
        min_params: which layers are prunable, as in :func:`adasparse.sparsify` (the pruned model's value).
        heads: the attention heads declared for the pruned model's own attention modules, as for
            :func:`adasparse.sparsify` (each such module then keeps one head).

    Returns:
        The one-channel model, a plain module in eval mode.
    """
    from ..core.channel_sets import ChannelSet
    from ..core.parametrization import pruned_tensors
    from ..core.shrink import shrink
    from ..core.sparsify import sparsify

    if pruned_tensors(model):
        raise ValueError("one_channel_model needs a plain model; desparsify a sparsified one first")
    floor = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the layers left dense are named by the pruning runs already
        sparsify(
            floor,
            init_threshold=0.0,
            trainable=False,
            min_params=min_params,
            granularity="channel",
            example_input=example_input,
            heads=heads,
        )
    sets = {id(p.layout): p.layout for p in pruned_tensors(floor) if isinstance(p.layout, ChannelSet)}
    scores = {key: channel_set.scores() for key, channel_set in sets.items()}  # all read before any is fixed
    for key, channel_set in sets.items():
        keep = torch.zeros(channel_set.channels, dtype=torch.bool)
        keep[int(torch.argmax(scores[key]))] = True
        channel_set.fix(keep)
    return shrink(floor, example_input, heads=heads)


def _has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(child, nn.modules.batchnorm._BatchNorm) for child in module.modules())


class _Tracer(fx.Tracer):
    """Traces only into modules that hold a BatchNorm: every other module stays one call, whatever its code."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return not _has_batchnorm(module) or super().is_leaf_module(module, qualified_name)


def _foldable(layer: nn.Module, norm: nn.Module, meta: Any) -> bool:
    if norm.running_mean is None or norm.running_var is None:
        return False  # without running statistics it normalises by the batch's, even in eval mode
    if isinstance(layer, nn.modules.conv._ConvTransposeNd) and layer.groups != 1:
        return False  # torch's fusion scales a transposed weight's second dimension, one group's channels only
    if isinstance(layer, nn.modules.conv._ConvNd):
        return layer.out_channels == norm.num_features
    if isinstance(layer, nn.Linear):
        shape = getattr(meta, "shape", None)  # (batch, features) only: a BatchNorm1d on 3-d input normalises dim 1
        return shape is not None and len(shape) == 2 and layer.out_features == norm.num_features
    return False


def _pairs(model: nn.Module, inputs: tuple) -> list[tuple[str, str]]:
    """``(layer, norm)`` names of each BatchNorm applied to nothing but a convolution's or Linear's output, each
    module called once and the layer's output read by the norm alone."""
    tracer = _Tracer()
    try:
        graph = tracer.trace(model)
    except Exception as error:  # noqa: BLE001 - any tracing failure means the same thing to the caller
        raise ValueError(f"fold_batchnorm could not trace the model with torch.fx: {error}") from error
    traced = fx.GraphModule(tracer.root, graph)
    ShapeProp(traced).propagate(*inputs)
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.modules.batchnorm._BatchNorm):
            continue
        source = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        if not isinstance(source, fx.Node) or source.op != "call_module" or len(source.users) != 1:
            continue
        if calls[node.target] != 1 or calls[source.target] != 1:
            continue
        layer, norm = modules[source.target], modules[node.target]
        if _foldable(layer, norm, source.meta.get("tensor_meta")):
            pairs.append((source.target, node.target))
    return pairs


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


@torch.no_grad()
def fold_batchnorm(model: nn.Module, example_input: Any, *, atol: float = 1e-5, rtol: float = 1e-4) -> nn.Module:
    """A copy of ``model`` in eval mode with every BatchNorm folded into the convolution or Linear whose output it
    normalises (the layer's weights and bias absorb the norm's running statistics and affine; the norm becomes an
    ``nn.Identity``). The copy computes what ``model`` computes in eval mode, up to float rounding (checked on
    ``example_input``); it is for inference (training it would no longer normalise by the batch).

    A norm is folded when its input is the output of a ``Conv*``/``ConvTranspose*`` (or of a ``Linear`` on 2-d
    input) that nothing else reads, each called once; other norms stay. The model is traced with ``torch.fx``
    through the modules holding a BatchNorm only (the others are single calls, whatever their code).

    Args:
        model: a plain model; it is not modified.
        example_input: a batch the model accepts (a tensor or a tuple of them), to find the shapes and to check.
        atol, rtol: tolerance of the output check.

    Raises:
        ValueError: a module holding a BatchNorm cannot be traced with ``torch.fx``.
        RuntimeError: the folded model's outputs differ from the original's beyond the tolerance.
    """
    folded = copy.deepcopy(model).eval()
    if not _has_batchnorm(folded):
        return folded
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    expected = folded(*inputs)
    modules = dict(folded.named_modules())
    for layer_name, norm_name in _pairs(folded, inputs):
        layer, norm = modules[layer_name], modules[norm_name]
        if isinstance(layer, nn.Linear):
            fused = fuse_linear_bn_eval(layer, norm)
        else:
            fused = fuse_conv_bn_eval(layer, norm, transpose=isinstance(layer, nn.modules.conv._ConvTransposeNd))
        _replace(folded, layer_name, fused)
        _replace(folded, norm_name, nn.Identity())
    actual = folded(*inputs)
    if not torch.allclose(actual, expected, atol=atol, rtol=rtol):
        gap = float((actual - expected).abs().max())
        raise RuntimeError(f"the folded model's outputs differ from the original's by up to {gap:.3g}")
    return folded
