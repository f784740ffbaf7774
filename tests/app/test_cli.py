"""`adasparse train` / `report` / `bench` from the command line: defaults, outputs, one-line errors (the `train`
options: test_cli_train.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adasparse.app.cli import main

from ..commands import one_line_error, train_digits_mlp

pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn")


def test_train_prints_table_target_and_dense_baseline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    status = main(train_digits_mlp(3, "--out", str(out), "--quiet"))
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
    one_line_error(capsys, argv, expected)


def test_missing_cifar_data_and_foreign_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one_line_error(
        capsys,
        ["train", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r")],
        "cifar-10-python.tar.gz",
    )
    assert not (tmp_path / "r").exists()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("not a run")
    one_line_error(capsys, ["train", "--resume", str(tmp_path / "foreign")], "not an adasparse run directory")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    one_line_error(capsys, ["report", str(bad)], "not a readable PyTorch file")


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
    one_line_error(capsys, ["bench", "--jobs", "0"], "--jobs must be >= 1")
