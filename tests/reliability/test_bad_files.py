"""Corrupt, truncated and hostile files: one-line errors, and nothing in them is ever executed."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from adasparse.cli import main
from adasparse.train import TrainConfig, run_training

pytest.importorskip("sklearn")


class _Hostile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("run") / "run"
    config = TrainConfig(dataset="digits", model="mlp", epochs=2, batch_size=256, device="cpu")
    run_training(config, directory, progress=False, log=lambda message: None)
    return directory


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_truncated_checkpoint_on_resume_and_report(run: Path, tmp_path: Path, capsys) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_bytes((run / "config.json").read_bytes())
    data = (run / "checkpoint.pt").read_bytes()
    (broken / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    assert "is not a readable checkpoint" in _error(capsys, ["train", "--resume", str(broken)])
    assert "not a readable PyTorch file" in _error(capsys, ["report", str(broken / "checkpoint.pt")])


def test_hostile_pickle_is_refused_and_not_executed(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "executed"
    hostile = tmp_path / "checkpoint.pt"
    with hostile.open("wb") as handle:
        pickle.dump({"format": "adasparse.checkpoint", "model": _Hostile(marker)}, handle)
    assert "not a readable PyTorch file" in _error(capsys, ["report", str(hostile)])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(
        '{"format": "adasparse.run", "config": {"dataset": "digits", "model": "mlp", "epochs": 2}}'
    )
    hostile.rename(run_dir / "checkpoint.pt")
    assert "is not a readable checkpoint" in _error(capsys, ["train", "--resume", str(run_dir)])
    assert not marker.exists()


def test_foreign_files(tmp_path: Path, capsys) -> None:
    plain = tmp_path / "tensor.pt"
    torch.save(torch.ones(3), plain)
    assert "holds no state_dict" in _error(capsys, ["report", str(plain)])
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text("not json")
    assert "is not readable JSON" in _error(capsys, ["train", "--resume", str(foreign)])
    assert "holds neither model_sparse.pt nor checkpoint.pt" in _error(capsys, ["report", str(foreign)])
