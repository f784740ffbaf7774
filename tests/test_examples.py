"""The examples run (in a few steps), so they cannot rot."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hf_finetune_prunes_a_local_bert_to_the_exact_target(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("sklearn")
    figures = _example("hf_finetune").main(["--max-steps", "6", "--target", "0.9"])
    assert figures["steps"] == 6 and figures["sparsity"] == pytest.approx(0.9, abs=1e-4)
    assert 0.0 <= figures["test_accuracy"] <= 1.0
    output = capsys.readouterr().out
    assert "bert.encoder.layer.0.attention.self.query.weight" in output and "test accuracy" in output


def test_quickstart_prunes_the_digits_mlp_to_the_exact_target(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("sklearn")
    figures = _example("quickstart").main(["--epochs", "2", "--target", "0.9"])
    assert figures["sparsity"] == pytest.approx(0.9, abs=1e-4)
    assert 0.0 <= figures["accuracy"] <= 1.0 and 0.0 <= figures["dense_accuracy"] <= 1.0
    output = capsys.readouterr().out
    assert "overall (pruned layers)" in output and "test accuracy: dense" in output


def test_channels_for_speed_shrinks_to_half_the_flops_with_the_same_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("torch_pruning")
    onnx = tmp_path / "small.onnx"
    argv = ["--pretrain-epochs", "1", "--epochs", "2", "--rounds", "2", "--batch", "16"]
    exports = ["--onnx", str(onnx), "--onnxruntime"] if _has_onnx() else []
    figures = _example("channels_for_speed").main([*argv, *exports])
    assert figures["shrunk_accuracy"] == figures["pruned_accuracy"]
    assert figures["largest_output_difference"] < 1e-4
    assert figures["flops_kept"] == pytest.approx(0.5, abs=0.02)  # the budget, up to a channel's share
    assert figures["parameters_kept"] < 1.0
    assert figures["time_ratio_batch_1"] > 0.0 and figures["time_ratio_batch_16"] > 0.0
    output = capsys.readouterr().out
    assert "removed once shrunk (multiply-accumulates)" in output and "the shrunk model keeps" in output
    assert onnx.exists() == _has_onnx()
    if _has_onnx():
        assert figures["onnxruntime_time_ratio_batch_1"] > 0.0 and figures["onnxruntime_time_ratio_batch_16"] > 0.0
        assert "in ONNX Runtime: batch 1" in output


def _has_onnx() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxscript", "onnxruntime"))
