"""``adasparse train`` on the command line: its options (defaults, types, choices and help taken from
:class:`~adasparse.train.TrainConfig` and :class:`~adasparse.PrunerConfig`), the configuration they make, the run and
the summary it prints."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import fields
from pathlib import Path

from ..control.config import BOUNDED_LAYERS, THRESHOLD_UPDATES, PrunerConfig
from ..control.loss import MODES
from ..control.projection import PROJECTION_SLOPES
from . import distributed
from .batchnorm import STALE_MEAN, STALE_VARIANCE
from .config import BUDGETS, RECOMPUTE_BATCHNORM
from .data import DATASETS
from .methods import METHODS
from .models import MODELS
from .train import (
    OPTIMIZERS,
    RECIPES,
    THRESHOLD_SCHEDULES,
    RunResult,
    TrainConfig,
    load_run_config,
    run_training,
)

__all__ = ["add_train_parser", "config_from_args", "print_summary", "run_train"]

_DEFAULTS = TrainConfig()
"""``adasparse train``'s option defaults are the library's: one place to change them."""

_PRUNING_FLAGS: tuple[tuple[tuple[str, ...], str, tuple[str, ...]], ...] = (
    (("-s", "--sparsity"), "sparsity", ("none",)),
    (("--starget",), "target", ()),
    (("--lv",), "lv", ()),
    (("--pthres",), "pthres", ()),
    (("--calibrate",), "calibrate", ()),
    (("--dual-step",), "dual_step", ()),
    (("--correction",), "correction", ()),
    (("--projection-slope",), "projection_slope", ()),
    (("--ramp",), "ramp", ()),
    (("--finetune",), "finetune", ()),
    (("--threshold-update",), "threshold_update", ()),
    (("--threshold-lr",), "threshold_lr", ()),
    (("--threshold-lr-scale",), "threshold_lr_scale", ()),
    (("--task-gradient",), "task_gradient", ()),
    (("--centred",), "centred", ()),
    (("--init-fraction",), "init_fraction", ()),
    (("--budget",), "budget", ()),
    (("--granularity",), "granularity", ()),
    (("--channel-multiple",), "channel_multiple", ()),
    (("--pruned-gradient-bound",), "pruned_gradient_bound", ()),
    (("--pruned-gradient-bound-layers",), "pruned_gradient_bound_layers", ()),
)
"""The pruning options of ``adasparse train``: flag, ``TrainConfig`` field, choices beyond the library's."""

_PRUNER_FIELD = {"sparsity": "mode", "lv": "weight", "pthres": "min_params"}
"""``TrainConfig`` keeps the original script's names for three ``PrunerConfig`` fields."""


def _float_or_none(text: str) -> float | None:
    """A number, or ``none`` (the option off)."""
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or none, got {text!r}") from None


_OPTION_TYPES = {"finetune": float, "pruned_gradient_bound": _float_or_none}
"""The type of an option whose default does not say it (``None``, filled in when the run's configuration is
resolved; or an option that ``none`` turns off)."""

_PRUNER_CHOICES = {
    "mode": MODES,
    "threshold_update": THRESHOLD_UPDATES,
    "budget": BUDGETS,
    "projection_slope": PROJECTION_SLOPES,
    "pruned_gradient_bound_layers": BOUNDED_LAYERS,
}


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
        kind = _OPTION_TYPES.get(dest, type(default))
        group.add_argument(*flags, dest=dest, type=kind, default=default, help=text)


_PRUNER_HELP = {f.name: f.metadata["help"] for f in fields(PrunerConfig)}


def _recipe_help() -> str:
    return "; ".join(
        f"{name}: {recipe.epochs} epochs, lr {recipe.lr}"
        + (f" (AdamW {recipe.adamw_lr:g})" if recipe.adamw_lr is not None else "")
        + f", batch {recipe.batch_size}"
        for name, recipe in RECIPES.items()
    )


class _DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except ``None``: such a default is filled in from the data set or other options,
    and the option's help says how."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def add_train_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``train`` command and its options to ``commands`` (the subparsers of ``adasparse``)."""
    train = commands.add_parser(
        "train",
        help="train a model pruned by per-layer thresholds to an exact sparsity",
        description=(
            "Train a model with one pruning threshold per layer, held to an exact overall budget (or the paper's "
            "adaptive sparsity loss: -s adaptive). With no options: MNIST-1D (generated locally, no download), a "
            "1-D CNN pruned to 90% (the budget held exactly at every step, spread over the layers by one level of "
            "the layer-adaptive magnitude score), plus a dense baseline run for comparison. Unset options take "
            "the data set's recipe: " + _recipe_help() + "."
        ),
        formatter_class=_DefaultsHelpFormatter,
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
        help=f"{', '.join(MODELS)} or any wrn-DEPTH-WIDTH (default: cnn1d for mnist1d, cnn2d for digits, "
        "wrn-16-8 for CIFAR)",
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
        "--latency-batch",
        type=int,
        default=_DEFAULTS.latency_batch,
        metavar="N",
        help="with --granularity channel: time the starting model at batch N on the CPU when the run starts "
        "(latency-table.json in the run) and price channels in that time: --budget latency holds it, and "
        "--channel-multiple rounds to the fastest of the choices that meet the budget",
    )
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
    optim.add_argument(
        "--batch-size", type=int, default=None, help="examples per batch (default: the data set's recipe)"
    )
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
    model.add_argument(
        "--recompute-batchnorm",
        nargs="?",
        const="always",
        choices=RECOMPUTE_BATCHNORM,
        default=_DEFAULTS.recompute_batchnorm,
        help="after training, recompute every BatchNorm layer's running statistics with the final weights on the "
        "training inputs (no augmentation) before the final evaluation: auto where the ones training left are stale "
        f"(a channel's mean over {STALE_MEAN:g} standard deviations or its variance over {STALE_VARIANCE:g}x off), "
        "always (the flag alone), or "
        "never (default: stale statistics are reported, not replaced); the summary keeps the accuracy with the "
        "statistics training left (see docs/method.md)",
    )
    model.add_argument(
        "--no-recompute-batchnorm",
        dest="recompute_batchnorm",
        action="store_const",
        const="never",
        help="the same as --recompute-batchnorm never",
    )
    output.add_argument("--quiet", action="store_true", help="no progress bars, only log lines")
    output.add_argument("--tensorboard", action="store_true", help="log scalars for TensorBoard (if installed)")
    return train


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run configuration the ``train`` options name (unresolved: unset options take the recipe later)."""
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


def run_train(args: argparse.Namespace) -> int:
    """``adasparse train``: the run (and its dense baseline), then its summary; returns the exit status."""
    log = distributed.print_main
    progress = not args.quiet and sys.stderr.isatty()
    if args.resume:
        run_dir = Path(args.resume)
        config = load_run_config(run_dir)
        if args.out is not None and Path(args.out) != run_dir:
            raise ValueError("--resume continues a run in its own directory; do not combine it with another --out")
        result = run_training(config, run_dir, resume=True, progress=progress, log=log)
    else:
        config = config_from_args(args).resolved()
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
    if not distributed.is_main_process():
        return 0
    print_summary(result, baseline)
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


def print_summary(result: RunResult, baseline: RunResult | None) -> None:
    """Print a finished run's per-layer table, its sparsity and accuracy (and the dense baseline's), its times."""
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
        by_channels = result.config.get("granularity") == "channel"
        if result.flops_sparsity is not None and (result.config.get("budget") == "flops" or by_channels):
            scope = (
                "the model's multiply-accumulates, once shrunk"
                if by_channels
                else "the pruned layers' multiply-accumulates"
            )
            print(f"compute: {100 * result.flops_sparsity:.2f}% of {scope} removed")
        accuracy = f"test accuracy: {result.test_accuracy:.4f} at {result.sparsity:.4f} sparsity"
        # What the calibration changed, read against the accuracy it left (before any BatchNorm recomputation).
        calibrated = result.test_accuracy_running_batchnorm
        if result.test_accuracy_before_calibration != (result.test_accuracy if calibrated is None else calibrated):
            accuracy += f" ({result.test_accuracy_before_calibration:.4f} before calibration)"
    else:
        accuracy = f"test accuracy: {result.test_accuracy:.4f} (dense)"
    if result.test_accuracy_running_batchnorm is not None:
        accuracy += f" ({result.test_accuracy_running_batchnorm:.4f} with the BatchNorm statistics training left)"
    if baseline is not None:
        accuracy += f", dense {baseline.test_accuracy:.4f}"
    print(accuracy)
    total = result.wall_seconds + (baseline.wall_seconds if baseline else 0.0)
    print(f"wall time {total:.1f} s; data loading {100 * result.data_fraction:.1f}% of epoch time")
    print(f"run directory: {result.run_dir}")
