"""benchmarks/encoder_structured.py on a tiny BERT checkpoint written by the test: every variant meets the FLOPs
budget, the shrunk encoder keeps the counts it reports, and the uniform allocations sit at the budget."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from . import load_script

pytest.importorskip("transformers")
pytest.importorskip("torch_pruning")


@pytest.fixture(scope="module")
def script():
    return load_script("encoder_structured")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-layer BERT of four heads and 64 hidden units, with a word-piece tokenizer of 60 entries."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    words = "the a of to and is in it be as on by or an at if not this that with for are from return value".split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *"abcdefghijklmnopqrstuvwxyz", ".", ","]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(str(folder))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(str(folder))
    return folder


def test_the_windows_are_fixed_length_and_the_held_out_text_is_apart(script, checkpoint: Path) -> None:
    train, test = script.windows(checkpoint)
    assert train.shape[1] == test.shape[1] == script.WINDOW and len(train) > 5 * len(test) > 0
    assert (train[:, 0] == 2).all() and (train[:, -1] == 3).all()  # [CLS] ... [SEP]
    assert torch.equal(script.windows(checkpoint)[1], test)


def test_fidelity_of_an_encoder_with_itself_is_one_and_falls_with_noise(script) -> None:
    torch.manual_seed(0)
    teacher = torch.randn(40, 16)
    assert script.fidelity(teacher, teacher) == pytest.approx((1.0, 1.0))
    cosine, spearman = script.fidelity(teacher + 0.5 * torch.randn(40, 16), teacher)
    assert 0.5 < cosine < 1.0 and 0.3 < spearman < 1.0


@pytest.mark.parametrize("variant", ["adasparse channels", "L1 channels (global)", "L1 channels (uniform)"])
def test_every_variant_meets_the_budget_and_reports_its_shrunk_counts(script, checkpoint: Path, variant: str) -> None:
    threads = torch.get_num_threads()
    config = {"model_dir": str(checkpoint), "variant": variant, "target": 0.5, "seed": 0, "steps": 6}
    try:
        record = script.run({**config, "batch": 4, "lr": 1e-3, "threads": 1})
    finally:
        torch.set_num_threads(threads)
    assert record["flops_kept"] == pytest.approx(0.5, abs=0.05)
    assert len(record["heads"]) == len(record["hidden"]) == 2
    assert all(1 <= h <= 4 for h in record["heads"]) and all(1 <= u <= 64 for u in record["hidden"])
    assert -1.0 <= record["cosine"] <= 1.0 and -1.0 <= record["spearman"] <= 1.0
    train, _ = script.windows(checkpoint)
    rebuilt = script.build(checkpoint, train[:2], record["heads"], record["hidden"])
    dense = script.Encoder(checkpoint)
    assert script.flops(rebuilt, train[:1]) / script.flops(dense, train[:1]) == pytest.approx(record["flops_kept"])


def test_uniform_allocations_sit_at_the_budget(script, checkpoint: Path) -> None:
    train, _ = script.windows(checkpoint)
    dense = script.Encoder(checkpoint).eval()
    allocations = script.uniform_allocations(checkpoint, dense, train[:2], 0.5)
    assert [heads for heads, _ in allocations] == [1, 2, 3]  # with all four, the hidden units are 40% of the FLOPs
    whole = script.flops(dense, train[:1])
    for heads, hidden in allocations:
        model = script.build_uniform(checkpoint, train[:2], 2, heads, hidden)
        layer = model.bert.encoder.layer[1]
        assert layer.attention.self.num_attention_heads == heads and layer.intermediate.dense.out_features == hidden
        unit = 2 * 2 * 32 * train.shape[1] * 2  # the FLOPs of one hidden unit in each layer
        assert abs(1.0 - script.flops(model, train[:1]) / whole - 0.5) <= unit / whole / 2 + 1e-9


def test_new_runs_replace_their_own_records_and_keep_the_others(script, tmp_path: Path) -> None:
    import json

    path = tmp_path / "records.jsonl"
    old = [{"variant": "a", "target": 0.5, "seed": s, "cosine": 0.1} for s in (0, 1)]
    path.write_text("".join(json.dumps(r) + "\n" for r in [*old, {"timing": {"label": "a"}}]))
    new = {"variant": "a", "target": 0.5, "seed": 1, "cosine": 0.9}
    assert script._merged(path, [new]) == [old[0], new]
    assert script._merged(tmp_path / "absent.jsonl", [new]) == [new]


def test_the_tables_show_every_variant_and_each_runtime_beside_the_other(script) -> None:
    records = [
        {"variant": v, "target": 0.5, "seed": s, "steps": 9, "cosine": 0.9 + s / 100, "spearman": 0.8,
         "flops_kept": 0.5, "heads": [6, 6], "hidden": [700, 800], "test_windows": 10}
        for v in script.VARIANTS for s in (0, 1)
    ]  # fmt: skip
    timings = [
        {"label": label, "runtime": runtime, "batch": batch, "ratio": 0.5, "dense_seconds": 0.01, "flops_kept": 0.5,
         "target": 0.5}
        for label in ("adasparse channels", "one-channel floor") for runtime in ("eager", "onnxruntime")
        for batch in (1, 32)
    ]  # fmt: skip
    text = script.tables(records, timings, "python benchmarks/encoder_structured.py")
    row = "| 0.5 | adasparse channels | 0.9050 ± 0.0071 | 0.8000 ± 0.0000 | 0.5000 ± 0.0000 | 6, 6 | 700, 800 |"
    assert row in text
    assert "batch 1, eager PyTorch | batch 32, eager PyTorch | batch 1, ONNX Runtime | batch 32, ONNX Runtime" in text
    assert "| 0.5 | one-channel floor | 0.500 | 0.50x | 0.50x | 0.50x | 0.50x |" in text
    assert "Dense encoder, ONNX Runtime: 10.0 ms at batch 1" in text
