"""Runs that go wrong: a checkpoint that is not the run's, a diverging training, a target out of reach.

Each gets a clear answer instead of a traceback or a summary that claims what did not happen.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import adasparse
from adasparse.app.cli import main
from adasparse.app.train import TrainConfig, run_training

from ..commands import train_digits_mlp

pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn")


def _quiet(_: str) -> None:
    pass


def _config(**overrides: Any) -> TrainConfig:
    base: dict[str, Any] = dict(dataset="digits", model="mlp", epochs=2, batch_size=256, device="cpu")
    base.update(overrides)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Finished runs: the one we resume, one with another target and seed, one of another architecture."""
    root = tmp_path_factory.mktemp("runs")
    configs = {
        "ours": _config(),
        "other_target": _config(target=0.5, seed=1),
        "other_model": _config(model="cnn2d"),
    }
    for name, config in configs.items():
        run_training(config, root / name, progress=False, log=_quiet)
    return {name: root / name for name in configs}


def _interrupted(runs: dict[str, Path], tmp_path: Path, checkpoint: dict[str, Any] | str) -> Path:
    """Our run's config.json with ``checkpoint`` (a state, or the name of a run whose checkpoint to copy)."""
    run_dir = tmp_path / "interrupted"
    run_dir.mkdir()
    shutil.copy(runs["ours"] / "config.json", run_dir / "config.json")
    if isinstance(checkpoint, str):
        shutil.copy(runs[checkpoint] / "checkpoint.pt", run_dir / "checkpoint.pt")
    else:
        torch.save(checkpoint, run_dir / "checkpoint.pt")
    return run_dir


def _our_checkpoint(runs: dict[str, Path]) -> dict[str, Any]:
    return torch.load(runs["ours"] / "checkpoint.pt", weights_only=True)


def _cli_error(capsys: pytest.CaptureFixture[str], argv: list[str], status: int = 2) -> str:
    assert main(argv) == status
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# Resume trusts whatever checkpoint it finds.


def test_resume_refuses_a_checkpoint_of_another_target_and_seed(runs, tmp_path, capsys) -> None:
    run_dir = _interrupted(runs, tmp_path, "other_target")
    with pytest.raises(ValueError, match=r"differs from config\.json in target \(checkpoint 0\.5, run 0\.9\), seed"):
        run_training(TrainConfig(), run_dir, resume=True, progress=False, log=_quiet)
    assert "target" in _cli_error(capsys, ["train", "--resume", str(run_dir), "--quiet"])
    assert not (run_dir / "summary.json").exists()


def test_resume_refuses_a_checkpoint_of_another_architecture(runs, tmp_path, capsys) -> None:
    run_dir = _interrupted(runs, tmp_path, "other_model")
    with pytest.raises(ValueError, match=r"in model \(checkpoint 'cnn2d', run 'mlp'\)"):
        run_training(TrainConfig(), run_dir, resume=True, progress=False, log=_quiet)
    assert "model" in _cli_error(capsys, ["train", "--resume", str(run_dir), "--quiet"])


def test_resume_refuses_model_weights_of_another_architecture(runs, tmp_path, capsys) -> None:
    state = _our_checkpoint(runs)
    state["model"] = torch.load(runs["other_model"] / "checkpoint.pt", weights_only=True)["model"]
    run_dir = _interrupted(runs, tmp_path, state)
    with pytest.raises(ValueError, match="does not fit this run's model"):
        run_training(TrainConfig(), run_dir, resume=True, progress=False, log=_quiet)
    assert "does not fit" in _cli_error(capsys, ["train", "--resume", str(run_dir), "--quiet"])


@pytest.mark.parametrize("key", ["model", "optimizer", "method", "rng", "epoch", "config", "metrics"])
def test_resume_refuses_a_checkpoint_missing_a_key(runs, tmp_path, capsys, key: str) -> None:
    state = _our_checkpoint(runs)
    del state[key]
    run_dir = _interrupted(runs, tmp_path, state)
    with pytest.raises(ValueError, match=f"checkpoint.pt has no {key!r}"):
        run_training(TrainConfig(), run_dir, resume=True, progress=False, log=_quiet)
    assert key in _cli_error(capsys, ["train", "--resume", str(run_dir), "--quiet"])


def test_resume_refuses_a_checkpoint_with_a_missing_weight(runs, tmp_path) -> None:
    state = _our_checkpoint(runs)
    del state["model"][next(iter(state["model"]))]
    run_dir = _interrupted(runs, tmp_path, state)
    with pytest.raises(ValueError, match="does not fit this run's model"):
        run_training(TrainConfig(), run_dir, resume=True, progress=False, log=_quiet)


@pytest.mark.parametrize("epoch", [0, -3, 3, 99, 1.5, True, "2"])
def test_resume_refuses_an_out_of_range_epoch(runs, tmp_path, capsys, epoch: object) -> None:
    state = _our_checkpoint(runs)
    state["epoch"] = epoch
    run_dir = _interrupted(runs, tmp_path, state)
    with pytest.raises(ValueError, match=r"epoch must be an integer in \[1, 2\]"):
        run_training(TrainConfig(), run_dir, resume=True, progress=False, log=_quiet)
    assert "epoch" in _cli_error(capsys, ["train", "--resume", str(run_dir), "--quiet"])


def test_resume_refuses_metrics_that_disagree_with_the_epoch(runs, tmp_path) -> None:
    state = _our_checkpoint(runs)
    state["epoch"] = 1  # two metrics rows: the file was edited or mixed up
    run_dir = _interrupted(runs, tmp_path, state)
    with pytest.raises(ValueError, match="2 rows of metrics for epoch 1"):
        run_training(TrainConfig(), run_dir, resume=True, progress=False, log=_quiet)


def test_resume_of_the_run_own_checkpoint_still_works(runs, tmp_path) -> None:
    run_dir = _interrupted(runs, tmp_path, "ours")
    result = run_training(TrainConfig(), run_dir, resume=True, progress=False, log=_quiet)
    expected = json.loads((runs["ours"] / "summary.json").read_text())
    assert result.test_accuracy == expected["test_accuracy"] and result.sparsity == expected["sparsity"]


# Divergence is explained, in every mode.


def _sparsified() -> nn.Module:
    model = nn.Sequential(nn.Linear(100, 30), nn.ReLU(), nn.Linear(30, 40))
    adasparse.sparsify(model, target=0.5, min_params=100)
    return model


@pytest.mark.parametrize("mode", ["projection", "constraint", "adaptive"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_step_with_a_non_finite_threshold_says_training_diverged(mode: str, bad: float) -> None:
    model = _sparsified()
    criterion = adasparse.SparsityLoss(model, target=0.5, mode=mode, correction=True)
    with torch.no_grad():
        list(adasparse.threshold_parameters(model))[1].fill_(bad)
    with pytest.raises(ValueError, match=r"training diverged: the threshold of 2\.weight is (nan|inf)"):
        criterion.step()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_step_and_project_with_non_finite_weights_say_training_diverged(bad: float) -> None:
    model = _sparsified()
    criterion = adasparse.SparsityLoss(model, target=0.5, mode="projection", correction=True)
    with torch.no_grad():
        model[0].weight_orig[3, 4] = bad
    message = r"training diverged: 0\.weight has non-finite values \(NaN or inf\)"
    with pytest.raises(ValueError, match=message):
        criterion.step()
    with pytest.raises(ValueError, match=message):
        criterion.project()


@pytest.mark.parametrize(
    "options",
    [["-s", "projection"], ["-s", "constraint"], ["-s", "adaptive"], ["--method", "gmp"], ["--method", "dense"]],
    ids=["projection", "constraint", "adaptive", "gmp", "dense"],
)
def test_train_reports_divergence_in_one_line_in_every_mode(tmp_path, capsys, options: list[str]) -> None:
    argv = train_digits_mlp(2, "--batch-size", "256", "--lr", "1e6")
    argv += ["--quiet", "--no-dense-baseline", "--out", str(tmp_path / "run"), *options]
    error = _cli_error(capsys, argv)
    assert "training diverged in epoch 1 of 2" in error and "non-finite" in error, error
    assert "lr=1e+06" in error, error


def test_run_training_raises_on_divergence_of_a_dense_run(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"training diverged in epoch 1 of 2: layers\.\S+ has non-finite values"):
        run_training(_config(method="dense", lr=1e6), tmp_path / "run", progress=False, log=_quiet)


# A run that cannot reach its target must not claim it.


def test_a_run_with_one_optimizer_step_still_fixes_the_exact_target(tmp_path) -> None:
    result = run_training(_config(epochs=1, batch_size=100_000), tmp_path / "run", progress=False, log=_quiet)
    assert result.target_reached is True and result.sparsity == pytest.approx(0.9, abs=1 / 80_000)


def test_a_run_whose_calibration_cannot_reach_the_target_says_so(tmp_path, capsys, monkeypatch) -> None:
    from adasparse.control.pruner import Pruner

    def no_calibration(self):  # a target the thresholds cannot reach: calibration leaves them where they are
        return adasparse.sparsity_report(self.model), None

    monkeypatch.setattr(Pruner, "_calibrated", no_calibration)
    result = run_training(_config(epochs=1, batch_size=100_000), tmp_path / "lib", progress=False, log=_quiet)
    assert result.target_reached is False and abs(result.sparsity - 0.9) > 0.01
    assert json.loads((tmp_path / "lib" / "summary.json").read_text())["target_reached"] is False
    out = tmp_path / "cli"
    argv = train_digits_mlp(1, "--batch-size", "100000")
    assert main([*argv, "--quiet", "--no-dense-baseline", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "exact calibration" not in captured.out
    assert "target 0.9000 NOT reached" in captured.out
    assert "target 0.9000 not reached" in captured.err and len(captured.err.strip().splitlines()) == 1
    for name in ("summary.json", "report.json", "model_sparse.pt", "metrics.csv"):
        assert (out / name).is_file(), name


def test_without_calibration_a_missed_target_is_said_but_not_an_error(tmp_path, capsys) -> None:
    argv = train_digits_mlp(1, "--batch-size", "100000")
    original = ["-s", "adaptive", "--ramp", "0", "--finetune", "0", "--no-calibrate"]  # the paper's loss stops short
    assert main([*argv, *original, "--quiet", "--no-dense-baseline", "--out", str(tmp_path / "run")]) == 0
    assert "target 0.9000 NOT reached" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["target_reached"] is False


@pytest.mark.parametrize("budget", ["params", "flops"])
def test_a_calibrated_run_reaches_its_target_to_one_weight(tmp_path, budget: str) -> None:
    result = run_training(_config(model="cnn2d", budget=budget), tmp_path / "run", progress=False, log=_quiet)
    assert result.target_reached is True
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["target_reached"] is True


def test_a_dense_run_has_no_target_to_reach(tmp_path) -> None:
    result = run_training(_config(sparsity="none"), tmp_path / "run", progress=False, log=_quiet)
    assert result.target is None and result.target_reached is None
