"""adasparse bench: the quick suite runs end to end and writes its results page (a pipeline check, not timed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from adasparse.app.bench import SUITES, Schedule, jobs, measure_overhead, run_suite, write_results

from ..benchmarks import load_script

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
    unbounded = tmp_path / "unbounded"
    run_training(config(pruned_gradient_bound=None), unbounded, progress=False, log=lambda m: None)
    for layers in ("normalized", "all"):  # where a bound would act does not matter without one
        assert _same_config(unbounded, config(pruned_gradient_bound=None, pruned_gradient_bound_layers=layers))
    assert not _same_config(unbounded, config())


def test_measure_overhead_reports_ratios() -> None:
    ratios = measure_overhead("digits", "mlp", steps=5, methods=["dense", "adasparse", "gmp"])
    assert set(ratios) == {"dense", "adasparse", "gmp"} and ratios["dense"] == 1.0
    assert all(r > 0 for r in ratios.values())


def test_a_schedule_keeps_one_model_per_label_even_for_the_same_method() -> None:
    schedule = Schedule("digits", "mlp", {"default": "adasparse", "copy": "adasparse"}, steps=3)
    assert schedule.total_steps == 3
    for index in range(3):
        assert schedule.step("default", index) > 0.0 and schedule.step("copy", index) > 0.0
    first, second = (schedule._setups[label][0] for label in ("default", "copy"))
    assert first is not second
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


def _tiny(suite, monkeypatch: pytest.MonkeyPatch):
    """``suite`` shrunk to a smoke run: digits/mlp, one epoch, one seed, its first target (the machinery, not the
    numbers)."""
    import dataclasses

    from adasparse import bench

    variants = tuple(
        dataclasses.replace(v, options={**v.options, "epochs": 1}) if "epochs" in v.options else v
        for v in suite.variants
    )
    tiny = dataclasses.replace(
        suite, variants=variants, datasets=(("digits", "mlp"),), targets=suite.targets[:1], seeds=(0,), epochs=1
    )
    monkeypatch.setitem(bench.SUITES, suite.name, tiny)
    return tiny


@pytest.mark.slow
def test_pretrained_suite_prunes_during_fine_tuning_after_its_dense_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from adasparse.bench import phases

    suite = SUITES["pretrained"]
    grid = jobs(suite)
    first, second = phases(grid)
    keys = {job.key for job in first}
    assert {job.variant.label for job in first} == {"dense"} and len(first) == len(suite.datasets) * 3
    assert second and all(job.init_from in keys for job in second)  # every start is a phase-1 run
    for job in second:
        assert job.init_from.startswith(f"{job.dataset}-{job.model}/dense/") and job.init_from.endswith(f"/s{job.seed}")
        assert job.variant.options["optimizer"] == "adamw"
        assert job.variant.options["epochs"] <= 0.25 * suite.epochs  # at most a quarter of the pre-training steps
    assert {job.target for job in second} == {0.9, 0.95, 0.98}

    tiny = _tiny(suite, monkeypatch)
    records = run_suite(tiny, tmp_path, workers=1, log=lambda m: None)
    assert [r["variant"] for r in records][0] == "dense" and len(records) == len(jobs(tiny))
    dense_dir = str(tmp_path / "runs" / records[0]["key"])
    for record in records[1:]:
        assert record["summary"]["config"]["init_from"] == dense_dir
        assert record["summary"]["config"]["optimizer"] == "adamw"
        assert record["summary"]["sparsity"] == pytest.approx(0.9, abs=1e-4)
    page = tmp_path / "results.md"
    write_results([(tiny, records)], page, command="adasparse bench --suite pretrained")
    text = page.read_text()
    assert "| pretrained + GMP global |" in text and "starts from the final weights of `dense`" in text
    # a redone pre-training run makes the runs started from it stale: they run again
    import os
    import time

    dense_weights = tmp_path / "runs" / records[0]["key"] / "model_sparse.pt"
    later = time.time() + 3600  # redone after the runs started from it
    os.utime(dense_weights, (later, later))
    again = run_suite(tiny, tmp_path, workers=1, log=lambda m: None)
    assert again[0]["summary"] == records[0]["summary"]
    assert all(a["summary"]["wall_seconds"] != b["summary"]["wall_seconds"] for a, b in zip(again[1:], records[1:]))


@pytest.mark.slow
def test_threshold_lr_suite_and_the_sweep_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    suite = SUITES["threshold-lr"]  # its grid: test_bench_suites.py
    _tiny(suite, monkeypatch)
    sweep = load_script("zoo_sweep")
    records = tmp_path / "threshold-lr.jsonl"
    argv = ["zoo_sweep.py", "--suite", "threshold-lr", "--jobs", "1", "--out", str(tmp_path), "--records", str(records)]
    monkeypatch.setattr(sys, "argv", argv)
    sweep.main()
    rows = [json.loads(line) for line in records.read_text().splitlines()]
    assert len(rows) == 16 and all(row["suite"] == "threshold-lr" and row["ours"] for row in rows)
    page = tmp_path / "threshold-lr.md"
    monkeypatch.setattr(sys, "argv", ["zoo_sweep.py", "--records", str(records), "--table", str(page)])
    sweep.main()
    text = page.read_text()
    assert text.startswith("# Sensitivity of the Gaussian projection to the thresholds' step size")
    header = next(line for line in text.splitlines() if line.startswith("| model |"))
    assert header.split(" | ")[2:4] == ["dense", "threshold_lr 0.2, SGD"]  # the suite's order
    assert "thresholds in the optimizer x1, AdamW |" in header and "| mlp (digits) | 0.98 |" in text


def test_sweep_target_filter_runs_the_starts_it_needs_and_records_only_the_chosen_runs() -> None:
    sweep = load_script("zoo_sweep")
    every = jobs(SUITES["pretrained"])
    todo, recorded = sweep.select(every, targets=[0.95], models=["resnet1d"])
    chosen = [job for job in todo if job.key in recorded]
    assert chosen and all(job.target == 0.95 and job.model == "resnet1d" for job in chosen)
    assert not any(job.variant.dense for job in chosen)  # a dense run is not per target: not recorded again
    starts = [job for job in todo if job.key not in recorded]
    assert {job.key for job in starts} == {job.init_from for job in chosen}  # but run (or reused) as the start
    assert all(job.variant.dense for job in starts) and len(starts) == 3
    # on a suite without starts, the target filter keeps its runs at that target only, dense left out
    todo, recorded = sweep.select(jobs(SUITES["zoo"]), targets=[0.95])
    assert {job.key for job in todo} == recorded and {job.target for job in todo} == {0.95}
    assert len(todo) == 6 * 4 * 3  # six pruning variants, four models, three seeds
    # --only dense with a target filter keeps the dense runs
    todo, recorded = sweep.select(jobs(SUITES["zoo"]), only=["dense"], targets=[0.95])
    assert todo and all(job.variant.dense for job in todo) and len(recorded) == len(todo)


def test_sweep_page_reads_the_default_against_gmp_and_its_next_lower_target(tmp_path: Path) -> None:
    sweep = load_script("zoo_sweep")
    rows = []
    for target, ours, gmp in ((0.9, (0.97,) * 3, (0.95,) * 3), (0.95, (0.925, 0.95, 0.955), (0.94,) * 3)):
        for seed, (mine, theirs) in enumerate(zip(ours, gmp)):
            for variant, accuracy in (("adasparse (default)", mine), ("GMP global", theirs)):
                rows.append(
                    {
                        "suite": "zoo",
                        "variant": variant,
                        "dataset": "d",
                        "model": "m",
                        "target": target,
                        "seed": seed,
                        "accuracy": accuracy,
                        "sparsity_before": target,
                        "ours": variant != "GMP global",
                    }
                )
    rows.append(dict(rows[0], variant="dense", accuracy=0.99))
    records = tmp_path / "r.jsonl"
    records.write_text("".join(json.dumps(row) + "\n" for row in rows))
    goals = next(line for line in sweep.table(str(records)).splitlines() if line.startswith("`adasparse (default)`"))
    assert "mean at or above on 2 of 2 cells" in goals  # 0.970 vs 0.950, 0.943 vs 0.940
    assert "Seeds more than 1 point below GMP's mean: m (d) 0.95 (worst 0.925)" in goals
    assert "next lower target: m (d) 0.9 → 0.95 (0.970 → 0.943; GMP 0.950 → 0.940)" in goals
    rows = [dict(row, accuracy=row["accuracy"] - 0.05) if row["variant"] != "GMP global" else row for row in rows]
    records.write_text("".join(json.dumps(row) + "\n" for row in rows))
    goals = next(line for line in sweep.table(str(records)).splitlines() if line.startswith("`adasparse (default)`"))
    assert "mean at or above on 0 of 2 cells; below on m (d) 0.9 (0.920 vs 0.950)" in goals


def test_sweep_runs_other_seeds_of_the_same_grid() -> None:
    sweep = load_script("zoo_sweep")
    own = jobs(SUITES["lamp"])
    more = sweep.suite_jobs("lamp", [3, 4])
    assert {job.seed for job in more} == {3, 4} and len(more) == len(own) // 3 * 2
    assert {(job.variant.label, job.model, job.target) for job in more} == {
        (job.variant.label, job.model, job.target) for job in own
    }
    assert sweep.suite_jobs("lamp") == own


def test_sweep_runs_the_same_grid_for_another_budget(tmp_path: Path) -> None:
    sweep = load_script("zoo_sweep")
    own = jobs(SUITES["lamp"])
    longer = sweep.suite_jobs("lamp", [3], epochs=90)
    assert {job.epochs for job in own} == {30} and {job.epochs for job in longer} == {90}
    assert [(job.key, job.seed) for job in longer] == [(job.key, job.seed) for job in sweep.suite_jobs("lamp", [3])]
    row = {"suite": "lamp", "variant": "GMP global", "dataset": "d", "model": "m", "target": 0.9, "seed": 0}
    row.update(accuracy=0.9, sparsity_before=0.9, ours=False)
    records = tmp_path / "r.jsonl"
    records.write_text(json.dumps(dict(row, epochs=90)) + "\n" + json.dumps(dict(row, seed=1, epochs=90)) + "\n")
    assert "Runs in these records: 2; seeds: 0, 1; epochs: 90." in sweep.table(str(records))
    other = dict(row, dataset="e", model="n", epochs=30)  # data sets' recipes differ: one budget per model
    records.write_text(json.dumps(dict(row, epochs=90)) + "\n" + json.dumps(other) + "\n")
    assert "; epochs: m (d) 90, n (e) 30." in sweep.table(str(records))
    records.write_text(json.dumps(dict(row, epochs=90)) + "\n" + json.dumps(dict(row, seed=1, epochs=30)) + "\n")
    with pytest.raises(SystemExit, match="the records mix epochs for m \\(d\\) \\(30, 90\\)"):
        sweep.table(str(records))
