"""benchmarks/allocation_latency.py: its random allocations are at the budget, rounded as asked, and the shrunk
model it builds for one costs what the cost model says."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from . import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("allocation_latency")


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 48, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(48 * 4, 10),
    ).eval()


@pytest.mark.parametrize("multiple", [1, 8])
def test_allocations_are_at_the_budget_and_their_models_cost_what_the_cost_model_says(script, multiple: int) -> None:
    model, example = _model(), torch.randn(4, 1, 8, 8)
    allocations = script.Allocations(model, example)
    assert allocations.sizes == [32, 48]
    found = script.sample(allocations, 0.5, 6, multiple, 0.03, seed=0)
    assert found, "no allocation within the tolerance"
    dense_macs = script._macs(model, example)
    for counts, removed in found.items():
        assert abs(removed - 0.5) <= 0.03
        assert all(count % multiple == 0 and 1 <= count <= size for count, size in zip(counts, allocations.sizes))
        shrunk = allocations.build(list(counts))
        assert [m.out_channels for m in shrunk.modules() if isinstance(m, nn.Conv2d)] == list(counts)
        assert 1.0 - script._macs(shrunk, example) / dense_macs == pytest.approx(removed, abs=1e-9)
        assert shrunk(example).shape == (4, 10)


def test_a_budget_out_of_reach_finds_no_allocation(script) -> None:
    allocations = script.Allocations(_model(), torch.randn(4, 1, 8, 8))
    # the classifier is not pruned and both sets keep at least one channel: removing all the FLOPs is out of reach
    assert script.sample(allocations, 0.9999, 3, 1, 1e-6, seed=0) == {}


def test_the_grid_finds_every_allocation_at_the_budget_on_its_points(script) -> None:
    allocations = script.Allocations(_model(), torch.randn(4, 1, 8, 8))
    found = script.grid(allocations, 0.5, 5, 0.01)
    assert found, "no allocation within the tolerance"
    points = {1, 9, 16, 24, 32}  # five evenly spaced counts of the 32-channel set; the 48-channel set is solved
    expected = {
        (first, second): allocations.flops_removed([first, second])
        for first in points
        for second in range(1, 49)
        if abs(allocations.flops_removed([first, second]) - 0.5) <= 0.01
    }
    # The solved set's count nearest the budget on each side: every point that has one is found, nothing else is.
    assert {first for first, _ in found} == {first for first, _ in expected}
    assert set(found) <= set(expected)
    assert all(found[counts] == expected[counts] for counts in found)
    with pytest.raises(ValueError, match="limit 3"):
        script.grid(allocations, 0.5, 5, 0.01, limit=3)


def test_models_are_timed_as_they_are_or_in_onnx_runtime(script) -> None:
    import argparse

    model, example = _model(), torch.randn(4, 1, 8, 8)
    assert script._runnable(model, example, argparse.Namespace(onnxruntime=False)) is model
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    exported = script._runnable(model, example, argparse.Namespace(onnxruntime=True))
    with torch.inference_mode():
        assert torch.allclose(exported(example), model(example), atol=1e-5)
