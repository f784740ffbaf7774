"""The results page of adasparse bench, from made-up records (no training): tables, figures and the JSON data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adasparse.app.bench_results import write_results
from adasparse.app.bench_suites import Suite, Variant

SUITE = Suite(
    "tiny",
    (Variant("dense", {"sparsity": "none"}), Variant("GMP global", {"method": "gmp"}), Variant("ours", {}, ours=True)),
    (("digits", "mlp"),),
    (0.5, 0.9),
    seeds=(0, 1),
    epochs=2,
)


def _record(variant: Variant, target: float, seed: int, accuracy: float, sparsity: float | None) -> dict[str, Any]:
    raw = None if sparsity is None else sparsity - (0.01 if variant.ours else 0.0)
    summary = {
        "test_accuracy": accuracy,
        "test_accuracy_before_calibration": None if sparsity is None else accuracy + (0.02 if variant.ours else 0.0),
        "sparsity": sparsity,
        "sparsity_before_calibration": raw,
        "flops_sparsity": sparsity,
        "wall_seconds": 1800.0,
    }
    layers = [
        {"epoch": str(epoch), "layer": "fc", "numel": "100", "actual": "0.5", "analytic": str(0.5 + 0.01 * epoch)}
        for epoch in (1, 2)
    ]
    final = [{"name": "fc.weight", "numel": 100, "actual": 0.0 if sparsity is None else sparsity}]
    return {
        "key": f"{variant.label}/t{target:g}/s{seed}",
        "suite": SUITE.name,
        "variant": variant.label,
        "ours": variant.ours,
        "dataset": "digits",
        "model": "mlp",
        "target": target,
        "seed": seed,
        "summary": summary,
        "layers": layers if variant.ours else [],
        "final_layers": final,
    }


def _records() -> list[dict[str, Any]]:
    dense, gmp, ours = SUITE.variants
    records = [_record(dense, 0.5, seed, 0.95 + 0.01 * seed, None) for seed in SUITE.seeds]
    for target in SUITE.targets:
        for seed in SUITE.seeds:
            records.append(_record(gmp, target, seed, 0.90 - 0.02 * seed, target))
            records.append(_record(ours, target, seed, 0.92, target))
    return records


def test_tables_quote_means_over_seeds_and_the_gaps(tmp_path: Path) -> None:
    page = tmp_path / "results.md"
    write_results([(SUITE, _records())], page, command="adasparse bench --suite tiny", wall_seconds=90.0)
    text = page.read_text()
    assert "- Command: `adasparse bench --suite tiny`" in text and "- Wall time of this invocation: 1.5 min" in text
    assert "- Runs: 10, 5.0 hours of training in all" in text
    assert "| dense | 0.9550 ± 0.0071 | 0.9550 ± 0.0071 |" in text  # one dense run per seed fills every column
    assert "| GMP global | 0.8900 ± 0.0141 | 0.8900 ± 0.0141 |" in text
    assert "| ours | 0.9200 ± 0.0000 | 0.9200 ± 0.0000 |" in text
    assert "| ours, before calibration | 0.9400 ± 0.0000 | 0.9400 ± 0.0000 |" in text
    assert "| ours, end of training | -1.00 (worst -1.00) | -1.00 (worst -1.00) |" in text
    assert "| ours, calibrated | +0.00 (worst +0.00) | +0.00 (worst +0.00) |" in text
    assert "GMP global, calibrated" not in text and "dense, end of training" not in text
    assert "### digits / mlp: sparsity per layer at 0.9 (seed 0)" in text
    assert "| fc.weight | 100 | 0.900 | 0.900 |" in text
    assert "| digits-mlp ours t=0.5 | 2 | 0.020 | 0.020 |" in text  # the Gaussian estimate's last epoch
    assert "Training-step time" not in text
    data = json.loads(page.with_suffix(".json").read_text())
    assert data["command"] == "adasparse bench --suite tiny" and data["overhead"] is None
    assert len(data["suites"]["tiny"]) == 10 and all("layers" not in r for r in data["suites"]["tiny"])


def test_overhead_and_missing_runs(tmp_path: Path) -> None:
    page = tmp_path / "docs" / "results.md"
    records = [r for r in _records() if r["target"] == 0.5]
    overhead = {"digits / mlp": {"adasparse": 1.5, "dense": 1.0}}
    write_results([(SUITE, records)], page, command="c", overhead=overhead)
    text = page.read_text()
    assert "| GMP global | 0.8900 ± 0.0141 | – |" in text  # no run at 0.9
    assert "(no runs)" in text and "| adasparse | 1.50× |" in text and "| dense | 1.00× |" in text
