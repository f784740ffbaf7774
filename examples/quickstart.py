"""Prune an MLP on scikit-learn's bundled handwritten digits (real, offline data) to 90% sparsity.

Trains the same network dense and with :class:`adasparse.Pruner` in an ordinary loop (four added lines: build
the pruner, take the optimizer's groups from it, add ``pruner.loss()``, call ``pruner.step()``, and ``finish()``
at the end), then prints the per-layer table and both accuracies. Runs in well under a minute on 2 CPU cores.

    python examples/quickstart.py [--target 0.9] [--epochs 30] [--mode projection|adaptive|fixed|upper|constraint]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

import adasparse


def load(seed: int) -> tuple[torch.Tensor, ...]:
    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32)
    y = torch.tensor(data.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    train, test = order[:1400], order[1400:]
    mean, std = x[train].mean(0), x[train].std(0) + 1e-3  # statistics of the training split only
    x = (x - mean) / std
    return x[train], y[train], x[test], y[test]


def train(data: tuple[torch.Tensor, ...], mode: str | None, target: float, epochs: int, seed: int) -> nn.Module:
    x_train, y_train = data[0], data[1]
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    batches_per_epoch = -(-len(x_train) // 64)
    pruner = None
    if mode is not None:
        pruner = adasparse.Pruner(model, target=target, total_steps=batches_per_epoch * epochs, mode=mode)
        groups = pruner.param_groups(lr=0.1, weight_decay=5e-4)
    else:
        groups = adasparse.param_groups(model, lr=0.1, weight_decay=5e-4)
    optimizer = torch.optim.SGD(groups, momentum=0.9)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    for _ in range(epochs):
        order = torch.randperm(len(x_train))
        for start in range(0, len(order), 64):
            batch = order[start : start + 64]
            loss = F.cross_entropy(model(x_train[batch]), y_train[batch])
            if pruner is not None:
                loss = loss + pruner.loss()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if pruner is not None:
                pruner.step()
        schedule.step()
    if pruner is not None:
        pruner.finish()
        print(pruner.result.report)
        print()
        print(pruner.result)
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return (model(x).argmax(1) == y).float().mean().item()


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=0.9, help="overall sparsity in [0, 1) (default 0.9)")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    parser.add_argument(
        "--mode", choices=adasparse.control.loss.MODES, default="projection", help="how the budget is held"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    data = load(args.seed)
    dense = train(data, None, args.target, args.epochs, args.seed)
    sparse = train(data, args.mode, args.target, args.epochs, args.seed)
    figures = {
        "dense_accuracy": accuracy(dense, data[2], data[3]),
        "accuracy": accuracy(sparse, data[2], data[3]),
        "sparsity": adasparse.sparsity_report(sparse).overall,
    }
    print(
        f"test accuracy: dense {figures['dense_accuracy']:.4f}, {args.mode} {figures['accuracy']:.4f} at "
        f"{figures['sparsity']:.4f} sparsity"
    )
    print(f"wall time {time.perf_counter() - start:.1f} s")
    return figures


if __name__ == "__main__":
    main()
