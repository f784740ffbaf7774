"""Command line: ``adasparse train`` and ``adasparse report`` (also ``python -m adasparse``).

The CLI only parses arguments and calls the library; every option maps to a :class:`~adasparse.train.TrainConfig`
field or a library function.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch

from ._version import __version__
from .data import DATASETS, DataError
from .report import state_dict_report
from .train import CHECKPOINT_FORMAT, RECIPES, SPARSITY_CHOICES, RunResult, TrainConfig, load_run_config, run_training

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """Errors are one line (no usage dump), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _recipe_help() -> str:
    return "; ".join(
        f"{name}: {recipe.epochs} epochs, lr {recipe.lr}, batch {recipe.batch_size}" for name, recipe in RECIPES.items()
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
            "options: MNIST-1D (generated locally, no download), a 1-D CNN, 90%% sparsity, adaptive loss, plus a "
            "dense baseline run for comparison. Unset options take the data set's recipe: " + _recipe_help() + "."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = train.add_argument_group("data")
    data.add_argument(
        "--dataset",
        choices=DATASETS,
        default="mnist1d",
        help="mnist1d and digits are embedded (no download); cifar10/cifar100 read the official python "
        "archives from --data-dir",
    )
    data.add_argument("--data-dir", default="data", help="where CIFAR archives or extracted folders are looked for")
    data.add_argument("--download", action="store_true", help="download a missing CIFAR archive (MD5-verified)")
    data.add_argument(
        "--workers",
        type=int,
        default=0,
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
        "-s",
        "--sparsity",
        choices=SPARSITY_CHOICES,
        default="adaptive",
        help="sparsity loss: adaptive (overall budget), fixed (every layer at the target), upper "
        "(penalise only too little sparsity), none (dense training)",
    )
    model.add_argument("--starget", type=float, default=0.9, help="target overall sparsity in [0, 1)")
    model.add_argument("--lv", type=float, default=10.0, help="weight of the sparsity loss")
    model.add_argument("--pthres", type=int, default=1000, help="layers with fewer weights stay dense")
    model.add_argument(
        "--calibrate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after training, scale all thresholds so the actual sparsity is exactly the target",
    )
    optim = train.add_argument_group("optimisation (SGD momentum 0.9, weight decay 5e-4, cosine with one warm restart)")
    optim.add_argument("--epochs", type=int, default=None, help="training epochs (default: the data set's recipe)")
    optim.add_argument("--lr", type=float, default=None, help="learning rate; thresholds train at lr/100")
    optim.add_argument("--batch-size", type=int, default=None, help="examples per batch")
    optim.add_argument("--seed", type=int, default=0, help="seeds data generation/split, initialisation and order")
    device = train.add_argument_group("device")
    device.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
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
    return parser


def _config_from_args(args: argparse.Namespace) -> TrainConfig:
    if args.gpu is not None and args.no_cuda:
        raise ValueError("--gpu and --no-cuda contradict each other")
    device = args.device
    if args.gpu is not None:
        device = f"cuda:{args.gpu}"
    elif args.no_cuda:
        device = "cpu"
    return TrainConfig(
        dataset=args.dataset,
        model=args.model,
        sparsity=args.sparsity,
        target=args.starget,
        lv=args.lv,
        pthres=args.pthres,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        device=device,
        data_dir=args.data_dir,
        download=args.download,
        calibrate=args.calibrate,
        workers=args.workers,
        tensorboard=args.tensorboard,
    )


def _default_run_dir() -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = Path("runs") / stamp
    suffix = 1
    while candidate.exists():
        suffix += 1
        candidate = Path("runs") / f"{stamp}-{suffix}"
    return candidate


def _log(message: str) -> None:
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
    _print_summary(result, baseline)
    return 0


def _print_summary(result: RunResult, baseline: RunResult | None) -> None:
    print()
    print(result.report_text)
    print()
    if result.target is not None:
        line = (
            f"sparsity: target {result.target:.4f}, achieved {result.sparsity_before_calibration:.4f} "
            f"(analytic {result.analytic_sparsity:.4f})"
        )
        if result.sparsity != result.sparsity_before_calibration:
            line += f", calibrated {result.sparsity:.4f}"
        print(line)
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


def _load_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    if path.is_dir():
        for name in ("model_sparse.pt", "checkpoint.pt"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise ValueError(f"{path} holds neither model_sparse.pt nor checkpoint.pt")
    if not path.is_file():
        raise ValueError(f"{path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path} is not a readable PyTorch file: {str(error).splitlines()[0]}") from error
    if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT:
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} holds no state_dict (a mapping of names to tensors)")
    return state, str(path)


def _report(args: argparse.Namespace) -> int:
    state, source = _load_state_dict(Path(args.path))
    report = state_dict_report(state, min_params=args.min_params)
    if args.json:
        print(json.dumps({"source": source, **report.to_dict()}, indent=2))
    else:
        print(f"{source}\n")
        print(report)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``adasparse`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers: dict[str, Any] = {"train": _train, "report": _report}
    try:
        return handlers[args.command](args)
    except (ValueError, TypeError, DataError, OSError) as error:
        print(f"adasparse {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"adasparse {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
