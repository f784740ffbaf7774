"""Run one `adasparse bench` suite in parallel processes and append each finished run's figures to a JSON-lines
file as it completes (so an interrupted sweep keeps what it finished); ``--table`` writes the markdown page.
Runs that start from another run's weights (the ``pretrained`` suite) start after all the others have finished.

    python benchmarks/zoo_sweep.py --suite zoo --jobs 16 --out runs/bench --records docs/zoo.jsonl
    python benchmarks/zoo_sweep.py --records docs/zoo.jsonl --table docs/zoo.md
    python benchmarks/zoo_sweep.py --suite pretrained --jobs 16 --out runs/bench --records pretrained.jsonl
    python benchmarks/zoo_sweep.py --records pretrained.jsonl --table pretrained.md
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from adasparse.app.bench import SUITES, Job, _run_job, jobs, phases
from adasparse.core._io import atomic_write_text


def _suite_of(rows: list[dict]) -> str:
    """The suite the records come from (records written before the field existed are the zoo's)."""
    names = {row.get("suite", "zoo") for row in rows}
    if len(names) != 1:
        raise SystemExit(f"the records mix suites ({', '.join(sorted(names))}): one file per suite")
    return names.pop()


def _recorded_epochs(rows: list[dict]) -> str | None:
    """What the records say their runs trained for: one number, or one per model when the data sets' recipes differ
    (records written before the field existed say nothing). One model's runs must share one budget."""
    epochs: dict[str, set[int]] = collections.defaultdict(set)
    for row in rows:
        if "epochs" in row:
            epochs[f"{row['model']} ({row['dataset']})"].add(row["epochs"])
    for model, values in epochs.items():
        if len(values) > 1:
            raise SystemExit(
                f"the records mix epochs for {model} ({', '.join(map(str, sorted(values)))}): one file per budget"
            )
    values = {value for model_values in epochs.values() for value in model_values}
    if len(values) <= 1:
        return str(values.pop()) if values else None
    return ", ".join(f"{model} {next(iter(epochs[model]))}" for model in sorted(epochs))


def _variant_order(rows: list[dict], suite: str) -> list[str]:
    """The table's columns: dense first, then the suite's variants in its order, then any other label seen."""
    present = {row["variant"] for row in rows}
    order = ["dense"] + [variant.label for variant in SUITES[suite].variants] if suite in SUITES else ["dense"]
    order += [row["variant"] for row in rows]
    return [label for label in dict.fromkeys(order) if label in present or label == "dense"]


def table(records_path: str) -> str:
    """Mean ± std (worst seed) accuracy per model and target (rows) and variant (columns), and the worst sparsity
    error before the final calibration of our variants."""
    rows = [json.loads(line) for line in open(records_path)]
    accuracy: dict[tuple, list[float]] = collections.defaultdict(list)
    error: dict[tuple, list[float]] = collections.defaultdict(list)
    variants = _variant_order(rows, _suite_of(rows))
    for row in rows:
        key = (f"{row['model']} ({row['dataset']})", row["target"], row["variant"])
        accuracy[key].append(row["accuracy"])
        ours = row.get("ours", "adasparse" in row["variant"] or "default" in row["variant"])
        if ours and row["sparsity_before"] is not None:
            error[key].append(abs(row["sparsity_before"] - row["target"]))
    dense = {key[0]: values for key, values in accuracy.items() if key[2] == "dense"}
    lines = ["| model | target | " + " | ".join(variants) + " |", "|---" * (len(variants) + 2) + "|"]
    for model, target in sorted({(key[0], key[1]) for key in accuracy}):
        cells = []
        for variant in variants:
            values = dense.get(model) if variant == "dense" else accuracy.get((model, target, variant))
            cells.append(
                f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f} ({min(values):.3f})" if values else ""
            )
        lines.append(f"| {model} | {target} | " + " | ".join(cells) + " |")
    worst: dict[str, float] = {}
    for (_, _, variant), values in error.items():
        worst[variant] = max(worst.get(variant, 0.0), *values)
    lines.append("")
    lines.append(
        "Worst |sparsity - target| before the final calibration, in points: "
        + "; ".join(f"{variant} {100 * worst[variant]:.3f}" for variant in variants if variant in worst)
        + "."
    )
    lines.extend(_goal_lines(accuracy, variants))
    seeds = ", ".join(str(seed) for seed in sorted({row["seed"] for row in rows}))
    epochs = _recorded_epochs(rows)
    lines.append(f"Runs in these records: {len(rows)}; seeds: {seeds}" + (f"; epochs: {epochs}." if epochs else "."))
    return "\n".join(lines) + "\n"


def _goal_lines(accuracy: dict[tuple, list[float]], variants: list[str]) -> list[str]:
    """Each of our columns (a label with "adasparse") read against the goals of the robustness work: its mean at or
    above GMP global's, no seed more than 1 point below GMP's mean, no cell more than 2 points below its own result
    at the next lower target. Empty when the page has no GMP global column."""
    gmp = next((v for v in variants if v.endswith("GMP global")), None)
    if gmp is None:
        return []
    return [_goal_line(accuracy, ours, gmp) for ours in variants if "adasparse" in ours]


def _goal_line(accuracy: dict[tuple, list[float]], ours: str, gmp: str) -> str:
    cells = sorted({(key[0], key[1]) for key in accuracy if key[2] == ours and (key[0], key[1], gmp) in accuracy})
    behind, low_seeds, collapses = [], [], []
    for model, target in cells:
        mine, theirs = accuracy[(model, target, ours)], statistics.mean(accuracy[(model, target, gmp)])
        if statistics.mean(mine) < theirs:
            behind.append(f"{model} {target:g} ({statistics.mean(mine):.3f} vs {theirs:.3f})")
        if min(mine) < theirs - 0.01:
            low_seeds.append(f"{model} {target:g} (worst {min(mine):.3f})")
        lower = [t for m, t in cells if m == model and t < target]
        if lower:
            previous = statistics.mean(accuracy[(model, max(lower), ours)])
            if statistics.mean(mine) < previous - 0.02:
                theirs_before = statistics.mean(accuracy[(model, max(lower), gmp)])
                collapses.append(
                    f"{model} {max(lower):g} → {target:g} ({previous:.3f} → {statistics.mean(mine):.3f}; "
                    f"GMP {theirs_before:.3f} → {theirs:.3f})"
                )
    return (
        f"`{ours}` against `{gmp}`: mean at or above on {len(cells) - len(behind)} of {len(cells)} cells"
        + (f"; below on {', '.join(behind)}" if behind else "")
        + ". Seeds more than 1 point below GMP's mean: "
        + (", ".join(low_seeds) if low_seeds else "none")
        + ". More than 2 points below its own mean at the next lower target: "
        + (", ".join(collapses) if collapses else "none")
        + "."
    )


_PAGES = {
    "zoo": """# Results on the model zoo: normalization, residual blocks, attention

Generated by `python benchmarks/zoo_sweep.py --records docs/zoo.jsonl --table docs/zoo.md` from the runs of `python
benchmarks/zoo_sweep.py --suite zoo` (192 runs: every variant on each model, targets 0.9, 0.95 and 0.98, seeds 0-2, 30
epochs each, equal for every method, one CPU thread per run). Test accuracy at exactly the target (mean ± std over
seeds, worst seed in brackets). The 0.95 rows were added later, every column, on a 2-core machine with the code of the
other rows (`--targets 0.95`); the line under the table reads the default against the goals. `adasparse (default)`
projects onto the budget with the layer-adaptive allocation (every threshold at one level of LAMP's magnitude score) and
bounds the pruned weights' straight-through gradient on the layers a BatchNorm reads ([lamp.md](lamp.md), whose runs
these are; on resnet1d and resnet2d made again when the bound became the default, on cnn1d and the transformer, where no
layer feeds a BatchNorm, the same runs as before); `adasparse, Gaussian projection` is the default before it (the
projection along the Gaussian slope, the thresholds moved by the task gradient with the pruner's own scale-free step;
measured again with the defaults of that time: kept weights keep their values, layers the loss never reaches pruned
first); `default, thresholds in the optimizer` the one before that (the thresholds an SGD group at lr/100).

The magnitude baselines prune `nn.MultiheadAttention`'s projections like every other layer (the attention module
re-applies the `torch.nn.utils.prune` mask of the `out_proj` weight it reads directly before each forward pass). The
transformer row, every column, was measured again once they did, on a 2-core machine (`--models transformer`); before,
they left attention dense and reached the target over the MLP layers only (GMP global read 0.952 and 0.950).

{table}""",
    "pretrained": """# Pruning a pretrained model during a short fine-tuning

Generated by `python benchmarks/zoo_sweep.py --records RECORDS --table PAGE` from the runs of `python
benchmarks/zoo_sweep.py --suite pretrained`: on each zoo model, a dense pre-training run per seed (the recipe, SGD, 30
epochs: the `dense` column, the zoo suite's dense runs), then each method prunes that model during a fine-tuning run of
7 epochs (23% of the pre-training steps) with AdamW (the data set's AdamW learning rate, one cosine decay): ours with
its defaults (the layer-adaptive allocation and the pruned-gradient bound on the layers a BatchNorm reads: the runs of
[lamp-pretrained.md](lamp-pretrained.md), on resnet1d and resnet2d made again when the bound became the default) and
with the Gaussian
projection that was the default before it, GMP global (the same budget, its cubic ramp over 10-70% of the fine-tuning),
and one-shot magnitude pruning before the fine-tuning. Targets 0.9, 0.95 and 0.98, seeds 0-2 (the 0.95 rows added later,
every column, on a 2-core machine with the code of the other rows: `--targets 0.95`). Test accuracy at exactly the
target (mean ± std over seeds, worst seed in brackets).

The magnitude baselines prune `nn.MultiheadAttention`'s projections like every other layer (the attention module
re-applies the `torch.nn.utils.prune` mask of the `out_proj` weight it reads directly before each forward pass). The
transformer row, every column, was measured again once they did, on a 2-core machine (`--models transformer`); before,
they left attention dense and reached the target over the MLP layers only (GMP global read 0.961 and 0.959).

{table}""",
    "threshold-lr": """# Sensitivity of the Gaussian projection to the thresholds' step size

Generated by `python benchmarks/zoo_sweep.py --records RECORDS --table PAGE` from the runs of `python
benchmarks/zoo_sweep.py --suite threshold-lr`: the Gaussian projection (the default until the layer-adaptive allocation,
whose thresholds take no step of their own) with `threshold_lr` (how far, in standard deviations, a threshold can move
over the whole training) from 0.2 to 20, two decades around its default 2, with SGD and with AdamW (the data sets'
recipe learning rates); beside it the previous mode, the thresholds an optimizer group at `lr * threshold_lr_scale`.
Target 0.98, 30 epochs, the suite's seeds 0-2 or those chosen with `--seeds` (the last line says which ran). Test
accuracy at exactly the target (mean ± std over seeds, worst seed in brackets).

{table}""",
    "lamp": """# The layer-adaptive allocation (LAMP): the default, against the Gaussian projection and GMP

Generated by `python benchmarks/zoo_sweep.py --records docs/lamp.jsonl --table docs/lamp.md` from the runs of `python
benchmarks/zoo_sweep.py --suite lamp`: from scratch, 30 epochs, SGD (the data sets' recipes), targets 0.9, 0.95 and
0.98, seeds 0-2, one CPU thread per run. `adasparse (default)` (`projection_slope="lamp"`) puts every threshold at one
level of the layer-adaptive magnitude score (Lee et al., ICLR 2021): each layer is pruned by magnitude, and how much
each loses follows from its weights' distribution alone; on the layers a BatchNorm reads, every pruned weight's
straight-through gradient is clamped to 3 times the root mean square of its layer's kept weights' gradients
(`pruned_gradient_bound=3`, `pruned_gradient_bound_layers="normalized"`, see docs/method.md). `adasparse, no
pruned-gradient bound` is the default before the bound joined it (the runs that were this page's default column);
`adasparse, pruned-gradient bound 3` the bound on every layer (`pruned_gradient_bound_layers="all"`), made before the
default took it. On cnn1d and the transformer no layer feeds a BatchNorm, so the default is the unbounded run, bit for
bit (the same records); on resnet2d and mobilenet2d every pruned layer does, and the default gave the same accuracies
as the bound on every layer. `adasparse, Gaussian projection` (the default before the layer-adaptive allocation)
projects the thresholds along the Gaussian slope and moves them with the task gradient. The zoo (cnn1d, resnet1d,
transformer on MNIST-1D, resnet2d on digits), two models no setting was designed on (mobilenet2d and wrn-16-2 on
digits) and one added after every default was fixed, as a check on a kind of network none of them was measured on
(convnext2d on digits: ConvNeXt blocks, LayerNorm and no BatchNorm, so the default bounds none of its layers and is
the unbounded run). The GMP and Gaussian columns at 0.9 and 0.98 are those of [slope.md](slope.md), at 0.95 those of
[zoo.md](zoo.md) and, for the held-out models, runs of this suite; every run of a row on machines that give the same
numbers for the same run (checked by rerunning four of them). Test accuracy at exactly the target (mean ± std over
seeds, worst seed in brackets).

{table}
The three cells where a seed of the default without the bound fell more than a point below GMP's mean, again with
seeds 3-5 of the same grid (`python benchmarks/zoo_sweep.py --suite lamp --seeds 3 4 5 --models cnn1d --targets 0.95
--only "GMP global" "adasparse (default)" --records docs/lamp-seeds.jsonl`, and the same with `--models resnet2d
mobilenet2d --targets 0.9`; the records keep the runs without the bound under their label). Over the six seeds
(mean ± population std, worst seed):
- cnn1d at 0.95 (no BatchNorm: the default is the unbounded run), over seeds 0-5 0.878 ± 0.015 (0.847, 0.6 points
  under GMP's mean) against GMP global's 0.853 ± 0.013. The default's seeds put their layers within two points of each
  other (95.4-95.6%, 96.5-96.8% and 85.7-87.5% zeros) while their accuracy spans 0.847-0.894, the worst seed's
  allocation lying between those of the best ones: the spread is the training's, not the allocation's. Seeds 3-11 at
  every target (`--seeds 3 4 5` with `--targets 0.9 0.98`, then `--seeds 6 7 8 9 10 11 --models cnn1d`, the same
  records): over twelve seeds the default reads 0.900 ± 0.009 (0.890) / 0.879 ± 0.014 (0.847) / 0.831 ± 0.016 (0.801)
  at 0.9 / 0.95 / 0.98 against GMP's 0.867 ± 0.013 (0.845) / 0.848 ± 0.013 (0.831) / 0.800 ± 0.010 (0.783): 3.1-3.3
  points ahead at each target, ahead on 35 of the 36 seed pairs, and no seed more than a point under GMP's mean (the
  worst, 0.847 at 0.95, is 0.14 under). Its drops from one target to the next are GMP's: 2.1 ± 0.5 points from 0.9 to
  0.95 (GMP 1.8 ± 0.2; standard errors over the seeds' paired drops) and 4.8 ± 0.6 from 0.95 to 0.98 (GMP 4.8 ± 0.3).
- The same cnn1d grid with three times the epochs (`python benchmarks/zoo_sweep.py --suite lamp --models cnn1d --only
  "GMP global" "adasparse (default)" --epochs 90 --out runs/epochs90 --records docs/lamp-epochs90.jsonl`, seeds 0-2):
  the default 0.950 ± 0.007 / 0.949 ± 0.004 / 0.925 ± 0.002 against GMP's 0.930 / 0.924 / 0.902, so the drops become
  0.1 and 2.4 points (GMP's 0.6 and 2.2). At the embedded benchmark's 60 epochs ([lamp-methods.md](lamp-methods.md))
  every method drops 1.8-3.6 points from 0.95 to 0.98, the default and GMP 2.7 each. At 0.98 cnn1d keeps 555 of its
  27,776 pruned weights: what that step costs shrinks with the training budget and is the same for every method
  measured, the default's included. It is the model's and the budget's, not a collapse (where one method falls and
  the others hold, as the Gaussian projection on resnet1d from 0.95 to 0.98, 0.984 → 0.836 where GMP went 0.976 →
  0.975).
- convnext2d, with seeds 3-5 at every target (`--models convnext2d --seeds 3 4 5 --only "GMP global" "adasparse
  (default)" "adasparse, pruned-gradient bound 3"`, the same records): over six seeds the default reads 0.976 ± 0.012
  (0.955) / 0.971 ± 0.014 (0.942) / 0.975 ± 0.015 (0.944) at 0.9 / 0.95 / 0.98 against GMP's 0.970 ± 0.010 (0.953) /
  0.971 ± 0.012 (0.953) / 0.968 ± 0.013 (0.944): at or above on every cell (level at 0.95), +12, 0 and +14 test
  examples summed over the six seed pairs, never more than 4 examples under GMP on the same seed. Seed 1 is hard for
  every method: GMP's own lies 1.8-2.4 points under GMP's mean, so on this model no method keeps every seed within a
  point of GMP's mean; the default's seed 1 is 0-4 examples from GMP's. The bound on every layer reads 0.981 ± 0.007 /
  0.977 ± 0.011 / 0.975 ± 0.010 (+23, +13 and +16 examples over GMP at the three targets): a network without
  BatchNorm on which bounding every layer helps.
- mobilenet2d at 0.9: the default 0.991 ± 0.004 (0.983) against GMP's 0.980 ± 0.007 (0.972), ahead on every seed
  (+3, +3, 0, +2, +8, +7 test examples); without the bound 0.986 ± 0.007 (0.972).
- resnet2d at 0.9 (seeds 6-11 too: `--seeds 6 7 8 9 10 11 --models resnet2d --targets 0.9`, the same records): over
  twelve seeds the default reads 0.9903 ± 0.0043 (0.9833) against GMP global's 0.9903 ± 0.0049 (0.9833), level on
  the mean and the worst seed, no seed more than a point under GMP's mean. Paired by seed: 3 wins, 3 losses, 6 ties
  (+1, +2, 0, 0, -1, -2, 0, -2, 0, +1, +1, 0 examples). Without the bound: 0.9907 ± 0.0055 (0.9805).
""",
    "lamp-methods": """# The layer-adaptive allocation (LAMP, the default) on the embedded benchmark

Generated by `python benchmarks/zoo_sweep.py --records docs/lamp-methods.jsonl --table docs/lamp-methods.md` from the
runs of `python benchmarks/zoo_sweep.py --suite lamp-methods`: the models and recipes of the results page (the 1-D CNN
on MNIST-1D, 60 epochs, and the 2-D CNN on digits, 30 epochs, from scratch, SGD), targets 0.5-0.98, seeds 0-2, one CPU
thread per run. `adasparse (default)` is the layer-adaptive allocation (`projection_slope="lamp"`) with the
pruned-gradient bound on the layers a BatchNorm reads (`pruned_gradient_bound=3`; [method.md](method.md)): on cnn2d its
second convolution, made again when the bound became the default; cnn1d has no BatchNorm, and its default is the
unbounded run, bit for bit. `adasparse, no pruned-gradient bound` is the default before the bound joined it, `adasparse,
pruned-gradient bound 3` the bound on every layer (`pruned_gradient_bound_layers="all"`), made before. `adasparse,
Gaussian projection` is the default before the layer-adaptive allocation; the GMP and Gaussian columns are those of
[slope-methods.md](slope-methods.md), on machines that give the same numbers for the same run. Test accuracy at exactly
the target (mean ± std over seeds, worst seed in brackets). The digits test set has 359 images: one is 0.0028.

{table}""",
    "lamp-pretrained": """# The layer-adaptive allocation (LAMP, the default) from a pretrained start

Generated by `python benchmarks/zoo_sweep.py --records docs/lamp-pretrained.jsonl --table docs/lamp-pretrained.md` from
the runs of `python benchmarks/zoo_sweep.py --suite lamp-pretrained`: the protocol of [pretrained.md](pretrained.md)
(each zoo model trained dense for 30 epochs with SGD, then pruned during a 7-epoch AdamW fine-tuning): the default,
which sets every threshold at one level of the layer-adaptive magnitude score (`projection_slope="lamp"`), beside the
Gaussian projection that was the default before it and GMP global (their columns are those of
[pretrained.md](pretrained.md)). The default bounds the pruned weights' straight-through gradient on the layers a
BatchNorm reads (`pruned_gradient_bound=3`; [method.md](method.md)): its resnet1d and resnet2d runs were made again when
the bound became the default, while on cnn1d and the transformer, where no layer feeds a BatchNorm, they are the
unbounded runs, bit for bit. `pretrained + adasparse, no pruned-gradient bound` is the default before the bound joined
it, `pretrained + adasparse, pruned-gradient bound 3` the bound on every layer, made before. Targets 0.9, 0.95 and
0.98, seeds 0-2.
Test accuracy at exactly the target (mean ± std over seeds, worst seed in brackets).

{table}""",
    "slope-methods": """# The projection's direction on the embedded benchmark

Generated by `python benchmarks/zoo_sweep.py --records docs/slope-methods.jsonl --table docs/slope-methods.md` from the
runs of `python benchmarks/zoo_sweep.py --suite slope-methods`: the models and recipes of the results page (the 1-D CNN
on MNIST-1D, the 2-D CNN on digits, from scratch, SGD), targets 0.5-0.98, seeds 0-2, every run on the same machine: GMP
global, the projection along the Gaussian slope (`adasparse, Gaussian projection`, the default until the layer-adaptive
allocation) and `projection_slope="measured"`. Test accuracy at exactly the target (mean ± std over seeds, worst seed in
brackets).

{table}""",
    "slope-pretrained": """# The projection's direction from a pretrained start

Generated by `python benchmarks/zoo_sweep.py --records docs/slope-pretrained.jsonl --table docs/slope-pretrained.md`
from the runs of `python benchmarks/zoo_sweep.py --suite slope-pretrained`: each zoo model pre-trained dense (30 epochs,
SGD), then pruned during a 7-epoch AdamW fine-tuning run with the projection along the Gaussian slope (the default until
the layer-adaptive allocation) and with `projection_slope="measured"`, targets 0.9 and 0.98, seeds 0-2, every run on the
same machine. Test accuracy at exactly the target (mean ± std over seeds, worst seed in brackets); the dense column is
the pre-trained model.

{table}""",
    "slope": """# The projection's direction: the Gaussian slope or each layer's measured one

Generated by `python benchmarks/zoo_sweep.py --records docs/slope.jsonl --table docs/slope.md` from the runs of `python
benchmarks/zoo_sweep.py --suite slope`: from scratch, 30 epochs, SGD (the data sets' recipes), targets 0.9 and 0.98,
seeds 0-2, every run on the same machine (one CPU thread each). `adasparse, Gaussian projection` (the default until the
layer-adaptive allocation) moves the thresholds in its projection along the Gaussian slope `ds/dr` of each layer;
`adasparse, measured slope` (`projection_slope="measured"`) along the slope of the layer's measured zero fraction, so a
layer whose weights became heavy-tailed and have almost none left near the threshold is not pushed further. The zoo
(cnn1d, resnet1d, transformer on MNIST-1D, resnet2d on digits) and two models no setting was designed on (mobilenet2d
and wrn-16-2 on digits). GMP global for reference (its transformer rows measured again once it pruned attention too).
Test accuracy at exactly the target (mean ± std over seeds, worst seed in brackets).

{table}""",
}


def suite_jobs(name: str, seeds: list[int] | None = None, epochs: int | None = None) -> list[Job]:
    """Every run of suite ``name``, for ``seeds`` instead of the suite's own when given (more seeds of the same grid,
    each run as the suite's seeds are), and for ``epochs`` instead of the suite's when given."""
    suite = SUITES[name]
    if seeds:
        suite = dataclasses.replace(suite, seeds=tuple(seeds))
    if epochs is not None:
        suite = dataclasses.replace(suite, epochs=epochs)
    return jobs(suite)


def select(
    every: list[Job],
    only: list[str] | None = None,
    seeds: list[int] | None = None,
    models: list[str] | None = None,
    targets: list[float] | None = None,
) -> tuple[list[Job], set[str]]:
    """The runs to do for the filters given (``None``: no filter), and the keys of those to record: the chosen
    runs. A run a chosen one starts from is done too (or reused) but not recorded again. A dense run trains once
    per seed, whatever the target, so a ``targets`` filter without ``only`` keeps it only as such a start."""
    chosen = [
        job
        for job in every
        if (not only or job.variant.label in only)
        and (not seeds or job.seed in seeds)
        and (not models or job.model in models)
        and (not targets or job.target in targets or job.variant.dense)
    ]
    if targets and not only:
        chosen = [job for job in chosen if not job.variant.dense]
    recorded = {job.key for job in chosen}
    needed = {job.init_from for job in chosen} - recorded
    return [job for job in every if job.key in recorded or job.key in needed], recorded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="zoo", choices=sorted(SUITES))
    parser.add_argument("--jobs", type=int, default=os.cpu_count())
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--records", default="zoo.jsonl")
    parser.add_argument("--only", nargs="+", default=None, metavar="LABEL", help="run only these variant labels")
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=None,
        help="run these seeds (default: the suite's own; others run as the suite's would)",
    )
    parser.add_argument("--models", nargs="+", default=None, metavar="MODEL", help="run only these models")
    parser.add_argument("--targets", nargs="+", type=float, default=None, help="run only these targets")
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="train for this many epochs instead of the suite's (a variant that sets its own, a fine-tuning run, keeps "
        "it; records say what each run trained for); give these runs their own --out and --records: the run "
        "directories are named as the suite's",
    )
    parser.add_argument(
        "--table", default=None, help="write the markdown page of --records here and stop (the page of their suite)"
    )
    args = parser.parse_args()
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be a positive integer, got {args.epochs}")
    if args.table:
        rows = [json.loads(line) for line in open(args.records)]
        suite = _suite_of(rows)
        page = _PAGES.get(suite, f"# Suite `{suite}`\n\n{{table}}")
        atomic_write_text(Path(args.table), page.format(table=table(args.records)))
        return
    cost = {"transformer": 0, "resnet1d": 1}  # slowest first, so no long run starts last
    todo, recorded = select(
        suite_jobs(args.suite, args.seeds, args.epochs), args.only, args.seeds, args.models, args.targets
    )
    root = str(Path(args.out) / "runs")
    started = time.perf_counter()
    done = 0
    with ProcessPoolExecutor(max_workers=args.jobs) as pool, open(args.records, "a") as records:
        for phase in phases(todo):  # the runs others start from, then those
            futures = {
                pool.submit(_run_job, job, root): job for job in sorted(phase, key=lambda job: cost.get(job.model, 2))
            }
            for future in as_completed(futures):
                done += 1
                record = future.result()
                if record["key"] in recorded:
                    _write_record(records, record, done, len(todo), started)
                else:
                    print(f"[{done}/{len(todo)}] {record['key']} (a run others start from; not recorded)", flush=True)


def _write_record(records, record: dict, done: int, total: int, started: float) -> None:
    summary = record["summary"]
    row = {
        "suite": record["suite"],
        "variant": record["variant"],
        "ours": record["ours"],
        "dataset": record["dataset"],
        "model": record["model"],
        "target": record["target"],
        "seed": record["seed"],
        "epochs": summary["config"]["epochs"],
        "accuracy": summary["test_accuracy"],
        "sparsity": summary.get("sparsity"),
        "sparsity_before": summary.get("sparsity_before_calibration"),
        "wall_seconds": summary["wall_seconds"],
        "final_layers": record["final_layers"],
    }
    records.write(json.dumps(row) + "\n")
    records.flush()
    print(
        f"[{done}/{total}] {record['key']} {summary['test_accuracy']:.4f} ({time.perf_counter() - started:.0f}s)",
        flush=True,
    )


if __name__ == "__main__":
    main()
