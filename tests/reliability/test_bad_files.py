"""Corrupt, truncated and hostile files: one-line errors, and nothing in them is ever executed."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from adasparse.app.cli import main
from adasparse.app.runs import RUN_FILES
from adasparse.app.train import TrainConfig, run_training

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


def _odd(tmp_path: Path, content: object) -> Path:
    path = tmp_path / "checkpoint.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    return path


ODD_REFUSED = {
    "empty_file": (b"", "is empty"),
    "integer_key": ({1: torch.ones(3, 3)}, "key 1 is int"),
    "tuple_key": ({("a", "b"): torch.ones(3, 3)}, "key ('a', 'b') is tuple"),
    "meta_tensor": ({"w": torch.empty(4, 4, device="meta")}, "'w' is a meta tensor"),
    "expanded_tensor": ({"w": torch.ones(1).expand(2**36)}, "max_bytes"),
    "sparse_huge": (
        {"w": torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.long), [], (2**20, 2**20))},
        "max_bytes",
    ),
    "integer_orig": ({"w_orig": torch.ones(4, 4, dtype=torch.long), "w_threshold": torch.tensor(1.0)}, "'w_orig'"),
}


@pytest.mark.parametrize("case", list(ODD_REFUSED))
def test_odd_checkpoints_get_one_line_errors_from_report_and_export(tmp_path: Path, capsys, case: str) -> None:
    content, expected = ODD_REFUSED[case]
    path = _odd(tmp_path, content)
    for argv in (["report", str(path)], ["export", str(path), "--out", str(tmp_path / "x.safetensors")]):
        assert expected in _error(capsys, argv), argv
    assert not (tmp_path / "x.safetensors").exists()


ODD_LOADABLE = {
    "sparse_coo": {"layer.weight": (torch.eye(40) * 2).to_sparse()},
    "sparse_csr": {"layer.weight": (torch.eye(40) * 2).to_sparse_csr()},
    "empty_orig_threshold": {"w_orig": torch.zeros(0, 5), "w_threshold": torch.tensor(1.0), "b": torch.ones(3)},
    "empty_orig_mask": {"w_orig": torch.zeros(0, 5), "w_mask": torch.zeros(0, 5), "b": torch.ones(3)},
}


@pytest.mark.parametrize("case", list(ODD_LOADABLE))
def test_odd_but_valid_state_dicts_are_reported_and_exported(tmp_path: Path, capsys, case: str) -> None:
    from adasparse.export import load_sparse

    path = _odd(tmp_path, ODD_LOADABLE[case])
    assert main(["report", str(path), "--json", "--min-params", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    out = tmp_path / "x.safetensors"
    assert main(["export", str(path), "--out", str(out)]) == 0
    state = load_sparse(out)
    if case.startswith("sparse"):
        assert report["layers"][0]["zeros"] == 40 * 40 - 40 and torch.equal(state["layer.weight"], torch.eye(40) * 2)
    else:
        assert report["total_params"] == 3 and state["w"].shape == (0, 5) and "w_orig" not in state


def _copy_run(run: Path, target: Path) -> Path:
    target.mkdir()
    for item in run.iterdir():
        if item.is_file():
            (target / item.name).write_bytes(item.read_bytes())
    return target


def test_export_never_overwrites_a_runs_own_files(run: Path, tmp_path: Path, capsys) -> None:
    copy = _copy_run(run, tmp_path / "run")
    other = _copy_run(run, tmp_path / "other")
    before = {p.name: p.read_bytes() for p in copy.iterdir()}
    names = ["config.json", "checkpoint.pt", "metrics.csv", "layers.csv", "report.json", "report.md"]
    names += ["summary.json", "model_sparse.pt", "curves.png", "sparsity_per_layer.png"]
    assert set(before) <= set(names) <= RUN_FILES  # a new file a run writes belongs in RUN_FILES
    for name in names:
        for fmt in ("sparse", "onnx"):
            message = _error(capsys, ["export", str(copy), "--format", fmt, "--out", str(copy / name)])
            assert "would overwrite" in message and name in message, message
        assert "would overwrite" in _error(capsys, ["export", str(copy), "--out", str(other / name)])
    assert "is a directory" in _error(capsys, ["export", str(copy), "--out", str(copy)])
    lone = tmp_path / "lone.pt"
    lone.write_bytes(before["checkpoint.pt"])
    assert "would overwrite" in _error(capsys, ["export", str(copy), "--out", str(lone)])
    assert lone.read_bytes() == before["checkpoint.pt"]
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == before
    assert main(["export", str(copy)]) == 0  # the default name is free
    assert main(["export", str(copy)]) == 0  # and an earlier export may be replaced
    dense = _copy_run(run, copy / "dense")  # a dense baseline is a run inside the run
    assert main(["export", str(dense)]) == 0 and (dense / "model_sparse.safetensors").is_file()


def test_export_refuses_weights_that_do_not_fit_the_runs_architecture(run: Path, tmp_path: Path, capsys) -> None:
    copy = _copy_run(run, tmp_path / "run")
    state = torch.load(copy / "model_sparse.pt", weights_only=True)
    key = next(k for k, v in state.items() if v.dim() == 2)
    for foreign in ({**state, key: torch.zeros(3, 3)}, {"net.0.weight": torch.zeros(4, 4)}):
        torch.save(foreign, copy / "model_sparse.pt")
        for fmt in ("sparse", "onnx"):
            message = _error(capsys, ["export", str(copy), "--format", fmt, "--out", str(tmp_path / f"x.{fmt}")])
            assert "does not fit the run's 'mlp' architecture" in message, message
    assert not list(tmp_path.glob("x.*"))


def test_the_size_limit_is_the_callers_to_set(tmp_path: Path, capsys) -> None:
    path = _odd(tmp_path, {"w": torch.ones(100, 100)})
    assert "more than max_bytes=1,000" in _error(capsys, ["report", str(path), "--max-bytes", "1000"])
    assert "max_bytes must be >= 0" in _error(capsys, ["export", str(path), "--max-bytes", "-1"])
    assert main(["report", str(path), "--max-bytes", "50000"]) == 0
