"""Command line: ``adasparse train``, ``report``, ``export`` and ``bench`` (also ``python -m adasparse``).

The CLI only parses arguments and calls the library; every option maps to a :class:`~adasparse.train.TrainConfig`
field or a library function.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, NoReturn

import torch

from .._version import __version__
from ..control.config import BUDGETS, THRESHOLD_UPDATES, PrunerConfig
from ..control.loss import MODES
from ..core.report import state_dict_report
from ..export.sparse import DEFAULT_MAX_BYTES
from . import distributed
from .bench import SUITES
from .data import DATASETS, DataError
from .methods import METHODS
from .train import (
    OPTIMIZERS,
    RECIPES,
    THRESHOLD_SCHEDULES,
    RunResult,
    TrainConfig,
    load_run_config,
    run_training,
)

__all__ = ["build_parser", "main"]

_DEFAULTS = TrainConfig()
"""``adasparse train``'s option defaults are the library's: one place to change them."""


class _Parser(argparse.ArgumentParser):
    """Errors are one line (no usage dump), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


_PRUNING_FLAGS: tuple[tuple[tuple[str, ...], str, tuple[str, ...]], ...] = (
    (("-s", "--sparsity"), "sparsity", ("none",)),
    (("--starget",), "target", ()),
    (("--lv",), "lv", ()),
    (("--pthres",), "pthres", ()),
    (("--calibrate",), "calibrate", ()),
    (("--dual-step",), "dual_step", ()),
    (("--correction",), "correction", ()),
    (("--ramp",), "ramp", ()),
    (("--finetune",), "finetune", ()),
    (("--threshold-update",), "threshold_update", ()),
    (("--threshold-lr",), "threshold_lr", ()),
    (("--threshold-lr-scale",), "threshold_lr_scale", ()),
    (("--task-gradient",), "task_gradient", ()),
    (("--centred",), "centred", ()),
    (("--init-fraction",), "init_fraction", ()),
    (("--budget",), "budget", ()),
)
"""The pruning options of ``adasparse train``: flag, ``TrainConfig`` field, choices beyond the library's."""

_PRUNER_FIELD = {"sparsity": "mode", "lv": "weight", "pthres": "min_params"}
"""``TrainConfig`` keeps the original script's names for three ``PrunerConfig`` fields."""

_PRUNER_CHOICES = {"mode": MODES, "threshold_update": THRESHOLD_UPDATES, "budget": BUDGETS}


def _add_pruning_option(
    group: argparse._ArgumentGroup, flags: tuple[str, ...], dest: str, extra_choices: tuple[str, ...]
) -> None:
    """One option, with its default, type, choices and help taken from ``TrainConfig``/``PrunerConfig``."""
    default = getattr(_DEFAULTS, dest)
    if dest == "target":
        group.add_argument(*flags, dest=dest, type=float, default=default, help="target overall sparsity in [0, 1)")
        return
    pruner_field = _PRUNER_FIELD.get(dest, dest)
    text = _PRUNER_HELP[pruner_field]
    if extra_choices:
        text += "; " + ", ".join(extra_choices) + ": dense training"
    if isinstance(default, bool):
        group.add_argument(*flags, dest=dest, action=argparse.BooleanOptionalAction, default=default, help=text)
    elif pruner_field in _PRUNER_CHOICES:
        choices = (*_PRUNER_CHOICES[pruner_field], *extra_choices)
        group.add_argument(*flags, dest=dest, choices=choices, default=default, help=text)
    else:
        group.add_argument(*flags, dest=dest, type=type(default), default=default, help=text)


_PRUNER_HELP = {f.name: f.metadata["help"] for f in fields(PrunerConfig)}


_MAX_BYTES_HELP = (
    "refuse weights that need more bytes than this as dense tensors (default: 2 GiB); raise it for a larger model "
    "you trust"
)


def _recipe_help() -> str:
    return "; ".join(
        f"{name}: {recipe.epochs} epochs, lr {recipe.lr}"
        + (f" (AdamW {recipe.adamw_lr:g})" if recipe.adamw_lr is not None else "")
        + f", batch {recipe.batch_size}"
        for name, recipe in RECIPES.items()
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="adasparse",
        description="Prune neural networks to a requested sparsity during training (adaptive sparsity loss).",
    )
    parser.add_argument("--version", action="version", version=f"adasparse {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser(
        "train",
        help="train a model with learned per-layer pruning thresholds",
        description=(
            "Train a model with one learned pruning threshold per layer and the adaptive sparsity loss. With no "
            "options: MNIST-1D (generated locally, no download), a 1-D CNN pruned to 90% (the overall budget held "
            "exactly at every step while the task loss moves the per-layer thresholds), plus a dense baseline run "
            "for comparison. Unset options "
            "take the data set's recipe: " + _recipe_help() + "."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = train.add_argument_group("data")
    data.add_argument(
        "--dataset",
        choices=DATASETS,
        default=_DEFAULTS.dataset,
        help="mnist1d and digits are embedded (no download); cifar10/cifar100 read the official python "
        "archives from --data-dir",
    )
    data.add_argument(
        "--data-dir", default=_DEFAULTS.data_dir, help="where CIFAR archives or extracted folders are looked for"
    )
    data.add_argument("--download", action="store_true", help="download a missing CIFAR archive (MD5-verified)")
    data.add_argument(
        "--workers",
        type=int,
        default=_DEFAULTS.workers,
        help="batches prepared ahead by a background thread (0: prepare in the training thread)",
    )
    model = train.add_argument_group("model and pruning")
    model.add_argument(
        "--model",
        default=None,
        help="mlp, cnn1d, cnn2d, wrn-16-8 or any wrn-DEPTH-WIDTH (default: cnn1d for mnist1d, cnn2d for "
        "digits, wrn-16-8 for CIFAR)",
    )
    model.add_argument(
        "--method",
        choices=METHODS,
        default=_DEFAULTS.method,
        help="adasparse (learned thresholds) or a baseline: gmp / gmp-layer (gradual magnitude pruning, cubic "
        "schedule, global / per layer), oneshot (magnitude pruning after training), oneshot-ft (prune at half "
        "time, fine-tune the rest), dense",
    )
    for flags, dest, extra_choices in _PRUNING_FLAGS[:4]:
        _add_pruning_option(model, flags, dest, extra_choices)
    tuning = train.add_argument_group("controller (defaults: the best measured combination, see docs/method.md)")
    for flags, dest, extra_choices in _PRUNING_FLAGS[4:]:
        _add_pruning_option(tuning, flags, dest, extra_choices)
    tuning.add_argument(
        "--threshold-schedule",
        choices=THRESHOLD_SCHEDULES,
        default=_DEFAULTS.threshold_schedule,
        help="with --threshold-update optimizer: thresholds keep their learning rate (constant) or anneal it with "
        "the weights' (cosine, the original)",
    )
    optim = train.add_argument_group("optimisation (weight decay 5e-4, cosine with one warm restart)")
    optim.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default=_DEFAULTS.optimizer,
        help="sgd: momentum 0.9 (the paper's recipe); adamw: torch.optim.AdamW with default betas, its own "
        "per-data-set learning rate (1e-2 on mnist1d, 3e-3 on digits; give --lr for CIFAR)",
    )
    optim.add_argument("--epochs", type=int, default=None, help="training epochs (default: the data set's recipe)")
    optim.add_argument(
        "--lr",
        type=float,
        default=None,
        help="learning rate of the weights (default: the data set's recipe for the optimizer)",
    )
    optim.add_argument("--batch-size", type=int, default=None, help="examples per batch")
    optim.add_argument(
        "--seed", type=int, default=_DEFAULTS.seed, help="seeds data generation/split, initialisation and order"
    )
    device = train.add_argument_group("device")
    device.add_argument("--device", default=_DEFAULTS.device, help="auto, cpu, cuda or cuda:N")
    device.add_argument("--gpu", type=int, default=None, metavar="ID", help="use GPU ID (same as --device cuda:ID)")
    device.add_argument("--no-cuda", action="store_true", help="train on the CPU even if a GPU is available")
    output = train.add_argument_group("output")
    output.add_argument("--out", default=None, metavar="RUN_DIR", help="run directory (default: runs/<timestamp>)")
    output.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue an interrupted run from its last checkpoint, with its saved options",
    )
    output.add_argument(
        "--dense-baseline",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also train the same model dense (in RUN_DIR/dense) and print both accuracies "
        "(default: on for mnist1d and digits, off for CIFAR)",
    )
    model.add_argument(
        "--init-from",
        default=None,
        metavar="RUN_DIR",
        help="start from the final weights (model_sparse.pt) of a finished run of the same data set and model, "
        "e.g. a dense run, instead of a fresh initialisation; --epochs then fine-tune it (one cosine decay, no "
        "warm restart)",
    )
    output.add_argument("--quiet", action="store_true", help="no progress bars, only log lines")
    output.add_argument("--tensorboard", action="store_true", help="log scalars for TensorBoard (if installed)")

    report = commands.add_parser(
        "report",
        help="print the per-layer sparsity of a run, checkpoint or saved state_dict",
        description="Print the per-layer and overall sparsity of a run directory (its final model_sparse.pt, else its "
        "checkpoint.pt), an adasparse checkpoint, or any saved state_dict.",
    )
    report.add_argument("path", help="run directory, checkpoint.pt, model_sparse.pt or a state_dict file")
    report.add_argument("--json", action="store_true", help="print JSON instead of a table")
    report.add_argument(
        "--min-params", type=int, default=1000, help="for plain state dicts: weights with fewer elements are not listed"
    )
    report.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, help=_MAX_BYTES_HELP)

    export = commands.add_parser(
        "export",
        help="write a run's pruned model as a compressed safetensors file or as ONNX",
        description="Export the pruned model of a run directory (its model_sparse.pt, else its checkpoint.pt), an "
        "adasparse checkpoint.pt, or a model_sparse.pt next to its run's config.json. sparse: a safetensors file "
        "storing each tensor dense, as a bitmask or as CSR, whichever is smallest, with the run's config.json as "
        "metadata (load it with adasparse.load_sparse). onnx: the rebuilt architecture with the desparsified "
        "weights (needs config.json; ONNX stores the zeros densely).",
    )
    export.add_argument("path", metavar="RUN_OR_CKPT", help="run directory, checkpoint.pt or model_sparse.pt")
    export.add_argument("--format", choices=("sparse", "onnx"), default="sparse", help="output format (default sparse)")
    export.add_argument(
        "--out",
        default=None,
        metavar="PATH",
        help="output file (default: model_sparse.safetensors or model.onnx beside the weights); never one of a "
        "run's own files (config.json, checkpoint.pt, metrics.csv, model_sparse.pt, ...) or another torch.save file",
    )
    export.add_argument(
        "--fp16", action="store_true", help="sparse format: store values as float16 (lossy, about half the size)"
    )
    export.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, help=_MAX_BYTES_HELP)
    bench = commands.add_parser(
        "bench",
        help="run every pruning method on the embedded data sets and write a results page",
        description="Train every method of a suite (variants x data sets x targets x seeds) with the data sets' "
        "recipes, reuse runs already finished under --out, and write the results page with tables and plots "
        "(OUT/results.md, or DIR/results.md with --docs DIR). "
        "Suites: methods (ours against dense, one-shot, one-shot + fine-tuning, GMP global and per layer, at "
        "0.5-0.98), ablation (each of our options alone and combined, at 0.9-0.98), flops (parameter vs compute "
        "budget), zoo (normalization, residual blocks, attention), pretrained (dense pre-training, then pruning "
        "during a short AdamW fine-tuning), threshold-lr (sensitivity to the thresholds' step size), quick (a "
        "minute, for CI).",
    )
    bench.add_argument(
        "--suite", choices=(*SUITES, "all"), default="all", help="which suite ('all': methods, ablation and flops)"
    )
    bench.add_argument("--quick", action="store_true", help="same as --suite quick")
    bench.add_argument("--out", default="runs/bench", help="where the runs are kept (finished runs are reused)")
    bench.add_argument(
        "--docs",
        default=None,
        metavar="DIR",
        help="also the project's docs: write results.md, results.json and figures/ into DIR (e.g. docs; a path "
        "ending in .md names the page itself). Default: the page goes under --out only",
    )
    bench.add_argument("--jobs", type=int, default=None, help="parallel runs, one thread each (default: CPU count)")
    bench.add_argument("--no-overhead", action="store_true", help="skip the side-by-side train-step timing")
    return parser


def _config_from_args(args: argparse.Namespace) -> TrainConfig:
    if args.gpu is not None and args.no_cuda:
        raise ValueError("--gpu and --no-cuda contradict each other")
    device = args.device
    if args.gpu is not None:
        device = f"cuda:{args.gpu}"
    elif args.no_cuda:
        device = "cpu"
    names = {f.name for f in fields(TrainConfig)} - {"device"}
    return TrainConfig(device=device, **{name: value for name, value in vars(args).items() if name in names})


def _default_run_dir() -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = Path("runs") / stamp
    suffix = 1
    while candidate.exists():
        suffix += 1
        candidate = Path("runs") / f"{stamp}-{suffix}"
    return candidate


def _is_main_process() -> bool:
    """Rank 0 under torchrun (which sets RANK), or a lone process."""
    return int(os.environ.get("RANK", "0")) == 0


def _log(message: str) -> None:
    if _is_main_process():
        print(message, flush=True)


def _train(args: argparse.Namespace) -> int:
    log = _log
    progress = not args.quiet and sys.stderr.isatty()
    if args.resume:
        run_dir = Path(args.resume)
        config = load_run_config(run_dir)
        if args.out is not None and Path(args.out) != run_dir:
            raise ValueError("--resume continues a run in its own directory; do not combine it with another --out")
        result = run_training(config, run_dir, resume=True, progress=progress, log=log)
    else:
        config = _config_from_args(args).resolved()
        run_dir = Path(args.out) if args.out else _default_run_dir()
        log(f"run directory: {run_dir}")
        result = run_training(config, run_dir, progress=progress, log=log)
    baseline = None
    wants_baseline = args.dense_baseline
    if wants_baseline is None:
        wants_baseline = config.dataset in ("mnist1d", "digits")
    if wants_baseline and config.sparsity != "none":
        dense_dir = run_dir / "dense"
        log(f"dense baseline (same recipe, --sparsity none): {dense_dir}")
        if (dense_dir / "config.json").exists():
            baseline = run_training(config, dense_dir, resume=True, progress=progress, log=log)
        else:
            dense_config = TrainConfig.from_dict({**config.to_dict(), "sparsity": "none"})
            baseline = run_training(dense_config, dense_dir, progress=progress, log=log)
    distributed.teardown()
    if not _is_main_process():
        return 0
    _print_summary(result, baseline)
    if result.target_reached is False and not _learned_sparsity_requested(result):
        print(
            f"adasparse train: target {result.target:.4f} not reached (final sparsity {_final(result)}); "
            f"the run's results are in {result.run_dir}",
            file=sys.stderr,
        )
        return 1
    return 0


def _learned_sparsity_requested(result: RunResult) -> bool:
    """``--no-calibrate`` with our method: the user asked for the sparsity as learned, not the exact target."""
    return result.config.get("method") == "adasparse" and not result.config.get("calibrate", True)


def _final(result: RunResult) -> str:
    """The final sparsity in the budget's units."""
    if result.config.get("budget") == "flops" and result.flops_sparsity is not None:
        return f"{result.flops_sparsity:.4f} of the multiply-accumulates"
    return f"{result.sparsity:.4f}"


def _print_summary(result: RunResult, baseline: RunResult | None) -> None:
    print()
    print(result.report_text)
    print()
    if result.target is not None:
        line = f"sparsity: target {result.target:.4f}, reached {result.sparsity_before_calibration:.4f}"
        if result.analytic_sparsity is not None:
            line += f" (analytic {result.analytic_sparsity:.4f})"
        if result.sparsity != result.sparsity_before_calibration:
            line += f", final {result.sparsity:.4f}"
        finetune = result.config.get("finetune", 0.0) if result.config.get("method") == "adasparse" else 0.0
        if finetune:
            calibration = "calibration" if result.target_reached is False else "exact calibration"
            line += f" ({calibration}, then {100 * finetune:.0f}% of training fine-tuned with fixed masks)"
        print(line)
        if result.target_reached is False:
            reason = "as learned, --no-calibrate" if _learned_sparsity_requested(result) else "more than one weight off"
            print(f"target {result.target:.4f} NOT reached: final sparsity {_final(result)} ({reason})")
        if result.flops_sparsity is not None and result.config.get("budget") == "flops":
            print(f"compute: {100 * result.flops_sparsity:.2f}% of the pruned layers' multiply-accumulates removed")
        accuracy = f"test accuracy: {result.test_accuracy:.4f} at {result.sparsity:.4f} sparsity"
        if result.test_accuracy_before_calibration != result.test_accuracy:
            accuracy += f" ({result.test_accuracy_before_calibration:.4f} before calibration)"
    else:
        accuracy = f"test accuracy: {result.test_accuracy:.4f} (dense)"
    if baseline is not None:
        accuracy += f", dense {baseline.test_accuracy:.4f}"
    print(accuracy)
    total = result.wall_seconds + (baseline.wall_seconds if baseline else 0.0)
    print(f"wall time {total:.1f} s; data loading {100 * result.data_fraction:.1f}% of epoch time")
    print(f"run directory: {result.run_dir}")


def _report(args: argparse.Namespace) -> int:
    from .runs import read_weights_file

    state, source = read_weights_file(args.path, max_bytes=args.max_bytes)
    report = state_dict_report(state, min_params=args.min_params)
    if args.json:
        print(json.dumps({"source": str(source), **report.to_dict()}, indent=2))
    else:
        print(f"{source}\n")
        print(report)
    return 0


def _export(args: argparse.Namespace) -> int:
    from .runs import export_run

    values_dtype = torch.float16 if args.fp16 else None
    if args.fp16 and args.format != "sparse":
        raise ValueError("--fp16 applies to --format sparse only")
    result = export_run(
        args.path, format=args.format, out=args.out, values_dtype=values_dtype, max_bytes=args.max_bytes
    )
    print(
        f"wrote {result.path}: {result.bytes:,} bytes, {result.ratio:.3f}x the dense torch.save "
        f"({result.dense_bytes:,} bytes)"
    )
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import measure_overhead, run_suite, write_results

    names = ["quick"] if args.quick else (["methods", "ablation", "flops"] if args.suite == "all" else [args.suite])
    if args.jobs is not None and args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    started = time.perf_counter()
    results = []
    for name in names:
        suite = SUITES[name]
        print(
            f"suite {name}: {len(suite.variants)} variants, targets {', '.join(f'{t:g}' for t in suite.targets)}, "
            f"seeds {', '.join(map(str, suite.seeds))}",
            flush=True,
        )
        results.append((suite, run_suite(suite, Path(args.out), workers=args.jobs, log=_log)))
    overhead = None
    if not args.no_overhead:
        datasets = {pair for suite, _ in results for pair in suite.datasets}
        overhead = {f"{d} / {m}": measure_overhead(d, m, steps=20 if args.quick else 200) for d, m in sorted(datasets)}
    command = "adasparse bench " + ("--quick" if args.quick else f"--suite {args.suite}")
    if args.docs is None:
        page = Path(args.out) / "results.md"
    else:
        page = Path(args.docs) if args.docs.endswith(".md") else Path(args.docs) / "results.md"
        command += f" --docs {args.docs}"
    write_results(results, page, command=command, overhead=overhead, wall_seconds=time.perf_counter() - started)
    print(f"wrote {page}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``adasparse`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers: dict[str, Any] = {"train": _train, "report": _report, "export": _export, "bench": _bench}
    try:
        return handlers[args.command](args)
    except (ValueError, TypeError, DataError, OSError, ImportError) as error:
        print(f"adasparse {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"adasparse {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
