"""The training loop: run directory, checkpoints, bit-for-bit resume, crash safety, validation."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from adasparse.app.train import METRIC_FIELDS, TrainConfig, load_run_config, run_training
from adasparse.core import _io

pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn")


def _config(**overrides: object) -> TrainConfig:
    base = dict(dataset="digits", model="mlp", epochs=4, batch_size=128, lr=0.05, device="cpu", seed=3)
    base.update(overrides)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _quiet(_: str) -> None:
    pass


class _Stop(Exception):
    pass


def _stop_after(epoch: int):
    def log(message: str) -> None:
        if message.startswith(f"epoch {epoch:3d}/"):
            raise _Stop(message)

    return log


def test_run_directory_contents(tmp_path: Path) -> None:
    result = run_training(_config(), tmp_path / "run", progress=False, log=_quiet)
    run = tmp_path / "run"
    for name in (
        "config.json",
        "metrics.csv",
        "checkpoint.pt",
        "report.json",
        "report.md",
        "summary.json",
        "model_sparse.pt",
    ):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert config["format"] == "adasparse.run" and config["config"]["sparsity"] == "projection"
    assert config["dataset"]["source"] == "sklearn.datasets.load_digits"
    assert config["dataset"]["num_classes"] == 10 and config["dataset"]["input_shape"] == [1, 8, 8]
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert list(rows[0]) == list(METRIC_FIELDS)
    assert all(0.0 <= float(r["actual_sparsity"]) <= 1.0 for r in rows)
    assert float(rows[0]["threshold_lr"]) == pytest.approx(2.0 / (4 * 12))  # the pruner's own step per optimizer step
    assert float(rows[-1]["lr"]) < 0.05
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 4 and "optimizer" in checkpoint and "rng" in checkpoint
    assert any(key.endswith("_mask") for key in checkpoint["model"])  # the last epochs fine-tune with fixed masks
    final = torch.load(run / "model_sparse.pt", weights_only=True)
    assert not any(key.endswith(("_threshold", "_orig")) for key in final)
    report = json.loads((run / "report.json").read_text())
    zeros = sum(int((final[layer["name"]] == 0).sum()) for layer in report["layers"])
    assert zeros == report["pruned_zeros"]
    assert abs(report["pruned_zeros"] - 0.9 * report["pruned_params"]) <= 1  # calibrated to the exact target
    summary = json.loads((run / "summary.json").read_text())
    assert summary["sparsity"] == pytest.approx(result.sparsity)
    assert summary["test_accuracy"] == pytest.approx(result.test_accuracy)
    assert 0.0 <= result.data_fraction < 1.0


def test_the_checkpoint_is_flushed_every_epoch_its_csv_views_only_at_the_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[tuple[str, bool]] = []
    real_write = _io.atomic_write_bytes

    def recorded(path, data, *, durable=True):
        writes.append((Path(path).name, durable))
        real_write(path, data, durable=durable)

    monkeypatch.setattr(_io, "atomic_write_bytes", recorded)
    run_training(_config(), tmp_path / "run", progress=False, log=_quiet)
    for name in ("checkpoint.pt", "metrics.csv", "layers.csv"):
        flags = [durable for written, durable in writes if written == name]
        expected = [True] * 4 if name == "checkpoint.pt" else [False] * 3 + [True]
        assert flags == expected, name
    assert all(durable for written, durable in writes if written not in ("metrics.csv", "layers.csv"))


def test_resume_after_interruption_is_bit_for_bit(tmp_path: Path) -> None:
    straight = run_training(_config(), tmp_path / "straight", progress=False, log=_quiet)
    with pytest.raises(_Stop):
        run_training(_config(), tmp_path / "broken", progress=False, log=_stop_after(2))
    assert torch.load(tmp_path / "broken" / "checkpoint.pt", weights_only=True)["epoch"] == 2
    assert not (tmp_path / "broken" / "model_sparse.pt").exists()
    resumed = run_training(TrainConfig(), tmp_path / "broken", resume=True, progress=False, log=_quiet)
    a = torch.load(tmp_path / "straight" / "model_sparse.pt", weights_only=True)
    b = torch.load(tmp_path / "broken" / "model_sparse.pt", weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    timing = {"epoch_seconds", "data_seconds"}
    for row_a, row_b in zip(straight.metrics, resumed.metrics):
        for key in row_a.keys() - timing:
            assert row_a[key] == row_b[key] or (math.isnan(row_a[key]) and math.isnan(row_b[key])), key
    assert resumed.test_accuracy == straight.test_accuracy


def test_crash_during_checkpoint_write_keeps_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    real_replace = _io.os.replace
    calls = {"checkpoints": 0}

    def flaky_replace(src: str, dst: str) -> None:
        if str(dst).endswith("checkpoint.pt"):
            calls["checkpoints"] += 1
            if calls["checkpoints"] == 3:
                raise OSError("simulated crash while writing the checkpoint")
        real_replace(src, dst)

    monkeypatch.setattr(_io.os, "replace", flaky_replace)
    with pytest.raises(OSError, match="simulated crash"):
        run_training(_config(), tmp_path / "run", progress=False, log=_quiet)
    monkeypatch.setattr(_io.os, "replace", real_replace)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]
    result = run_training(TrainConfig(), tmp_path / "run", resume=True, progress=False, log=_quiet)
    assert result.epochs_run == 4


def test_dense_run_and_finished_resume(tmp_path: Path) -> None:
    result = run_training(_config(sparsity="none", epochs=2), tmp_path / "dense", progress=False, log=_quiet)
    assert result.target is None and result.sparsity is None and result.test_accuracy > 0.5
    messages: list[str] = []
    again = run_training(TrainConfig(), tmp_path / "dense", resume=True, progress=False, log=messages.append)
    assert "already complete" in messages[0] and again.test_accuracy == result.test_accuracy


def test_refuses_to_overwrite_a_run(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="already exists and is not empty"):
        run_training(_config(), tmp_path / "run", progress=False, log=_quiet)
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"


def test_resume_of_a_foreign_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an adasparse run directory"):
        load_run_config(tmp_path)
    (tmp_path / "config.json").write_text('{"lr": 0.1}')
    with pytest.raises(ValueError, match="not written by adasparse"):
        run_training(TrainConfig(), tmp_path, resume=True, progress=False, log=_quiet)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"target": 1.0}, r"target must be in \[0, 1\)"),
        ({"epochs": -1}, "epochs must be an integer >= 1"),
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"dataset": "imagenet"}, "dataset must be one of"),
        ({"sparsity": "magnitude"}, "sparsity must be one of"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"lv": -1.0}, "lv must be >= 0"),
        ({"pthres": -5}, "pthres must be an integer >= 0"),
        ({"device": "tpu"}, "device must be auto, cpu, cuda or cuda:N"),
        ({"model": "resnet-50"}, "unknown model"),
        ({"optimizer": "adam"}, "optimizer must be one of 'sgd', 'adamw', got 'adam'"),
        ({"optimizer": "adamw", "lr": -1.0}, "lr must be > 0"),
        ({"optimizer": "adamw", "lr": None, "dataset": "cifar10", "model": None}, "optimizer adamw has no default lr"),
        ({"init_from": ""}, "init_from must be a run directory"),
    ],
)
def test_bad_configuration(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _config(**overrides).resolved()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_requested_without_cuda() -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        _config(device="cuda:0").resolved()


def test_tensorboard_logging_or_clear_skip(tmp_path: Path) -> None:
    messages: list[str] = []
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        run_training(_config(epochs=1, tensorboard=True), tmp_path / "run", progress=False, log=messages.append)
        assert any("tensorboard is not installed" in m for m in messages)
        assert not (tmp_path / "run" / "tensorboard").exists()
    else:
        run_training(_config(epochs=1, tensorboard=True), tmp_path / "run", progress=False, log=messages.append)
        assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_finetune_with_fixed_masks_is_exact_and_resumes_bit_for_bit(tmp_path: Path) -> None:
    config = _config(epochs=4, finetune=0.5, sparsity="constraint")
    straight = run_training(config, tmp_path / "straight", progress=False, log=_quiet)
    assert straight.sparsity == pytest.approx(0.9, abs=1 / 50_000)
    final = torch.load(tmp_path / "straight" / "model_sparse.pt", weights_only=True)
    assert not any(key.endswith(("_mask", "_orig", "_threshold")) for key in final)
    report = json.loads((tmp_path / "straight" / "report.json").read_text())
    assert sum(int((final[layer["name"]] == 0).sum()) for layer in report["layers"]) == report["pruned_zeros"]
    with pytest.raises(_Stop):
        run_training(config, tmp_path / "broken", progress=False, log=_stop_after(3))  # stopped after the freeze
    run_training(TrainConfig(), tmp_path / "broken", resume=True, progress=False, log=_quiet)
    resumed = torch.load(tmp_path / "broken" / "model_sparse.pt", weights_only=True)
    for key in final:
        assert torch.equal(final[key], resumed[key]), key


def test_adamw_takes_the_recipe_lr_and_resumes_bit_for_bit(tmp_path: Path) -> None:
    assert _config(optimizer="adamw", lr=None).resolved().lr == 3e-3  # the data set's AdamW learning rate
    assert _config(optimizer="adamw", lr=None, dataset="mnist1d").resolved().lr == 1e-2
    assert _config(lr=None).resolved().lr == 0.05  # SGD keeps the paper's
    config = _config(optimizer="adamw", lr=None)
    straight = run_training(config, tmp_path / "straight", progress=False, log=_quiet)
    assert straight.test_accuracy > 0.5
    state = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)["optimizer"]
    assert any("exp_avg" in entry for entry in state["state"].values())  # AdamW's moments, not a momentum buffer
    assert json.loads((tmp_path / "straight" / "config.json").read_text())["config"]["optimizer"] == "adamw"
    with pytest.raises(_Stop):
        run_training(config, tmp_path / "broken", progress=False, log=_stop_after(2))
    run_training(TrainConfig(), tmp_path / "broken", resume=True, progress=False, log=_quiet)
    a = torch.load(tmp_path / "straight" / "model_sparse.pt", weights_only=True)
    b = torch.load(tmp_path / "broken" / "model_sparse.pt", weights_only=True)
    assert all(torch.equal(a[key], b[key]) for key in a)


def _pretrain(tmp_path: Path) -> tuple[Path, float]:
    dense = tmp_path / "dense"
    result = run_training(_config(sparsity="none"), dense, progress=False, log=_quiet)
    return dense, result.test_accuracy


def test_init_from_starts_from_the_given_weights(tmp_path: Path) -> None:
    dense, dense_accuracy = _pretrain(tmp_path)
    assert dense_accuracy > 0.8
    # a learning rate too small to learn anything in one epoch: only the start can make the accuracy
    slow = dict(optimizer="adamw", lr=1e-4, epochs=2)
    scratch = run_training(_config(**slow), tmp_path / "scratch", progress=False, log=_quiet)
    pretrained = run_training(_config(**slow, init_from=str(dense)), tmp_path / "ft", progress=False, log=_quiet)
    assert scratch.metrics[0]["test_accuracy"] < 0.4  # chance is 0.1
    assert pretrained.metrics[0]["test_accuracy"] > 0.8 and pretrained.sparsity == pytest.approx(0.9, abs=1e-4)
    assert json.loads((tmp_path / "ft" / "config.json").read_text())["config"]["init_from"] == str(dense)
    # dense and barely moved: the final weights are the pre-trained ones
    still = run_training(
        _config(sparsity="none", lr=1e-9, epochs=1, init_from=str(dense)),
        tmp_path / "still",
        progress=False,
        log=_quiet,
    )
    assert still.test_accuracy == dense_accuracy
    before = torch.load(dense / "model_sparse.pt", weights_only=True)
    after = torch.load(tmp_path / "still" / "model_sparse.pt", weights_only=True)
    assert all(torch.allclose(before[key], after[key], atol=1e-6) for key in before)
    # one-shot + fine-tuning prunes the pretrained model before the first step and fine-tunes the whole run
    oneshot = run_training(
        _config(method="oneshot-ft", epochs=2, init_from=str(dense)), tmp_path / "oneshot", progress=False, log=_quiet
    )
    assert oneshot.metrics[0]["actual_sparsity"] == pytest.approx(0.9, abs=1e-4)
    lrs = [
        row["lr"]
        for row in run_training(
            _config(sparsity="none", epochs=4, init_from=str(dense)), tmp_path / "decay", progress=False, log=_quiet
        ).metrics
    ]
    assert lrs == sorted(lrs, reverse=True)  # one cosine decay, no warm restart, when fine-tuning


def test_init_from_refuses_what_is_not_a_finished_run_of_this_model(tmp_path: Path) -> None:
    dense, _ = _pretrain(tmp_path)
    (tmp_path / "notes").mkdir()
    cases = [
        (str(tmp_path / "notes"), {}, "init_from: .* is not an adasparse run directory"),
        (str(tmp_path / "missing"), {}, "init_from: .* is not an adasparse run directory"),
        (str(dense), {"model": "cnn2d"}, "init_from: .* is a digits/mlp run, this run is digits/cnn2d"),
    ]
    unfinished = tmp_path / "unfinished"
    with pytest.raises(_Stop):
        run_training(_config(sparsity="none"), unfinished, progress=False, log=_stop_after(1))
    cases.append((str(unfinished), {}, "init_from: .* has no model_sparse.pt"))
    for index, (source, overrides, message) in enumerate(cases):
        out = tmp_path / f"run{index}"
        with pytest.raises(ValueError, match=message):
            run_training(_config(init_from=source, **overrides), out, progress=False, log=_quiet)
        assert not out.exists()  # refused before the run directory is made


def test_resume_of_a_pretrained_start_is_bit_for_bit_without_reloading(tmp_path: Path, monkeypatch) -> None:
    dense, _ = _pretrain(tmp_path)
    config = _config(optimizer="adamw", lr=None, init_from=str(dense))
    straight = run_training(config, tmp_path / "straight", progress=False, log=_quiet)
    with pytest.raises(_Stop):
        run_training(config, tmp_path / "broken", progress=False, log=_stop_after(2))

    def no_reload(_: TrainConfig) -> None:
        raise AssertionError("a resumed run read init_from again")

    monkeypatch.setattr("adasparse.train.load_init_weights", no_reload)
    resumed = run_training(TrainConfig(), tmp_path / "broken", resume=True, progress=False, log=_quiet)
    a = torch.load(tmp_path / "straight" / "model_sparse.pt", weights_only=True)
    b = torch.load(tmp_path / "broken" / "model_sparse.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    assert resumed.test_accuracy == straight.test_accuracy


def test_checkpoint_written_before_later_options_resumes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(_Stop):
        run_training(_config(), run, progress=False, log=_stop_after(2))
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    for key in ("optimizer", "init_from", "recompute_batchnorm"):
        del state["config"][key]
    torch.save(state, run / "checkpoint.pt")
    saved = json.loads((run / "config.json").read_text())
    for key in ("optimizer", "init_from", "recompute_batchnorm"):
        del saved["config"][key]
    (run / "config.json").write_text(json.dumps(saved))
    assert run_training(TrainConfig(), run, resume=True, progress=False, log=_quiet).epochs_run == 4


def test_a_run_saved_before_the_bound_was_the_default_resumes_without_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(_Stop):
        run_training(_config(pruned_gradient_bound=None), run, progress=False, log=_stop_after(2))
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    saved = json.loads((run / "config.json").read_text())
    for config in (state["config"], saved["config"]):  # as written before either setting existed
        del config["pruned_gradient_bound"], config["pruned_gradient_bound_layers"]
    pruner = state["method"]["pruner"]
    del pruner["config"]["pruned_gradient_bound"], pruner["config"]["pruned_gradient_bound_layers"], pruner["bounded"]
    torch.save(state, run / "checkpoint.pt")
    (run / "config.json").write_text(json.dumps(saved))
    assert load_run_config(run).pruned_gradient_bound is None
    assert load_run_config(run).pruned_gradient_bound_layers == "all"
    assert run_training(TrainConfig(), run, resume=True, progress=False, log=_quiet).epochs_run == 4
    assert TrainConfig().pruned_gradient_bound == 3.0  # a new run has it
