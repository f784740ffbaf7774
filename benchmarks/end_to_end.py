"""End-to-end training time of `adasparse train` (default method) over gradual magnitude pruning, pair by pair.

Each pair runs the same command twice as whole processes (start-up included), once with the default method and once
with `--method gmp`, with one torch thread each; pairs of different models and seeds run in parallel processes.
The ratio of each pair is reported, and their median per model.

    python benchmarks/end_to_end.py --models mnist1d:cnn1d digits:cnn2d --seeds 0 1 --jobs 4

On a machine with few cores, parallel pairs set each other's speed; ``--jobs 1 --warmup 1 --repeats 4`` instead runs
every pair four times one process at a time (the two commands alternated, after one pair that is not counted), so a
drift of the machine's speed hits both sides of a pair alike. The order inside a pair alternates from one repeat to
the next (default first, then GMP first), so that whatever favours the first or the second process of a pair (a cache
the other left warm, the machine's speed changing inside the pair) weighs on both sides alike.

``--crossover A B`` instead runs the two commands of a pair at the same time, each pinned to one of the two cores,
then again with the cores swapped, and takes the geometric mean of the two ratios. Both commands live through the same
stretch of the machine's speed (which drifts by tens of percent within minutes on shared machines), and a fixed speed
difference between the two cores cancels: (ours_A / gmp_B · ours_B / gmp_A)^(1/2) no longer depends on it. The longer
run of a pair finishes alone on the machine, which flatters it slightly; the whole-process alternation above does not
have that bias but reads the drift instead. With ``--lower-bound`` the copy-operator run is crossed against GMP
the same way, in its own pair of halves.

``--lower-bound`` adds a third run per pair: the default with its pruning operator replaced by a plain copy of the
weight (``_copy_operator_train.py``), the floor of any operator in this training loop.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def _timed(argv: list[str], check: bool = True, cpu: int | None = None) -> float:
    """Wall time of one command with one torch thread, pinned to ``cpu`` when given."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    pin = None if cpu is None else (lambda: os.sched_setaffinity(0, {cpu}))
    start = time.perf_counter()
    subprocess.run(
        argv, check=check, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pin
    )
    return time.perf_counter() - start


_COPY_OPERATOR = str(Path(__file__).resolve().parent / "_copy_operator_train.py")


def _options(dataset: str, model: str, seed: int, extra: list[str]) -> list[str]:
    """``adasparse train``'s arguments shared by both commands of a pair."""
    options = ["train", "--dataset", dataset, "--model", model, "--seed", str(seed)]
    return options + ["--no-dense-baseline", "--quiet", "--device", "cpu", *extra]


def _pair(
    dataset: str, model: str, seed: int, root: Path, extra: list[str], lower_bound: bool, gmp_first: bool = False
) -> tuple[str, float, float, float | None]:
    """One pair's times (default, GMP, the copy operator's or ``None``), GMP's run first when ``gmp_first``."""
    options = _options(dataset, model, seed, extra)
    base = [sys.executable, "-m", "adasparse", *options]
    ours_run = [*base, "--out", str(root / f"{dataset}-{model}-{seed}-ours")]
    gmp_run = [*base, "--method", "gmp", "--out", str(root / f"{dataset}-{model}-{seed}-gmp")]
    if gmp_first:
        gmp, ours = _timed(gmp_run), _timed(ours_run)
    else:
        ours, gmp = _timed(ours_run), _timed(gmp_run)
    copy = None
    if lower_bound:
        # Nothing is pruned, so the run ends with "target not reached" (status 1): only its time counts.
        copy_run = [sys.executable, _COPY_OPERATOR, *options, "--out", str(root / f"{dataset}-{model}-{seed}-copy")]
        copy = _timed(copy_run, check=False)
    return f"{model} ({dataset})", ours, gmp, copy


def _crossover(
    dataset: str,
    model: str,
    seed: int,
    root: Path,
    extra: list[str],
    cpus: tuple[int, int],
    copy_operator: bool = False,
) -> tuple[str, list[tuple[float, float]], float]:
    """Both commands at once on the two cores, then swapped: (name, [(default s, GMP s)] per half, crossed ratio).
    With ``copy_operator`` the default's command is the copy-operator lower bound's (``_copy_operator_train.py``)."""
    options = _options(dataset, model, seed, extra)
    base = [sys.executable, "-m", "adasparse", *options]
    first = [sys.executable, _COPY_OPERATOR, *options] if copy_operator else base
    label = "copy" if copy_operator else "ours"
    halves = []
    with ThreadPoolExecutor(2) as pool:
        for half, (ours_cpu, gmp_cpu) in enumerate((cpus, cpus[::-1])):
            ours_run = [*first, "--out", str(root / f"{dataset}-{model}-{seed}-{label}-{half}")]
            gmp_run = [*base, "--method", "gmp", "--out", str(root / f"{dataset}-{model}-{seed}-gmp-{label}-{half}")]
            # The copy operator prunes nothing, so its run ends with "target not reached" (status 1).
            ours = pool.submit(_timed, ours_run, not copy_operator, ours_cpu)
            gmp = pool.submit(_timed, gmp_run, True, gmp_cpu)
            halves.append((ours.result(), gmp.result()))
    return f"{model} ({dataset})", halves, _crossed_ratio(halves)


def _crossed_ratio(halves: list[tuple[float, float]]) -> float:
    """Geometric mean of the halves' default/GMP ratios: a fixed speed factor between the two cores cancels."""
    (ours_a, gmp_b), (ours_b, gmp_a) = halves
    return math.sqrt((ours_a / gmp_b) * (ours_b / gmp_a))


def _summary(ratios: list[float]) -> str:
    """The median ratio, with the range when there are several."""
    text = f"{statistics.median(ratios):.3f}×"
    return text if len(ratios) == 1 else f"{text} ({min(ratios):.3f}-{max(ratios):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mnist1d:cnn1d", "digits:cnn2d"], metavar="DATASET:MODEL")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--jobs", type=int, default=1, help="pairs run in parallel (one thread each)")
    parser.add_argument("--epochs", type=int, default=None, help="override the data set's recipe")
    parser.add_argument("--repeats", type=int, default=1, help="counted pairs per model and seed")
    parser.add_argument("--warmup", type=int, default=0, help="pairs per model run first and not counted")
    parser.add_argument(
        "--lower-bound",
        action="store_true",
        help="also time the default with the operator replaced by a copy (_copy_operator_train.py): a lower bound",
    )
    parser.add_argument(
        "--crossover",
        nargs=2,
        type=int,
        metavar=("CPU_A", "CPU_B"),
        help="run both commands of a pair at once, pinned to these two cores, then swapped (see above)",
    )
    args = parser.parse_args()
    if args.repeats < 1 or args.warmup < 0 or args.jobs < 1:
        parser.error("--repeats and --jobs must be >= 1, --warmup >= 0")
    extra = ["--epochs", str(args.epochs)] if args.epochs else []
    if args.crossover:
        available = os.sched_getaffinity(0)
        if args.crossover[0] == args.crossover[1] or not set(args.crossover) <= available:
            parser.error(f"--crossover needs two different cores of this process's {sorted(available)}")
        if args.jobs != 1:
            parser.error("--crossover takes the two cores itself: --jobs 1")
        _print_crossovers(args, extra)
        return
    with tempfile.TemporaryDirectory() as root, ThreadPoolExecutor(args.jobs) as pool:
        runs = Path(root)
        for index in range(args.warmup):
            for spec in args.models:
                _pair(*spec.split(":", 1), args.seeds[0], runs / f"warmup{index}", extra, args.lower_bound)
        futures = [
            pool.submit(
                _pair, *spec.split(":", 1), seed, runs / f"repeat{repeat}", extra, args.lower_bound, repeat % 2 == 1
            )
            for repeat in range(args.repeats)
            for spec in args.models
            for seed in args.seeds
        ]
        results = [future.result() for future in futures]
    runs_header = "default s / GMP s / copy s" if args.lower_bound else "default s / GMP s"
    bound = " | copy operator / GMP, median (range)" if args.lower_bound else ""
    print(f"| model | runs ({runs_header}) | default / GMP, median (range){bound} |")
    print("|---|---|---|" + ("---|" if args.lower_bound else ""))
    for name in dict.fromkeys(result[0] for result in results):
        runs = [result[1:] for result in results if result[0] == name]
        cells = ", ".join("/".join(f"{t:.1f}" for t in run if t is not None) for run in runs)
        row = f"| {name} | {cells} | {_summary([o / g for o, g, _ in runs])} |"
        if args.lower_bound:
            row += f" {_summary([c / g for _, g, c in runs])} |"
        print(row)


def _print_crossovers(args: argparse.Namespace, extra: list[str]) -> None:
    """The crossover protocol's table: each model's halves and its crossed ratios' median and range (and the
    copy-operator bound's, crossed against GMP the same way, with ``--lower-bound``)."""
    cpus = tuple(args.crossover)
    kinds = (False, True) if args.lower_bound else (False,)
    with tempfile.TemporaryDirectory() as root:
        runs = Path(root)
        for index in range(args.warmup):
            for spec in args.models:
                _crossover(*spec.split(":", 1), args.seeds[0], runs / f"warmup{index}", extra, cpus)
        results = [
            (
                copy_operator,
                *_crossover(*spec.split(":", 1), seed, runs / f"repeat{repeat}", extra, cpus, copy_operator),
            )
            for repeat in range(args.repeats)
            for spec in args.models
            for seed in args.seeds
            for copy_operator in kinds
        ]
    cores = f"cores {cpus[0]}/{cpus[1]} then {cpus[1]}/{cpus[0]}"
    header = f"| model | runs (default s / GMP s, {cores}) | default / GMP, crossed, median (range) |"
    if args.lower_bound:
        header += f" runs (copy s / GMP s, {cores}) | copy operator / GMP, crossed, median (range) |"
    print(header)
    print("|---|---|---|" + ("---|---|" if args.lower_bound else ""))
    for name in dict.fromkeys(result[1] for result in results):
        row = f"| {name} |"
        for copy_operator in kinds:
            mine = [result[2:] for result in results if result[1] == name and result[0] == copy_operator]
            cells = ", ".join(" + ".join(f"{o:.1f}/{g:.1f}" for o, g in halves) for halves, _ in mine)
            row += f" {cells} | {_summary([ratio for _, ratio in mine])} |"
        print(row)


if __name__ == "__main__":
    main()
