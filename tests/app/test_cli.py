"""`adasparse train` / `adasparse report` from the command line: defaults, outputs, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adasparse.app.cli import main

from ..cifar_sample import write_cifar_archive

pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn")


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], expected: str) -> None:
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert expected in err, err


def test_train_prints_table_target_and_dense_baseline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    status = main(["train", "--dataset", "digits", "--model", "mlp", "--epochs", "3", "--out", str(out), "--quiet"])
    assert status == 0
    text = capsys.readouterr().out
    assert "overall (pruned layers)" in text
    assert "sparsity: target 0.9000, reached" in text
    assert "final 0.9000" in text or "reached 0.9000" in text  # exact before the calibration, or after it
    assert ", dense 0." in text
    assert (out / "dense" / "summary.json").is_file() and (out / "model_sparse.pt").is_file()
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["epochs"] == 3 and config["lr"] == 0.05 and config["batch_size"] == 64  # recipe defaults

    assert main(["report", str(out)]) == 0
    report_text = capsys.readouterr().out
    assert "model_sparse.pt" in report_text and "overall (pruned layers)" in report_text
    assert main(["report", str(out / "checkpoint.pt"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["sparsified"] is True and data["pruned_zeros"] > 0.85 * data["pruned_params"]

    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert "already complete" in capsys.readouterr().out


def test_original_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fixed"
    argv = [
        "train",
        "--dataset",
        "digits",
        "--model",
        "mlp",
        "-s",
        "fixed",
        "--starget",
        "0.8",
        "--lv",
        "30",
        "--pthres",
        "5000",
        "--epochs",
        "2",
        "--lr",
        "0.02",
        "--batch-size",
        "100",
        "--no-cuda",
        "--out",
        str(out),
        "--quiet",
        "--no-calibrate",
        "--no-dense-baseline",
    ]
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())["config"]
    assert (config["sparsity"], config["target"], config["lv"], config["pthres"]) == ("fixed", 0.8, 30.0, 5000)
    assert (config["lr"], config["batch_size"], config["device"], config["calibrate"]) == (0.02, 100, "cpu", False)
    report = json.loads((out / "report.json").read_text())
    assert all(layer["numel"] >= 5000 for layer in report["layers"])
    assert not (out / "dense").exists()


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "--starget", "1.5"], "target must be in [0, 1), got 1.5"),
        (["train", "--epochs", "-3"], "epochs must be an integer >= 1, got -3"),
        (["train", "--dataset", "imagenet"], "invalid choice: 'imagenet'"),
        (["train", "--model", "resnet-50"], "unknown model 'resnet-50'"),
        (["train", "--lv", "-1"], "lv must be >= 0"),
        (["train", "--epochs", "two"], "invalid int value: 'two'"),
        (["train", "--gpu", "0", "--no-cuda"], "--gpu and --no-cuda contradict each other"),
        (["report", "/nonexistent/run"], "does not exist"),
    ],
)
def test_bad_options_exit_with_one_line(capsys: pytest.CaptureFixture[str], argv: list[str], expected: str) -> None:
    _one_line_error(capsys, argv, expected)


def test_missing_cifar_data_and_foreign_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(
        capsys,
        ["train", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r")],
        "cifar-10-python.tar.gz",
    )
    assert not (tmp_path / "r").exists()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("not a run")
    _one_line_error(capsys, ["train", "--resume", str(tmp_path / "foreign")], "not an adasparse run directory")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    _one_line_error(capsys, ["report", str(bad)], "not a readable PyTorch file")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_gpu_flag_without_cuda(capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(capsys, ["train", "--gpu", "0"], "CUDA is not available")


def test_wrn_recipe_wires_up_on_a_cifar_format_sample(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_cifar_archive(tmp_path / "data", "cifar100", per_batch=16)
    out = tmp_path / "wrn"
    argv = [
        "train",
        "--dataset",
        "cifar100",
        "--data-dir",
        str(tmp_path / "data"),
        "--model",
        "wrn-10-1",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
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


def test_method_and_controller_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "orig"
    argv = [
        "train",
        "--dataset",
        "digits",
        "--model",
        "mlp",
        "--epochs",
        "2",
        "-s",
        "adaptive",
        "--no-correction",
        "--ramp",
        "0",
        "--finetune",
        "0",
        "--threshold-schedule",
        "cosine",
        "--no-task-gradient",
        "--init-fraction",
        "0.5",
        "--dual-step",
        "1.5",
        "--budget",
        "flops",
        "--out",
        str(out),
        "--quiet",
        "--no-dense-baseline",
    ]
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
    assert (
        main(
            [
                "train",
                "--dataset",
                "digits",
                "--model",
                "mlp",
                "--epochs",
                "2",
                "--method",
                "gmp",
                "--out",
                str(gmp),
                "--quiet",
                "--no-dense-baseline",
            ]
        )
        == 0
    )
    assert "sparsity: target 0.9000, reached 0.9000" in capsys.readouterr().out
    _one_line_error(capsys, ["train", "--ramp", "1.5"], "ramp must be in [0, 1), got 1.5")
    _one_line_error(capsys, ["train", "--method", "lottery"], "invalid choice: 'lottery'")


def test_bench_writes_its_page_under_out_and_the_docs_only_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    committed = tmp_path / "docs" / "results.md"
    committed.parent.mkdir()
    committed.write_text("the committed results\n")
    out = tmp_path / "bench"
    assert main(["bench", "--quick", "--out", str(out), "--jobs", "1"]) == 0
    text = (out / "results.md").read_text()
    assert "adasparse bench --quick" in text and "## Training-step time over dense" in text
    assert "| adasparse (default) |" in text and (out / "results.json").is_file()
    assert list((out / "figures").glob("*.png")) or "![" not in text
    assert sorted(p.name for p in committed.parent.iterdir()) == ["results.md"]
    assert committed.read_text() == "the committed results\n"
    assert f"wrote {out / 'results.md'}" in capsys.readouterr().out

    docs = tmp_path / "site"
    argv = ["bench", "--quick", "--out", str(out), "--jobs", "1", "--no-overhead", "--docs", str(docs)]
    assert main(argv) == 0  # finished runs are reused: only the page is written
    assert "adasparse bench --quick --docs" in (docs / "results.md").read_text() and (docs / "results.json").is_file()
    _one_line_error(capsys, ["bench", "--jobs", "0"], "--jobs must be >= 1")


def test_optimizer_and_init_from_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--dataset", "digits", "--model", "mlp", "--epochs", "2", "--quiet", "--no-dense-baseline"]
    dense = tmp_path / "dense"
    assert main(["train", *common, "-s", "none", "--out", str(dense)]) == 0
    out = tmp_path / "ft"
    assert main(["train", *common, "--optimizer", "adamw", "--init-from", str(dense), "--out", str(out)]) == 0
    assert "sparsity: target 0.9000" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())["config"]
    assert (config["optimizer"], config["lr"], config["init_from"]) == ("adamw", 3e-3, str(dense))
    assert main(["train", "--resume", str(out), "--quiet", "--no-dense-baseline"]) == 0
    assert "already complete" in capsys.readouterr().out

    _one_line_error(capsys, ["train", "--optimizer", "adam"], "argument --optimizer: invalid choice: 'adam'")
    _one_line_error(
        capsys,
        ["train", "--optimizer", "adamw", "--dataset", "cifar10", "--out", str(tmp_path / "c")],
        "optimizer adamw has no default lr for cifar10",
    )
    (tmp_path / "notes").mkdir()
    _one_line_error(
        capsys,
        ["train", *common, "--init-from", str(tmp_path / "notes"), "--out", str(tmp_path / "x")],
        "init_from: " + str(tmp_path / "notes") + " is not an adasparse run directory",
    )
    _one_line_error(
        capsys,
        ["train", "--dataset", "digits", "--model", "cnn2d", "--init-from", str(dense), "--out", str(tmp_path / "y")],
        "is a digits/mlp run, this run is digits/cnn2d",
    )
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
