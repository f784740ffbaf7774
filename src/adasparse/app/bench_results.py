"""The results page of ``adasparse bench``: tables (mean ± std over seeds) and PNG plots of the records
:func:`.bench.run_suite` returns, written as ``results.md``, its data as ``results.json`` and the figures in
``figures/`` beside it:

- accuracy against sparsity for every method, at equal epochs;
- the gap between achieved and requested sparsity (raw, and after calibration for ours);
- the per-layer allocation of ours against GMP at 90%;
- the training-step time of each method over dense, measured side by side;
- the Gaussian estimate's error per layer over training.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..core._io import atomic_write_json, atomic_write_text
from .bench_suites import Suite

__all__ = ["write_results"]


def _mean_std(values: Iterable[float]) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def _group(records: list[dict[str, Any]]) -> dict[tuple[str, str, str, float], list[dict[str, Any]]]:
    groups: dict[tuple[str, str, str, float], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[(record["dataset"], record["model"], record["variant"], record["target"])].append(record)
    return groups


def _accuracy_table(records: list[dict[str, Any]], suite: Suite, dataset: str, model: str) -> str:
    groups = _group(records)
    header = "| method | " + " | ".join(f"{t:g}" for t in suite.targets) + " |"
    lines = [header, "|---|" + "---|" * len(suite.targets)]
    for variant in suite.variants:
        cells = []
        for target in suite.targets:
            group = groups.get((dataset, model, variant.label, suite.targets[0] if variant.dense else target), [])
            cells.append(_mean_std(r["summary"]["test_accuracy"] for r in group))
        lines.append(f"| {variant.label} | " + " | ".join(cells) + " |")
        if variant.ours and any(
            r["summary"].get("test_accuracy_before_calibration") != r["summary"]["test_accuracy"]
            for target in suite.targets
            for r in groups.get((dataset, model, variant.label, target), [])
        ):
            raw = [
                _mean_std(
                    r["summary"]["test_accuracy_before_calibration"]
                    for r in groups.get((dataset, model, variant.label, target), [])
                )
                for target in suite.targets
            ]
            lines.append(f"| {variant.label}, before calibration | " + " | ".join(raw) + " |")
    return "\n".join(lines)


def _target_table(records: list[dict[str, Any]], suite: Suite, dataset: str, model: str) -> str:
    groups = _group(records)
    header = "| method | " + " | ".join(f"{t:g}" for t in suite.targets) + " |"
    lines = [header, "|---|" + "---|" * len(suite.targets)]
    for variant in suite.variants:
        if variant.dense:
            continue
        raw_cells, final_cells = [], []
        for target in suite.targets:
            group = groups.get((dataset, model, variant.label, target), [])
            raw_cells.append(_points(r["summary"]["sparsity_before_calibration"] - target for r in group))
            final_cells.append(_points(r["summary"]["sparsity"] - target for r in group))
        lines.append(f"| {variant.label}, end of training | " + " | ".join(raw_cells) + " |")
        if variant.ours:
            lines.append(f"| {variant.label}, calibrated | " + " | ".join(final_cells) + " |")
    return "\n".join(lines)


def _compute_table(records: list[dict[str, Any]], suite: Suite) -> str:
    """Parameter sparsity next to the fraction of multiply-accumulates removed, per variant and data set."""
    lines = [
        "| data / model | variant | target | weights pruned | multiply-accumulates removed | test accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for (dataset, model, variant, target), group in sorted(_group(records).items(), key=lambda item: item[0]):
        if group[0]["summary"].get("sparsity") is None:
            continue
        lines.append(
            f"| {dataset} / {model} | {variant} | {target:g} | "
            f"{_mean_std(r['summary']['sparsity'] for r in group)} | "
            f"{_mean_std(r['summary'].get('flops_sparsity') for r in group)} | "
            f"{_mean_std(r['summary']['test_accuracy'] for r in group)} |"
        )
    return "\n".join(lines)


def _points(gaps: Iterable[float]) -> str:
    gaps = [100.0 * g for g in gaps]
    if not gaps:
        return "–"
    worst = max(gaps, key=abs)
    return f"{statistics.mean(gaps):+.2f} (worst {worst:+.2f})"


def _allocation(records: list[dict[str, Any]], dataset: str, model: str, target: float) -> dict[str, list[tuple]]:
    by_variant: dict[str, list[tuple]] = {}
    for record in records:
        if (record["dataset"], record["model"], record["target"], record["seed"]) != (dataset, model, target, 0):
            continue
        if record["variant"] == "dense":
            continue
        by_variant[record["variant"]] = [
            (layer["name"], layer["numel"], layer["actual"]) for layer in record["final_layers"]
        ]
    return by_variant


def _allocation_table(allocation: dict[str, list[tuple]]) -> str:
    if not allocation:
        return "(no runs)"
    variants = list(allocation)
    names = [name for name, _, _ in next(iter(allocation.values()))]
    sizes = {name: numel for name, numel, _ in next(iter(allocation.values()))}
    lines = ["| layer | weights | " + " | ".join(variants) + " |", "|---|---|" + "---|" * len(variants)]
    for index, name in enumerate(names):
        cells = [f"{allocation[v][index][2]:.3f}" if index < len(allocation[v]) else "–" for v in variants]
        lines.append(f"| {name} | {sizes[name]:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _gaussian_error(records: list[dict[str, Any]]) -> tuple[str, dict[str, list[tuple[int, float]]]]:
    """Per-layer |actual - analytic| at the last epoch with learned thresholds (table; fine-tuning with fixed masks
    has no estimate) and the worst layer's error by epoch (curves)."""
    rows, curves = [], {}
    for record in records:
        estimated = [row for row in record["layers"] if row["analytic"] not in ("", None)]
        if not estimated or record["seed"] != 0:
            continue
        last = max(int(row["epoch"]) for row in estimated)
        final = [row for row in estimated if int(row["epoch"]) == last]
        errors = [abs(float(row["actual"]) - float(row["analytic"])) for row in final]
        label = f"{record['dataset']}-{record['model']} {record['variant']} t={record['target']:g}"
        rows.append(f"| {label} | {last} | {statistics.mean(errors):.3f} | {max(errors):.3f} |")
        by_epoch: dict[int, float] = defaultdict(float)
        for row in estimated:
            epoch = int(row["epoch"])
            by_epoch[epoch] = max(by_epoch[epoch], abs(float(row["actual"]) - float(row["analytic"])))
        curves[label] = sorted(by_epoch.items())
    table = "| run (seed 0) | last epoch with thresholds | mean error | worst layer |\n|---|---|---|---|\n" + "\n".join(
        rows
    )
    return table, curves


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}"


def write_results(
    suites: list[tuple[Suite, list[dict[str, Any]]]],
    path: Path,
    *,
    command: str,
    overhead: dict[str, dict[str, float]] | None = None,
    wall_seconds: float | None = None,
) -> None:
    """Write the results page ``path``, its data (``path`` with ``.json``) and its plots (``figures/`` beside it).

    Args:
        suites: each suite run and its records (from :func:`run_suite`).
        path: the page, e.g. ``OUT/results.md``; ``docs/results.md`` replaces the project's committed results.
        command: the command line quoted on the page (how to regenerate it).
        overhead: train-step time ratios per data set and model, or ``None``.
        wall_seconds: the invocation's wall time, quoted when given.
    """
    from .plots import plot_accuracy_vs_sparsity, plot_allocation, plot_gaussian_error

    path.parent.mkdir(parents=True, exist_ok=True)
    figures = path.parent / "figures"
    parts = [
        "# Results",
        "",
        "Generated by `adasparse bench`; every number is a mean ± standard deviation over seeds, each run with "
        "the data set's recipe (equal epochs for every method). Accuracy is test accuracy of the final plain "
        "model (for ours: after calibration to the exact target, unless a row says otherwise).",
        "",
        f"- Command: `{command}`",
        f"- Date: {time.strftime('%Y-%m-%d')}; adasparse {__version__}",
        f"- Machine: {_machine()}",
    ]
    runs = {r["key"]: r["summary"]["wall_seconds"] for _, records in suites for r in records}
    parts.append(
        f"- Runs: {len(runs)}, {sum(runs.values()) / 3600:.1f} hours of training in all (one thread each, finished "
        "runs under `--out` are reused)"
    )
    if wall_seconds is not None:
        parts.append(f"- Wall time of this invocation: {wall_seconds / 60:.1f} min")
    parts += [
        "",
        "Why the defaults are what they are, and what the ablation shows: [method.md](method.md#why-these-defaults).",
        "",
        "Structured sparsity (channels and heads pruned to a FLOPs or time budget, the shrunk models' latency): the "
        "`structured*` suites, reported in [structured.md](structured.md).",
    ]
    for suite, records in suites:
        parts += ["", f"## Suite `{suite.name}`", ""]
        parts.append(
            f"Targets {', '.join(f'{t:g}' for t in suite.targets)}; seeds {', '.join(map(str, suite.seeds))}; "
            f"epochs {'recipe' if suite.epochs is None else suite.epochs}."
        )
        notes = [
            f"- `{variant.label}`: "
            + (f"starts from the final weights of `{variant.init_from}`; " if variant.init_from else "")
            + ", ".join(f"{key}={value}" for key, value in variant.options.items())
            for variant in suite.variants
            if variant.init_from is not None or "epochs" in variant.options
        ]
        if notes:
            parts += ["", *notes]
        for dataset, model in suite.datasets:
            prefix = f"{suite.name}-{dataset}-{model}"
            parts += [
                "",
                f"### {dataset} / {model}: test accuracy",
                "",
                _accuracy_table(records, suite, dataset, model),
            ]
            image = figures / f"{prefix}-accuracy.png"
            if plot_accuracy_vs_sparsity(records, suite, dataset, model, image):
                parts += ["", f"![accuracy vs sparsity]({image.relative_to(path.parent)})"]
            parts += [
                "",
                f"### {dataset} / {model}: achieved minus target sparsity (points)",
                "",
                _target_table(records, suite, dataset, model),
            ]
            allocation_target = 0.9 if 0.9 in suite.targets else suite.targets[len(suite.targets) // 2]
            allocation = _allocation(records, dataset, model, allocation_target)
            parts += [
                "",
                f"### {dataset} / {model}: sparsity per layer at {allocation_target:g} (seed 0)",
                "",
                _allocation_table(allocation),
            ]
            image = figures / f"{prefix}-allocation.png"
            if allocation and plot_allocation(allocation, image, f"{dataset} / {model} at {allocation_target:g}"):
                parts += ["", f"![allocation]({image.relative_to(path.parent)})"]
        if any(variant.options.get("budget") == "flops" for variant in suite.variants):
            parts += ["", "### Parameter budget vs compute budget", "", _compute_table(records, suite)]
        table, curves = _gaussian_error([r for r in records if r["ours"]])
        parts += ["", "### Gaussian estimate vs measured sparsity per layer, end of training", "", table]
        image = figures / f"{suite.name}-gaussian-error.png"
        if curves and plot_gaussian_error(curves, image):
            parts += ["", f"![gaussian error]({image.relative_to(path.parent)})"]
    if overhead:
        parts += [
            "",
            "## Training-step time over dense",
            "",
            "Mean time of a training step (forward, backward, optimizer and the method's own work) over dense's, "
            "one thread: every method runs a whole training's schedule (the recipe's epochs of steps, on one "
            "batch), so each phase and each rare costly step (our calibration, GMP's pruning events) weighs what it "
            "weighs in a training; the methods' steps are interleaved in one process.",
            "",
        ]
        for label, ratios in overhead.items():
            parts += [f"**{label}**", "", "| method | time / dense |", "|---|---|"]
            parts += [f"| {name} | {ratio:.2f}× |" for name, ratio in ratios.items()]
            parts.append("")
    atomic_write_text(path, "\n".join(parts).rstrip() + "\n")
    atomic_write_json(
        path.with_suffix(".json"),
        {
            "command": command,
            "suites": {
                suite.name: [{k: v for k, v in r.items() if k != "layers"} for r in records]
                for suite, records in suites
            },
            "overhead": overhead,
        },
    )
