"""benchmarks/train_step.py: the variants it times and a subset of them."""

from __future__ import annotations

import pytest
import torch

import adasparse

from . import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("train_step")


def test_the_bounded_variant_is_the_pruner_with_the_bound(script) -> None:
    make = script.CASES["MLP 784-300-100-10"][0]
    bounded = script._setup("Pruner, pruned-gradient bound 3", make)
    plain = script._setup("Pruner", make)
    assert [t.gradient_bound for t in adasparse.pruned_tensors(bounded.model)] == [3.0, 3.0, 3.0]
    plain.model(torch.randn(2, 784))  # the default bounds the layers a norm reads: none in the MLP
    assert plain.criterion.bounded_layers == []
    assert [t.gradient_bound for t in adasparse.pruned_tensors(plain.model)] == [None, None, None]


def test_a_subset_of_variants_is_timed_beside_the_dense_model(script) -> None:
    result = script.measure("MLP 784-300-100-10", 8, warmup=1, variants=("Pruner, pruned-gradient bound 3",))
    assert set(result) == {"dense_ms", "dense", "Pruner, pruned-gradient bound 3"}
    assert result["dense"] == 1.0 and result["Pruner, pruned-gradient bound 3"] > 0.0


def test_the_default_pruner_bounds_the_convolution_batchnorm_reads_in_the_zoo_cnn2d(script) -> None:
    make, shape, _ = script.CASES["CNN2d of the zoo (digits)"]
    plain = script._setup("Pruner", make)
    plain.model(torch.randn(2, *shape))
    assert plain.criterion.bounded_layers == ["features.3.weight"]
