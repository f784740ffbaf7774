"""Every method trains end to end through run_training and ends at the exact target."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from adasparse.app.train import TrainConfig, run_training

pytest.importorskip("sklearn")


def _run(tmp_path: Path, **options: object):
    settings: dict = {"dataset": "digits", "model": "mlp", "epochs": 4, "batch_size": 128, "device": "cpu"}
    config = TrainConfig(**{**settings, **options})
    return run_training(config, tmp_path / "run", progress=False, log=lambda message: None)


@pytest.mark.parametrize("method", ["gmp", "gmp-layer", "oneshot", "oneshot-ft"])
def test_baselines_reach_the_target_exactly(tmp_path: Path, method: str) -> None:
    result = _run(tmp_path, method=method, target=0.8)
    assert result.sparsity == pytest.approx(0.8, abs=1 / 40_000)
    assert result.test_accuracy > 0.5
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    sparsity = [float(r["actual_sparsity"]) for r in rows]
    if method == "oneshot":
        assert sparsity == [0.0] * 4 and result.sparsity_before_calibration == 0.0
    elif method == "oneshot-ft":
        assert sparsity[0] == 0.0 and sparsity[1:] == pytest.approx([0.8] * 3, abs=1e-4)  # pruned after epoch 2
    else:
        assert sparsity == sorted(sparsity) and sparsity[-1] == pytest.approx(0.8, abs=1e-4)


def test_flops_budget_reports_compute_sparsity(tmp_path: Path) -> None:
    result = _run(tmp_path, model="cnn2d", budget="flops", target=0.7)
    assert result.flops_sparsity == pytest.approx(0.7, abs=1e-3)  # calibrated on the compute budget
    assert result.sparsity != pytest.approx(0.7, abs=1e-3)


def test_dense_method(tmp_path: Path) -> None:
    result = _run(tmp_path, method="dense")
    assert result.sparsity is None and result.flops_sparsity is None


def test_ours_with_all_options(tmp_path: Path) -> None:
    result = _run(
        tmp_path,
        sparsity="constraint",
        correction=True,
        ramp=0.3,
        task_gradient=False,
        threshold_update="optimizer",
        threshold_schedule="constant",
    )
    assert result.sparsity == pytest.approx(0.9, abs=1 / 40_000)
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert float(rows[-1]["threshold_lr"]) == pytest.approx(0.05 / 100)  # not annealed
    layers = list(csv.DictReader((tmp_path / "run" / "layers.csv").open()))
    assert {int(r["epoch"]) for r in layers} == {1, 2, 3, 4}


@pytest.mark.parametrize("method", ["l1-channels", "l1-channels-uniform"])
def test_l1_channel_methods_reach_the_budget_within_a_channel(tmp_path: Path, method: str) -> None:
    pytest.importorskip("torch_pruning")
    result = _run(tmp_path, model="cnn2d", method=method, granularity="channel", budget="flops", target=0.5)
    assert result.target_reached is True
    assert result.sparsity == result.flops_sparsity == pytest.approx(0.5, abs=0.03)
    assert result.test_accuracy > 0.5


@pytest.mark.parametrize("method", ["adasparse", "l1-channels"])
def test_a_latency_budget_measures_the_table_once_and_holds_it(tmp_path: Path, method: str) -> None:
    pytest.importorskip("torch_pruning")
    from adasparse import LatencyTable

    result = _run(
        tmp_path,
        model="cnn2d",
        method=method,
        granularity="channel",
        budget="latency",
        latency_batch=4,
        target=0.15,  # at batch 4 even one channel per set removes only about 0.3 of the time (per-operator cost)
        epochs=2,
    )
    path = tmp_path / "run" / "latency-table.json"
    table = LatencyTable.load(path)
    assert table.batch == 4 and table.multiple == 8
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert result.target_reached is True
    assert report["shrunk"]["latency"] == pytest.approx(result.sparsity, abs=1e-9)
    assert abs(report["shrunk"]["latency"] - 0.15) <= 0.1  # within one channel of a coarse measured time budget


def test_a_resumed_run_reads_its_latency_table_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch_pruning")
    from adasparse.app import train

    config = TrainConfig(
        dataset="digits",
        model="cnn2d",
        epochs=2,
        batch_size=128,
        device="cpu",
        granularity="channel",
        budget="flops",
        channel_multiple=8,
        latency_batch=4,
        target=0.5,
    )
    run_training(config, tmp_path / "run", progress=False, log=lambda message: None)
    saved = (tmp_path / "run" / "latency-table.json").read_text()

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a resumed run measured its latency table again")

    monkeypatch.setattr(train, "measure_latency", refuse)
    (tmp_path / "run" / "summary.json").unlink()
    (tmp_path / "run" / "model_sparse.pt").unlink()
    run_training(config, tmp_path / "run", resume=True, progress=False, log=lambda message: None)
    assert (tmp_path / "run" / "latency-table.json").read_text() == saved
