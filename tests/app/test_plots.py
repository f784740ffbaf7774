"""Run plots: PNG files with matplotlib, a clean skip without it."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

import adasparse
from adasparse.app import plots


def _report() -> adasparse.SparsityReport:
    model = adasparse.sparsify(nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32)), target=0.9)
    return adasparse.sparsity_report(model)


METRICS = [
    {"epoch": 1, "test_accuracy": 0.5, "train_accuracy": 0.4, "actual_sparsity": 0.5, "analytic_sparsity": 0.6},
    {"epoch": 2, "test_accuracy": 0.7, "train_accuracy": 0.8, "actual_sparsity": 0.8, "analytic_sparsity": 0.85},
]


def test_plots_are_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    assert plots.plot_layer_sparsity(_report(), tmp_path / "layers.png")
    assert plots.plot_curves(METRICS, tmp_path / "curves.png")
    for name in ("layers.png", "curves.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_matplotlib_nothing_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plots, "_pyplot", lambda: None)
    assert not plots.plot_layer_sparsity(_report(), tmp_path / "layers.png")
    assert not plots.plot_curves(METRICS, tmp_path / "curves.png")
    assert list(tmp_path.iterdir()) == []
