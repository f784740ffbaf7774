"""``adasparse export``: a training run's pruned weights to compressed safetensors or ONNX (app/runs.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from adasparse.app.runs import load_run_weights
from adasparse.export import load_sparse, plain_state_dict, read_sparse_metadata

from ..commands import train_digits_mlp
from ..export.test_sparse_format import _bits_equal, _expected_encoding, _positive_zeros


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn")
    from adasparse.app.cli import main

    out = tmp_path_factory.mktemp("export") / "run"
    argv = train_digits_mlp(1, "--out", str(out), "--quiet")
    assert main([*argv, "--no-dense-baseline"]) == 0
    return out


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from adasparse.app.cli import main

    try:
        status = main(argv)
    except SystemExit as exit_:
        status = int(exit_.code or 0)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_cli_export_sparse_from_a_run(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    status, out, _ = _cli(["export", str(run_dir)], capsys)
    target = run_dir / "model_sparse.safetensors"
    assert status == 0 and f"wrote {target}" in out and "x the dense torch.save" in out
    reference = torch.load(run_dir / "model_sparse.pt", weights_only=True)
    loaded = load_sparse(target)
    assert list(loaded) == list(reference)
    assert all(_bits_equal(loaded[k], _positive_zeros(reference[k])) for k in reference)
    meta = read_sparse_metadata(target)
    config = json.loads((run_dir / "config.json").read_text())
    assert meta["metadata"] == config and meta["metadata"]["config"]["model"] == "mlp"
    assert target.stat().st_size < (run_dir / "model_sparse.pt").stat().st_size
    for name, entry in meta["tensors"].items():
        tensor = reference[name]
        expected = _expected_encoding(tensor, tensor.element_size()) if tensor.is_floating_point() else "dense"
        assert entry["encoding"] == expected, name

    status, out, _ = _cli(
        ["export", str(run_dir / "model_sparse.pt"), "--fp16", "--out", str(tmp_path / "h.st")], capsys
    )
    assert status == 0 and (tmp_path / "h.st").stat().st_size < target.stat().st_size
    assert read_sparse_metadata(tmp_path / "h.st")["values_dtype"] == "float16"

    status, out, _ = _cli(["export", str(run_dir / "checkpoint.pt"), "--out", str(tmp_path / "c.safetensors")], capsys)
    assert status == 0
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]
    from_checkpoint = load_sparse(tmp_path / "c.safetensors")
    assert not any(k.endswith("_threshold") for k in from_checkpoint)
    assert all(_bits_equal(from_checkpoint[k], _positive_zeros(v)) for k, v in plain_state_dict(checkpoint).items())
    weights = load_run_weights(run_dir / "checkpoint.pt")
    assert weights.run_config is not None and set(weights.state_dict) == set(reference)


def test_cli_export_errors_are_one_line(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lone = tmp_path / "lone"
    lone.mkdir()
    torch.save(torch.load(run_dir / "model_sparse.pt", weights_only=True), lone / "model_sparse.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    cases = [
        (["export", str(tmp_path / "missing")], "does not exist"),
        (["export", str(tmp_path / "junk.pt")], "not a readable PyTorch file"),
        (["export", str(lone / "model_sparse.pt"), "--format", "onnx"], "needs the run's config.json"),
        (["export", str(run_dir), "--format", "onnx", "--fp16"], "--fp16 applies to --format sparse only"),
        (["export", str(run_dir), "--out", str(run_dir / "model_sparse.pt")], "would overwrite"),
        (["export", str(run_dir), "--format", "zip"], "invalid choice"),
    ]
    for argv, expected in cases:
        status, _, err = _cli(argv, capsys)
        assert status == 2, argv
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert expected in err, err


def test_cli_export_onnx(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from adasparse.export.onnx_export import compare_onnx_outputs

    target = tmp_path / "model.onnx"
    status, out, _ = _cli(["export", str(run_dir), "--format", "onnx", "--out", str(target)], capsys)
    assert status == 0 and f"wrote {target}" in out
    weights = load_run_weights(run_dir)
    model = weights.build_model()
    assert compare_onnx_outputs(target, model, torch.randn(5, 1, 8, 8)) < 1e-4


@pytest.fixture(scope="module")
def channel_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn")
    pytest.importorskip("torch_pruning")
    from adasparse.app.cli import main

    out = tmp_path_factory.mktemp("export-channels") / "run"
    argv = train_digits_mlp(2, "--out", str(out), "--quiet", "--granularity", "channel", "--budget", "flops")
    assert main([*argv, "--starget", "0.5", "--no-dense-baseline"]) == 0
    return out


def test_cli_train_by_channels_reports_the_shrunk_cost(channel_run: Path) -> None:
    summary = json.loads((channel_run / "summary.json").read_text())
    assert summary["config"]["granularity"] == "channel"
    assert summary["target_reached"] is True
    assert summary["flops_sparsity"] == pytest.approx(0.5, abs=0.02)
    assert summary["sparsity"] == summary["flops_sparsity"]


def test_cli_export_shrink(channel_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnxruntime")
    from adasparse.export.onnx_export import compare_onnx_outputs

    status, out, _ = _cli(["export", str(channel_run), "--shrink"], capsys)
    target = channel_run / "model_shrunk.onnx"
    assert status == 0 and f"wrote {target}" in out
    model = load_run_weights(channel_run).build_model()
    assert compare_onnx_outputs(target, model, torch.randn(5, 1, 8, 8)) < 1e-4
    full = tmp_path / "full.onnx"
    assert _cli(["export", str(channel_run), "--format", "onnx", "--out", str(full)], capsys)[0] == 0
    assert target.stat().st_size < 0.8 * full.stat().st_size
    status, _, err = _cli(["export", str(channel_run), "--shrink", "--format", "sparse"], capsys)
    assert status == 2 and "--format onnx" in err
