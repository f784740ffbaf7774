"""benchmarks/batchnorm_statistics.py: a finished run's accuracy recomputed as the option does, checked against the
accuracy it recorded, and the table of the runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adasparse.app.train import TrainConfig, run_training

from . import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("batchnorm_statistics")


def _run(root: Path, model: str) -> Path:
    pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn")
    run = root / "runs" / f"digits-{model}" / "variant" / "t0.9" / "s1"
    config = TrainConfig(dataset="digits", model=model, epochs=2, batch_size=128, device="cpu", seed=1)
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
    summary["test_accuracy"] += 0.01  # a record the rebuilt model does not reproduce is refused
    (run / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ValueError, match="the run recorded"):
        script.recompute_run(run, {})


def test_a_model_without_batchnorm_is_skipped(script, tmp_path: Path) -> None:
    assert script.recompute_run(_run(tmp_path, "mlp"), {}) is None


def test_the_table_gives_each_variants_mean_and_worst_seed(script) -> None:
    rows = [
        script.Recomputed("m (d)", "ours", 0.9, 0, 0.90, 0.95),
        script.Recomputed("m (d)", "ours", 0.9, 1, 0.80, 0.80),
        script.Recomputed("m (d)", "gmp", 0.9, 0, 0.70, 0.60),
    ]
    text = script.table(rows)
    assert "| m (d) | 0.9 | 0.850 (0.800) | 0.875 (0.800) | 0.700 (0.700) | 0.600 (0.600) |" in text
    assert "Runs: 3; up 1, down 1, unchanged 1; largest moves -0.1000 and +0.0500." in text
