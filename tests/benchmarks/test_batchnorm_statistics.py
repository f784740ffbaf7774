"""benchmarks/batchnorm_statistics.py: a finished run's accuracy recomputed as the option does, checked against the
accuracy it recorded, and the table of the runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from adasparse.app.batchnorm import recompute_batchnorm, training_inputs
from adasparse.app.data import load_dataset
from adasparse.app.runs import load_run_weights
from adasparse.app.train import TrainConfig, run_training

from . import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("batchnorm_statistics")


def _run(root: Path, model: str, **options: object) -> Path:
    pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn")
    run = root / "runs" / f"digits-{model}" / "variant" / "t0.9" / "s1"
    config = TrainConfig(dataset="digits", model=model, epochs=2, batch_size=128, device="cpu", seed=1, **options)  # type: ignore[arg-type]
    run_training(config, run, progress=False, log=lambda _: None)
    return run


def test_a_run_is_rebuilt_checked_and_recomputed_like_the_option(script, tmp_path: Path) -> None:
    run = _run(tmp_path, "resnet2d")
    result = script.recompute_run(run, {})
    summary = json.loads((run / "summary.json").read_text())
    assert (result.model, result.variant, result.target, result.seed) == ("resnet2d (digits)", "variant", 0.9, 1)
    assert result.before == pytest.approx(summary["test_accuracy"], abs=1e-12)
    # The option's own run from the same seed reports what the script computed after the recomputation.
    option = run_training(
        TrainConfig(
            dataset="digits", model="resnet2d", epochs=2, batch_size=128, device="cpu", seed=1, recompute_batchnorm=True
        ),
        tmp_path / "option",
        progress=False,
        log=lambda _: None,
    )
    assert result.after == pytest.approx(option.test_accuracy, abs=1e-12)
    assert result.auto == result.before and result.mean_shift <= 3.0  # healthy: the default keeps them
    summary["test_accuracy"] += 0.01  # a record the rebuilt model does not reproduce is refused
    (run / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ValueError, match="the run recorded"):
        script.recompute_run(run, {})


def test_a_run_whose_statistics_auto_replaced_reads_its_summary(script, tmp_path: Path) -> None:
    run = _run(tmp_path, "resnet2d", recompute_batchnorm="never")
    summary = json.loads((run / "summary.json").read_text())
    # As a run the default recomputed leaves it: model_sparse.pt with the recomputed statistics, the summary with
    # the accuracy before and the staleness figures.
    healthy = script.recompute_run(run, {})
    weights = torch.load(run / "model_sparse.pt")
    model = load_run_weights(run).build_model()
    data = load_dataset("digits", seed=1)
    recompute_batchnorm(model, training_inputs(data.x_train, 128, data.test_transform))
    torch.save(model.state_dict(), run / "model_sparse.pt")
    summary["test_accuracy_running_batchnorm"] = 0.25
    summary["test_accuracy"] = healthy.after
    staleness = {"mean_shift": 80.0, "mean_layer": "a", "variance_ratio": 3e3, "variance_layer": "b"}
    summary["batchnorm_staleness"] = {**staleness, "recomputed": True}
    (run / "summary.json").write_text(json.dumps(summary))
    result = script.recompute_run(run, {})
    assert (result.before, result.auto, result.after) == (0.25, healthy.after, healthy.after)
    assert (result.mean_shift, result.variance_ratio) == (80.0, 3e3)
    summary["batchnorm_staleness"] = None  # made with "always": training's statistics are gone
    (run / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ValueError, match="always"):
        script.recompute_run(run, {})
    torch.save(weights, run / "model_sparse.pt")


def test_a_model_without_batchnorm_is_skipped(script, tmp_path: Path) -> None:
    assert script.recompute_run(_run(tmp_path, "mlp"), {}) is None


def test_the_table_gives_each_variants_mean_and_worst_seed(script) -> None:
    rows = [
        script.Recomputed("m (d)", "ours", 0.9, 0, 0.50, 0.95, 0.95, 40.0, 1.2),
        script.Recomputed("m (d)", "ours", 0.9, 1, 0.80, 0.80, 0.80, 0.1, 1.5),
        script.Recomputed("m (d)", "gmp", 0.9, 0, 0.70, 0.60, 0.70, 0.3, 1.1),
    ]
    text = script.table(rows)
    ours = "0.650 (0.500) | 0.875 (0.800) | 0.875 (0.800)"
    row = f"| m (d) | 0.9 | {ours} | 0.700 (0.700) | 0.600 (0.600) | 0.700 (0.700) |"
    assert row in text
    assert "Runs: 3; always recomputed: up 1, down 1, unchanged 1; largest moves -0.1000 and +0.4500." in text
    assert (
        "auto recomputes 1 of them: m (d) ours 0.9 seed 0 (mean 40 std off, variance 1.2x: 0.5000 -> 0.9500). The "
        "others' stored statistics lay at most 0.3 standard deviations and 1.5x from the recomputed ones." in text
    )
