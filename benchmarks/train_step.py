"""Train-step time of a sparsified model relative to the dense one, measured side by side in one run.

Compares, on CPU, the variants of ``VARIANTS`` (dense; adasparse with the adaptive loss, with its default
projection controller, with fixed thresholds; ``torch.nn.utils.prune`` masks; a lower bound with the operator
replaced by a copy). Steps of all variants are
interleaved so that machine noise hits them alike; the table reports the median step time over the dense one,
at one thread and at all of them, as the median and range over repeats (the ratio of one run drifts by ±0.1 on the
MLP between runs on a shared machine).

    python benchmarks/train_step.py                 # prints the table and rewrites its section of docs/benchmarks.md
    python benchmarks/train_step.py --steps 50 --threads 1 --no-write
"""

from __future__ import annotations

import argparse
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
from _docs import machine, publish

import adasparse
from adasparse import parametrization
from adasparse.app.models.cnn1d import CNN1d
from adasparse.app.models.cnn2d import CNN2d
from adasparse.core.operator import effective_weight


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


def cnn1d() -> nn.Module:
    return CNN1d((1, 40), num_classes=10)


def cnn2d() -> nn.Module:
    return CNN2d((1, 8, 8), num_classes=10)


CASES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], int]] = {
    "MLP 784-300-100-10": (mlp, (784,), 128),
    "CNN conv32-conv64-pool-fc": (cnn, (1, 28, 28), 64),
    "CNN1d of the zoo (MNIST-1D)": (cnn1d, (1, 40), 100),
    "CNN2d of the zoo (digits)": (cnn2d, (1, 8, 8), 64),
}
"""The last two are ``adasparse train``'s ``cnn1d`` and ``cnn2d`` at their data sets' batch: the models of the
end-to-end comparison (``cnn2d`` has BatchNorm: the default bounds its second convolution's pruned gradients)."""

STEP_SHARE = {
    "MLP 784-300-100-10": 1.0,
    "CNN conv32-conv64-pool-fc": 0.125,
    "CNN1d of the zoo (MNIST-1D)": 1.0,
    "CNN2d of the zoo (digits)": 1.0,
}
"""Share of ``--steps`` each case runs per repeat: a CNN step is ~40x an MLP step and its ratios vary less."""


VARIANTS = (
    "dense",
    "adaptive",
    "projection",
    "Pruner",
    "Pruner, Gaussian projection",
    "fixed",
    "torch.nn.utils.prune",
    "adaptive, copy operator",
    "Pruner, copy operator",
    "Pruner, pruned-gradient bound 3",
)
"""What is timed: the dense model; adasparse with learned thresholds and the adaptive loss (the loop of the
README quickstart); adasparse's default controller (``mode="projection"``: zero loss term, thresholds projected in
``criterion.step()``); ``adasparse.Pruner`` with its defaults in the pruning phase (the layer-adaptive projection,
solved again when the distributions are measured, the unreached-layer check; no ramp, so the budget is the full
target from the first step), and with the previous default, the Gaussian projection (the thresholds' own Adam step
from their task gradient, the projection at every step);
adasparse with fixed thresholds (``trainable=False``, no loss: the operator alone);
``torch.nn.utils.prune`` L1 masks (a fixed mask multiplied in; nothing learned); and a lower bound that is not a
usable method: the adaptive setup with the operator replaced by a plain copy of the weight (identity gradient, no
gradient for the thresholds), i.e. what the loss, the thresholds in the optimizer and one materialised weight
cost before any pruning arithmetic; and the same lower bound for ``Pruner`` (its ``step()`` with the copy in place
of the operator: the projection and the checks, no threshold gradient); last, ``Pruner`` with
``pruned_gradient_bound=3`` on every layer (``pruned_gradient_bound_layers="all"``: a hook per pruned tensor clamping
its pruned weights' gradient; the default bounds only the layers a BatchNorm reads, none in these models)."""


class _CopyOperator(torch.autograd.Function):
    """Stand-in for the pruning operator in the lower-bound variant: a copy, identity gradient, none for ``r``."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, r: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return weight.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad, None


def _copy_operator(weight: torch.Tensor, r: torch.Tensor, centred: bool = False) -> torch.Tensor:
    return _CopyOperator.apply(weight, r)


class _Setup:
    def __init__(
        self,
        model: nn.Module,
        criterion: adasparse.SparsityLoss | adasparse.Pruner | None = None,
        operator: Callable[..., torch.Tensor] | None = None,
    ) -> None:
        self.model = model
        self.criterion = criterion
        self.operator = operator
        if isinstance(criterion, adasparse.Pruner):
            groups = criterion.param_groups(lr=0.01, weight_decay=5e-4)
        else:
            groups = adasparse.param_groups(model, lr=0.01, weight_decay=5e-4)
        self.optimizer = torch.optim.SGD(groups, momentum=0.9)


def _setup(variant: str, make: Callable[[], nn.Module]) -> _Setup:
    torch.manual_seed(0)
    model = make()
    if variant == "dense":
        return _Setup(model)
    if variant == "torch.nn.utils.prune":
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) and module.weight.numel() >= 1000:
                torch_prune.l1_unstructured(module, "weight", amount=0.9)
        return _Setup(model)
    if variant == "fixed":
        return _Setup(adasparse.sparsify(model, target=0.9, trainable=False))
    if variant.startswith("Pruner"):
        slope = "gaussian" if "Gaussian" in variant else "lamp"
        layers = "all" if variant.endswith("bound 3") else "normalized"  # the default: no norm here, no bound
        pruner = adasparse.Pruner(
            model, target=0.9, total_steps=10**9, ramp=0.0, projection_slope=slope, pruned_gradient_bound_layers=layers
        )
        return _Setup(model, pruner, _copy_operator if variant.endswith("copy operator") else None)
    model = adasparse.sparsify(model, target=0.9)
    if variant.startswith("adaptive"):
        criterion = adasparse.SparsityLoss(model, target=0.9, mode="adaptive", weight=10.0)
        return _Setup(model, criterion, _copy_operator if variant.endswith("copy operator") else None)
    return _Setup(model, adasparse.SparsityLoss(model, target=0.9, mode="projection", correction=True))


def measure(case: str, steps: int, warmup: int = 20, variants: tuple[str, ...] = VARIANTS) -> dict[str, float]:
    """Median step time of every variant (``variants``, dense always among them) over the dense one (and the dense
    step in ms), steps interleaved."""
    make, shape, batch = CASES[case]
    variants = ("dense", *(variant for variant in variants if variant != "dense"))
    setups = {variant: _setup(variant, make) for variant in variants}
    x = torch.randn(batch, *shape)
    y = torch.randint(0, 10, (batch,))

    def step(variant: str) -> float:
        setup = setups[variant]
        if setup.operator is not None:
            parametrization.effective_weight = setup.operator
        try:
            start = time.perf_counter()
            setup.optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(setup.model(x), y)
            if isinstance(setup.criterion, adasparse.Pruner):
                loss = loss + setup.criterion.loss()
            elif setup.criterion is not None:
                loss = loss + setup.criterion()
            loss.backward()
            setup.optimizer.step()
            if setup.criterion is not None:
                setup.criterion.step()
            return time.perf_counter() - start
        finally:
            parametrization.effective_weight = effective_weight

    for variant in variants:
        for _ in range(warmup):
            step(variant)
    times: dict[str, list[float]] = {variant: [] for variant in variants}
    for _ in range(steps):
        for variant in variants:
            times[variant].append(step(variant))
    medians = {variant: statistics.median(values) for variant, values in times.items()}
    return {"dense_ms": medians["dense"] * 1e3, **{v: medians[v] / medians["dense"] for v in variants}}


def _cell(values: list[float]) -> str:
    """Median over repeats, with the range when there is more than one."""
    middle = statistics.median(values)
    if len(values) == 1:
        return f"{middle:.2f}×"
    return f"{middle:.2f}× ({min(values):.2f}–{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=400, help="interleaved MLP steps per variant and repeat (default 400)"
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="independent measurements per cell, fresh models each (default 5)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=sorted({1, torch.get_num_threads()}),
        help="torch CPU thread counts to measure (default: 1 and all)",
    )
    parser.add_argument(
        "--cases",
        nargs="+",
        choices=list(CASES),
        default=list(CASES),
        metavar="CASE",
        help="models to time (default all)",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS[1:],
        default=VARIANTS[1:],
        metavar="VARIANT",
        help="what to time beside the dense model (default all; a subset is printed, never written to the docs)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only; do not update docs/benchmarks.md")
    args = parser.parse_args()
    chosen = ("dense", *(variant for variant in VARIANTS[1:] if variant in args.variants))
    if args.steps < 8 or args.repeats < 1:
        parser.error("--steps must be at least 8 and --repeats at least 1")
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for case in args.cases:
            steps = max(int(args.steps * STEP_SHARE[case]), 1)
            results = [measure(case, steps, variants=chosen) for _ in range(args.repeats)]
            ratios = " | ".join(_cell([result[variant] for result in results]) for variant in chosen[1:])
            dense_ms = statistics.median(result["dense_ms"] for result in results)
            rows.append(f"| {case} | {CASES[case][2]} | {threads} | {dense_ms:.2f} | {ratios} |")
            print(rows[-1], flush=True)
    header = " | ".join(f"{variant} / dense" for variant in chosen[1:])
    table = "\n".join(
        [
            f"| model | batch | threads | dense step (ms) | {header} |",
            "|---|---|---|---|" + "---|" * (len(chosen) - 1),
            *rows,
        ]
    )
    threads = " ".join(str(t) for t in args.threads)
    shares = ", ".join(f"{case} {max(int(args.steps * STEP_SHARE[case]), 1)}" for case in args.cases)
    body = (
        f"Each cell: the median step time of a variant over the dense one's, steps of all variants interleaved "
        f"(zero_grad, forward, backward, SGD step, and the sparsity loss and its `step()` where the variant has "
        f"one); median over {args.repeats} repeats with fresh models, range in brackets. Steps per repeat: "
        f"{shares}. Machine: {machine()}.\n\n"
        f"Command: `python benchmarks/train_step.py --steps {args.steps} --repeats {args.repeats} "
        f"--threads {threads}`\n\n{table}\n"
    )
    publish("train-step", body, write=not args.no_write and chosen == VARIANTS)  # a subset is printed only


if __name__ == "__main__":
    main()
