"""Test accuracy of finished runs with their BatchNorm statistics recomputed, as ``adasparse train
--recompute-batchnorm always`` does and as ``--recompute-batchnorm auto`` does (only where they are stale), beside
the accuracy with the statistics training left.

Reads run directories as ``benchmarks/zoo_sweep.py --out OUT`` leaves them (``OUT/runs/<dataset>-<model>/<variant>/
t<target>/s<seed>``), rebuilds each finished model (``model_sparse.pt``), checks that it gives the accuracy its
``summary.json`` recorded, recomputes its BatchNorm statistics on its run's training inputs
(:func:`adasparse.app.batchnorm.recompute_batchnorm` over :func:`~adasparse.app.batchnorm.training_inputs` at the
run's batch size) and evaluates it again. A run that kept the statistics training left is checked for staleness
first (:func:`~adasparse.app.batchnorm.recompute_stale_batchnorm`); one whose statistics ``auto`` already replaced
holds the recomputed ones and its summary the accuracy before and the staleness figures. Runs of models without
BatchNorm are skipped, runs made with ``--recompute-batchnorm always`` refused. Writes a table of each variant's
mean and worst seed (training's statistics, always recomputed, auto) and the runs ``auto`` recomputes into
docs/method.md.

    python benchmarks/zoo_sweep.py --suite lamp --models mobilenet2d resnet2d resnet1d wrn-16-2 \\
        --only "adasparse (default)" "GMP global" --out OUT --records OUT/records.jsonl
    python benchmarks/batchnorm_statistics.py OUT
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import warnings
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _docs import write_section  # noqa: E402

from adasparse.app.batchnorm import (  # noqa: E402
    STALE_MEAN,
    STALE_VARIANCE,
    has_batchnorm,
    recompute_batchnorm,
    recompute_stale_batchnorm,
    training_inputs,
)
from adasparse.app.data import load_dataset  # noqa: E402
from adasparse.app.data.loader import BatchLoader  # noqa: E402
from adasparse.app.epoch import evaluate  # noqa: E402
from adasparse.app.runs import load_run_weights  # noqa: E402

PAGE = Path(__file__).resolve().parent.parent / "docs" / "method.md"


class Recomputed(NamedTuple):
    """One finished run: where it sits in the grid, its test accuracy with the statistics training left
    (``before``), recomputed (``after``) and as ``auto`` leaves it, and how stale the statistics were."""

    model: str
    variant: str
    target: float
    seed: int
    before: float
    after: float
    auto: float
    mean_shift: float
    variance_ratio: float


def recompute_run(run: Path, data_cache: dict) -> Recomputed | None:
    """The run's accuracy before and after the recomputation, and with ``auto`` (``None`` for a model without
    BatchNorm). ``ValueError`` when the rebuilt model does not give the recorded accuracy, or when the run
    recomputed its statistics with ``always`` (the statistics training left are then not known)."""
    summary = json.loads((run / "summary.json").read_text())
    config = summary["config"]
    key = (config["dataset"], config["seed"])
    if key not in data_cache:
        data_cache[key] = load_dataset(config["dataset"], seed=config["seed"])
    data = data_cache[key]
    model = load_run_weights(run).build_model()
    if not has_batchnorm(model):
        return None
    test = BatchLoader(data.x_test, data.y_test, 1000, transform=data.test_transform)  # the run's own test loader
    _, rebuilt = evaluate(model, test)
    if abs(rebuilt - summary["test_accuracy"]) > 0.5 / len(data.y_test):
        raise ValueError(
            f"{run}: the rebuilt model reads {rebuilt:.4f}, the run recorded {summary['test_accuracy']:.4f}"
        )

    def batches():
        return training_inputs(data.x_train, config["batch_size"], data.test_transform)

    staleness = summary.get("batchnorm_staleness")
    if summary.get("test_accuracy_running_batchnorm") is None:  # model_sparse.pt holds training's statistics
        before = rebuilt
        checked = recompute_stale_batchnorm(model, batches())
        auto = evaluate(model, test)[1] if checked.recomputed else before
        mean_shift, variance_ratio = checked.mean_shift, checked.variance_ratio
    elif staleness is not None and staleness["recomputed"]:  # auto replaced them: the summary keeps the rest
        before, auto = summary["test_accuracy_running_batchnorm"], rebuilt
        mean_shift, variance_ratio = staleness["mean_shift"], staleness["variance_ratio"]
    else:
        raise ValueError(f"{run}: made with --recompute-batchnorm always; the statistics training left are gone")
    recompute_batchnorm(model, batches())
    _, after = evaluate(model, test)
    variant, target, seed = run.parts[-3], float(run.parts[-2][1:]), int(run.parts[-1][1:])
    return Recomputed(
        f"{config['model']} ({config['dataset']})",
        variant,
        target,
        seed,
        before,
        after,
        auto,
        mean_shift,
        variance_ratio,
    )


def table(results: list[Recomputed]) -> str:
    """Per model and target: each variant's mean test accuracy (worst seed) with the statistics training left,
    always recomputed, and as ``auto`` leaves them; then the runs ``auto`` recomputes."""
    variants = list(dict.fromkeys(result.variant for result in results))
    cells: dict[tuple[str, float], dict[str, list[Recomputed]]] = defaultdict(lambda: defaultdict(list))
    for result in results:
        cells[(result.model, result.target)][result.variant].append(result)
    header = "| model | target | " + " | ".join(f"{v} | {v}, always | {v}, auto" for v in variants) + " |"
    lines = [header, "|---|---|" + "---|---|---|" * len(variants)]
    for (model, target), by_variant in sorted(cells.items()):
        row = f"| {model} | {target:g} |"
        for variant in variants:
            runs = by_variant.get(variant, [])
            for values in ([r.before for r in runs], [r.after for r in runs], [r.auto for r in runs]):
                row += f" {statistics.mean(values):.3f} ({min(values):.3f}) |" if values else " |"
        lines.append(row)
    moved = [round(r.after - r.before, 9) for r in results]
    stale = [r for r in results if not (r.mean_shift <= STALE_MEAN and r.variance_ratio <= STALE_VARIANCE)]
    healthy = [r for r in results if r not in stale]
    lines += [
        "",
        f"Runs: {len(results)}; always recomputed: up {sum(m > 0 for m in moved)}, down {sum(m < 0 for m in moved)}, "
        f"unchanged {sum(m == 0 for m in moved)}; largest moves {min(moved):+.4f} and {max(moved):+.4f}.",
        f"auto recomputes {len(stale)} of them"
        + (
            ": "
            + "; ".join(
                f"{r.model} {r.variant} {r.target:g} seed {r.seed} (mean {r.mean_shift:.3g} std off, variance "
                f"{r.variance_ratio:.3g}x: {r.before:.4f} -> {r.auto:.4f})"
                for r in stale
            )
            if stale
            else ""
        )
        + (
            f". The others' stored statistics lay at most {max(r.mean_shift for r in healthy):.3g} standard "
            f"deviations and {max(r.variance_ratio for r in healthy):.3g}x from the recomputed ones."
            if healthy
            else "."
        ),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the --out directory of benchmarks/zoo_sweep.py")
    parser.add_argument("--no-write", action="store_true", help="print only; do not update docs/method.md")
    args = parser.parse_args()
    runs = sorted(path.parent for path in args.out.glob("runs/*/*/t*/s*/summary.json"))
    if not runs:
        parser.error(f"no finished run under {args.out}/runs")
    cache: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = [result for run in runs if (result := recompute_run(run, cache)) is not None]
    body = "\n".join(
        [
            "Each cell: mean test accuracy over seeds (worst seed) with the BatchNorm statistics training left, "
            "recomputed on the training inputs (`adasparse train --recompute-batchnorm always`), and as "
            "`--recompute-batchnorm auto` leaves them (recomputed only where a channel's stored mean is over 3 "
            "standard deviations or its variance over 4x off).",
            "",
            "Command: `python benchmarks/batchnorm_statistics.py OUT` (`OUT`: the runs of "
            "`python benchmarks/zoo_sweep.py --out OUT`)",
            "",
            table(results),
        ]
    )
    print(body)
    if not args.no_write:
        write_section(PAGE, "batchnorm-statistics", body)


if __name__ == "__main__":
    main()
