"""Train-step time of a sparsified model under torch.compile over eager mode, side by side in one run.

python benchmarks/compile_step.py [--steps 200] [--no-write]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import publish  # noqa: E402
from train_step import CASES  # noqa: E402

import adasparse  # noqa: E402


def measure(case: str, steps: int) -> tuple[float, float, float]:
    make, shape, batch = CASES[case]
    setups = {}
    for name in ("eager", "compiled"):
        torch.manual_seed(0)
        model = adasparse.sparsify(make(), target=0.9)
        criterion = adasparse.SparsityLoss(model, target=0.9, mode="constraint", correction=True)
        optimizer = torch.optim.SGD(adasparse.param_groups(model, lr=0.01), lr=0.01, momentum=0.9)
        forward = torch.compile(model) if name == "compiled" else model
        setups[name] = (forward, criterion, optimizer)
    x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))

    def step(name: str) -> float:
        forward, criterion, optimizer = setups[name]
        start = time.perf_counter()
        loss = F.cross_entropy(forward(x), y) + criterion()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    compile_start = time.perf_counter()
    step("compiled")
    compile_seconds = time.perf_counter() - compile_start
    for _ in range(10):
        step("eager"), step("compiled")
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(steps):
        for name in times:
            times[name].append(step(name))
    eager = statistics.median(times["eager"])
    return eager * 1e3, statistics.median(times["compiled"]) / eager, compile_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rows = []
    for case in CASES:
        eager_ms, ratio, compile_seconds = measure(case, args.steps)
        rows.append(f"| {case} | {eager_ms:.2f} | {ratio:.2f}× | {compile_seconds:.0f} s |")
        print(rows[-1], flush=True)
    body = (
        f"Sparsified models (constraint loss with correction), median of {args.steps} interleaved train steps, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}.\n\n"
        f"Command: `python benchmarks/compile_step.py --steps {args.steps}`\n\n"
        "| model | eager step (ms) | compiled / eager | first compiled step |\n|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n"
    )
    publish("compile", body, write=not args.no_write)


if __name__ == "__main__":
    main()
