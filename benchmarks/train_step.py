"""Train-step time of a sparsified model relative to the dense one, measured side by side in one run.

Compares, on CPU: dense; adasparse (operator + adaptive sparsity loss); ``torch.nn.utils.prune`` masks
(a fixed mask multiplied in by a forward pre-hook, no learning of the threshold). Steps of all variants are
interleaved so that machine noise hits them alike; the table reports the median step time over the dense one.

    python benchmarks/train_step.py                 # prints the table and rewrites its section of docs/benchmarks.md
    python benchmarks/train_step.py --steps 50 --no-write
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import torch.nn.utils.prune as torch_prune
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import write_section

import adasparse


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 14 * 14, 10),
    )


CASES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], int]] = {
    "MLP 784-300-100-10": (mlp, (784,), 128),
    "CNN conv32-conv64-pool-fc": (cnn, (1, 28, 28), 64),
}


def _variants(make: Callable[[], nn.Module]) -> dict[str, tuple[nn.Module, Callable[[], torch.Tensor] | None]]:
    variants: dict[str, tuple[nn.Module, Callable[[], torch.Tensor] | None]] = {}
    torch.manual_seed(0)
    variants["dense"] = (make(), None)
    torch.manual_seed(0)
    model = adasparse.sparsify(make(), target=0.9)
    criterion = adasparse.SparsityLoss(model, target=0.9, mode="adaptive", weight=10.0)
    variants["adasparse"] = (model, criterion)
    torch.manual_seed(0)
    pruned = make()
    for module in pruned.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)) and module.weight.numel() >= 1000:
            torch_prune.l1_unstructured(module, "weight", amount=0.9)
    variants["torch.nn.utils.prune"] = (pruned, None)
    return variants


def measure(case: str, steps: int, warmup: int = 20) -> dict[str, float]:
    make, shape, batch = CASES[case]
    variants = _variants(make)
    x = torch.randn(batch, *shape)
    y = torch.randint(0, 10, (batch,))
    optimizers = {
        name: torch.optim.SGD(adasparse.param_groups(model, lr=0.01, weight_decay=5e-4), momentum=0.9)
        for name, (model, _) in variants.items()
    }

    def step(name: str) -> float:
        model, criterion = variants[name]
        optimizer = optimizers[name]
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        if criterion is not None:
            loss = loss + criterion()
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    for name in variants:
        for _ in range(warmup):
            step(name)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(steps):
        for name in variants:
            times[name].append(step(name))
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {"dense_ms": medians["dense"] * 1e3, **{name: medians[name] / medians["dense"] for name in variants}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="interleaved steps per variant (default 400)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--no-write", action="store_true", help="print only; do not update docs/benchmarks.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for case in CASES:
        result = measure(case, args.steps)
        rows.append(
            f"| {case} | {CASES[case][2]} | {result['dense_ms']:.2f} | {result['adasparse']:.2f}× "
            f"| {result['torch.nn.utils.prune']:.2f}× |"
        )
        print(rows[-1], flush=True)
    table = "\n".join(
        [
            "| model | batch | dense step (ms) | adasparse / dense | torch prune masks / dense |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )
    machine = f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}"
    body = (
        f"Median of {args.steps} interleaved train steps (forward, backward, SGD step; adasparse includes its "
        f"adaptive sparsity loss). Machine: {machine}.\n\n"
        f"Command: `python benchmarks/train_step.py --steps {args.steps}`\n\n{table}\n"
    )
    print(body)
    if not args.no_write:
        write_section(Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md", "train-step", body)


if __name__ == "__main__":
    main()
