"""End-to-end training time of `adasparse train` (default method) over gradual magnitude pruning, pair by pair.

Each pair runs the same command twice as whole processes (start-up included), once with the default method and once
with `--method gmp`, with one torch thread each; pairs of different models and seeds run in parallel processes.
The ratio of each pair is reported, and their median per model.

    python benchmarks/end_to_end.py --models mnist1d:cnn1d digits:cnn2d --seeds 0 1 --jobs 4
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


def _timed(argv: list[str]) -> float:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _pair(dataset: str, model: str, seed: int, root: Path, extra: list[str]) -> tuple[str, float, float]:
    base = [sys.executable, "-m", "adasparse", "train", "--dataset", dataset, "--model", model, "--seed", str(seed)]
    base += ["--no-dense-baseline", "--quiet", "--device", "cpu", *extra]
    ours = _timed([*base, "--out", str(root / f"{dataset}-{model}-{seed}-ours")])
    gmp = _timed([*base, "--method", "gmp", "--out", str(root / f"{dataset}-{model}-{seed}-gmp")])
    return f"{model} ({dataset})", ours, gmp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mnist1d:cnn1d", "digits:cnn2d"], metavar="DATASET:MODEL")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--jobs", type=int, default=1, help="pairs run in parallel (one thread each)")
    parser.add_argument("--epochs", type=int, default=None, help="override the data set's recipe")
    args = parser.parse_args()
    extra = ["--epochs", str(args.epochs)] if args.epochs else []
    with tempfile.TemporaryDirectory() as root, ThreadPoolExecutor(args.jobs) as pool:
        futures = [
            pool.submit(_pair, *spec.split(":", 1), seed, Path(root), extra)
            for spec in args.models
            for seed in args.seeds
        ]
        results = [future.result() for future in futures]
    print("| model | seed runs (default s / GMP s) | default / GMP, median |")
    print("|---|---|---|")
    for name in dict.fromkeys(name for name, _, _ in results):
        pairs = [(ours, gmp) for n, ours, gmp in results if n == name]
        cells = ", ".join(f"{ours:.1f}/{gmp:.1f}" for ours, gmp in pairs)
        print(f"| {name} | {cells} | {statistics.median(o / g for o, g in pairs):.3f}× |")


if __name__ == "__main__":
    main()
