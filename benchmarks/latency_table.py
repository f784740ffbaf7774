"""How well does a measured latency table predict a shrunk model's time, and what does it find at half the FLOPs?

For each model of the structured suite (freshly built: the time does not depend on the weights):
``adasparse.measure_latency`` at the throughput batch (one thread, counts on a grid of multiples of ``--multiple``);
then ``--held-out`` random allocations at half the FLOPs (``allocation_latency.sample``, counts rounded to the
grid), each built as a shrunk copy and timed beside the dense model with the structured page's protocol
(``latency_medians``), against the table's prediction; then the ``--best`` allocations on the grid the table
predicts fastest among those within ``--tolerance`` over the FLOPs budget (every combination of the sets' grid
counts), timed together beside the dense model and the floor; the fastest measured is shown. Pin the process to
one core on a shared machine.

    taskset -c 1 python benchmarks/latency_table.py                  # writes docs/structured.md
    python benchmarks/latency_table.py --models mnist1d:cnn1d --held-out 4 --no-write
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _docs import machine, write_section  # noqa: E402
from _timing import add_allocator_argument, fix_allocator  # noqa: E402
from allocation_latency import MODELS, Allocations, sample  # noqa: E402

from adasparse import measure_latency  # noqa: E402
from adasparse.app.data import load_dataset  # noqa: E402
from adasparse.app.latency import _batch_of, latency_medians, one_channel_model  # noqa: E402
from adasparse.app.models import create_model  # noqa: E402
from adasparse.core.latency_table import LatencyTable, _grid  # noqa: E402


def fastest_on_grid(
    table: LatencyTable,
    allocations: Allocations,
    budget: float,
    tolerance: float,
    count: int = 1,
    limit: int = 400_000,
) -> list[tuple[tuple[int, ...], float, float]]:
    """The ``count`` grid allocations the table predicts fastest with FLOPs removed in ``[budget, budget +
    tolerance]``, fastest first: counts, FLOPs removed and predicted time over dense."""
    grids = [_grid(size, table.multiple) for size in table.sizes]
    total = 1
    for grid in grids:
        total *= len(grid)
    if total > limit:
        raise ValueError(f"{total} grid allocations (limit {limit}): use a coarser --multiple")
    dense = table.dense_seconds()
    found = []
    for counts in itertools.product(*grids):
        removed = allocations.flops_removed(list(counts))
        if budget <= removed <= budget + tolerance:
            found.append((table.seconds(counts) / dense, counts, removed))
    if not found:
        raise ValueError(f"no grid allocation removes {budget} to {budget + tolerance} of the FLOPs")
    return [(counts, removed, predicted) for predicted, counts, removed in sorted(found)[:count]]


def measure(spec: str, args: argparse.Namespace) -> list[str]:
    dataset, name = spec.split(":")
    data = load_dataset(dataset)
    examples = data.x_test[:8]
    example = data.test_transform(examples, None) if data.test_transform else examples.float()
    torch.manual_seed(0)
    dense = create_model(name, num_classes=data.num_classes, input_shape=tuple(example.shape[1:])).eval()
    start = time.perf_counter()
    table = measure_latency(dense, _batch_of(example[:1], args.batch), multiple=args.multiple, rounds=args.table_rounds)
    seconds = time.perf_counter() - start
    in_sample = [abs(error) for error in table.prediction_errors()]
    allocations = Allocations(dense, example)
    drawn = sample(allocations, args.budget, args.held_out, args.multiple, args.tolerance, args.seed)
    errors = []
    for counts in drawn:
        times = latency_medians([dense, allocations.build(list(counts))], example[:1], args.batch, rounds=args.rounds)
        errors.append(table.seconds(counts) / table.dense_seconds() - times[1] / times[0])
    absolute = [abs(error) for error in errors]
    row = (
        f"| {dataset}/{name} | {len(table.measured)} ({seconds:.0f} s) | {statistics.median(in_sample):.3f} / "
        f"{max(in_sample):.3f} | {len(errors)}: {statistics.median(absolute):.3f} / {max(absolute):.3f} "
        f"({min(errors):+.2f} to {max(errors):+.2f}) | "
    )
    try:
        fastest = fastest_on_grid(table, allocations, args.budget, args.tolerance, args.best)
    except ValueError as error:  # too many sets to search every combination
        return [row + f"({error}) | | | | |"]
    floor = one_channel_model(dense, example)
    built = [allocations.build(list(counts)) for counts, _, _ in fastest]
    times = latency_medians([dense, *built, floor], example[:1], args.batch, rounds=args.rounds)
    ratios = [t / times[0] for t in times[1:-1]]
    best = min(range(len(fastest)), key=ratios.__getitem__)
    counts, removed, predicted = fastest[best]
    return [
        row + f"{' '.join(map(str, counts))} (rank {best + 1}) | {removed:.3f} | {predicted:.2f}x | "
        f"{ratios[best]:.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) | {times[-1] / times[0]:.2f}x |"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), metavar="DATASET:MODEL")
    parser.add_argument("--batch", type=int, default=256, help="the throughput batch (default 256)")
    parser.add_argument("--multiple", type=int, default=8, help="the table's grid step (default 8)")
    parser.add_argument("--table-rounds", type=int, default=10, help="timed passes per allocation in the table")
    parser.add_argument("--budget", type=float, default=0.5, help="FLOPs removed (default 0.5)")
    parser.add_argument("--tolerance", type=float, default=0.02, help="FLOPs removed within budget + tolerance")
    parser.add_argument("--held-out", type=int, default=12, help="random allocations timed against the prediction")
    parser.add_argument("--best", type=int, default=3, help="allocations the table predicts fastest, timed")
    parser.add_argument("--rounds", type=int, default=40, help="rounds of each side-by-side timing")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random allocations")
    parser.add_argument("--no-write", action="store_true", help="print only; do not update docs/structured.md")
    parser.add_argument("--section", default="latency-table", help="the page's section the table goes to")
    add_allocator_argument(parser)
    args = parser.parse_args()
    fix_allocator(args)
    torch.set_num_threads(1)
    shown = " ".join(argument for argument in sys.argv[1:] if argument != "--no-write")
    header = [
        f"Batch {args.batch}, one thread, grid of multiples of {args.multiple}; held-out allocations and the table's "
        f"fastest remove {args.budget:g} to {args.budget + args.tolerance:g} of the FLOPs. Prediction errors are "
        f"predicted minus measured time over dense (median / largest of their absolute values). Machine: "
        f"{machine()}.",
        "",
        f"Command: `python benchmarks/latency_table.py{' ' + shown if shown else ''}`",
        "",
        "| model | allocations timed (time) | in-sample error, median / max | held-out error | fastest measured of "
        "the table's fastest at the budget | FLOPs removed | predicted | measured (all timed) | floor |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    body = "\n".join(header + [line for spec in args.models for line in measure(spec, args)])
    print(body)
    if not args.no_write:
        write_section(Path(__file__).resolve().parent.parent / "docs" / "structured.md", args.section, body)


if __name__ == "__main__":
    main()
