"""The pruning operator and its analytic sparsity.

For a weight ``w`` and one scalar threshold parameter ``r`` the effective weight is::

    w_c   = w - mean(w)                      # mean and std are statistics, not differentiated
    a     = clamp(r, 0, 5)
    b     = a * std(w_c) + 1e-6              # threshold in weight units
    w_eff = hardshrink(w_c, b)               # w_c where |w_c| > b, else 0   (centred=True, the paper)
    w_eff = w * (|w_c| > b)                  # w where |w_c| > b, else 0     (centred=False)

With ``centred=False`` the zeros are the same and the kept weights keep their own values, so a layer where
nothing is pruned is unchanged (the paper's form shifts every kept weight by the mean). The backward pass is a
straight-through estimator: ``d w_eff / d w = 1`` everywhere (pruned weights keep receiving gradient and can come
back) and ``d w_eff / d a = -(std / b) * residual`` on pruned weights (``w_c``, or ``w`` when not centred), ``0``
on kept ones, so the task loss reaches ``r`` through the weights it currently prunes. The clamp of ``r`` passes its
gradient straight through (``d a / d r = 1``), so a threshold that leaves ``[0, 5]`` can return. Under a zero-mean
Gaussian assumption the expected pruned fraction is ``erf(a / sqrt(2))`` (:func:`analytic_sparsity`).

Two numerically identical code paths exist: on CPU in eager mode the scalar statistics are read as Python floats
and the mask is applied by vectorised float passes (``F.hardshrink`` for the centred form; for the other, the
pruned values form one interval of the weight's values, found exactly in scalar arithmetic, so one pass keeps
what lies inside it and one subtraction removes it: CPU kernels for boolean masks are several times slower); on
other devices and under ``torch.compile`` everything stays in tensors, with no host sync.
When the threshold takes no gradient (fixed thresholds, and the layer-adaptive default, which sets them from the
weights) and the kept weights keep their values, the CPU path builds no custom autograd function: the effective
weight is ``w`` minus the pruned residual, a plain subtraction whose gradient for ``w`` is the same identity.
With a trainable threshold the CPU path also keeps each layer's pruned residual ``w_c - w_eff`` from the forward
until the backward (one weight-sized tensor per layer, freed by the backward): making it while ``w_c`` is still in
cache is cheaper than rebuilding it from the weight in the backward, which the tensor path does instead.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable

import numpy
import torch

__all__ = [
    "EPSILON",
    "MAX_THRESHOLD",
    "analytic_sparsity",
    "analytic_sparsity_value",
    "bound_pruned_gradient",
    "clamp_threshold",
    "centre",
    "effective_weight",
    "grouped_weight",
    "pruned_where_read",
    "masked_weight",
    "pruning_bound",
    "pruning_statistics",
    "sorted_magnitudes",
    "threshold_for_sparsity",
]

MAX_THRESHOLD = 5.0
"""Upper clamp of ``r``: a threshold of five standard deviations (analytic sparsity 1 - 5.7e-7)."""

EPSILON = 1e-6
"""Added to the threshold in weight units so that a zero threshold prunes nothing but exact zeros."""

_SQRT_HALF = math.sqrt(0.5)
_FAST_DTYPES = (torch.float32, torch.float64)


def _is_compiling() -> bool:
    return torch.compiler.is_compiling()


def _dot(a: torch.Tensor, b: torch.Tensor) -> float | torch.Tensor:
    if a.device.type == "cpu" and a.dtype in _FAST_DTYPES:
        return torch.dot(a.reshape(-1), b.reshape(-1))
    return torch.sum(a.float() * b.float())


def _use_float_path(weight: torch.Tensor) -> bool:
    return weight.device.type == "cpu" and not _is_compiling()


def pruning_statistics(weight: torch.Tensor) -> tuple[float | torch.Tensor, float | torch.Tensor]:
    """Mean and unbiased standard deviation of a weight, computed exactly as the forward pass does.

    On the CPU eager path both are Python floats obtained from one sum and one dot product (no centred copy is
    made; where the float32 sum of squares overflows on finite weights, both sums are taken again in float64);
    otherwise they are 0-d tensors and nothing is synchronised with the host (there a float32 weight beyond 1.8e19
    still gives an infinite spread).
    """
    if _use_float_path(weight):
        return _float_statistics(weight)
    n = weight.numel()
    mean = weight.mean()
    std = torch.linalg.vector_norm((weight - mean).float()) / math.sqrt(max(n - 1, 1))
    return mean, std.to(weight.dtype)


def _float_statistics(weight: torch.Tensor) -> tuple[float, float]:
    """:func:`pruning_statistics` on the CPU eager path: one sum and one dot product, read as Python floats."""
    n = weight.numel()
    dtype = weight.dtype
    total = weight.sum(dtype=torch.float64 if dtype == torch.float64 else torch.float32).item()
    flat = weight.reshape(-1)
    square_sum = (torch.dot(flat, flat) if dtype in _FAST_DTYPES else torch.sum(flat.float() * flat.float())).item()
    if math.isinf(square_sum) and math.isfinite(total) and dtype != torch.float64:
        # Finite weights whose squares pass float32's range (|w| > 1.8e19: a run whose weights blew up) get the same
        # sums in float64 rather than an infinite spread, which would zero every threshold and lose the budget.
        flat = flat.double()
        total, square_sum = flat.sum().item(), torch.dot(flat, flat).item()
    mean = total / n
    variance = max(square_sum - n * mean * mean, 0.0) / max(n - 1, 1)
    return mean, math.sqrt(variance)


def centre(weight: torch.Tensor, mean: float | torch.Tensor) -> torch.Tensor:
    """``weight - mean`` as the forward pass computes it (a new tensor)."""
    return weight - mean


def sorted_magnitudes(
    weight: torch.Tensor, sample: torch.Tensor | None = None, zeros_stay: bool = False
) -> tuple[torch.Tensor, float | torch.Tensor]:
    """``|w_c|`` sorted ascending (of every element, or of the flat indices ``sample``) and the std, both as the
    forward pass computes them: the zero count at any threshold is then one ``searchsorted`` of its bound. With
    ``zeros_stay`` (kept weights keep their own value, ``centred=False``) a weight that is exactly zero counts as
    ``0``: it is zero in the effective weight whatever the threshold (``|w_c|`` would be ``|mean|``)."""
    mean, std = pruning_statistics(weight)
    flat = weight.reshape(-1)
    # Only the sampled elements, gathered first (in memory order, :class:`MagnitudeDistribution` sorts them).
    values = flat if sample is None else torch.index_select(flat, 0, sample.to(flat.device))
    zeros = values == 0 if zeros_stay and int(torch.count_nonzero(values)) < values.numel() else None
    magnitudes = centre(weight, mean).abs_().reshape(-1) if sample is None else values.sub_(mean).abs_()
    if zeros is not None:
        magnitudes.masked_fill_(zeros, 0.0)
    if magnitudes.device.type == "cpu" and magnitudes.dtype in _FAST_DTYPES and not _is_compiling():
        # The same sorted values, some 30x faster than torch.sort on one CPU thread (measured on 65,536 floats).
        return torch.from_numpy(numpy.sort(magnitudes.numpy())), std
    return torch.sort(magnitudes).values, std


def pruning_bound(r: torch.Tensor, std: float | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The bound ``b`` the forward pass compares ``|w_c|`` with (a weight is pruned iff ``|w_c| <= b``),
    as a 0-d tensor of the weight's dtype; ``std`` comes from :func:`pruning_statistics`."""
    if isinstance(std, float):
        return torch.scalar_tensor(_float_bound(r, std), dtype=dtype)
    return r.detach().to(dtype).clamp(0.0, MAX_THRESHOLD) * std + EPSILON


class _FloatBits:
    """Floats of one width as ordered integers (adjacent values are adjacent integers), the value next to one, and
    rounding to them, all on Python floats."""

    def __init__(self, float_code: str, int_code: str, bits: int, mantissa_bits: int, min_exponent: int) -> None:
        self._float, self._int = struct.Struct("<" + float_code), struct.Struct("<" + int_code)
        self._sign = 1 << (bits - 1)
        self.infinity = self.key(math.inf)
        self._mantissa_bits = mantissa_bits
        self._min_exponent = min_exponent
        self._subnormal_spacing = math.ldexp(1.0, min_exponent - mantissa_bits)
        self.rounded: Callable[[float], float] = float if bits == 64 else self._rounded

    def _rounded(self, value: float) -> float:
        return self._float.unpack(self._float.pack(value))[0]

    def key(self, value: float) -> int:
        bits = self._int.unpack(self._float.pack(value))[0]
        return -(bits - self._sign) if bits >= self._sign else bits

    def value(self, key: int) -> float:
        key = min(max(key, -self.infinity), self.infinity)
        return self._float.unpack(self._int.pack(key if key >= 0 else self._sign - key))[0]

    def next_value(self, value: float, upward: bool) -> float:
        """The value of this width next to the finite ``value`` (of this width), by its spacing there."""
        if value == 0.0:
            return self._subnormal_spacing if upward else -self._subnormal_spacing
        fraction, exponent = math.frexp(value)  # value = fraction * 2**exponent, 0.5 <= |fraction| < 1
        if exponent <= self._min_exponent:
            spacing = self._subnormal_spacing
        else:
            spacing = math.ldexp(1.0, exponent - self._mantissa_bits)
            if abs(fraction) == 0.5 and (value > 0.0) != upward:  # towards zero from a power of two
                spacing *= 0.5
        return value + spacing if upward else value - spacing


_FLOAT_BITS = {
    torch.float32: _FloatBits("f", "I", 32, 24, -125),
    torch.float64: _FloatBits("d", "Q", 64, 53, -1021),
}


def _first_outside(start: int, inside: Callable[[int], bool], direction: int) -> int:
    """The first key past the end, in ``direction`` (+1 or -1), of the one run of keys where ``inside`` holds.

    The run either contains ``start`` or lies behind it (against ``direction``); the end is found by galloping from
    ``start`` (steps doubling) until both sides of it are known, then by bisection."""
    if inside(start):
        last_in, step = start, 1
        while inside(last_in + direction * step):
            last_in, step = last_in + direction * step, 2 * step
        first_out = last_in + direction * step
    else:
        first_out, step = start, 1
        while not inside(first_out - direction * step):
            first_out, step = first_out - direction * step, 2 * step
        last_in = first_out - direction * step
    while abs(first_out - last_in) > 1:
        middle = (first_out + last_in) // 2
        if inside(middle):
            last_in = middle
        else:
            first_out = middle
    return first_out


def _pruned_interval(mean: float, bound: float, dtype: torch.dtype) -> tuple[float, float] | None:
    """The open interval ``(low, high)`` of the values ``w`` of ``dtype`` that the CPU path prunes, i.e. those with
    ``|fl(w - mean)| <= fl(bound)`` as ``(weight - mean).abs() <= bound`` computes it in that dtype, or ``None``
    for another dtype or a statistic that is not finite.

    ``fl(w - mean)`` never decreases as ``w`` grows and is 0 at ``w = fl(mean)``, so the pruned values are one run of
    consecutive values around the mean; its ends are searched from ``mean ± bound`` (a step or two in practice).
    Float32 differences are taken in double precision and rounded once to float32, which is exact (double carries
    more than twice float32's digits plus two).
    """
    bits = _FLOAT_BITS.get(dtype)
    if bits is None or not (math.isfinite(mean) and math.isfinite(bound)):
        return None
    rounded = bits.rounded
    try:
        m, b = rounded(mean), rounded(bound)
        high, low = rounded(m + b), rounded(m - b)
        if not (math.isfinite(high) and math.isfinite(low)):
            return None
        above, below = bits.next_value(high, True), bits.next_value(low, False)
        # Nearly always the values next to mean ± bound are the first kept ones; otherwise search for them.
        if not (rounded(high - m) <= b < rounded(above - m)):
            above = bits.value(_first_outside(bits.key(high), lambda key: rounded(bits.value(key) - m) <= b, 1))
        if not (rounded(below - m) < -b <= rounded(low - m)):
            below = bits.value(_first_outside(bits.key(low), lambda key: rounded(bits.value(key) - m) >= -b, -1))
    except OverflowError:  # a value beyond the dtype's range
        return None
    return below, above


def _float_bound(r: torch.Tensor, std: float) -> float:
    """:func:`pruning_bound` on the CPU float path, as a Python float."""
    return min(max(float(r.item()), 0.0), MAX_THRESHOLD) * std + EPSILON


def _uncentred_residual(weight: torch.Tensor, mean: float, bound: float) -> torch.Tensor:
    """What the uncentred operator removes on the CPU float path: ``w`` where ``|w - mean| <= bound``, else 0.

    Those values of ``w`` form one open interval, found exactly in scalar arithmetic, so one vectorised pass
    (hardtanh's backward keeps its input strictly inside an interval) gives the residual: a boolean mask is several
    times slower on CPU, and centring, abs, compare and multiply were four passes."""
    interval = _pruned_interval(mean, bound, weight.dtype)
    if interval is None:
        return centre(weight, mean).abs_().le_(bound).mul_(weight)
    return torch.ops.aten.hardtanh_backward(weight, weight, interval[0], interval[1])


def _shrink(
    weight: torch.Tensor, r: torch.Tensor, keep_residual: bool = False, centred: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None, float | torch.Tensor, float | torch.Tensor]:
    """Return (effective weight, pruned residual, mean, d w_eff / d r on pruned weights per unit of residual),
    without autograd.

    Which weights are zero is decided on the centred weight ``w_c`` either way; ``centred`` says what the kept ones
    hold: ``w_c`` (the paper's ``hardshrink(w_c, b)``) or their own value ``w``. The residual is what pruning
    removed (``w_c`` or ``w`` on pruned weights, exactly 0 on kept ones). It is made only on the CPU eager path and
    only with ``keep_residual``: there it is cheapest right after the forward, while the weight is still in cache.
    Elsewhere it is ``None`` and the backward rebuilds it, so no extra weight-sized tensor is held between forward
    and backward.

    The last value is ``-std / b``, also outside the clamp range of ``r``: the clamp passes gradients straight
    through, so a threshold pushed below 0 (or above 5) can come back instead of being stuck with a zero gradient.
    """
    mean, std = pruning_statistics(weight)
    if isinstance(std, float):
        bound = _float_bound(r, std)
        if not centred:
            # The residual, then w minus it: w exactly on kept weights and +0.0 (not -0.0) on pruned ones.
            residual = _uncentred_residual(weight, mean, bound)
            effective = torch.sub(weight, residual)
            return effective, residual if keep_residual else None, mean, -std / bound
        shifted = centre(weight, mean)
        if keep_residual:
            effective = torch.ops.aten.hardshrink(shifted, bound)
            return effective, shifted.sub_(effective), mean, -std / bound
        # In place: one fresh buffer per call instead of two (fresh pages dominate the cost on CPU).
        torch.ops.aten.hardshrink.out(shifted, bound, out=shifted)
        return shifted, None, mean, -std / bound
    shifted = centre(weight, mean)
    r = r.detach().to(weight.dtype)
    bound = pruning_bound(r, std, weight.dtype)
    zero = torch.zeros((), dtype=shifted.dtype, device=shifted.device)
    effective = torch.where(shifted.abs() > bound, shifted if centred else weight, zero)
    return effective, None, mean, (-std / bound).float()


class _HardShrinkSTE(torch.autograd.Function):
    """Hard-shrink of the centred weight with a straight-through gradient for ``w`` and an exact one for ``r``."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, r: torch.Tensor, centred: bool) -> torch.Tensor:  # type: ignore[override]
        needs_threshold_grad = ctx.needs_input_grad[1]
        effective, residual, mean, slope = _shrink(weight, r, keep_residual=needs_threshold_grad, centred=centred)
        if needs_threshold_grad:
            ctx.has_residual = residual is not None
            if ctx.has_residual:
                ctx.save_for_backward(residual)
            else:
                ctx.save_for_backward(weight, effective)
                ctx.mean = mean
                ctx.centred = centred
            ctx.slope = slope
            ctx.r_dtype = r.dtype
        return effective

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:  # type: ignore[override]
        grad_r = None
        if ctx.needs_input_grad[1]:
            if ctx.has_residual:  # CPU float path: the residual was made in the forward
                (residual,) = ctx.saved_tensors
                grad_r = torch.scalar_tensor(float(_dot(grad, residual)) * ctx.slope, dtype=ctx.r_dtype)
            else:
                weight, effective = ctx.saved_tensors
                # What pruning removed, exactly: bitwise 0 on kept weights (w_eff holds the kept value's bits).
                kept_from = centre(weight, ctx.mean) if ctx.centred else weight
                residual = kept_from - effective
                grad_r = (_dot(grad, residual) * ctx.slope).to(ctx.r_dtype)
        grad_weight = grad if ctx.needs_input_grad[0] else None
        return grad_weight, grad_r, None


def effective_weight(weight: torch.Tensor, r: torch.Tensor, *, centred: bool = True) -> torch.Tensor:
    """Apply the pruning operator: zero every weight with ``|w - mean(w)| <= clamp(r, 0, 5) * std + 1e-6``.

    Args:
        weight: floating tensor of any shape (the raw, trainable weight).
        r: 0-d floating tensor, the threshold in units of the weight's standard deviation.
        centred: what the kept weights hold: ``w - mean(w)`` (the paper's ``hardshrink(w - mean(w), b)``, the
            default of this function) or their own value ``w`` (what :func:`adasparse.sparsify` uses by default,
            so that a pretrained layer is unchanged where nothing is pruned).

    Returns:
        The effective weight, same shape and dtype as ``weight``. When autograd is recording and either input
        requires grad, the result carries the straight-through gradient described in the module docstring.

    Example::

        >>> w = torch.randn(256, 128, requires_grad=True)
        >>> r = torch.tensor(1.645, requires_grad=True)   # erf(1.645 / sqrt(2)) = 0.9
        >>> w_eff = effective_weight(w, r)
        >>> round((w_eff == 0).float().mean().item(), 2)
        0.9
    """
    if torch.is_grad_enabled() and (weight.requires_grad or r.requires_grad):
        if not (r.requires_grad or centred) and _use_float_path(weight):
            # No gradient for the threshold: the straight-through identity for w is a plain subtraction's, a native
            # autograd node (the custom function costs tens of µs per call in Python); the same bits either way.
            raw = weight.detach()
            mean, std = _float_statistics(raw)
            return torch.sub(weight, _uncentred_residual(raw, mean, _float_bound(r, std)))
        return _HardShrinkSTE.apply(weight, r, centred)
    return _shrink(weight.detach(), r.detach(), centred=centred)[0]


class _FixedMask(torch.autograd.Function):
    """``weight * mask`` with the mask's gradient; the threshold stays in the graph with a zero gradient, so
    data-parallel wrappers built while it was learning still see every parameter used."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, mask: torch.Tensor, r: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(mask)
        return weight * mask

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, torch.Tensor | None]:  # type: ignore[override]
        (mask,) = ctx.saved_tensors
        grad_weight = grad * mask if ctx.needs_input_grad[0] else None
        grad_r = torch.zeros((), dtype=grad.dtype, device=grad.device) if ctx.needs_input_grad[2] else None
        return grad_weight, None, grad_r


def bound_pruned_gradient(effective: torch.Tensor, bound: float) -> torch.Tensor:
    """Clamp the straight-through gradient that reaches each pruned weight (a zero of ``effective``) to ``bound``
    times the root mean square of the kept weights' gradients in the same tensor; the kept weights' gradients pass
    unchanged, and so does everything when no weight is kept. Registers a hook on ``effective`` (nothing without
    autograd) and returns it.

    Why: the straight-through estimator gives a pruned weight the gradient it would get if it were there. Where a
    normalisation follows the layer, that gradient is divided by the batch spread of the output channel it feeds:
    for a channel whose weights are all pruned (a constant zero) BatchNorm divides by ``sqrt(eps)``, hundreds of
    times the gradient of any live weight, and the few pruned weights that cross the threshold arrive with values
    orders of magnitude above the layer's, which then hold its whole budget (docs/method.md). The bound is relative
    to the layer's own live gradients, so it needs no scale of its own.
    """
    if not effective.requires_grad:
        return effective
    # Float masks: CPU kernels for boolean ones are several times slower (a boolean mask, where and a clamp with
    # tensor bounds made the hook cost a dense MLP step).
    kept = effective.detach().abs().sign_()  # 1 where kept, 0 where pruned
    pruned = torch.rsub(kept, 1.0)
    exact = torch.float32 if kept.numel() < 2**24 else torch.float64  # a count of ones is exact below 2**24
    count = kept.sum(dtype=exact).to(torch.int64)
    on_host = _use_float_path(effective)

    def hook(grad: torch.Tensor) -> torch.Tensor:
        live = grad * kept
        mean_square = (live * live).sum() / count.clamp_min(1)
        limit = torch.where(count > 0, bound * mean_square.sqrt(), torch.full_like(mean_square, math.inf))
        clamped = grad.clamp(-float(limit), float(limit)) if on_host else torch.clamp(grad, -limit, limit)
        return clamped.mul_(pruned).add_(live)  # the kept weights' own gradient, the pruned ones' clamped (exact)

    effective.register_hook(hook)
    return effective


def masked_weight(weight: torch.Tensor, mask: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """The effective weight once the zeros are fixed: ``weight * mask`` (a boolean mask of the weight's shape).

    Pruned weights get no gradient and stay zero; ``r`` no longer acts but, if it requires a gradient, receives a
    zero one (so that data-parallel wrappers built while it was learning still see it used).
    """
    if torch.is_grad_enabled() and r.requires_grad:
        return _FixedMask.apply(weight, mask, r)
    return weight * mask  # a threshold without gradient needs no place in the graph: a native multiply


def clamp_threshold(r: torch.Tensor) -> torch.Tensor:
    """``clamp(r, 0, 5)`` in value with the identity as gradient (a straight-through clamp).

    With an ordinary clamp a threshold pushed outside ``[0, 5]`` gets no gradient from anything and stays there
    for good (a layer silently stops being pruned); the straight-through form lets the losses bring it back.
    """
    return r + (r.clamp(0.0, MAX_THRESHOLD) - r).detach()


def analytic_sparsity(r: torch.Tensor) -> torch.Tensor:
    """Expected pruned fraction ``erf(clamp(r, 0, 5) / sqrt(2))`` under a zero-mean Gaussian weight.

    Differentiable in ``r``; the clamp passes gradients straight through (see :func:`clamp_threshold`), so the
    gradient is the Gaussian density at the clamped value. Works elementwise on a tensor of thresholds.
    """
    return torch.erf(clamp_threshold(r) * _SQRT_HALF)


def analytic_sparsity_value(r: float) -> float:
    """:func:`analytic_sparsity` of a Python float."""
    return math.erf(min(max(float(r), 0.0), MAX_THRESHOLD) * _SQRT_HALF)


def threshold_for_sparsity(sparsity: float) -> float:
    """Inverse of :func:`analytic_sparsity`: the ``r`` whose Gaussian sparsity is ``sparsity`` (``sqrt(2)·erfinv``).

    Args:
        sparsity: in ``[0, 1)``.
    """
    if not isinstance(sparsity, (int, float)) or not (0.0 <= float(sparsity) < 1.0):
        raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    # On the CPU explicitly: under ``with torch.device("meta")`` a bare tensor would have no value to read.
    value = math.sqrt(2.0) * torch.erfinv(torch.tensor(float(sparsity), dtype=torch.float64, device="cpu")).item()
    return min(value, MAX_THRESHOLD)


class _GroupMask(torch.autograd.Function):
    """``value`` where ``keep``, else 0. ``r`` gets ``slope * <grad, pruned residual>``; ``value`` the identity
    (:func:`grouped_weight`) or, with ``blocked``, nothing on the pruned groups (:func:`pruned_where_read`)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, value: torch.Tensor, r: torch.Tensor, keep: torch.Tensor, slope: float, blocked: bool
    ) -> torch.Tensor:
        if ctx.needs_input_grad[1] or blocked:
            ctx.save_for_backward(value, keep)
        ctx.slope, ctx.r_dtype, ctx.blocked = slope, r.dtype, blocked
        return torch.where(keep, value, torch.zeros((), dtype=value.dtype, device=value.device))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None, None]:  # type: ignore[override]
        grad_r = grad_value = None
        if ctx.needs_input_grad[1]:
            value, keep = ctx.saved_tensors
            residual = torch.where(keep, torch.zeros((), dtype=value.dtype, device=value.device), value)
            grad_r = torch.as_tensor(_dot(grad, residual) * ctx.slope).to(ctx.r_dtype).reshape(())
        if ctx.needs_input_grad[0]:
            grad_value = grad
            if ctx.blocked:
                keep = ctx.saved_tensors[1]
                grad_value = torch.where(keep, grad, torch.zeros((), dtype=grad.dtype, device=grad.device))
        return grad_value, grad_r, None, None, None


def grouped_weight(weight: torch.Tensor, r: torch.Tensor, keep: torch.Tensor, slope: float) -> torch.Tensor:
    """The effective weight of a structured granularity: ``weight`` where ``keep`` (a boolean mask broadcastable to
    the weight, one flag per group), exact zeros elsewhere.

    The gradient is the element operator's: the identity for ``weight`` (pruned groups keep learning and can come
    back) and ``slope * <grad, pruned residual>`` for ``r``, with ``slope = -rms / b`` from
    :mod:`~adasparse.core.granularity`.
    """
    if torch.is_grad_enabled() and (weight.requires_grad or r.requires_grad):
        return _GroupMask.apply(weight, r, keep, slope, False)
    return torch.where(keep, weight.detach(), torch.zeros((), dtype=weight.dtype, device=weight.device))


def pruned_where_read(value: torch.Tensor, r: torch.Tensor, keep: torch.Tensor, slope: float) -> torch.Tensor:
    """``value`` (an activation, or the weights feeding it) where ``keep``, exact zeros elsewhere, for a group that
    is pruned where it is read (:mod:`~adasparse.core.channel_sets`).

    Unlike :func:`grouped_weight`, the pruned groups get no gradient: nothing reads them, and a straight-through
    gradient let their producers drift on a path no output depends on (with AdamW, channels re-enabled after such a
    drift diverged a 1-D CNN's training at 75% of its FLOPs removed). ``r`` still gets
    ``slope * <grad, pruned residual>``, the first-order change of the loss if the pruned groups came back.
    """
    if torch.is_grad_enabled() and (value.requires_grad or r.requires_grad):
        return _GroupMask.apply(value, r, keep, slope, True)
    return torch.where(keep, value.detach(), torch.zeros((), dtype=value.dtype, device=value.device))
