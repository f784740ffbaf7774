"""End-to-end training time of `adasparse train` (default method) over gradual magnitude pruning, pair by pair.

Each pair runs the same command twice as whole processes (start-up included), once with the default method and once
with `--method gmp`, with one torch thread each; pairs of different models and seeds run in parallel processes.
The ratio of each pair is reported, and their median per model.

    python benchmarks/end_to_end.py --models mnist1d:cnn1d digits:cnn2d --seeds 0 1 --jobs 4

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
    dataset: str, model: str, seed: int, root: Path, extra: list[str], lower_bound: bool
) -> tuple[str, float, float, float | None]:
    options = ["train", "--dataset", dataset, "--model", model, "--seed", str(seed)]
    options += ["--no-dense-baseline", "--quiet", "--device", "cpu", *extra]
    base = [sys.executable, "-m", "adasparse", *options]
    ours = _timed([*base, "--out", str(root / f"{dataset}-{model}-{seed}-ours")])
    gmp = _timed([*base, "--method", "gmp", "--out", str(root / f"{dataset}-{model}-{seed}-gmp")])
    copy = None
    if lower_bound:
        # Nothing is pruned, so the run ends with "target not reached" (status 1): only its time counts.
        copy_run = [sys.executable, _COPY_OPERATOR, *options, "--out", str(root / f"{dataset}-{model}-{seed}-copy")]
        copy = _timed(copy_run, check=False)
    return f"{model} ({dataset})", ours, gmp, copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mnist1d:cnn1d", "digits:cnn2d"], metavar="DATASET:MODEL")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--jobs", type=int, default=1, help="pairs run in parallel (one thread each)")
    parser.add_argument("--epochs", type=int, default=None, help="override the data set's recipe")
    parser.add_argument(
        "--lower-bound",
        action="store_true",
        help="also time the default with the operator replaced by a copy (_copy_operator_train.py): a lower bound",
    )
    args = parser.parse_args()
    extra = ["--epochs", str(args.epochs)] if args.epochs else []
    with tempfile.TemporaryDirectory() as root, ThreadPoolExecutor(args.jobs) as pool:
        futures = [
            pool.submit(_pair, *spec.split(":", 1), seed, Path(root), extra, args.lower_bound)
            for spec in args.models
            for seed in args.seeds
        ]
        results = [future.result() for future in futures]
    runs_header = "default s / GMP s / copy s" if args.lower_bound else "default s / GMP s"
    bound = " | copy operator / GMP, median" if args.lower_bound else ""
    print(f"| model | seed runs ({runs_header}) | default / GMP, median{bound} |")
    print("|---|---|---|" + ("---|" if args.lower_bound else ""))
    for name in dict.fromkeys(result[0] for result in results):
        runs = [result[1:] for result in results if result[0] == name]
        cells = ", ".join("/".join(f"{t:.1f}" for t in run if t is not None) for run in runs)
        row = f"| {name} | {cells} | {statistics.median(o / g for o, g, _ in runs):.3f}× |"
        if args.lower_bound:
            row += f" {statistics.median(c / g for _, g, c in runs):.3f}× |"
        print(row)


if __name__ == "__main__":
    main()
