"""Mean training-step time over a whole schedule, in one process: the default, its copy-operator bound, and GMP.

Every variant runs a data set's recipe (its epochs of steps) on one batch, as ``adasparse bench``'s step table does,
the variants' steps interleaved so that the machine's drift hits them alike, one thread. The mean counts every phase
as a training does: the default's ramp (the level solved at every step), its measurements and fixed-mask
fine-tuning, GMP's pruning events. The bound is the default with its pruning operator replaced by a plain copy of
the weight (identity gradient, as in ``train_step.py``): the ramp's solve, the measurements and ``Pruner.step()``
stay, so it is what this controller costs before any pruning arithmetic. Start-up, data and evaluation are not
timed: ``end_to_end.py`` times whole processes, whose drift between runs is wider than these differences.

    python benchmarks/schedule_step.py                       # the two benchmark CNNs, writes docs/benchmarks.md
    python benchmarks/schedule_step.py --models mnist1d:cnn1d --repeats 1 --no-write
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import write_section
from train_step import _copy_operator

from adasparse import parametrization
from adasparse.app.data import load_dataset
from adasparse.app.methods import create_method
from adasparse.app.models import create_model
from adasparse.app.train import RECIPES, TrainConfig
from adasparse.core.operator import effective_weight

VARIANTS = {"dense": "dense", "default": "adasparse", "default, copy operator": "adasparse", "GMP": "gmp"}
"""Each variant's ``adasparse train`` method; the copy-operator variant swaps the operator during its steps."""


def measure(dataset: str, model: str) -> dict[str, float]:
    """Whole-schedule step time of every variant in seconds, steps interleaved."""
    data = load_dataset(dataset, seed=0)
    recipe = RECIPES[dataset]
    x = data.train_transform(data.x_train[: recipe.batch_size], None)
    y = data.y_train[: recipe.batch_size]
    total_steps = recipe.epochs * math.ceil(len(data.x_train) / recipe.batch_size)
    setups = {}
    for label, method_name in VARIANTS.items():
        torch.manual_seed(0)
        config = TrainConfig(dataset=dataset, model=model, method=method_name, epochs=recipe.epochs).resolved()
        net = create_model(model, num_classes=data.num_classes, input_shape=data.input_shape)
        method = create_method(method_name, net, config, x[:1], total_steps=total_steps)
        optimizer = torch.optim.SGD(method.param_groups(recipe.lr, 5e-4), lr=recipe.lr, momentum=0.9)
        setups[label] = (net, method, optimizer)
    times = dict.fromkeys(VARIANTS, 0.0)
    for index in range(total_steps):
        for label, (net, method, optimizer) in setups.items():
            if label.endswith("copy operator"):
                parametrization.effective_weight = _copy_operator
            try:
                start = time.perf_counter()
                loss = F.cross_entropy(net(x), y)
                extra = method.loss()
                if extra is not None:
                    loss = loss + extra
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                method.end_step(index + 1, total_steps)
                times[label] += time.perf_counter() - start
            finally:
                parametrization.effective_weight = effective_weight
    return times


def _cell(values: list[float]) -> str:
    middle = statistics.median(values)
    return f"{middle:.3f}×" if len(values) == 1 else f"{middle:.3f}× ({min(values):.3f}–{max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mnist1d:cnn1d", "digits:cnn2d"], metavar="DATASET:MODEL")
    parser.add_argument("--repeats", type=int, default=2, help="whole schedules per model (default 2)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not update docs/benchmarks.md")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    torch.set_num_threads(1)
    rows = []
    for pair in args.models:
        dataset, _, model = pair.partition(":")
        results = [measure(dataset, model) for _ in range(args.repeats)]
        over_dense = [_cell([r[label] / r["dense"] for r in results]) for label in list(VARIANTS)[1:]]
        over_gmp = [_cell([r[label] / r["GMP"] for r in results]) for label in ("default", "default, copy operator")]
        rows.append(f"| {model} ({dataset}) | {' | '.join(over_dense)} | {' | '.join(over_gmp)} |")
        print(rows[-1], flush=True)
    table = "\n".join(
        [
            "| model | default / dense | copy-operator bound / dense | GMP / dense | default / GMP | bound / GMP |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    )
    machine = f"{platform.processor() or platform.machine()}, torch {torch.__version__}"
    body = (
        f"Mean step time over each variant's whole schedule (the recipe's steps on one batch, steps interleaved in "
        f"one process, one thread); median over {args.repeats} schedules, range in brackets. Machine: {machine}.\n\n"
        f"Command: `python benchmarks/schedule_step.py --models {' '.join(args.models)} --repeats {args.repeats}`"
        f"\n\n{table}\n"
    )
    print(body)
    if not args.no_write:
        write_section(Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md", "schedule-step", body)


if __name__ == "__main__":
    main()
