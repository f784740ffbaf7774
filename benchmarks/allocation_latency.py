"""How fast can any channel allocation at a FLOPs budget be? Random allocations timed beside the dense model.

The structured page's goal asks a model shrunk to half its FLOPs to run in 0.6 of the dense time at a throughput
batch. Whether any allocation of the channels gets there is a property of the graph and the CPU kernels, not of the
pruning method: this script draws random allocations at the budget and times them.

For each model: its channel sets as ``sparsify(granularity="channel")`` plans them, costed in FLOPs; ``--samples``
random allocations (each set keeps a uniformly drawn share of its channels, all shares scaled together until the
FLOPs removed are the budget, each count rounded, optionally to a multiple; kept only when the rounded allocation is
within ``--tolerance`` of the budget); each allocation built as a shrunk copy of the model (the first channels of
each set kept: the time does not depend on the weights) and screened in groups against the dense model; the fastest
``--best`` timed again with the structured page's protocol (dense, candidate and the one-channel floor alternately,
``adasparse.app.latency.latency_medians``). With ``--runs``, the seed-0 runs of ours (``structured`` and
``structured-multiple`` suites) are timed the same way beside them. One thread; pin the process to one core
(``taskset -c 1``) on a shared machine. The C library's allocator is fixed first
(``adasparse.app.latency.steady_allocator``; ``--default-allocator`` leaves it as the process has it), so a model
with large activations reads the same after the screening as in a fresh process (see docs/structured.md). With
``--onnxruntime`` every model is exported to ONNX and run by ONNX Runtime's CPU provider instead
(``adasparse.app.latency.OnnxRuntimeModel``, one thread; ``pip install "adasparse[onnx]"``).

    taskset -c 1 python benchmarks/allocation_latency.py --runs runs/bench/runs          # writes docs/structured.md
    python benchmarks/allocation_latency.py --models digits:cnn2d --samples 12 --no-write
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from pathlib import Path
from typing import NamedTuple

import numpy
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _docs import machine, write_section  # noqa: E402
from _timing import add_allocator_argument, fix_allocator  # noqa: E402
from structured import _macs  # noqa: E402

from adasparse import shrink  # noqa: E402
from adasparse.app.data import load_dataset  # noqa: E402
from adasparse.app.latency import OnnxRuntimeModel, latency_medians, one_channel_model  # noqa: E402
from adasparse.app.models import create_model  # noqa: E402
from adasparse.app.runs import load_run_weights  # noqa: E402
from adasparse.core.channel_cost import shared_cost  # noqa: E402
from adasparse.core.latency_table import _Planned  # noqa: E402
from adasparse.core.parametrization import pruned_tensors  # noqa: E402

MODELS = ("mnist1d:transformer", "mnist1d:resnet1d", "mnist1d:cnn1d", "digits:resnet2d", "digits:cnn2d")
"""The structured suite's models (its zoo and the plain 2-D CNN)."""

OURS = {"ours": "pretrained---adasparse-channels", "ours x8": "pretrained---adasparse-channels--multiple-of-8"}
"""Run directories of ours under ``--runs/<dataset>-<model>/``: the variants' slugs in the ``structured`` and
``structured-multiple`` suites."""


def _cost(planned: torch.nn.Module):
    """The channel cost model of a model sparsified by channels (every channel set shares it)."""
    return shared_cost(pruned_tensors(planned))


class Allocations(_Planned):
    """A model's channel sets (as ``sparsify(granularity="channel")`` plans them, costed in FLOPs) and the shrunk
    copy of any allocation of their channels (:meth:`build`: set ``k`` keeps its first ``counts[k]`` channels)."""

    def __init__(self, model: torch.nn.Module, example: torch.Tensor) -> None:
        super().__init__(model, example, {})
        self.example = example
        self.cost = _cost(self.planned)

    def flops_removed(self, counts: list[int]) -> float:
        return self.cost.sparsity([1.0 - k / size for k, size in zip(counts, self.sizes)], "flops")


def _rounded(value: float, size: int, multiple: int) -> int:
    if multiple <= 1 or size <= multiple:
        return min(max(round(value), 1), size)
    return min(max(multiple * round(value / multiple), multiple), size)


def sample(allocations: Allocations, budget: float, count: int, multiple: int, tolerance: float, seed: int):
    """Up to ``count`` distinct random allocations (kept channels per set) within ``tolerance`` of ``budget``."""
    rng = numpy.random.default_rng(seed)
    sizes = numpy.array(allocations.sizes, dtype=float)
    found: dict[tuple[int, ...], float] = {}
    for _ in range(400 * count):
        if len(found) >= count:
            break
        shares = rng.uniform(0.05, 1.0, size=len(sizes))
        low, high = 0.0, 1.0 / shares.min()
        for _ in range(40):  # the scale at which the unrounded allocation removes the budget
            middle = 0.5 * (low + high)
            kept = numpy.clip(middle * shares, 1.0 / sizes, 1.0)
            removed = allocations.cost.sparsity(list(1.0 - kept), "flops")
            low, high = (middle, high) if removed > budget else (low, middle)
        counts = tuple(_rounded(k * s, int(s), multiple) for k, s in zip(numpy.clip(low * shares, 0, 1), sizes))
        removed = allocations.flops_removed(list(counts))
        if abs(removed - budget) <= tolerance:
            found[counts] = removed
    return found


def grid(allocations: Allocations, budget: float, points: int, tolerance: float, limit: int = 5000):
    """Every allocation on a grid within ``tolerance`` of ``budget``: each set but the largest takes ``points`` evenly
    spaced counts from 1 to its size (every count when it has no more channels), the largest set the count that
    comes nearest the budget. A ``ValueError`` when the grid holds more than ``limit`` allocations."""
    sizes = allocations.sizes
    solved = sizes.index(max(sizes))
    axes = [
        sorted({int(round(value)) for value in numpy.linspace(1, size, min(points, size))})
        for index, size in enumerate(sizes)
        if index != solved
    ]
    total = int(numpy.prod([len(axis) for axis in axes]))
    if total > limit:
        raise ValueError(f"a grid of {points} points per set holds {total} allocations here (limit {limit})")
    found: dict[tuple[int, ...], float] = {}
    for others in itertools.product(*axes):
        counts = list(others[:solved]) + [sizes[solved]] + list(others[solved:])
        low, high = 1, sizes[solved]  # FLOPs removed falls as the solved set keeps more channels
        while low < high:
            middle = (low + high) // 2
            counts[solved] = middle
            low, high = (middle + 1, high) if allocations.flops_removed(counts) > budget else (low, middle)
        for count in {max(low - 1, 1), low}:
            counts[solved] = count
            removed = allocations.flops_removed(counts)
            if abs(removed - budget) <= tolerance:
                found[tuple(counts)] = removed
    return found


def _ours(runs: Path | None, dataset: str, model: str, budget: float, example: torch.Tensor):
    """Each of ours' seed-0 shrunk model at ``budget`` that ``runs`` holds."""
    if runs is None:
        return {}
    found = {}
    for label, slug in OURS.items():
        run = runs / f"{dataset}-{model}" / slug / f"t{budget:g}" / "s0"
        if (run / "summary.json").exists():
            found[label] = shrink(load_run_weights(run).build_model(), example).eval()
    return found


class Screening(NamedTuple):
    """A model's random allocations at the budget, screened beside the dense model (fastest first)."""

    dense: torch.nn.Module
    example: torch.Tensor
    allocations: Allocations
    found: dict[tuple[int, ...], float]
    screened: list[tuple[float, tuple[int, ...]]]


def add_screening_arguments(parser: argparse.ArgumentParser, samples: int, screen_rounds: int) -> None:
    """The command-line options :func:`screen` reads (and ``--models``)."""
    parser.add_argument("--models", nargs="+", default=list(MODELS), metavar="DATASET:MODEL")
    parser.add_argument("--budget", type=float, default=0.5, help="FLOPs removed (default 0.5)")
    parser.add_argument("--tolerance", type=float, default=0.005, help="largest |FLOPs removed - budget|")
    parser.add_argument("--samples", type=int, default=samples, help=f"random allocations per model ({samples})")
    parser.add_argument("--group", type=int, default=6, help="allocations screened per timing group")
    parser.add_argument("--screen-rounds", type=int, default=screen_rounds, help="rounds per screening group")
    parser.add_argument("--batch", type=int, default=256, help="the throughput batch (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random allocations")
    parser.add_argument(
        "--onnxruntime",
        action="store_true",
        help="time the models in ONNX Runtime (exported to ONNX) instead of eager PyTorch",
    )
    parser.add_argument(
        "--grid",
        type=int,
        default=None,
        metavar="POINTS",
        help="every allocation on a grid of POINTS counts per set (the largest set solved onto the budget) instead "
        "of random ones: an exhaustive search on models with few sets",
    )


def screen(dataset: str, name: str, args: argparse.Namespace, multiple: int = 1) -> Screening:
    """Draw ``args.samples`` random allocations of the freshly built model within ``args.tolerance`` of
    ``args.budget`` and time them in groups of ``args.group`` beside the dense model (``args.screen_rounds`` rounds
    at batch ``args.batch``): their time over dense and counts, fastest first."""
    data = load_dataset(dataset)
    examples = data.x_test[:8]
    example = data.test_transform(examples, None) if data.test_transform else examples.float()
    torch.manual_seed(0)
    dense = create_model(name, num_classes=data.num_classes, input_shape=tuple(example.shape[1:])).eval()
    allocations = Allocations(dense, example)
    if getattr(args, "grid", None):
        found = grid(allocations, args.budget, args.grid, args.tolerance)
    else:
        found = sample(allocations, args.budget, args.samples, multiple, args.tolerance, args.seed)
    candidates = list(found)
    screened: list[tuple[float, tuple[int, ...]]] = []
    reference = _runnable(dense, example, args)
    for start in range(0, len(candidates), args.group):
        group = candidates[start : start + args.group]
        models = [reference] + [_runnable(allocations.build(list(counts)), example, args) for counts in group]
        times = latency_medians(models, example[:1], args.batch, rounds=args.screen_rounds)
        screened += [(time / times[0], counts) for time, counts in zip(times[1:], group)]
    return Screening(dense, example, allocations, found, sorted(screened))


def _runnable(model: torch.nn.Module, example: torch.Tensor, args: argparse.Namespace) -> torch.nn.Module:
    """``model`` as it is timed: itself, or exported and run by ONNX Runtime with ``--onnxruntime``."""
    return OnnxRuntimeModel(model, example[:1]) if args.onnxruntime else model


def measure(spec: str, args: argparse.Namespace) -> str:
    dataset, name = spec.split(":")
    dense, example, allocations, found, screened = screen(dataset, name, args, args.multiple)
    reference = _runnable(dense, example, args)
    floor = _runnable(one_channel_model(dense, example), example, args)
    kind = f"grid of {args.grid}" if args.grid else "random"
    timed = [(f"{kind}, best {rank + 1}", counts) for rank, (_, counts) in enumerate(screened[: args.best])]
    rows = []
    for label, counts in timed:
        shrunk = _runnable(allocations.build(list(counts)), example, args)
        times = latency_medians([reference, shrunk, floor], example[:1], args.batch, rounds=args.rounds)
        rows.append((label, times[1] / times[0], times[2] / times[0], found[counts], " ".join(map(str, counts))))
    for label, shrunk in _ours(args.runs, dataset, name, args.budget, example).items():
        removed = 1.0 - _macs(shrunk, example) / _macs(dense, example)
        runnable = _runnable(shrunk, example, args)
        times = latency_medians([reference, runnable, floor], example[:1], args.batch, rounds=args.rounds)
        rows.append((label, times[1] / times[0], times[2] / times[0], removed, "(its run)"))
    median = statistics.median(ratio for ratio, _ in screened) if screened else float("nan")
    lines = [
        f"| {dataset}/{name} | {label} | {removed:.3f} | {ratio:.2f}x | {floor_ratio:.2f}x | {counts} |"
        for label, ratio, floor_ratio, removed, counts in rows
    ]
    lines.append(
        f"| {dataset}/{name} | {kind}, median of {len(screened)} (screening) | {args.budget:g} ± {args.tolerance:g} "
        f"| {median:.2f}x | | sets of {' '.join(map(str, allocations.sizes))} |"
    )
    return "\n".join(lines)


def _shown(argv: list[str]) -> str:
    """The command's arguments as the page shows them: a run directory as ``RUNS``, ``--no-write`` left out."""
    shown, hide = [], False
    for argument in argv:
        shown.append("RUNS" if hide else argument)
        hide = argument == "--runs"
    return " ".join(argument for argument in shown if argument != "--no-write")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_screening_arguments(parser, samples=48, screen_rounds=20)
    parser.add_argument("--multiple", type=int, default=1, help="round every kept count to this multiple")
    parser.add_argument("--best", type=int, default=4, help="fastest screened allocations timed again")
    parser.add_argument("--rounds", type=int, default=80, help="rounds of the final three-model timing")
    parser.add_argument("--runs", type=Path, default=None, help="run directories of the structured suites")
    parser.add_argument("--no-write", action="store_true", help="print only; do not update docs/structured.md")
    parser.add_argument(
        "--section",
        default=None,
        help="the page's section the table goes to (default: allocation-latency, -xMULTIPLE or -gridPOINTS)",
    )
    add_allocator_argument(parser)
    args = parser.parse_args()
    fix_allocator(args)
    if args.grid and args.multiple > 1:
        parser.error("--grid and --multiple: the grid's counts are its own")
    runtime = ", ONNX Runtime" if args.onnxruntime else ""
    rounding = f", counts rounded to multiples of {args.multiple}" if args.multiple > 1 else ""
    drawn = (
        f"every allocation on a grid of {args.grid} counts per set"
        if args.grid
        else f"{args.samples} random allocations per model"
    )
    header = [
        f"Batch {args.batch}, one thread{runtime}, FLOPs removed {args.budget:g} ± {args.tolerance:g}{rounding}; "
        f"{drawn} screened ({args.screen_rounds} rounds in groups of "
        f"{args.group} beside the dense model), the {args.best} fastest timed again with dense and the floor "
        f"({args.rounds} rounds). Machine: {machine()}.",
        "",
        f"Command: `python benchmarks/allocation_latency.py {_shown(sys.argv[1:])}`",
        "",
        "| model | allocation | FLOPs removed | shrunk / dense | floor / dense | kept channels per set |",
        "|---|---|---|---|---|---|",
    ]
    body = "\n".join(header + [measure(spec, args) for spec in args.models])
    print(body)
    if not args.no_write:
        key = "allocation-latency" if args.multiple <= 1 else f"allocation-latency-x{args.multiple}"
        key = f"allocation-latency-grid{args.grid}" if args.grid else key
        key = args.section or key
        write_section(Path(__file__).resolve().parent.parent / "docs" / "structured.md", key, body)


if __name__ == "__main__":
    main()
