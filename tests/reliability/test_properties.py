"""Property-based tests (hypothesis) over random layer shapes, groups, targets and thresholds."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import adasparse
from adasparse.core.operator import EPSILON, analytic_sparsity, effective_weight

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FAST = settings(max_examples=40, deadline=None)


@FAST
@given(
    r=st.floats(-10, 10, allow_nan=False), scale=st.floats(1e-3, 1e3), shift=st.floats(-5, 5), n=st.integers(2, 3000)
)
def test_zeros_exactly_where_centred_weight_within_bound(r: float, scale: float, shift: float, n: int) -> None:
    generator = torch.Generator().manual_seed(n)
    weight = torch.randn(n, generator=generator, dtype=torch.float64) * scale + shift
    out = effective_weight(weight, torch.tensor(r, dtype=torch.float64))
    centred = weight - weight.mean()
    bound = min(max(r, 0.0), 5.0) * centred.std().item() + EPSILON
    disagree = (out == 0) != (centred.abs() <= bound)
    # only a weight sitting on the bound (to rounding of the std) may fall either way
    assert bool(((centred.abs()[disagree] - bound).abs() <= 1e-9 * bound).all())
    assert torch.equal(out[out != 0], centred[out != 0])


@FAST
@given(values=st.lists(st.floats(-100, 100, allow_nan=False), min_size=1, max_size=20))
def test_analytic_sparsity_is_a_fraction(values: list[float]) -> None:
    s = analytic_sparsity(torch.tensor(values, dtype=torch.float64))
    assert bool(((s >= 0) & (s <= 1)).all())
    assert all(
        math.isclose(a, math.erf(min(max(v, 0), 5) / math.sqrt(2)), abs_tol=1e-12) for a, v in zip(s.tolist(), values)
    )


conv_specs = st.tuples(
    st.sampled_from([1, 2, 4]),  # groups
    st.integers(1, 3),  # channels per group in
    st.integers(1, 3),  # channels per group out
    st.integers(1, 3),  # kernel
    st.integers(1, 2),  # dilation
    st.booleans(),  # transposed
)


@FAST
@given(spec=conv_specs, r=st.floats(0, 5), target=st.floats(0, 0.99))
def test_desparsify_equality_and_report_totals(spec: tuple, r: float, target: float) -> None:
    groups, per_in, per_out, kernel, dilation, transposed = spec
    torch.manual_seed(0)
    cin, cout = groups * per_in * 2, groups * per_out * 2
    if transposed:
        layer = nn.ConvTranspose2d(cin, cout, kernel, groups=groups, dilation=dilation)
    else:
        layer = nn.Conv2d(cin, cout, kernel, groups=groups, dilation=dilation, padding=dilation * (kernel // 2))
    model = nn.Sequential(layer, nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))
    x = torch.randn(2, cin, 6, 6)
    model(x)
    adasparse.sparsify(model, target=target, min_params=0, init_threshold=r)
    report = adasparse.sparsity_report(model)
    assert report.pruned_params == sum(p.numel for p in adasparse.pruned_tensors(model))
    assert report.pruned_params == layer.weight.numel() + model[3].weight.numel()  # groups counted by numel
    assert 0 <= report.overall <= 1 and 0 <= report.overall_all_params <= 1
    assert report.total_zeros >= report.pruned_zeros
    model.eval()
    with torch.no_grad():
        expected = model(x)
    plain = copy.deepcopy(model)
    adasparse.desparsify(plain)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), expected)
    assert adasparse.sparsity_report(plain, min_params=0).pruned_zeros == report.pruned_zeros


@FAST
@given(target=st.floats(0.05, 0.99), rs=st.lists(st.floats(0.1, 4.0), min_size=3, max_size=3))
def test_calibrate_hits_any_target(target: float, rs: list[float]) -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(60, 50), nn.Linear(50, 40), nn.Linear(40, 30))
    adasparse.sparsify(model, target=0.5, min_params=0)
    with torch.no_grad():
        for parameter, value in zip(adasparse.threshold_parameters(model), rs):
            parameter.fill_(value)
    result = adasparse.calibrate(model, target)
    if result.reached:
        assert abs(result.after.pruned_zeros - target * result.after.pruned_params) <= 1
    else:
        assert all(p.item() == pytest.approx(5.0) or p.item() == 0 for p in adasparse.threshold_parameters(model))
