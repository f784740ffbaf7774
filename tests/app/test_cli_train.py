"""`adasparse train`'s options (app/cli_train.py): the library's defaults, every option reaching the run's
configuration, the help, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adasparse.app.cli import build_parser, main
from adasparse.app.cli_train import config_from_args
from adasparse.app.train import TrainConfig

from ..cifar_sample import write_cifar_archive
from ..commands import one_line_error, train_digits_mlp

pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn")


def test_the_defaults_are_the_library_defaults() -> None:
    parser = build_parser()
    assert config_from_args(parser.parse_args(["train"])) == TrainConfig()
    assert config_from_args(parser.parse_args(["train", "--gpu", "1"])).device == "cuda:1"
    assert config_from_args(parser.parse_args(["train", "--no-cuda"])).device == "cpu"


def test_projection_slope_flag(capsys: pytest.CaptureFixture[str]) -> None:
    config = config_from_args(build_parser().parse_args(["train", "--projection-slope", "measured"]))
    assert config.projection_slope == "measured" and config.pruner_config().projection_slope == "measured"
    one_line_error(capsys, ["train", "--projection-slope", "steep"], "invalid choice: 'steep'")


def test_channel_multiple_flag(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    argv = ["train", "--granularity", "channel", "--channel-multiple", "8"]
    config = config_from_args(parser.parse_args(argv))
    assert config.channel_multiple == 8 and config.pruner_config().channel_multiple == 8
    one_line_error(capsys, [*argv[:3], "--channel-multiple", "0"], "channel_multiple must be an integer >= 1, got 0")
    one_line_error(capsys, ["train", "--channel-multiple", "8"], "it needs granularity='channel'")
    # Rounded channel counts get the longer fine-tuning unless --finetune says otherwise.
    assert config.finetune is None and config.resolved().finetune == 0.5
    assert config_from_args(parser.parse_args(["train"])).resolved().finetune == 0.2
    explicit = config_from_args(parser.parse_args([*argv, "--finetune", "0.3"]))
    assert explicit.resolved().finetune == 0.3 and explicit.resolved().pruner_config().validated().finetune == 0.3
    one_line_error(capsys, ["train", "--finetune", "1.5"], "finetune must be in [0, 1), got 1.5")


def test_recompute_batchnorm_flag() -> None:
    parser = build_parser()

    def chosen(*argv: str) -> str:
        return config_from_args(parser.parse_args(["train", *argv])).recompute_batchnorm

    assert chosen() == "never" == TrainConfig().recompute_batchnorm  # the recorded pages were measured so
    assert chosen("--recompute-batchnorm") == "always"  # the flag alone, as before "auto" existed
    assert chosen("--no-recompute-batchnorm") == "never"
    assert [chosen("--recompute-batchnorm", choice) for choice in ("auto", "always", "never")] == [
        "auto",
        "always",
        "never",
    ]
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--recompute-batchnorm", "sometimes"])
    # The boolean values a configuration written before "auto" holds read as before.
    assert TrainConfig(recompute_batchnorm=True).resolved().recompute_batchnorm == "always"  # type: ignore[arg-type]
    assert TrainConfig(recompute_batchnorm=False).resolved().recompute_batchnorm == "never"  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="recompute_batchnorm must be one of 'auto', 'always', 'never'"):
        TrainConfig(recompute_batchnorm="sometimes").resolved()


def test_pruned_gradient_bound_flags(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()

    def chosen(*argv: str) -> TrainConfig:
        return config_from_args(parser.parse_args(["train", *argv]))

    default = chosen()
    assert (default.pruned_gradient_bound, default.pruned_gradient_bound_layers) == (3.0, "normalized")
    assert chosen("--pruned-gradient-bound", "none").pruned_gradient_bound is None
    assert chosen("--pruned-gradient-bound", "10").pruned_gradient_bound == 10.0
    assert chosen("--pruned-gradient-bound-layers", "all").pruner_config().pruned_gradient_bound_layers == "all"
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--pruned-gradient-bound", "tight"])
    assert "expected a number or none, got 'tight'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--pruned-gradient-bound-layers", "batchnorm"])
    assert "invalid choice: 'batchnorm' (choose from 'normalized', 'all')" in capsys.readouterr().err
    one_line_error(capsys, ["train", "--pruned-gradient-bound", "0"], "pruned_gradient_bound must be")


def test_original_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fixed"
    argv = train_digits_mlp(
        2,
        *("-s", "fixed", "--starget", "0.8", "--lv", "30", "--pthres", "5000", "--lr", "0.02", "--batch-size", "100"),
        *("--no-cuda", "--out", str(out), "--quiet", "--no-calibrate", "--no-dense-baseline"),
    )
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())["config"]
    assert (config["sparsity"], config["target"], config["lv"], config["pthres"]) == ("fixed", 0.8, 30.0, 5000)
    assert (config["lr"], config["batch_size"], config["device"], config["calibrate"]) == (0.02, 100, "cpu", False)
    report = json.loads((out / "report.json").read_text())
    assert all(layer["numel"] >= 5000 for layer in report["layers"])
    assert not (out / "dense").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_gpu_flag_without_cuda(capsys: pytest.CaptureFixture[str]) -> None:
    one_line_error(capsys, ["train", "--gpu", "0"], "CUDA is not available")


def test_wrn_recipe_wires_up_on_a_cifar_format_sample(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_cifar_archive(tmp_path / "data", "cifar100", per_batch=16)
    out = tmp_path / "wrn"
    argv = ["train", "--dataset", "cifar100", "--data-dir", str(tmp_path / "data"), "--model", "wrn-10-1"]
    assert main([*argv, "--epochs", "1", "--batch-size", "8", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "sparsity: target 0.9000" in text and ", dense" not in text  # no dense baseline for CIFAR by default
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["lr"] == 0.1 and config["dataset"]["train_size"] == 32


def test_module_entry_point_help() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "adasparse", "train", "--help"], capture_output=True, text=True, check=False, timeout=120
    )
    assert completed.returncode == 0
    for option in (
        "--dataset",
        "--sparsity",
        "--starget",
        "--lv",
        "--pthres",
        "--epochs",
        "--lr",
        "--batch-size",
        "--gpu",
        "--no-cuda",
        "--model",
        "--device",
        "--seed",
        "--data-dir",
        "--download",
        "--out",
        "--resume",
        "--calibrate",
        "--workers",
        "--quiet",
        "--optimizer",
        "--init-from",
    ):
        assert option in completed.stdout, option
    assert "(default: None)" not in completed.stdout  # such defaults are filled in; their help says how
    assert "0.5 when channel_multiple > 1" in " ".join(completed.stdout.split())


def test_method_and_controller_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "orig"
    argv = train_digits_mlp(
        2,
        *("-s", "adaptive", "--no-correction", "--ramp", "0", "--finetune", "0", "--threshold-schedule", "cosine"),
        *("--no-task-gradient", "--init-fraction", "0.5", "--dual-step", "1.5", "--budget", "flops"),
        *("--out", str(out), "--quiet", "--no-dense-baseline"),
    )
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())["config"]
    assert (config["correction"], config["ramp"], config["finetune"], config["threshold_schedule"]) == (
        False,
        0.0,
        0.0,
        "cosine",
    )
    assert (config["task_gradient"], config["init_fraction"], config["dual_step"], config["budget"]) == (
        False,
        0.5,
        1.5,
        "flops",
    )
    assert "compute:" in capsys.readouterr().out
    gmp = tmp_path / "gmp"
    assert main(train_digits_mlp(2, "--method", "gmp", "--out", str(gmp), "--quiet", "--no-dense-baseline")) == 0
    assert "sparsity: target 0.9000, reached 0.9000" in capsys.readouterr().out
    one_line_error(capsys, ["train", "--ramp", "1.5"], "ramp must be in [0, 1), got 1.5")
    one_line_error(capsys, ["train", "--method", "lottery"], "invalid choice: 'lottery'")


def test_optimizer_and_init_from_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def train(*options: str) -> list[str]:
        return train_digits_mlp(2, "--quiet", "--no-dense-baseline", *options)

    dense = tmp_path / "dense"
    assert main(train("-s", "none", "--out", str(dense))) == 0
    out = tmp_path / "ft"
    assert main(train("--optimizer", "adamw", "--init-from", str(dense), "--out", str(out))) == 0
    assert "sparsity: target 0.9000" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())["config"]
    assert (config["optimizer"], config["lr"], config["init_from"]) == ("adamw", 3e-3, str(dense))
    assert main(["train", "--resume", str(out), "--quiet", "--no-dense-baseline"]) == 0
    assert "already complete" in capsys.readouterr().out

    one_line_error(capsys, ["train", "--optimizer", "adam"], "argument --optimizer: invalid choice: 'adam'")
    one_line_error(
        capsys,
        ["train", "--optimizer", "adamw", "--dataset", "cifar10", "--out", str(tmp_path / "c")],
        "optimizer adamw has no default lr for cifar10",
    )
    (tmp_path / "notes").mkdir()
    one_line_error(
        capsys,
        train("--init-from", str(tmp_path / "notes"), "--out", str(tmp_path / "x")),
        "init_from: " + str(tmp_path / "notes") + " is not an adasparse run directory",
    )
    one_line_error(
        capsys,
        ["train", "--dataset", "digits", "--model", "cnn2d", "--init-from", str(dense), "--out", str(tmp_path / "y")],
        "is a digits/mlp run, this run is digits/cnn2d",
    )
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_latency_batch_flag(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    argv = ["train", "--granularity", "channel", "--budget", "latency", "--latency-batch", "64"]
    config = config_from_args(parser.parse_args(argv))
    assert config.latency_batch == 64 and config.resolved().budget == "latency"
    one_line_error(capsys, argv[:5], "budget latency needs latency_batch (--latency-batch N)")
    one_line_error(capsys, [*argv[:5], "--latency-batch", "0"], "latency_batch must be an integer >= 1, got 0")
    one_line_error(capsys, ["train", "--latency-batch", "8"], "it needs granularity channel")
