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
