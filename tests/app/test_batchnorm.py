"""BatchNorm statistics recomputed on training inputs (app/batchnorm.py), and ``adasparse train``'s option for it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from adasparse.app.batchnorm import (
    STALE_MEAN,
    STALE_VARIANCE,
    has_batchnorm,
    recompute_batchnorm,
    recompute_stale_batchnorm,
    training_inputs,
)
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


def _with_statistics(batches: list[torch.Tensor], mean_shift: float, variance_factor: float) -> nn.Sequential:
    """A model whose stored statistics are those recomputed on ``batches`` moved by ``mean_shift`` of their standard
    deviation in channel 1 and with channel 2's variance (``+ eps``) times ``variance_factor``."""
    model = _model().eval()
    norm = model[0]
    recompute_batchnorm(model, batches)
    mean, variance = norm.running_mean.clone(), norm.running_var.clone()
    mean[1] += mean_shift * (variance[1] + norm.eps).sqrt()
    variance[2] = (variance[2] + norm.eps) * variance_factor - norm.eps
    norm.running_mean.copy_(mean)
    norm.running_var.copy_(variance)
    norm.num_batches_tracked.fill_(57)
    return model


def _inputs() -> list[torch.Tensor]:
    torch.manual_seed(1)
    inputs = torch.randn(256, 3) * torch.tensor([1.0, 5.0, 0.1]) + 2.0
    return [inputs[:100], inputs[100:200], inputs[200:]]


@pytest.mark.parametrize(("mean_shift", "variance_factor"), [(0.5, 1.5), (2.9, 1.0), (0.0, 3.9), (0.0, 1 / 3.9)])
def test_healthy_statistics_are_kept_bit_for_bit(mean_shift: float, variance_factor: float) -> None:
    inputs = _inputs()
    model = _with_statistics(inputs, mean_shift, variance_factor)
    stored = {key: value.clone() for key, value in model.state_dict().items()}
    staleness = recompute_stale_batchnorm(model, inputs)
    assert not staleness.recomputed and not staleness.stale
    assert staleness.mean_shift == pytest.approx(mean_shift, abs=1e-3)
    assert staleness.variance_ratio == pytest.approx(max(variance_factor, 1 / variance_factor), rel=1e-3)
    for key, value in model.state_dict().items():
        assert torch.equal(value, stored[key]), key  # the batch counter too


@pytest.mark.parametrize(
    ("mean_shift", "variance_factor", "layer"),
    [
        (STALE_MEAN + 0.1, 1.0, "mean"),
        (0.0, STALE_VARIANCE + 0.1, "variance"),
        (0.0, 1 / (STALE_VARIANCE + 0.1), "variance"),
    ],
)
def test_stale_statistics_are_replaced_by_those_of_the_inputs(
    mean_shift: float, variance_factor: float, layer: str
) -> None:
    inputs = _inputs()
    model = _with_statistics(inputs, mean_shift, variance_factor)
    staleness = recompute_stale_batchnorm(model, inputs)
    assert staleness.recomputed and staleness.stale
    assert getattr(staleness, f"{layer}_layer") == "0"
    reference = _with_statistics(inputs, 0.0, 1.0)[0]
    assert torch.equal(model[0].running_mean, reference.running_mean)
    assert torch.equal(model[0].running_var, reference.running_var)
    assert "standard deviations off (0)" in staleness.describe() or layer == "variance"


def test_statistics_that_are_not_finite_are_stale() -> None:
    inputs = _inputs()
    model = _with_statistics(inputs, 0.0, 1.0)
    model[0].running_mean[0] = float("nan")
    staleness = recompute_stale_batchnorm(model, inputs)
    assert staleness.recomputed and staleness.mean_shift == float("inf")
    assert torch.isfinite(model[0].running_mean).all()


def test_the_staleness_check_needs_inputs_and_then_touches_nothing() -> None:
    model = _with_statistics(_inputs(), 10.0, 1.0)
    stored = model[0].running_mean.clone()
    with pytest.raises(ValueError, match="at least one batch"):
        recompute_stale_batchnorm(model, iter([]))
    assert torch.equal(model[0].running_mean, stored)


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
    plain, _ = _run(tmp_path, "plain", recompute_batchnorm="never")
    result, messages = _run(tmp_path, "recomputed", recompute_batchnorm=True)  # the option's boolean form: always
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


def test_a_run_measures_its_statistics_and_auto_replaces_only_stale_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import adasparse.app.finish as finish

    never, messages = _run(tmp_path, "never")  # the default: measured, not replaced
    assert never.config["recompute_batchnorm"] == "never" and not never.batchnorm_staleness["recomputed"]
    assert not any(message.startswith("warning: the BatchNorm statistics") for message in messages)  # healthy
    auto, messages = _run(tmp_path, "auto", recompute_batchnorm="auto")
    assert auto.batchnorm_staleness == never.batchnorm_staleness
    assert auto.test_accuracy == never.test_accuracy and auto.test_accuracy_running_batchnorm is None
    assert not any(message.startswith("BatchNorm statistics recomputed") for message in messages)
    kept, before = torch.load(tmp_path / "auto" / "model_sparse.pt"), torch.load(tmp_path / "never" / "model_sparse.pt")
    assert kept.keys() == before.keys() and all(torch.equal(kept[key], before[key]) for key in kept)

    check = finish.recompute_stale_batchnorm

    def corrupted_first(model: nn.Module, batches, **options):  # as a run whose weights blew up leaves them
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_var.fill_(1e21)
        return check(model, batches, **options)

    monkeypatch.setattr(finish, "recompute_stale_batchnorm", corrupted_first)
    reported, messages = _run(tmp_path, "reported")  # never: the stale statistics are kept and reported
    assert any(message.startswith("warning: the BatchNorm statistics training left are stale") for message in messages)
    assert reported.batchnorm_staleness["variance_ratio"] > 1e10 and not reported.batchnorm_staleness["recomputed"]
    assert reported.test_accuracy_running_batchnorm is None
    saved = torch.load(tmp_path / "reported" / "model_sparse.pt")
    assert all(value.eq(1e21).all() for key, value in saved.items() if key.endswith("running_var"))
    stale, messages = _run(tmp_path, "stale", recompute_batchnorm="auto")
    always, _ = _run(tmp_path, "always", recompute_batchnorm="always")
    assert stale.test_accuracy_running_batchnorm == never.test_accuracy  # what was measured before the check
    assert any(message.startswith("BatchNorm statistics recomputed (stale: ") for message in messages)
    recomputed, reference = (
        torch.load(tmp_path / "stale" / "model_sparse.pt"),
        torch.load(tmp_path / "always" / "model_sparse.pt"),
    )
    assert all(torch.equal(recomputed[key], reference[key]) for key in reference)
    assert stale.test_accuracy == always.test_accuracy and stale.batchnorm_staleness["recomputed"]


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
