"""Mean training-step time over a whole schedule, in one process: the default, its copy-operator bound, and GMP.

Every variant runs a data set's recipe (its epochs of steps) on one batch, as ``adasparse bench``'s step table does,
the variants' steps interleaved so that the machine's drift hits them alike, one thread. The mean counts every phase
as a training does: the default's ramp (the level solved at every step), its measurements and fixed-mask
fine-tuning, GMP's pruning events. The bound is the default with its pruning operator replaced by a plain copy of
the weight (identity gradient, as in ``train_step.py``): the ramp's solve, the measurements and ``Pruner.step()``
stay, so it is what this controller costs before any pruning arithmetic. The stepped-ramp probe is the default with
the ramp's target raised only at each measurement (every ``correction_interval`` steps, as GMP prunes at intervals)
instead of at every step, so the level is solved once per measurement: what that schedule would save (it trains
other weights, so it is a probe here, not the default). Start-up, data and evaluation are not timed:
``end_to_end.py`` times whole processes, whose drift between runs is wider than these differences.

    python benchmarks/schedule_step.py                       # the two benchmark CNNs, writes docs/benchmarks.md
    python benchmarks/schedule_step.py --models mnist1d:cnn1d --repeats 1 --no-write
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import machine, publish
from train_step import _copy_operator

from adasparse import parametrization
from adasparse.app.bench import Schedule
from adasparse.control.pruner import Pruner
from adasparse.core.operator import effective_weight

VARIANTS = {
    "dense": "dense",
    "default": "adasparse",
    "default, copy operator": "adasparse",
    "default, stepped ramp": "adasparse",
    "GMP": "gmp",
}
"""Each variant's ``adasparse train`` method; the copy-operator variant swaps the operator during its steps, the
stepped-ramp probe the ramp's target (:func:`_stepped_target_at`)."""

_target_at = Pruner._target_at


def _stepped_target_at(pruner: Pruner, step: int) -> float:
    """The ramp's target held from one measurement to the next: raised every ``correction_interval`` steps."""
    return _target_at(pruner, step - step % pruner.config.correction_interval)


def measure(dataset: str, model: str) -> dict[str, float]:
    """Whole-schedule step time of every variant in seconds, steps interleaved."""
    schedule = Schedule(dataset, model, VARIANTS)
    times = dict.fromkeys(VARIANTS, 0.0)
    for index in range(schedule.total_steps):
        for label in VARIANTS:
            if label.endswith("copy operator"):
                parametrization.effective_weight = _copy_operator
            if label.endswith("stepped ramp"):
                Pruner._target_at = _stepped_target_at
            try:
                times[label] += schedule.step(label, index)
            finally:
                parametrization.effective_weight = effective_weight
                Pruner._target_at = _target_at
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
        over_gmp = [
            _cell([r[label] / r["GMP"] for r in results])
            for label in ("default", "default, copy operator", "default, stepped ramp")
        ]
        rows.append(f"| {model} ({dataset}) | {' | '.join(over_dense)} | {' | '.join(over_gmp)} |")
        print(rows[-1], flush=True)
    table = "\n".join(
        [
            "| model | default / dense | copy-operator bound / dense | stepped-ramp probe / dense | GMP / dense "
            "| default / GMP | bound / GMP | stepped-ramp probe / GMP |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    body = (
        f"Mean step time over each variant's whole schedule (the recipe's steps on one batch, steps interleaved in "
        f"one process, one thread); median over {args.repeats} schedules, range in brackets. Machine: {machine()}.\n\n"
        f"Command: `python benchmarks/schedule_step.py --models {' '.join(args.models)} --repeats {args.repeats}`"
        f"\n\n{table}\n"
    )
    publish("schedule-step", body, write=not args.no_write)


if __name__ == "__main__":
    main()
