"""The pruning operator: values, straight-through gradients, analytic sparsity, both code paths."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from adasparse.core import operator
from adasparse.core.operator import (
    EPSILON,
    analytic_sparsity,
    analytic_sparsity_value,
    effective_weight,
    threshold_for_sparsity,
)


@pytest.fixture(params=["float_path", "tensor_path"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on the CPU float path and on the tensor path used on GPUs and under torch.compile."""
    if request.param == "tensor_path":
        monkeypatch.setattr(operator, "_use_float_path", lambda weight: False)
    return request.param


def reference(weight: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """The operator written out with plain autograd, as in method.md: l * STE_hardshrink(w_c / l, 1)."""
    centred = weight - weight.mean().detach()
    std = centred.detach().std()
    bound = r.clamp(0, 5) * std + EPSILON
    x = centred / bound
    ste = x + (F.hardshrink(x, 1.0) - x).detach()
    return bound * ste


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("r_value", [0.0, 0.3, 1.2, 2.5, 4.9])
def test_values_and_gradients_match_the_reference(path: str, dtype: torch.dtype, r_value: float) -> None:
    weight = (torch.randn(64, 50, dtype=dtype) * 0.2 + 0.05).requires_grad_()
    r = torch.tensor(r_value, dtype=dtype, requires_grad=True)
    upstream = torch.randn(64, 50, dtype=dtype)

    out = effective_weight(weight, r)
    grad_w, grad_r = torch.autograd.grad(out, (weight, r), upstream)

    weight_ref = weight.detach().clone().requires_grad_()
    r_ref = r.detach().clone().requires_grad_()
    expected = reference(weight_ref, r_ref)
    _, ref_r = torch.autograd.grad(expected, (weight_ref, r_ref), upstream)

    tolerance = 1e-5 if dtype == torch.float32 else 1e-10
    assert torch.equal(out == 0, expected == 0)
    torch.testing.assert_close(out, expected.detach(), rtol=tolerance, atol=tolerance)
    assert torch.equal(grad_w, upstream), "d w_eff / d w must be the identity (straight-through)"
    if r_value == 0.0:
        # Nothing is pruned, so the exact gradient is 0; the autograd reference cancels two sums of size 1/eps.
        assert grad_r == 0
    else:
        torch.testing.assert_close(grad_r, ref_r, rtol=1e-4, atol=1e-6)
        assert grad_r.abs() > 0


def test_zeros_exactly_where_centred_weight_within_bound(path: str) -> None:
    weight = torch.randn(3000) * 3 + 1
    r = torch.tensor(1.1)
    out = effective_weight(weight, r)
    centred = weight - weight.mean()
    bound = 1.1 * centred.std() + EPSILON
    assert torch.equal(out == 0, centred.abs() <= bound)
    kept = out != 0
    assert torch.equal(out[kept], centred[kept])


def test_float_and_tensor_paths_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    weight = torch.randn(200, 300)
    r = torch.tensor(1.5)
    fast = effective_weight(weight, r)
    monkeypatch.setattr(operator, "_use_float_path", lambda w: False)
    slow = effective_weight(weight, r)
    assert (fast != slow).sum() <= 2  # the two paths may round a weight sitting on the bound differently
    torch.testing.assert_close(fast, slow, atol=1e-4, rtol=0)


def test_cpu_threshold_gradient_is_the_exact_pruned_residual() -> None:
    """The CPU path makes the residual in the forward; the gradient is bitwise the one rebuilt from the weight."""
    weight = (torch.randn(300, 200) * 0.1 + 0.02).requires_grad_()
    r = torch.tensor(1.3, requires_grad=True)
    upstream = torch.randn(300, 200)
    out = effective_weight(weight, r)
    (grad_r,) = torch.autograd.grad(out, r, upstream)

    mean, std = operator.pruning_statistics(weight.detach())
    centred = operator.centre(weight.detach(), mean)
    bound = float(r.detach()) * std + EPSILON  # r as the operator reads it (float32 1.3), not the double 1.3
    assert torch.equal(out, F.hardshrink(centred, bound)), "the output must not be touched by the residual"
    residual = centred - out.detach()
    expected = float(torch.dot(upstream.reshape(-1), residual.reshape(-1))) * (-std / bound)
    assert grad_r.item() == torch.tensor(expected, dtype=torch.float32).item()


def test_clamp_range_with_straight_through_gradient(path: str) -> None:
    weight = torch.randn(5000, requires_grad=True)
    upstream = torch.randn(5000)
    below = torch.tensor(-0.5, requires_grad=True)
    out = effective_weight(weight, below)
    assert int((out == 0).sum()) == 0  # clamped to 0: nothing pruned
    (grad,) = torch.autograd.grad((out * upstream).sum(), below)
    assert grad == 0  # no pruned weight, so no task gradient ...
    assert torch.autograd.grad(analytic_sparsity(below), below)[0] > 0  # ... but the sparsity loss can lift it

    above = torch.tensor(7.0, requires_grad=True)
    at_five = effective_weight(weight, torch.tensor(5.0))
    torch.testing.assert_close(effective_weight(weight, above), at_five)
    five = torch.tensor(5.0, requires_grad=True)
    (grad_above,) = torch.autograd.grad((effective_weight(weight, above) * upstream).sum(), above)
    (grad_five,) = torch.autograd.grad((effective_weight(weight, five) * upstream).sum(), five)
    torch.testing.assert_close(grad_above, grad_five)  # the gradient at the clamped value passes straight through


def test_constant_weight_gives_no_nan(path: str) -> None:
    weight = torch.full((40, 40), 0.3, requires_grad=True)
    r = torch.tensor(1.0, requires_grad=True)
    out = effective_weight(weight, r)
    assert torch.equal(out, torch.zeros_like(out))
    grad_w, grad_r = torch.autograd.grad(out.sum(), (weight, r))
    assert torch.isfinite(grad_r) and torch.isfinite(grad_w).all()


def test_weights_whose_squares_overflow_float32_keep_a_finite_spread_on_the_cpu() -> None:
    # A run whose weights blew up (BatchNorm hides their scale) reached 3e20: the float32 sum of squares was inf,
    # every threshold of that layer fell to zero and the budget was lost.
    torch.manual_seed(0)
    weight = torch.randn(64, 64) * 3e20
    mean, std = operator.pruning_statistics(weight)
    assert (mean, std) == pytest.approx((weight.double().mean().item(), weight.double().std().item()), rel=1e-6)
    out = effective_weight(weight, torch.tensor(1.645), centred=False)
    assert 0.88 < float((out == 0).float().mean()) < 0.92  # erf(1.645 / sqrt 2) = 0.9, as at any scale
    normal = torch.randn(64, 64)
    flat = normal.reshape(-1)
    square_sum = torch.dot(flat, flat).item()  # the float32 sums, untouched where they are finite
    expected = math.sqrt(max(square_sum - flat.numel() * (normal.sum().item() / flat.numel()) ** 2, 0.0) / 4095)
    assert operator.pruning_statistics(normal)[1] == expected
    infinite = weight.clone()
    infinite[0, 0] = math.inf  # a weight that is itself infinite is not rescued
    assert not math.isfinite(operator.pruning_statistics(infinite)[1])  # left to the divergence checks


def test_bounded_pruned_gradient_clamps_pruned_weights_to_the_kept_weights_scale() -> None:
    weight = torch.tensor([[2.0, 0.0, -3.0], [0.0, 0.0, 1.0]], requires_grad=True)
    effective = operator.bound_pruned_gradient(weight * 1.0, 2.0)  # zeros: the pruned positions
    upstream = torch.tensor([[0.3, 50.0, -0.4], [-7.0, 0.01, 0.0]])
    (grad,) = torch.autograd.grad(effective, weight, upstream)
    limit = 2.0 * math.sqrt((0.3**2 + 0.4**2 + 0.0**2) / 3)  # twice the kept gradients' root mean square
    expected = torch.tensor([[0.3, limit, -0.4], [-limit, 0.01, 0.0]])
    torch.testing.assert_close(grad, expected)  # kept ones untouched, small pruned ones too


def test_bounded_pruned_gradient_is_inert_without_kept_weights_or_autograd() -> None:
    weight = torch.zeros(2, 3, requires_grad=True)
    upstream = torch.full((2, 3), 9.0)
    (grad,) = torch.autograd.grad(operator.bound_pruned_gradient(weight * 1.0, 1.0), weight, upstream)
    assert torch.equal(grad, upstream)  # nothing kept: no scale to bound by
    plain = torch.ones(3)
    assert operator.bound_pruned_gradient(plain, 1.0) is plain


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_weights(path: str, dtype: torch.dtype) -> None:
    weight = torch.randn(100, 100).to(dtype).requires_grad_()
    r = torch.tensor(1.0, dtype=dtype, requires_grad=True)
    out = effective_weight(weight, r)
    assert out.dtype == dtype
    _, grad_r = torch.autograd.grad(out.float().sum(), (weight, r))
    assert grad_r.dtype == dtype and torch.isfinite(grad_r)
    assert 0.6 < float((out == 0).float().mean()) < 0.75


def test_no_grad_builds_no_graph() -> None:
    weight = torch.randn(50, 50, requires_grad=True)
    r = torch.tensor(1.0, requires_grad=True)
    with torch.no_grad():
        out = effective_weight(weight, r)
    assert out.grad_fn is None and not out.requires_grad
    torch.testing.assert_close(out, effective_weight(weight, r).detach())


def test_frozen_threshold_still_passes_weight_gradient() -> None:
    weight = torch.randn(50, 50, requires_grad=True)
    r = torch.tensor(1.0)
    out = effective_weight(weight, r)
    (grad,) = torch.autograd.grad(out.sum(), weight)
    assert torch.equal(grad, torch.ones_like(grad))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_threshold_without_gradient_gives_the_custom_function_s_bits_through_a_plain_subtraction(
    dtype: torch.dtype,
) -> None:
    weight = (torch.randn(300, 784, dtype=dtype) * 0.05 + 0.003).requires_grad_()
    upstream = torch.randn(300, 784, dtype=dtype)
    for r_value in (0.0, 0.7, 1.645, 4.0, 6.0):
        r = torch.tensor(r_value, dtype=dtype)  # no gradient: the layer-adaptive default's thresholds
        out = effective_weight(weight, r, centred=False)
        assert type(out.grad_fn).__name__ == "SubBackward0"  # a native node, not the custom function
        (grad,) = torch.autograd.grad(out, weight, upstream)
        expected = operator._HardShrinkSTE.apply(weight, r, False)
        (expected_grad,) = torch.autograd.grad(expected, weight, upstream)
        assert torch.equal(out.view(-1).view(torch.int8), expected.view(-1).view(torch.int8)), r_value
        assert torch.equal(grad, expected_grad) and torch.equal(grad, upstream)
    trainable = torch.tensor(1.0, dtype=dtype, requires_grad=True)  # with a gradient: the custom function
    assert type(effective_weight(weight, trainable, centred=False).grad_fn).__name__ == "_HardShrinkSTEBackward"


def test_a_fixed_mask_with_a_threshold_without_gradient_is_a_native_multiply_of_the_same_bits() -> None:
    weight = torch.randn(50, 40, requires_grad=True)
    mask = torch.rand(50, 40) > 0.7
    upstream = torch.randn(50, 40)
    out = operator.masked_weight(weight, mask, torch.tensor(1.0))
    assert type(out.grad_fn).__name__ == "MulBackward0"
    expected = operator._FixedMask.apply(weight, mask, torch.tensor(1.0))
    (grad,), (expected_grad,) = (torch.autograd.grad(t, weight, upstream) for t in (out, expected))
    assert torch.equal(out.view(torch.int32), expected.view(torch.int32))
    assert torch.equal(grad.view(torch.int32), expected_grad.view(torch.int32))  # -0.0 where pruned, as before
    r = torch.tensor(1.0, requires_grad=True)  # a threshold with a gradient stays in the graph (data parallel)
    (grad_r,) = torch.autograd.grad(operator.masked_weight(weight, mask, r), r, upstream)
    assert grad_r == 0.0


@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.8, 0.9, 0.95, 0.98])
def test_analytic_sparsity_matches_gaussian_weights(sparsity: float) -> None:
    weight = torch.randn(20_000) * 0.05 + 0.3
    r = torch.tensor(threshold_for_sparsity(sparsity))
    actual = float((effective_weight(weight, r) == 0).float().mean())
    assert analytic_sparsity(r).item() == pytest.approx(sparsity, abs=1e-6)
    assert actual == pytest.approx(sparsity, abs=0.01)


def test_analytic_sparsity_gradient_and_float_form() -> None:
    r = torch.tensor([0.5, 1.0, 6.0, -1.0], requires_grad=True)
    s = analytic_sparsity(r)
    (grad,) = torch.autograd.grad(s.sum(), r)
    expected = math.sqrt(2 / math.pi) * torch.exp(-(r.detach() ** 2) / 2)
    torch.testing.assert_close(grad[:2], expected[:2])
    clamped = math.sqrt(2 / math.pi) * torch.exp(-(torch.tensor([5.0, 0.0]) ** 2) / 2)
    torch.testing.assert_close(grad[2:], clamped)  # straight-through clamp: the density at the clamped value
    assert [analytic_sparsity_value(v) for v in (0.5, 1.0, 6.0, -1.0)] == pytest.approx(s.tolist(), abs=1e-6)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "0.9"])
def test_threshold_for_sparsity_rejects_bad_values(bad: object) -> None:
    with pytest.raises(ValueError, match="sparsity must be a number in \\[0, 1\\)"):
        threshold_for_sparsity(bad)  # type: ignore[arg-type]


def test_uncentred_operator_keeps_values_and_prunes_the_same_weights() -> None:
    torch.manual_seed(0)
    weight = torch.randn(64, 48) + 0.3  # a clear mean
    r = torch.tensor(1.2)
    centred = effective_weight(weight, r, centred=True)
    kept = effective_weight(weight, r, centred=False)
    assert torch.equal(centred == 0, kept == 0)
    assert torch.equal(kept[kept != 0], weight[kept != 0])  # bit for bit
    assert not torch.signbit(kept[kept == 0]).any()  # +0.0, so compressed formats round-trip bitwise
    nothing = effective_weight(weight, torch.tensor(0.0), centred=False)
    assert torch.equal(nothing, weight)
    # The training path (a residual kept for the threshold's gradient) gives the same bits.
    learned = effective_weight(weight.clone().requires_grad_(), r.clone().requires_grad_(), centred=False)
    assert torch.equal(learned.detach(), kept)
    assert not torch.signbit(learned.detach()[kept == 0]).any()


@pytest.mark.parametrize("centred", [True, False])
def test_threshold_gradient_is_minus_std_over_bound_times_the_removed_part(centred: bool) -> None:
    torch.manual_seed(1)
    weight = (torch.randn(40, 30, dtype=torch.float64) + 0.2).requires_grad_()
    r = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(40, 30, dtype=torch.float64)
    effective = effective_weight(weight, r, centred=centred)
    effective.backward(grad)
    with torch.no_grad():
        mean, std = weight.mean(), weight.std()
        bound = 1.0 * std + 1e-6
        pruned = (weight - mean).abs() <= bound
        removed = torch.where(pruned, weight - mean if centred else weight, torch.zeros(()))
        expected = -(std / bound) * (grad * removed).sum()
    assert r.grad.item() == pytest.approx(expected.item(), rel=1e-9)
    assert torch.equal(weight.grad, grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pruned_interval_prunes_exactly_what_the_centred_comparison_prunes(dtype: torch.dtype) -> None:
    """The CPU path prunes the values strictly inside ``_pruned_interval``; that must be, bit for bit, the set with
    ``|w - mean| <= bound`` as the tensor ops compute it, also for the values one unit in the last place from either
    end, from the mean and from ``mean ± bound`` (where rounding decides)."""
    generator = torch.Generator().manual_seed(3)
    up = torch.tensor(math.inf, dtype=dtype)
    for trial in range(300):
        scale = 10.0 ** (-5 + 7 * torch.rand((), generator=generator).item())
        offset = scale * [0.0, 0.01, 1.0, 100.0][trial % 4] * torch.randn((), generator=generator).item()
        weight = torch.randn(400, dtype=dtype, generator=generator) * scale + offset
        mean, std = float(weight.mean()), float(weight.std())
        bound = [0.0, 1.3, 5.0][trial % 3] * std + EPSILON
        interval = operator._pruned_interval(mean, bound, dtype)
        assert interval is not None
        near = []
        for value in (*interval, mean, mean + bound, mean - bound):
            step = torch.tensor(value, dtype=dtype)
            down = step.clone()
            for _ in range(4):
                near += [step.clone(), down.clone()]
                step, down = torch.nextafter(step, up), torch.nextafter(down, -up)
        weight = torch.cat([weight, torch.stack(near)])
        expected = (weight - mean).abs() <= bound
        low, high = interval
        assert torch.equal((weight > low) & (weight < high), expected)
        residual = torch.ops.aten.hardtanh_backward(weight, weight, low, high)
        assert torch.equal(residual != 0, expected & (weight != 0))


def test_pruned_interval_declines_what_it_cannot_find() -> None:
    """Non-finite statistics and other dtypes take the comparison path (``None``), which stays correct."""
    assert operator._pruned_interval(math.nan, 1.0, torch.float32) is None
    assert operator._pruned_interval(0.0, math.inf, torch.float32) is None
    assert operator._pruned_interval(0.0, 1.0, torch.bfloat16) is None
    assert operator._pruned_interval(3e38, 1e38, torch.float32) is None  # mean + bound overflows
    weight = torch.tensor([1.0, math.nan, -2.0, 0.5])
    effective = effective_weight(weight, torch.tensor(1.0), centred=False)
    assert torch.isnan(effective[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mean, bound", [(-1e-6, 1.0000001e-6), (1e-6, 1e-6), (-3e-7, 3e-7)])
def test_pruned_interval_searches_when_an_end_lies_near_zero(
    dtype: torch.dtype, mean: float, bound: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the mean near ``∓bound`` one end of the interval lies near 0, where values are far denser than at
    ``mean ± bound``: the end is then searched for, and must still be exact."""
    searches = []
    search = operator._first_outside
    monkeypatch.setattr(operator, "_first_outside", lambda *args: searches.append(args) or search(*args))
    low, high = operator._pruned_interval(mean, bound, dtype)
    assert searches
    up = torch.tensor(math.inf, dtype=dtype)
    near = []
    for value in (low, high, 0.0, mean):
        above = below = torch.tensor(value, dtype=dtype)
        for _ in range(40):
            near += [above, below]
            above, below = torch.nextafter(above, up), torch.nextafter(below, -up)
    weight = torch.stack(near)
    assert torch.equal((weight > low) & (weight < high), (weight - mean).abs() <= bound)
