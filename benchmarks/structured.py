"""Structured pruning results: accuracy, budget and the shrunk models' CPU latency, written into
docs/structured.md.

First run the suite (pre-training dense, then pruning channels during a short fine-tuning run, against L1-norm
channel pruning with the same fine-tuning), then this script on its records and run directories:

    python benchmarks/zoo_sweep.py --suite structured --jobs 16 --out runs/bench --records docs/structured.jsonl
    python benchmarks/structured.py --records docs/structured.jsonl --runs runs/bench/runs --docs docs/structured.md

Latency: each seed-0 run's final weights are shrunk (:func:`adasparse.shrink`) and timed against its dense
pre-training run, alternately in one process, one thread, at batch 1 and at a throughput batch (ratios of medians,
see ``adasparse/app/latency.py``).
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _docs import write_section  # noqa: E402

from adasparse import shrink  # noqa: E402
from adasparse.app.bench import SUITES  # noqa: E402
from adasparse.app.data import load_dataset  # noqa: E402
from adasparse.app.latency import latency_ratio  # noqa: E402
from adasparse.app.runs import load_run_weights  # noqa: E402
from adasparse.core.flops import layer_macs  # noqa: E402


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")


def _mean_std(values: list[float]) -> str:
    if not values:
        return ""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {spread:.4f}"


def _latest(rows: list[dict]) -> list[dict]:
    """One record per run (a sweep repeated with ``--only`` appends its reused runs again)."""
    keyed = {(row["variant"], row["dataset"], row["model"], row["target"], row["seed"]): row for row in rows}
    return list(keyed.values())


def accuracy_table(rows: list[dict]) -> str:
    """Mean ± std over seeds of each variant's accuracy, per model and target; the budget reached before the
    final calibration for ours."""
    labels = [variant.label for variant in SUITES["structured"].variants]
    cells: dict[tuple, list[float]] = collections.defaultdict(list)
    before: dict[tuple, list[float]] = collections.defaultdict(list)
    models = []
    for row in rows:
        model = f"{row['dataset']}/{row['model']}"
        if model not in models:
            models.append(model)
        target = None if row["variant"] == "dense" else row["target"]
        cells[(model, target, row["variant"])].append(row["accuracy"])
        if row["ours"] and row.get("sparsity_before") is not None:
            before[(model, target)].append(abs(row["sparsity_before"] - row["target"]))
    targets = sorted({row["target"] for row in rows if row["variant"] != "dense"})
    lines = [
        "| model | FLOPs removed | " + " | ".join(labels[1:]) + " | dense | ours: budget gap before calibration |",
        "|---|---|" + "---|" * (len(labels) + 1),
    ]
    for model in models:
        dense = _mean_std(cells[(model, None, "dense")])
        for target in targets:
            accuracies = [_mean_std(cells[(model, target, label)]) for label in labels[1:]]
            gaps = before[(model, target)]
            gap = f"{max(gaps):.4f}" if gaps else ""
            lines.append(f"| {model} | {target:g} | " + " | ".join(accuracies) + f" | {dense} | {gap} |")
    return "\n".join(lines)


def latency_table(rows: list[dict], runs: Path, batch: int, rounds: int) -> str:
    """Shrunk over dense time of each seed-0 run, at batch 1 and ``batch``, one thread."""
    labels = [variant.label for variant in SUITES["structured"].variants if variant.label != "dense"]
    lines = [
        f"| model | FLOPs removed | variant | MACs removed (measured) | batch 1 | batch {batch} |",
        "|---|---|---|---|---|---|",
    ]
    data_cache: dict[str, torch.Tensor] = {}
    for row in rows:
        if row["seed"] != 0 or row["variant"] not in labels:
            continue
        dataset, model = row["dataset"], row["model"]
        prefix = f"{dataset}-{model}"
        if dataset not in data_cache:
            data = load_dataset(dataset)
            examples = data.x_test[:8]
            data_cache[dataset] = data.test_transform(examples, None) if data.test_transform else examples.float()
        example = data_cache[dataset]
        first = SUITES["structured"].targets[0]  # a dense run is keyed by the suite's first target
        dense = load_run_weights(runs / prefix / "dense" / f"t{first:g}" / "s0").build_model()
        run = runs / prefix / _slug(row["variant"]) / f"t{row['target']:g}" / "s0"
        smaller = shrink(load_run_weights(run).build_model(), example)
        removed = 1.0 - sum(layer_macs(smaller, example, min_params=0).values()) / sum(
            layer_macs(dense, example, min_params=0).values()
        )
        single = latency_ratio(dense, smaller, example[:1], 1, rounds=rounds)
        many = latency_ratio(dense, smaller, example[:1], batch, rounds=rounds)
        lines.append(
            f"| {dataset}/{model} | {row['target']:g} | {row['variant']} | {removed:.4f} | {single.ratio:.2f}x "
            f"({single.reference * 1e6:.0f} us dense) | {many.ratio:.2f}x ({many.reference * 1e3:.1f} ms dense) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", required=True, help="JSON lines of the structured suite (zoo_sweep.py)")
    parser.add_argument("--runs", required=True, help="the suite's run directories (OUT/runs of zoo_sweep.py)")
    parser.add_argument("--docs", default=None, help="write the tables into this markdown file")
    parser.add_argument("--batch", type=int, default=256, help="the throughput batch size")
    parser.add_argument("--rounds", type=int, default=30, help="timed forward passes per model and batch size")
    args = parser.parse_args()
    rows = _latest([json.loads(line) for line in open(args.records)])
    accuracy = accuracy_table(rows)
    latency = latency_table(rows, Path(args.runs), args.batch, args.rounds)
    print(accuracy, latency, sep="\n\n")
    if args.docs:
        write_section(Path(args.docs), "structured-accuracy", accuracy)
        write_section(Path(args.docs), "structured-latency", latency)


if __name__ == "__main__":
    main()
