"""Command line: ``adasparse train``, ``report``, ``export`` and ``bench`` (also ``python -m adasparse``).

The CLI only parses arguments and calls the library; every option maps to a :class:`~adasparse.train.TrainConfig`
field or a library function. ``train``, whose options mirror the configuration, has its own module
(:mod:`.cli_train`); this one builds the parser and dispatches the commands.
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

from .._version import __version__
from ..core.report import state_dict_report
from ..export.sparse import DEFAULT_MAX_BYTES
from . import distributed
from .bench import SUITES
from .cli_train import add_train_parser, run_train
from .data import DataError

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """Errors are one line (no usage dump), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _add_max_bytes(parser: argparse.ArgumentParser) -> None:
    """The ``--max-bytes`` option of the commands that read a weights file."""
    parser.add_argument(
        "--max-bytes",
        type=int,
        default=DEFAULT_MAX_BYTES,
        help="refuse weights that need more bytes than this as dense tensors (default: 2 GiB); raise it for a "
        "larger model you trust",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``adasparse`` parser with its four commands."""
    parser = _Parser(
        prog="adasparse",
        description="Prune neural networks to a requested sparsity during training (adaptive sparsity loss).",
    )
    parser.add_argument("--version", action="version", version=f"adasparse {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    add_train_parser(commands)

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
    _add_max_bytes(report)

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
    export.add_argument(
        "--format", choices=("sparse", "onnx"), default=None, help="output format (default sparse; onnx with --shrink)"
    )
    export.add_argument(
        "--shrink",
        action="store_true",
        help="remove the channels and attention heads nothing reads (after --granularity channel) and export the "
        "smaller model as ONNX (model_shrunk.onnx); its outputs are checked against the pruned model's",
    )
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
    _add_max_bytes(export)
    bench = commands.add_parser(
        "bench",
        help="run every pruning method on the embedded data sets and write a results page",
        description="Train every method of a suite (variants x data sets x targets x seeds) with the data sets' "
        "recipes, reuse runs already finished under --out, and write the results page with tables and plots "
        "(OUT/results.md, or DIR/results.md with --docs DIR). "
        "Suites: methods (ours against dense, one-shot, one-shot + fine-tuning, GMP global and per layer, at "
        "0.5-0.98), ablation (each of our options alone and combined, at 0.9-0.98), flops (parameter vs compute "
        "budget), zoo (normalization, residual blocks, attention), pretrained (dense pre-training, then pruning "
        "during a short AdamW fine-tuning), structured (channels and heads pruned to a FLOPs budget, against L1-norm "
        "channel pruning), structured-heldout (the same on models the channel controller was not designed on), "
        "threshold-lr (sensitivity to the thresholds' step size), quick (a "
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
    format = args.format or ("onnx" if args.shrink else "sparse")
    if args.fp16 and format != "sparse":
        raise ValueError("--fp16 applies to --format sparse only")
    result = export_run(
        args.path,
        format=format,
        out=args.out,
        values_dtype=values_dtype,
        max_bytes=args.max_bytes,
        shrink=args.shrink,
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
        results.append((suite, run_suite(suite, Path(args.out), workers=args.jobs, log=distributed.print_main)))
    overhead = None
    if not args.no_overhead:
        datasets = {pair for suite, _ in results for pair in suite.datasets}
        overhead = {f"{d} / {m}": measure_overhead(d, m, steps=20 if args.quick else None) for d, m in sorted(datasets)}
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
    handlers: dict[str, Any] = {"train": run_train, "report": _report, "export": _export, "bench": _bench}
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
