"""benchmarks/fast_allocation_accuracy.py: the given counts reach the L1 baseline's pruning only while it trains."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from adasparse.app import methods

from . import load_script


def test_a_missing_dense_run_is_named_and_the_baseline_is_left_as_it_was(tmp_path: Path) -> None:
    script = load_script("fast_allocation_accuracy")
    (tmp_path / "digits-cnn2d" / "dense").mkdir(parents=True)
    original = methods.magnitude_channel_prune
    args = argparse.Namespace(runs=tmp_path, seeds=[0], budget=0.5)
    with pytest.raises(SystemExit, match="no dense run .*digits-cnn2d/dense/t0.5/s0"):
        script.trained("digits", "cnn2d", [8, 16, 32], args)
    assert methods.magnitude_channel_prune is original
