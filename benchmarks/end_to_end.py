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

``--lower-bound`` adds a third run per pair: the default with its pruning operator replaced by a plain copy of the
weight (``_copy_operator_train.py``), the floor of any operator in this training loop.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def _timed(argv: list[str], check: bool = True) -> float:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.perf_counter()
    subprocess.run(argv, check=check, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


_COPY_OPERATOR = str(Path(__file__).resolve().parent / "_copy_operator_train.py")


def _pair(
    dataset: str, model: str, seed: int, root: Path, extra: list[str], lower_bound: bool, gmp_first: bool = False
) -> tuple[str, float, float, float | None]:
    """One pair's times (default, GMP, the copy operator's or ``None``), GMP's run first when ``gmp_first``."""
    options = ["train", "--dataset", dataset, "--model", model, "--seed", str(seed)]
    options += ["--no-dense-baseline", "--quiet", "--device", "cpu", *extra]
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
    args = parser.parse_args()
    if args.repeats < 1 or args.warmup < 0 or args.jobs < 1:
        parser.error("--repeats and --jobs must be >= 1, --warmup >= 0")
    extra = ["--epochs", str(args.epochs)] if args.epochs else []
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


if __name__ == "__main__":
    main()
