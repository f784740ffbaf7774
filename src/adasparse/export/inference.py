"""Faster CPU inference for pruned models: sparse Linear layers where (and only where) they beat dense ones.

:func:`to_sparse_inference` replaces each ``nn.Linear`` whose weight is sparse enough by a :class:`SparseLinear`
holding the weight as a torch CSR tensor with int32 indices. It computes ``torch.addmv(bias, W, x)`` for a
single example and ``torch.addmm(bias, W, x.T).T`` for a batch: the sparse matrix on the left, which on CPU is
3-10x faster than ``F.linear(x, W_csr)`` and, for one example, faster than scipy's CSR product too.

Which layers are replaced is decided by a break-even table (:data:`BREAK_EVEN`) measured by
``benchmarks/sparse_inference.py --break-even`` and shipped here as data: for square layers of 256-4096 features
and batches of 1-256, the sparsity above which the sparse layer takes at most 0.9x the dense time. A layer's
threshold is interpolated in log(size) and log(batch) (clamped at the table's edges); see
:func:`break_even_sparsity`. Convolutions stay dense: ``F.unfold`` + a sparse product measured 4.8-5.8x slower than
a dense convolution.
"""

from __future__ import annotations

import bisect
import math
import warnings
from typing import Any, Optional

import torch
from torch import nn

from ..core._checks import check_fraction
from ..core.parametrization import pruned_tensors
from ..core.sparsify import desparsify

__all__ = ["BREAK_EVEN", "SparseLinear", "break_even_sparsity", "to_sparse_inference"]

_SIDES = (256, 512, 1024, 2048, 4096)
_BATCHES = (1, 8, 32, 256)
_NEVER = 1.0

BREAK_EVEN: dict[int, dict[int, Optional[float]]] = {
    256: {1: None, 8: None, 32: 0.79, 256: 0.81},
    512: {1: 0.58, 8: 0.65, 32: 0.63, 256: 0.8},
    1024: {1: 0.6, 8: 0.5, 32: 0.65, 256: 0.81},
    2048: {1: 0.71, 8: 0.51, 32: 0.6, 256: 0.91},
    4096: {1: 0.72, 8: 0.5, 32: 0.59, 256: 0.9},
}
"""Break-even sparsity per square layer side and batch size: ``BREAK_EVEN[side][batch]``.

Measured with ``python benchmarks/sparse_inference.py --break-even`` at one thread on a 2-core x86_64 machine,
torch 2.13 CPU (docs/benchmarks.md has the run and its ratios). ``None``: the sparse layer never reached 0.9x the
dense time up to 99% sparsity; 0.5, the lowest sparsity measured, means "already at 0.5". Multi-threaded timings on
that shared machine were dominated by other jobs and are not used: the same table serves every thread count (in the
multi-threaded cells that could be measured it agreed within about 0.1). Rerun the benchmark to refresh it."""


def _interpolate(points: tuple[int, ...], value: float) -> tuple[int, int, float]:
    """Indices of the two table points around ``value`` and the weight of the upper one (log scale, clamped)."""
    if value <= points[0]:
        return 0, 0, 0.0
    if value >= points[-1]:
        return len(points) - 1, len(points) - 1, 0.0
    upper = bisect.bisect_right(points, value)
    lower = upper - 1
    weight = (math.log(value) - math.log(points[lower])) / (math.log(points[upper]) - math.log(points[lower]))
    return lower, upper, weight


def _table_value(side: float, batch: int) -> float:
    s0, s1, ws = _interpolate(_SIDES, side)
    b0, b1, wb = _interpolate(_BATCHES, batch)

    def at(i: int, j: int) -> float:
        value = BREAK_EVEN[_SIDES[i]][_BATCHES[j]]
        return _NEVER if value is None else value

    low = (1 - wb) * at(s0, b0) + wb * at(s0, b1)
    high = (1 - wb) * at(s1, b0) + wb * at(s1, b1)
    return (1 - ws) * low + ws * high


def break_even_sparsity(out_features: int, in_features: int, batch_size: int | None = None) -> float | None:
    """The sparsity above which a :class:`SparseLinear` of this shape is expected to beat ``nn.Linear`` on CPU.

    Interpolated from :data:`BREAK_EVEN` at the equivalent square side ``sqrt(out_features * in_features)``
    and ``batch_size`` (log scale, clamped to 256-4096 features and batches 1-256).

    Args:
        out_features, in_features: the layer's shape (positive).
        batch_size: rows per call (examples times any extra leading dimensions); ``None`` means any: the largest
            threshold over the table's batch sizes, so the layer wins at every batch size measured.

    Returns:
        A sparsity in ``(0, 1)``, or ``None`` where the sparse layer does not pay off at any sparsity.

    Example::

        >>> break_even_sparsity(4096, 4096, batch_size=32)
        0.59
        >>> break_even_sparsity(4096, 4096)      # any batch size
        0.9
    """
    for value, argument in ((out_features, "out_features"), (in_features, "in_features")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{argument} must be a positive integer, got {value!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    side = math.sqrt(out_features * in_features)
    if batch_size is None:
        value = max(_table_value(side, batch) for batch in _BATCHES)
    else:
        value = _table_value(side, batch_size)
    return None if value >= _NEVER else round(value, 4)


_INFERENCE_ONLY = (
    "SparseLinear is an inference-only module (its weight is a sparse CSR tensor without gradients): {}. Keep a "
    "copy of the dense or sparsified model for training and convert a copy with adasparse.to_sparse_inference"
)


class SparseLinear(nn.Module):
    """``nn.Linear`` for inference with a sparse weight (torch CSR, int32 indices), on the CPU.

    Computes ``x @ W.T + b`` as ``addmv(b, W, x)`` for one row and ``addmm(b, W, x.T).T`` for several; inputs
    of shape ``(..., in_features)`` give outputs ``(..., out_features)``. The CSR parts are plain buffers
    (``crow_indices``, ``col_indices``, ``values``, ``bias``), so the module copies, pickles and saves only what
    it holds; :attr:`weight` is the CSR tensor over them. It holds no parameters: it refuses training mode and
    inputs that require gradients.

    Args:
        weight: the dense ``(out_features, in_features)`` float32/float64 weight (zeros baked in).
        bias: ``(out_features,)`` or ``None``.

    Example::

        >>> layer = SparseLinear.from_linear(pruned_linear)
        >>> with torch.no_grad():
        ...     torch.testing.assert_close(layer(x), pruned_linear(x))
    """

    crow_indices: torch.Tensor
    col_indices: torch.Tensor
    values: torch.Tensor
    bias: Optional[torch.Tensor]

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        if weight.dim() != 2 or weight.layout != torch.strided:
            raise ValueError(f"weight must be a dense 2-D tensor, got shape {tuple(weight.shape)} ({weight.layout})")
        if weight.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"weight must be float32 or float64 for CPU sparse kernels, got {weight.dtype}")
        if weight.device.type != "cpu":
            raise ValueError(f"SparseLinear runs on the CPU; the weight is on {weight.device}")
        self.out_features, self.in_features = weight.shape
        if bias is not None and tuple(bias.shape) != (self.out_features,):
            raise ValueError(f"bias must have shape ({self.out_features},), got {tuple(bias.shape)}")
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
            csr = weight.detach().to_sparse_csr()
        self.register_buffer("crow_indices", csr.crow_indices().to(torch.int32))
        self.register_buffer("col_indices", csr.col_indices().to(torch.int32))
        self.register_buffer("values", csr.values().clone())
        self.register_buffer("bias", None if bias is None else bias.detach().to(weight.dtype).clone())
        self.train(False)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> SparseLinear:
        """A :class:`SparseLinear` computing what ``linear`` computes (its current weight and bias)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_linear needs an nn.Linear, got {type(linear).__name__}")
        return cls(linear.weight, linear.bias)

    @property
    def weight(self) -> torch.Tensor:
        """The weight as a sparse CSR tensor sharing the module's buffers (built once, rebuilt if they change)."""
        buffers = self._buffers
        crow, col, values = buffers["crow_indices"], buffers["col_indices"], buffers["values"]
        assert crow is not None and col is not None and values is not None
        key = (crow.data_ptr(), col.data_ptr(), values.data_ptr(), values.dtype, values.numel())
        cached = self.__dict__.get("_csr")
        if cached is None or cached[0] != key:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*[Ss]parse.*")
                csr = torch.sparse_csr_tensor(
                    crow, col, values, size=(self.out_features, self.in_features), check_invariants=False
                )
            cached = (key, csr)
            self.__dict__["_csr"] = cached
        return cached[1]

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state = dict(state)
        state.pop("_csr", None)  # a view of the buffers: rebuilt on first use (sparse tensors do not deepcopy)
        return state

    @property
    def nnz(self) -> int:
        """Number of stored (non-zero) weights."""
        return int(self.values.numel())

    @property
    def sparsity(self) -> float:
        """Fraction of zero weights."""
        return 1.0 - self.nnz / (self.out_features * self.in_features)

    def to_linear(self) -> nn.Linear:
        """An equivalent dense ``nn.Linear`` (zeros included)."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, dtype=self.values.dtype)
        with torch.no_grad():
            linear.weight.copy_(self.weight.to_dense())
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object, **kwargs: object) -> None:
        # The number of stored weights may differ from this module's: take the incoming lengths.
        for name in ("col_indices", "values"):
            incoming = state_dict.get(prefix + name)
            current = self._buffers[name]
            if isinstance(incoming, torch.Tensor) and incoming.dim() == 1 and current is not None:
                self._buffers[name] = current.new_empty(incoming.shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError(_INFERENCE_ONLY.format("the model is in training mode; call model.eval()"))
        if x.requires_grad and torch.is_grad_enabled():
            raise RuntimeError(_INFERENCE_ONLY.format("the input requires grad; run under torch.no_grad()"))
        weight = self.weight
        in_features = self.in_features
        if x.dim() == 0 or x.shape[-1] != in_features:
            raise ValueError(f"SparseLinear expects inputs (..., {in_features}), got {tuple(x.shape)}")
        if x.dtype != weight.dtype:
            raise ValueError(f"SparseLinear holds {weight.dtype} weights, got a {x.dtype} input")
        bias = self._buffers["bias"]
        # Nothing here requires grad (checked above; buffers do not), so no autograd graph is recorded.
        if x.dim() == 1 or (x.dim() == 2 and x.shape[0] == 1):
            vector = x.reshape(in_features)
            out = torch.mv(weight, vector) if bias is None else torch.addmv(bias, weight, vector)
            return out.reshape(*x.shape[:-1], self.out_features)
        rows = x.reshape(-1, in_features)
        if bias is None:
            out = torch.mm(weight, rows.T).T
        else:
            out = torch.addmm(bias.unsqueeze(1), weight, rows.T).T
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"sparsity={self.sparsity:.4f}"
        )


def _zero_fraction(weight: torch.Tensor) -> float:
    return 1.0 - int(torch.count_nonzero(weight)) / weight.numel() if weight.numel() else 0.0


def _convertible(module: nn.Module) -> bool:
    if type(module) is not nn.Linear:
        return False
    weight = module.weight
    return weight.device.type == "cpu" and weight.dtype in (torch.float32, torch.float64) and weight.numel() > 0


def to_sparse_inference(
    model: nn.Module, min_sparsity: float | None = None, *, batch_size_hint: int | None = None
) -> nn.Module:
    """Replace, in place, each ``nn.Linear`` that runs faster sparse by a :class:`SparseLinear`.

    Only modules whose class is exactly ``nn.Linear``, on the CPU, float32/float64 are considered (subclasses
    may have their own ``forward``; ``MultiheadAttention`` reads its projections' weights directly). Every other
    module, convolutions included, stays as it is. The model is put in eval mode; a sparsified model is first
    desparsified in place (zeros baked in): pass ``copy.deepcopy(model)`` to keep the trainable one.

    Args:
        model: a plain model with zeros in its weights, or a sparsified one.
        min_sparsity: ``None`` (default) to decide per layer with :func:`break_even_sparsity` (its shape and
            ``batch_size_hint``); a number in ``[0, 1)`` to replace every layer at least that sparse instead,
            whatever the speed.
        batch_size_hint: rows per forward call you expect (``None``: any, the conservative choice).

    Returns:
        ``model`` (a :class:`SparseLinear` if ``model`` itself is a replaced ``nn.Linear``).

    Example::

        >>> model = to_sparse_inference(pruned_model, batch_size_hint=1)
        >>> with torch.no_grad():
        ...     logits = model(x)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if min_sparsity is not None:
        min_sparsity = check_fraction(min_sparsity, "min_sparsity")
    if batch_size_hint is not None and (
        isinstance(batch_size_hint, bool) or not isinstance(batch_size_hint, int) or batch_size_hint < 1
    ):
        raise ValueError(f"batch_size_hint must be a positive integer or None, got {batch_size_hint!r}")
    if pruned_tensors(model):
        desparsify(model)
    model.eval()

    def replacement(module: nn.Module) -> SparseLinear | None:
        if not _convertible(module):
            return None
        out_features, in_features = module.weight.shape
        threshold = min_sparsity
        if threshold is None:
            threshold = break_even_sparsity(out_features, in_features, batch_size_hint)
        if threshold is None or _zero_fraction(module.weight) < threshold:
            return None
        return SparseLinear.from_linear(module)

    root = replacement(model)
    if root is not None:
        return root
    replaced: dict[int, nn.Module | None] = {}
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):  # named_children() would skip a module's second name
            if child is None:
                continue
            if id(child) not in replaced:
                replaced[id(child)] = replacement(child)
            new = replaced[id(child)]
            if new is not None:
                setattr(parent, name, new)
    return model
