"""Do the fastest channel allocations at a FLOPs budget keep the accuracy? Written into docs/structured.md.

For each model, random allocations at the budget are drawn and screened at the throughput batch as in
``allocation_latency.py`` (beside the dense model, one thread, the C library's allocator fixed first unless
``--default-allocator``). The fastest few are timed again beside the dense model, and each is trained as the
structured suite trains its L1 baselines: from the suite's dense pre-training run of each seed, the smallest-L1
channels of every set pruned down to the allocation's counts
(:func:`adasparse.baselines.channels.magnitude_channel_prune` with the counts given), then the same fine-tuning with
the channels fixed. Their test accuracy (seeds 0-2) stands beside the suite's recorded means of ours and of L1-norm
pruning at the same budget. Needs the suite's dense runs of every seed (``zoo_sweep.py --suite structured``):

    taskset -c 1 python benchmarks/fast_allocation_accuracy.py --runs runs/bench/runs   # writes docs/structured.md
    python benchmarks/fast_allocation_accuracy.py --runs runs/bench/runs --models digits:cnn2d --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _docs import machine, write_section  # noqa: E402
from _timing import add_allocator_argument, fix_allocator  # noqa: E402
from allocation_latency import add_screening_arguments, screen  # noqa: E402

from adasparse.app import methods  # noqa: E402
from adasparse.app.bench import SUITES, Job, _run_job  # noqa: E402
from adasparse.app.latency import latency_medians  # noqa: E402

DOCS = Path(__file__).resolve().parent.parent / "docs"
BASELINE = "pretrained + L1 channels (uniform)"
"""The suite's variant whose recipe trains the given allocation (its ``uniform`` allocation replaced by the counts)."""
COMPARED = ("pretrained + adasparse channels", "pretrained + L1 channels (global)")


def fastest(
    dataset: str, name: str, args: argparse.Namespace
) -> tuple[list[tuple[float, list[int]]], list[int], float]:
    """The ``args.fastest`` fastest of the screened allocations, timed again beside the dense model (their time over
    dense and kept counts, fastest first), the set sizes and the screening's median ratio."""
    dense, example, allocations, _, screened = screen(dataset, name, args)
    if not screened:
        raise SystemExit(f"{dataset}/{name}: no allocation within {args.tolerance} of the budget")
    best = [list(counts) for _, counts in screened[: args.fastest]]
    times = latency_medians(
        [dense] + [allocations.build(counts) for counts in best], example[:1], args.batch, rounds=args.rounds
    )
    timed = sorted((time / times[0], counts) for time, counts in zip(times[1:], best))
    return timed, allocations.sizes, statistics.median(ratio for ratio, _ in screened)


def trained(dataset: str, name: str, counts: list[int], args: argparse.Namespace) -> list[float]:
    """Test accuracy of the allocation ``counts`` trained from each seed's dense run (a scratch run directory)."""
    suite = SUITES["structured"]
    variant = next(v for v in suite.variants if v.label == BASELINE)
    original = methods.magnitude_channel_prune

    def given_counts(*positional, **options):
        return original(*positional, **{**options, "allocation": counts})

    accuracies = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "runs"
        (root / f"{dataset}-{name}").mkdir(parents=True)
        os.symlink(args.runs.resolve() / f"{dataset}-{name}" / "dense", root / f"{dataset}-{name}" / "dense")
        methods.magnitude_channel_prune = given_counts
        try:
            for seed in args.seeds:
                init = f"{dataset}-{name}/dense/t{args.budget:g}/s{seed}"
                if not (root / init / "summary.json").exists():
                    raise SystemExit(f"no dense run {args.runs / init}: run zoo_sweep.py --suite structured first")
                job = Job("fast-allocation", variant, dataset, name, args.budget, seed, suite.epochs, init_from=init)
                accuracies.append(_run_job(job, str(root))["summary"]["test_accuracy"])
                shutil.rmtree(root / job.key)
        finally:
            methods.magnitude_channel_prune = original
    return accuracies


def _recorded(records: list[dict], name: str, budget: float, label: str) -> str:
    values = [r["accuracy"] for r in records if (r["model"], r["target"], r["variant"]) == (name, budget, label)]
    return f"{statistics.mean(values):.4f}" if values else "–"


def caption(args: argparse.Namespace) -> str:
    seeds = ", ".join(map(str, args.seeds))
    return (
        f"FLOPs removed {args.budget:g} ± {args.tolerance:g}; {args.samples} random allocations per model screened "
        f"at batch {args.batch}, one thread ({args.screen_rounds} rounds in groups of {args.group} beside the dense "
        f"model), the {args.fastest} fastest timed again beside it ({args.rounds} rounds) and trained as the L1 "
        "baselines are (the smallest-L1 channels of each set pruned to its counts, the same fine-tuning), seeds "
        f"{seeds}. Ours and L1 global: the suite's recorded means at the same budget. Machine: {machine()}."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, required=True, help="run directories of the structured suite")
    parser.add_argument("--records", type=Path, default=DOCS / "structured.jsonl")
    add_screening_arguments(parser, samples=24, screen_rounds=15)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds")
    parser.add_argument("--fastest", type=int, default=3, help="screened allocations timed again and trained")
    parser.add_argument("--rounds", type=int, default=40, help="rounds of the second timing")
    parser.add_argument("--no-write", action="store_true", help="print only; do not update docs/structured.md")
    add_allocator_argument(parser)
    args = parser.parse_args()
    fix_allocator(args)
    warnings.simplefilter("ignore")  # the layers each run leaves dense are the suite's, reported there
    records = [json.loads(line) for line in args.records.open()]
    rows = []
    for spec in args.models:
        dataset, name = spec.split(":")
        timed, sizes, median = fastest(dataset, name, args)
        ours, l1 = (_recorded(records, name, args.budget, label) for label in COMPARED)
        for ratio, counts in timed:
            accuracies = trained(dataset, name, counts, args)
            mean, spread = statistics.mean(accuracies), statistics.pstdev(accuracies)
            rows.append(
                f"| {dataset}/{name} | {' '.join(map(str, counts))} of {' '.join(map(str, sizes))} | {ratio:.2f}x "
                f"({median:.2f}x) | {mean:.4f} ± {spread:.4f} (worst {min(accuracies):.4f}) | {ours} | {l1} |"
            )
            print(rows[-1], flush=True)
    body = "\n".join(
        [
            caption(args),
            "",
            "Command: `python benchmarks/fast_allocation_accuracy.py --runs RUNS`",
            "",
            "| model | allocation (kept of each set) | its time / dense, batch 256 (median of the screening) "
            "| its accuracy | ours | L1 global |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(body)
    if not args.no_write:
        write_section(DOCS / "structured.md", "fast-allocation-accuracy", body)


if __name__ == "__main__":
    main()
