"""Prune whole channels of a pretrained CNN to half its FLOPs, then make it physically smaller with adasparse.shrink.

Real, offline data: scikit-learn's bundled 8x8 handwritten digits. A small BatchNorm CNN is first trained dense (the
"pretrained" model), then fine-tuned with :class:`adasparse.Pruner` at ``granularity="channel"`` and
``budget="flops"``: one learned threshold per set of tied channels, the budget (half the multiply-accumulates) held
during training, the channels fixed for the last part of the fine-tuning. ``shrink`` then removes the zeroed
channels, and the smaller plain model computes what the pruned one computes. The script prints both accuracies, the
parameters and FLOPs of both models (counted by ``torch.utils.flop_counter``), their CPU time at batch 1 and at a
throughput batch (timed alternately, one thread), and can export the smaller model to ONNX. Needs the structured
extra (``pip install "adasparse[structured]"``: torch-pruning finds the tied channels). Runs in about a minute on 2
CPU cores.

    python examples/channels_for_speed.py [--target 0.5] [--epochs 8] [--channel-multiple 8] [--onnx small.onnx]
        [--onnxruntime]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import adasparse


def load(seed: int) -> tuple[torch.Tensor, ...]:
    """Images ``(N, 1, 8, 8)`` scaled to [0, 1] and labels, split 80/20 with ``seed``."""
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(data.target)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    test, train = order[:360], order[360:]
    return images[train], labels[train], images[test], labels[test]


def build_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)

    def block(inputs: int, outputs: int) -> list[nn.Module]:
        return [nn.Conv2d(inputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU()]

    return nn.Sequential(
        *block(1, 32),
        *block(32, 64),
        nn.MaxPool2d(2),
        *block(64, 128),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, 10),
    )


def fit(
    model: nn.Module,
    data: tuple[torch.Tensor, ...],
    epochs: int,
    lr: float,
    seed: int,
    target: float | None = None,
    channel_multiple: int = 1,
) -> adasparse.Pruner | None:
    """Train ``model`` with AdamW for ``epochs``; with ``target``, pruned by channels to that FLOPs budget (each
    set's kept channels rounded to a multiple of ``channel_multiple`` when they are fixed)."""
    x_train, y_train = data[0], data[1]
    batches_per_epoch = -(-len(x_train) // 64)
    pruner = None
    if target is not None:
        pruner = adasparse.Pruner(
            model,
            target=target,
            total_steps=batches_per_epoch * epochs,
            granularity="channel",
            budget="flops",
            example_input=x_train[:8],
            channel_multiple=channel_multiple,
        )
        groups: Any = pruner.param_groups(lr=lr, weight_decay=0.01)
    else:
        groups = model.parameters()
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x_train), generator=generator)
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
    return pruner


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return (model.eval()(x).argmax(1) == y).float().mean().item()


@torch.no_grad()
def flops(model: nn.Module, x: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        model.eval()(x)
    return counter.get_total_flops()


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def median_times(models: Sequence[nn.Module], x: torch.Tensor, rounds: int) -> list[float]:
    """Median seconds of one forward pass of each model, timed alternately (a drift of the machine's speed hits
    every model alike) after one untimed pass each."""
    for model in models:
        model.eval()(x)
    times: list[list[float]] = [[] for _ in models]
    for _ in range(rounds):
        for model, own in zip(models, times):
            start = time.perf_counter()
            model(x)
            own.append(time.perf_counter() - start)
    return [statistics.median(own) for own in times]


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=0.5, help="fraction of the FLOPs to remove (default 0.5)")
    parser.add_argument("--pretrain-epochs", type=int, default=20, help="dense training epochs (default 20)")
    parser.add_argument("--epochs", type=int, default=8, help="pruning fine-tuning epochs (default 8)")
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate (default 3e-3)")
    parser.add_argument(
        "--channel-multiple", type=int, default=1, help="round kept channels to a multiple of this (8: faster batches)"
    )
    parser.add_argument("--batch", type=int, default=256, help="throughput batch to time (default 256)")
    parser.add_argument("--rounds", type=int, default=50, help="timing rounds per batch size (default 50)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads while timing (default 1)")
    parser.add_argument("--onnx", default=None, help="also export the smaller model to this ONNX file")
    parser.add_argument(
        "--onnxruntime", action="store_true", help="also time both models in ONNX Runtime (needs the onnx extra)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    data = load(args.seed)
    x_test, y_test = data[2], data[3]

    dense = build_model(args.seed)
    fit(dense, data, args.pretrain_epochs, args.lr, args.seed)
    model = build_model(args.seed)
    model.load_state_dict(dense.state_dict())  # the pretrained start
    pruner = fit(
        model, data, args.epochs, args.lr, args.seed, target=args.target, channel_multiple=args.channel_multiple
    )
    assert pruner is not None
    pruner.finish()  # a plain model: the pruned channels' weights are zero
    smaller = adasparse.shrink(model, x_test[:8])  # the zeroed channels removed
    with torch.no_grad():
        largest_difference = (smaller.eval()(x_test) - model.eval()(x_test)).abs().max().item()

    figures = {
        "dense_accuracy": accuracy(dense, x_test, y_test),
        "pruned_accuracy": accuracy(model, x_test, y_test),
        "shrunk_accuracy": accuracy(smaller, x_test, y_test),
        "largest_output_difference": largest_difference,
        "flops_kept": flops(smaller, x_test[:1]) / flops(dense, x_test[:1]),
        "parameters_kept": parameters(smaller) / parameters(dense),
    }
    runtimes = {"": [dense, smaller]}
    if args.onnxruntime:  # the same two models exported to ONNX, run by ONNX Runtime with as many threads
        from adasparse.app.latency import OnnxRuntimeModel

        runtimes["onnxruntime_"] = [OnnxRuntimeModel(m, x_test[:1], threads=args.threads) for m in (dense, smaller)]
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        for prefix, models in runtimes.items():
            for batch in (1, args.batch):
                inputs = x_test[:1].expand(batch, -1, -1, -1).contiguous()
                dense_time, smaller_time = median_times(models, inputs, args.rounds)
                figures[f"{prefix}time_ratio_batch_{batch}"] = smaller_time / dense_time
    finally:
        torch.set_num_threads(threads)

    print(pruner.result.report)
    print()
    print(smaller)
    print()
    print(
        f"test accuracy: dense {figures['dense_accuracy']:.4f}, pruned {figures['pruned_accuracy']:.4f}, "
        f"shrunk {figures['shrunk_accuracy']:.4f} (largest output difference {largest_difference:.1e})"
    )
    print(
        f"the shrunk model keeps {figures['flops_kept']:.3f} of the FLOPs and {figures['parameters_kept']:.3f} of the "
        f"parameters; its time over the dense model's ({args.threads} thread): batch 1 "
        f"{figures['time_ratio_batch_1']:.2f}x, batch {args.batch} {figures[f'time_ratio_batch_{args.batch}']:.2f}x"
    )
    if args.onnxruntime:
        hint = " (its 2-D convolutions are fastest on channel counts rounded: --channel-multiple 8)"
        print(
            f"in ONNX Runtime: batch 1 {figures['onnxruntime_time_ratio_batch_1']:.2f}x, batch {args.batch} "
            f"{figures[f'onnxruntime_time_ratio_batch_{args.batch}']:.2f}x{hint if args.channel_multiple == 1 else ''}"
        )
    if args.onnx is not None:
        adasparse.export_onnx(smaller, x_test[:1], args.onnx)
        print(f"ONNX: {args.onnx}")
    print(f"wall time {time.perf_counter() - start:.1f} s")
    return figures


if __name__ == "__main__":
    main()
