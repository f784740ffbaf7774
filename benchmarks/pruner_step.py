"""Time of every ``Pruner.step()`` inside ``adasparse train`` (the default method), by phase, beside another checkout.

Each run is a whole ``adasparse train`` in its own process, one thread, with ``Pruner.step`` wrapped by a timer (no
profiler). The steps are grouped by phase, the ramp, the held target and the fine-tuning with fixed masks, and by
whether the weights' distributions are measured at that step (every ``correction_interval`` steps). With ``--against
SRC`` (the ``src`` folder of another checkout, e.g. the code before a change) the two codes' runs alternate, one
after the other, so that the machine's drift hits both; each cell is the median over ``--repeats`` runs.

    python benchmarks/pruner_step.py --models mnist1d:cnn1d digits:cnn2d --against ../before/src --repeats 2
    python benchmarks/pruner_step.py --models digits:mlp --epochs 2 --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import machine, publish

THIS_SOURCE = Path(__file__).resolve().parent.parent / "src"
"""This checkout's package folder, put first on the child processes' path."""

PHASES = ("ramp", "hold", "fine-tuning")


def phase_of(pruner: Any) -> tuple[str, bool]:
    """The phase of the step ``pruner.step()`` is about to take, and whether the distributions are measured at it
    (every ``correction_interval`` steps before the zeros are fixed, none after)."""
    steps = pruner.steps
    if pruner.frozen:
        return "fine-tuning", False
    measured = steps % pruner.config.correction_interval == 0
    if steps < pruner.config.ramp * pruner.total_steps:
        return "ramp", measured
    return "hold", measured


def timed_run(dataset: str, model: str, seed: int, epochs: int | None = None) -> dict[str, list[float]]:
    """One ``adasparse train`` run in this process; the seconds of each ``Pruner.step()`` by ``"phase/kind"``."""
    import torch

    from adasparse.app.cli import main
    from adasparse.control.pruner import Pruner

    times: dict[str, list[float]] = {}
    step = Pruner.step

    def timed_step(pruner: Pruner) -> None:
        phase, measured = phase_of(pruner)
        start = time.perf_counter()
        step(pruner)
        elapsed = time.perf_counter() - start
        times.setdefault(f"{phase}/{'measurement' if measured else 'between'}", []).append(elapsed)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    Pruner.step = timed_step  # type: ignore[method-assign]
    try:
        with tempfile.TemporaryDirectory() as run_dir:
            argv = ["train", "--dataset", dataset, "--model", model, "--seed", str(seed), "--device", "cpu"]
            argv += ["--no-dense-baseline", "--quiet", "--out", run_dir]
            if epochs is not None:
                argv += ["--epochs", str(epochs)]
            if main(argv) != 0:
                raise RuntimeError(f"adasparse train {' '.join(argv[1:])} failed")
    finally:
        Pruner.step = step  # type: ignore[method-assign]
        torch.set_num_threads(threads)
    return times


def _child_run(source: Path, dataset: str, model: str, seed: int, epochs: int | None) -> dict[str, list[float]]:
    """:func:`timed_run` in a new process importing the package from ``source``."""
    environment = {**os.environ, "PYTHONPATH": str(source), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "times.json"
        argv = [sys.executable, __file__, "--child", str(out), "--models", f"{dataset}:{model}", "--seed", str(seed)]
        if epochs is not None:
            argv += ["--epochs", str(epochs)]
        subprocess.run(argv, check=True, env=environment, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def _cell(runs: list[dict[str, list[float]]], key: str) -> tuple[float, float]:
    """The median over runs of a phase's total seconds, and of its median step in microseconds."""
    totals = [sum(run.get(key, [])) for run in runs]
    medians = [statistics.median(run[key]) * 1e6 for run in runs if run.get(key)]
    return statistics.median(totals), statistics.median(medians) if medians else 0.0


def table(results: dict[str, dict[str, list[dict[str, list[float]]]]], codes: list[str]) -> str:
    """A markdown table: per model and phase, the steps, and each code's total and median step."""
    header = "| model | phase | steps | " + " | ".join(f"{code}: total s, median µs" for code in codes)
    if len(codes) == 2:
        header += f" | {codes[0]} / {codes[1]} (total)"
    header += " |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for name, by_code in results.items():
        keys = [f"{phase}/{kind}" for phase in PHASES for kind in ("between", "measurement")]
        keys = [key for key in keys if any(key in run for runs in by_code.values() for run in runs)] + ["all"]
        for key in keys:
            cells, totals = [], []
            for code in codes:
                runs = by_code[code]
                if key == "all":
                    total = statistics.median(sum(sum(values) for values in run.values()) for run in runs)
                    cells.append(f"{total:.3f}")
                else:
                    total, median = _cell(runs, key)
                    cells.append(f"{total:.3f}, {median:.0f}")
                totals.append(total)
            first = by_code[codes[0]][0]
            steps = sum(len(values) for values in first.values()) if key == "all" else len(first.get(key, []))
            row = f"| {name} | {key.replace('/', ', ')} | {steps:,} | " + " | ".join(cells)
            if len(codes) == 2:
                row += f" | {totals[0] / totals[1]:.2f}" if totals[1] > 0 else " | –"
            lines.append(row + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["mnist1d:cnn1d", "digits:cnn2d"], metavar="DATASET:MODEL")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="override the data set's recipe")
    parser.add_argument("--repeats", type=int, default=2, help="runs per model and code")
    parser.add_argument("--against", type=Path, default=None, help="another checkout's src folder, run in turn")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    malformed = [entry for entry in args.models if entry.count(":") != 1]
    if malformed:
        parser.error(f"--models takes DATASET:MODEL entries (e.g. mnist1d:cnn1d), got {' '.join(malformed)}")
    if args.child is not None:
        dataset, model = args.models[0].split(":")
        args.child.write_text(json.dumps(timed_run(dataset, model, args.seed, args.epochs)))
        return
    sources = {"this code": THIS_SOURCE}
    if args.against is not None:
        if not (args.against / "adasparse" / "__init__.py").is_file():
            parser.error(f"--against {args.against}: no adasparse package in that folder (give a checkout's src)")
        sources["against"] = args.against.resolve()
    results: dict[str, dict[str, list[dict[str, list[float]]]]] = {}
    for entry in args.models:
        dataset, model = entry.split(":")
        by_code: dict[str, list[dict[str, list[float]]]] = {code: [] for code in sources}
        for repeat in range(args.repeats):
            order = list(sources) if repeat % 2 == 0 else list(reversed(sources))
            for code in order:
                by_code[code].append(_child_run(sources[code], dataset, model, args.seed, args.epochs))
        results[f"{model} ({dataset})"] = by_code
    command = "python benchmarks/pruner_step.py " + " ".join(sys.argv[1:] if argv is None else argv)
    body = (
        f"`Pruner.step()` timed inside `adasparse train` by phase (one thread, seed {args.seed}); median over "
        f"{args.repeats} runs per code, the codes' runs alternated. Machine: {machine()}.\n\n"
        f"Command: `{command.strip()}`\n\n{table(results, list(sources))}"
    )
    publish("pruner-step", body, write=not args.no_write)


if __name__ == "__main__":
    main()
