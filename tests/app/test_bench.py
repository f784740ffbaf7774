"""adasparse bench: the quick suite runs end to end and writes its results page (a pipeline check, not timed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adasparse.app.bench import SUITES, jobs, measure_overhead, run_suite, write_results

pytest.importorskip("sklearn")


def test_jobs_cover_the_grid() -> None:
    suite = SUITES["methods"]
    grid = jobs(suite)
    sparse_variants = [v for v in suite.variants if v.options.get("sparsity") != "none"]
    expected = len(suite.datasets) * len(suite.seeds) * (len(sparse_variants) * len(suite.targets) + 1)
    assert len(grid) == expected
    assert len({job.key for job in grid}) == len(grid)


def test_quick_suite_writes_tables_and_reuses_finished_runs(tmp_path: Path) -> None:
    suite = SUITES["quick"]
    messages: list[str] = []
    records = run_suite(suite, tmp_path, workers=1, log=messages.append)
    assert len(records) == len(jobs(suite)) and len(messages) == len(records)
    summaries = {r["variant"]: r["summary"] for r in records}
    assert summaries["dense"]["sparsity"] is None
    assert summaries["adasparse (default)"]["sparsity"] == pytest.approx(0.9, abs=1e-4)
    page = tmp_path / "docs" / "results.md"
    write_results(
        [(suite, records)], page, command="adasparse bench --quick", overhead={"digits / mlp": {"dense": 1.0}}
    )
    text = page.read_text()
    assert "| method | 0.9 |" in text and "| GMP global |" in text and "achieved minus target" in text
    assert "adasparse bench --quick" in text and "| dense | 1.00× |" in text
    assert json.loads(page.with_suffix(".json").read_text())["command"] == "adasparse bench --quick"
    again = run_suite(suite, tmp_path, workers=1, log=lambda m: None)
    assert [r["summary"] for r in again] == [r["summary"] for r in records]  # finished runs are reused


def test_cached_runs_are_reused_only_with_the_same_settings(tmp_path: Path) -> None:
    from adasparse.app.bench import _same_config
    from adasparse.app.train import TrainConfig, run_training

    def config(**options: object) -> TrainConfig:
        return TrainConfig(dataset="digits", model="mlp", epochs=1, device="cpu", **options)  # type: ignore[arg-type]

    ours, baseline = tmp_path / "ours", tmp_path / "gmp"
    run_training(config(), ours, progress=False, log=lambda m: None)
    run_training(config(method="gmp"), baseline, progress=False, log=lambda m: None)
    assert _same_config(ours, config())
    assert not _same_config(ours, config(sparsity="constraint"))  # e.g. a changed default: run it again
    assert not _same_config(ours, config(seed=1))
    assert _same_config(baseline, config(method="gmp", sparsity="constraint", ramp=0.0))  # not its options
    assert not _same_config(baseline, config(method="gmp", target=0.8))
    assert not _same_config(tmp_path / "missing", config())


def test_measure_overhead_reports_ratios() -> None:
    ratios = measure_overhead("digits", "mlp", steps=5, methods=["dense", "adasparse", "gmp"])
    assert set(ratios) == {"dense", "adasparse", "gmp"} and ratios["dense"] == 1.0
    assert all(r > 0 for r in ratios.values())
