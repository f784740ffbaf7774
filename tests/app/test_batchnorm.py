"""BatchNorm statistics recomputed on training inputs (app/batchnorm.py), and ``adasparse train``'s option for it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from adasparse.app.batchnorm import has_batchnorm, recompute_batchnorm, training_inputs
from adasparse.app.train import TrainConfig, run_training


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 2))


def test_statistics_become_those_of_the_inputs_whatever_training_left() -> None:
    model = _model().eval()
    norm = model[0]
    norm.running_mean.fill_(1e10)  # what a run whose weights grew by orders of magnitude leaves behind
    norm.running_var.fill_(1e21)
    inputs = torch.randn(64, 3) * torch.tensor([1.0, 5.0, 0.1]) + torch.tensor([3.0, -2.0, 0.0])
    recompute_batchnorm(model, [inputs])
    torch.testing.assert_close(norm.running_mean, inputs.mean(0))
    torch.testing.assert_close(norm.running_var, inputs.var(0))
    assert not model.training and norm.momentum == 0.1  # mode and momentum as they were


def test_equal_batches_are_averaged_not_decayed() -> None:
    model = _model().train()
    first, second = torch.randn(32, 3), torch.randn(32, 3) + 4.0
    recompute_batchnorm(model, [first, second])
    torch.testing.assert_close(model[0].running_mean, (first.mean(0) + second.mean(0)) / 2)
    assert model.training


def test_no_batches_is_an_error_and_leaves_the_statistics() -> None:
    model = _model()
    model[0].running_mean.fill_(3.0)
    with pytest.raises(ValueError, match="at least one batch"):
        recompute_batchnorm(model, iter([]))
    assert torch.equal(model[0].running_mean, torch.full((3,), 3.0))


def test_batches_may_come_from_a_generator() -> None:
    made: list[int] = []

    def batches():
        for index in range(3):
            made.append(index)
            yield torch.randn(8, 3)

    recompute_batchnorm(_model(), batches())
    assert made == [0, 1, 2]


def test_which_models_have_statistics_to_recompute() -> None:
    assert has_batchnorm(_model())
    assert not has_batchnorm(nn.Sequential(nn.Linear(3, 2)))
    assert not has_batchnorm(nn.Sequential(nn.BatchNorm1d(3, track_running_stats=False)))


def test_training_inputs_keep_their_order_and_go_through_the_transform() -> None:
    inputs = torch.arange(10).reshape(10, 1)
    seen: list[object] = []

    def transform(batch: torch.Tensor, generator: object) -> torch.Tensor:
        seen.append(generator)
        return batch.float() * 2

    lazy = training_inputs(inputs, 4, transform)
    assert seen == []  # nothing transformed before it is read
    batches = list(lazy)
    assert [batch.tolist() for batch in batches] == [
        [[0.0], [2.0], [4.0], [6.0]],
        [[8.0], [10.0], [12.0], [14.0]],
        [[16.0], [18.0]],
    ]
    assert seen == [None, None, None]  # no augmentation: the transform gets no generator
    assert next(training_inputs(inputs, 10)).dtype == torch.float32
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        training_inputs(inputs, 0)


def _run(tmp_path: Path, name: str, **overrides: object):
    pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn")
    base = dict(dataset="digits", model="resnet2d", epochs=2, batch_size=128, device="cpu", seed=1)
    base.update(overrides)
    messages: list[str] = []
    result = run_training(TrainConfig(**base), tmp_path / name, progress=False, log=messages.append)  # type: ignore[arg-type]
    return result, messages


def test_train_recomputes_the_statistics_of_the_finished_model_and_keeps_the_accuracy_before(tmp_path: Path) -> None:
    plain, _ = _run(tmp_path, "plain")
    result, messages = _run(tmp_path, "recomputed", recompute_batchnorm=True)
    assert plain.test_accuracy_running_batchnorm is None
    # Training is the same; only the statistics of the finished model differ.
    assert result.test_accuracy_running_batchnorm == plain.test_accuracy
    assert any(message.startswith("BatchNorm statistics recomputed") for message in messages)
    summary = json.loads((tmp_path / "recomputed" / "summary.json").read_text())
    assert summary["test_accuracy_running_batchnorm"] == plain.test_accuracy
    saved = torch.load(tmp_path / "recomputed" / "model_sparse.pt")
    before = torch.load(tmp_path / "plain" / "model_sparse.pt")
    means = [key for key in saved if key.endswith("running_mean")]
    assert means and any(not torch.equal(saved[key], before[key]) for key in means)
    weights = [key for key in saved if key.endswith("weight")]
    assert all(torch.equal(saved[key], before[key]) for key in weights)


def test_a_model_without_batchnorm_is_left_alone(tmp_path: Path) -> None:
    result, messages = _run(tmp_path, "mlp", model="mlp", recompute_batchnorm=True)
    assert result.test_accuracy_running_batchnorm is None
    assert not any(message.startswith("BatchNorm statistics recomputed") for message in messages)


def test_the_summary_credits_the_recomputation_not_the_calibration(capsys: pytest.CaptureFixture[str]) -> None:
    from adasparse.app.cli_train import print_summary
    from adasparse.app.finish import RunResult

    result = RunResult(
        "run",
        {"method": "adasparse"},
        2,
        0.939,
        0.471,
        0.98,
        0.98,
        0.98,
        None,
        None,
        1.0,
        0.1,
        target_reached=True,
        test_accuracy_running_batchnorm=0.471,
    )
    print_summary(result, None)
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("test accuracy"))
    assert line == "test accuracy: 0.9390 at 0.9800 sparsity (0.4710 with the BatchNorm statistics training left)"
