"""Structured pruning results: accuracy, budget and the shrunk models' CPU latency, written into
docs/structured.md.

First run the suite (pre-training dense, then pruning channels during a short fine-tuning run, against L1-norm
channel pruning with the same fine-tuning), then this script on its records and run directories:

    python benchmarks/zoo_sweep.py --suite structured --jobs 16 --out runs/bench --records docs/structured.jsonl
    python benchmarks/structured.py --records docs/structured.jsonl --runs runs/bench/runs --docs docs/structured.md

The models the controller was not designed on (suite ``structured-heldout``) have their own section of the page,
the accuracy table only (without ``--runs`` no latency is measured):

    python benchmarks/zoo_sweep.py --suite structured-heldout --jobs 16 --out runs/heldout \
        --records docs/structured-heldout.jsonl
    python benchmarks/structured.py --records docs/structured-heldout.jsonl --docs docs/structured.md \
        --section structured-heldout

The same with every kept channel count rounded to a multiple of 8 (suite ``structured-multiple``; its latency table
also times the ``structured`` suite's unrounded run of ours, so give it the run directories holding both):

    python benchmarks/zoo_sweep.py --suite structured-multiple --jobs 16 --out runs/bench \
        --records docs/structured-multiple.jsonl
    python benchmarks/structured.py --records docs/structured-multiple.jsonl --runs runs/bench/runs \
        --docs docs/structured.md --section structured-multiple

The suites ``structured-multiple16`` (counts rounded to 16, and to 16 with the fastest rounding) and
``structured-time`` (a budget of measured time, ``budget="latency"``) are made the same way, with their own
``--records`` and ``--section``; their latency tables time every variant of the suite side by side.

Latency: each seed-0 run's final weights are shrunk (:func:`adasparse.shrink`) and timed against its dense
pre-training run and against the floor of channel pruning (the same graph with every prunable channel set down to one
channel, :func:`adasparse.app.latency.one_channel_model`), alternately in one process, one thread, at batch 1 and at
a throughput batch (ratios of medians, see ``adasparse/app/latency.py``), with the C library's allocator fixed first
(``steady_allocator``; ``--default-allocator`` leaves it as the process has it). Then ours again, with every BatchNorm
folded into the layer before it in all three models (``adasparse/app/latency.py``). ``--tables latency-onnxruntime``
times the same three models exported to ONNX and run by ONNX Runtime (``onnxruntime_medians``), where a forward pass
of these small models is arithmetic rather than per-operator dispatch:

    python benchmarks/structured.py --records docs/structured.jsonl --runs runs/bench/runs --docs docs/structured.md \
        --tables latency-onnxruntime --single-rounds 400 --rounds 40

(and the same with ``--records docs/structured-multiple.jsonl --section structured-multiple``: the rounded models).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _docs import write_section  # noqa: E402
from _timing import add_allocator_argument, fix_allocator  # noqa: E402

from adasparse import shrink  # noqa: E402
from adasparse.app.bench import SUITES  # noqa: E402
from adasparse.app.data import load_dataset  # noqa: E402
from adasparse.app.latency import (  # noqa: E402
    OnnxRuntimeModel,
    fold_batchnorm,
    latency_medians,
    one_channel_model,
    onnxruntime_medians,
)
from adasparse.app.runs import load_run_weights  # noqa: E402
from adasparse.core.flops import layer_macs  # noqa: E402

Medians = Callable[..., list[float]]
"""How a latency table times its models: ``medians(models, example, batch, rounds=...)``."""


def _prepared(models: list[torch.nn.Module], medians: Medians, example: torch.Tensor) -> list[torch.nn.Module]:
    """The models as ``medians`` times them: exported to ONNX once for both batch sizes when it is ONNX Runtime's."""
    if medians is onnxruntime_medians:
        return [OnnxRuntimeModel(model, example[:1]) for model in models]
    return models


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


def _suite(rows: list[dict]) -> str:
    """The suite the records come from (one per file)."""
    names = {row.get("suite", "structured") for row in rows}
    if len(names) != 1:
        raise SystemExit(f"the records mix suites ({', '.join(sorted(names))}): one file per suite")
    return names.pop()


def accuracy_table(rows: list[dict]) -> str:
    """Mean ± std over seeds of each variant's accuracy, per model and target; the largest gap between the budget
    reached before the final calibration and the target for ours (the suite's first variant of ours: the default).
    The columns are the variants of the records' suite."""
    labels = [variant.label for variant in SUITES[_suite(rows)].variants]
    ours = [label for label in labels if any(row["ours"] and row["variant"] == label for row in rows)]
    cells: dict[tuple, list[float]] = collections.defaultdict(list)
    before: dict[tuple, list[float]] = collections.defaultdict(list)
    models = []
    for row in rows:
        model = f"{row['dataset']}/{row['model']}"
        if model not in models:
            models.append(model)
        target = None if row["variant"] == "dense" else row["target"]
        cells[(model, target, row["variant"])].append(row["accuracy"])
        if ours and row["variant"] == ours[0] and row.get("sparsity_before") is not None:
            before[(model, target)].append(abs(row["sparsity_before"] - row["target"]))
    targets = sorted({row["target"] for row in rows if row["variant"] != "dense"})
    lines = [
        "| model | FLOPs removed | "
        + " | ".join(labels[1:])
        + " | dense | ours (default): budget gap before calibration |",
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


class _Models:
    """The models a latency row times, built once per model of the zoo: the dense pre-training run, its
    one-channel floor and each example batch."""

    def __init__(self, runs: Path) -> None:
        self.runs = runs
        self.examples: dict[str, torch.Tensor] = {}
        self.dense: dict[str, torch.nn.Module] = {}
        self.floors: dict[tuple[str, int], torch.nn.Module] = {}

    def example(self, dataset: str) -> torch.Tensor:
        if dataset not in self.examples:
            data = load_dataset(dataset)
            examples = data.x_test[:8]
            self.examples[dataset] = data.test_transform(examples, None) if data.test_transform else examples.float()
        return self.examples[dataset]

    def dense_model(self, prefix: str) -> torch.nn.Module:
        if prefix not in self.dense:
            # A dense run is keyed by its suite's first target: 0.5 in most suites, 0.4 in structured-time.
            runs = sorted((self.runs / prefix / "dense").glob("t*/s0"))
            if not runs:
                raise ValueError(f"no seed-0 dense run under {self.runs / prefix / 'dense'}")
            self.dense[prefix] = load_run_weights(runs[0]).build_model()
        return self.dense[prefix]

    def floor(self, prefix: str, dataset: str, min_params: int) -> torch.nn.Module:
        if (prefix, min_params) not in self.floors:
            dense = self.dense_model(prefix)
            self.floors[(prefix, min_params)] = one_channel_model(dense, self.example(dataset), min_params=min_params)
        return self.floors[(prefix, min_params)]


def _has_batchnorm(model: torch.nn.Module) -> bool:
    return any(isinstance(module, torch.nn.modules.batchnorm._BatchNorm) for module in model.modules())


def _macs(model: torch.nn.Module, example: torch.Tensor) -> float:
    return float(sum(layer_macs(model, example, min_params=0).values()))


def _seed_zero_runs(rows: list[dict], runs: Path, labels: list[str]):
    """``(row, dataset, model, prefix, run directory)`` of each seed-0 run of the given variants."""
    for row in rows:
        if row["seed"] != 0 or row["variant"] not in labels:
            continue
        dataset, model = row["dataset"], row["model"]
        prefix = f"{dataset}-{model}"
        yield row, dataset, model, prefix, runs / prefix / _slug(row["variant"]) / f"t{row['target']:g}" / "s0"


def latency_table(
    rows: list[dict], models: _Models, batch: int, rounds: int, single_rounds: int, medians: Medians = latency_medians
) -> str:
    """Shrunk over dense time of each seed-0 run, and the one-channel floor's over dense time (the three models timed
    alternately), at batch 1 and ``batch``, one thread; the MACs kept, the time if it followed the MACs. ``medians``:
    :func:`~adasparse.app.latency.latency_medians` (eager PyTorch) or
    :func:`~adasparse.app.latency.onnxruntime_medians` (the models exported to ONNX and run by ONNX Runtime)."""
    labels = [variant.label for variant in SUITES["structured"].variants if variant.label != "dense"]
    where = " in ONNX Runtime" if medians is onnxruntime_medians else ""
    lines = [
        f"| model | FLOPs removed | variant | MACs kept (ideal) | batch 1: shrunk | batch 1: floor | batch {batch}: "
        f"shrunk | batch {batch}: floor | dense time{where} (batch 1, {batch}) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row, dataset, model, prefix, run in _seed_zero_runs(rows, models.runs, labels):
        example = models.example(dataset)
        weights = load_run_weights(run)
        min_params = int((weights.run_config or {}).get("config", {}).get("pthres", 1000))
        dense = models.dense_model(prefix)
        floor = models.floor(prefix, dataset, min_params)
        smaller = shrink(weights.build_model(), example)
        kept = _macs(smaller, example) / _macs(dense, example)
        timed = _prepared([dense, smaller, floor], medians, example)
        single = medians(timed, example[:1], 1, rounds=single_rounds)
        many = medians(timed, example[:1], batch, rounds=rounds)
        lines.append(
            f"| {dataset}/{model} | {row['target']:g} | {row['variant']} | {kept:.4f} | {single[1] / single[0]:.2f}x "
            f"| {single[2] / single[0]:.2f}x | {many[1] / many[0]:.2f}x | {many[2] / many[0]:.2f}x "
            f"| {single[0] * 1e6:.0f} us, {many[0] * 1e3:.{2 if where else 1}f} ms |"
        )
    return "\n".join(lines)


def folded_table(rows: list[dict], models: _Models, batch: int, rounds: int, single_rounds: int) -> str:
    """Ours (seed 0) with every BatchNorm folded into the layer before it, in the dense model, the shrunk one and the
    floor alike (:func:`adasparse.app.latency.fold_batchnorm`): the folded dense over the dense time, and the folded
    shrunk model and floor over the folded dense time (the six models timed alternately)."""
    label = next(variant.label for variant in SUITES["structured"].variants if variant.ours)
    lines = [
        f"| model | FLOPs removed | batch 1: folded dense / dense | batch 1: shrunk | batch 1: floor | batch {batch}: "
        f"folded dense / dense | batch {batch}: shrunk | batch {batch}: floor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row, dataset, model, prefix, run in _seed_zero_runs(rows, models.runs, [label]):
        dense = models.dense_model(prefix)
        if not _has_batchnorm(dense):
            continue
        example = models.example(dataset)
        weights = load_run_weights(run)
        min_params = int((weights.run_config or {}).get("config", {}).get("pthres", 1000))
        pruned = weights.build_model()
        floor = models.floor(prefix, dataset, min_params)
        smaller = shrink(pruned, example)
        timed = [dense, smaller, floor, *(fold_batchnorm(m, example) for m in (dense, smaller, floor))]
        cells = []
        for size, count in ((1, single_rounds), (batch, rounds)):
            times = latency_medians(timed, example[:1], size, rounds=count)
            cells += [times[3] / times[0], times[4] / times[3], times[5] / times[3]]
        lines.append(f"| {dataset}/{model} | {row['target']:g} | " + " | ".join(f"{c:.2f}x" for c in cells) + " |")
    return "\n".join(lines)


def multiple_latency_table(
    rows: list[dict], models: _Models, batch: int, rounds: int, single_rounds: int, medians: Medians = latency_medians
) -> str:
    """Suites ``structured-multiple*``: per model and target (seed 0), the dense model and the suite's variants
    (for ``structured-multiple`` and its held-out models, ours without rounding first: the ``structured`` suite's
    run, looked up in the same run directories), timed alternately, at batch 1 and ``batch``, one thread: MACs kept
    and time, each over the dense model's; ``medians`` as for :func:`latency_table`."""
    suite = _suite(rows)
    labels = [variant.label for variant in SUITES[suite].variants if variant.label != "dense"]
    if suite in ("structured-multiple", "structured-multiple-heldout"):
        labels.insert(0, next(variant.label for variant in SUITES["structured"].variants if variant.ours))
    names = ", ".join(_short(label) for label in labels)
    lines = [
        f"| model | FLOPs removed | MACs kept: {names} | batch 1: {names} | batch {batch}: "
        f"{names} | kept channels per set: {'; '.join(_short(label) for label in labels[:2])} |",
        "|---|---|---|---|---|---|",
    ]
    seen = set()
    for row, dataset, model, prefix, _ in _seed_zero_runs(rows, models.runs, labels[-2:]):
        if (prefix, row["target"]) in seen:
            continue
        seen.add((prefix, row["target"]))
        example = models.example(dataset)
        dense = models.dense_model(prefix)
        runs = [models.runs / prefix / _slug(label) / f"t{row['target']:g}" / "s0" for label in labels]
        if not all((run / "summary.json").exists() for run in runs):
            continue
        shrunk = [shrink(load_run_weights(run).build_model(), example) for run in runs]
        kept = [_macs(m, example) / _macs(dense, example) for m in shrunk]
        timed = _prepared([dense, *shrunk], medians, example)
        single = medians(timed, example[:1], 1, rounds=single_rounds)
        many = medians(timed, example[:1], batch, rounds=rounds)
        widths = [_widths(m) for m in shrunk[:2]]
        lines.append(
            f"| {dataset}/{model} | {row['target']:g} | "
            + ", ".join(f"{k:.3f}" for k in kept)
            + " | "
            + ", ".join(f"{t / single[0]:.2f}x" for t in single[1:])
            + " | "
            + ", ".join(f"{t / many[0]:.2f}x" for t in many[1:])
            + f" | {widths[0]}; {widths[1]} |"
        )
    return "\n".join(lines)


def _short(label: str) -> str:
    """A variant's name in a table's header: ``ours`` or ``L1``, with `` xM`` when its counts are rounded to M."""
    name = "ours" if "adasparse" in label else "L1"
    multiple = re.search(r"multiple of (\d+)", label)
    name = f"{name} x{multiple.group(1)}" if multiple else name
    return f"{name} fastest" if "fastest rounding" in label else name


def _widths(model: torch.nn.Module) -> str:
    """The output widths of the model's convolutions and hidden linear layers (its last layer left out)."""
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.modules.conv._ConvNd))]
    return " ".join(
        str(m.out_channels if isinstance(m, torch.nn.modules.conv._ConvNd) else m.out_features) for m in layers[:-1]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", required=True, help="JSON lines of the structured suite (zoo_sweep.py)")
    parser.add_argument(
        "--runs", default=None, help="the suite's run directories (OUT/runs of zoo_sweep.py); without it no latency"
    )
    parser.add_argument("--docs", default=None, help="write the tables into this markdown file")
    parser.add_argument(
        "--section",
        default="structured",
        help="the page's section the tables go to: between <!-- begin:SECTION-accuracy --> and its end marker "
        "(and SECTION-latency, SECTION-latency-folded)",
    )
    parser.add_argument(
        "--tables",
        nargs="+",
        default=["accuracy", "latency", "latency-folded"],
        choices=["accuracy", "latency", "latency-folded", "latency-onnxruntime"],
        help="which tables to make (default: accuracy, latency, latency-folded; latency-onnxruntime times the same "
        "models in ONNX Runtime and needs the onnx extra; the latency tables need --runs)",
    )
    parser.add_argument("--batch", type=int, default=256, help="the throughput batch size")
    parser.add_argument("--rounds", type=int, default=30, help="timed forward passes per model at the batch size")
    parser.add_argument("--single-rounds", type=int, default=300, help="timed forward passes per model at batch 1")
    add_allocator_argument(parser)
    args = parser.parse_args()
    fix_allocator(args)
    rows = _latest([json.loads(line) for line in open(args.records)])
    tables = {"accuracy": accuracy_table(rows)} if "accuracy" in args.tables else {}
    if args.runs is not None:
        models = _Models(Path(args.runs))
        timing = (args.batch, args.rounds, args.single_rounds)
        timed = latency_table if _suite(rows) in ("structured", "structured-heldout") else multiple_latency_table
        if "latency" in args.tables:
            tables["latency"] = timed(rows, models, *timing)
        if "latency-folded" in args.tables and timed is latency_table:
            tables["latency-folded"] = folded_table(rows, models, *timing)
        if "latency-onnxruntime" in args.tables:
            tables["latency-onnxruntime"] = timed(rows, models, *timing, medians=onnxruntime_medians)
    print(*tables.values(), sep="\n\n")
    if args.docs:
        for name, table in tables.items():
            write_section(Path(args.docs), f"{args.section}-{name}", table)


if __name__ == "__main__":
    main()
