"""``adasparse bench``: every pruning method on the embedded data sets, several targets and seeds, one command.

Runs :func:`adasparse.train.run_training` for each (suite variant, data set, target, seed) into
``OUT/runs/...`` (a finished run is skipped, so an interrupted sweep resumes), collects the summaries, and writes
a results page (``OUT/results.md``; the project's ``docs/results.md`` only with ``--docs docs``) with tables
(mean ± std over seeds) and PNG plots (in ``figures/`` beside the page):

- accuracy against sparsity for every method, at equal epochs;
- the gap between achieved and requested sparsity (raw, and after calibration for ours);
- the per-layer allocation of ours against GMP at 90%;
- the training-step time of each method over dense, measured side by side;
- the Gaussian estimate's error per layer over training.

Runs are spread over worker processes with one thread each (``--jobs``, default: the CPU count).
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import shutil
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ..core._io import atomic_write_json, atomic_write_text

__all__ = ["Variant", "Suite", "SUITES", "Job", "phases", "run_suite", "write_results", "measure_overhead"]


@dataclass(frozen=True)
class Variant:
    """One column of the results: a label and the :class:`~adasparse.train.TrainConfig` options it sets (they
    override the suite's, ``epochs`` included).

    ``init_from`` is the label of another variant of the suite: each run then starts from the final weights of
    that variant's run with the same data set, model and seed (its target too, unless it is dense), which runs
    first (:func:`phases`)."""

    label: str
    options: dict[str, Any]
    ours: bool = False
    init_from: str | None = None


@dataclass(frozen=True)
class Suite:
    """Variants × (data set, model) × targets × seeds."""

    name: str
    variants: tuple[Variant, ...]
    datasets: tuple[tuple[str, str], ...]
    targets: tuple[float, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int | None = None


DEFAULT = Variant("adasparse (default)", {}, ours=True)
BASELINES = (
    Variant("one-shot", {"method": "oneshot"}),
    Variant("one-shot + FT", {"method": "oneshot-ft"}),
    Variant("GMP global", {"method": "gmp"}),
    Variant("GMP per layer", {"method": "gmp-layer"}),
)
_ORIGINAL_OPTIONS = {
    "threshold_update": "optimizer",
    "centred": True,
    "correction": False,
    "ramp": 0.0,
    "threshold_schedule": "cosine",
    "task_gradient": True,
    "finetune": 0.0,
    "init_fraction": 0.6,
}
ORIGINAL = (
    Variant("adaptive (original)", {**_ORIGINAL_OPTIONS, "sparsity": "adaptive"}, ours=True),
    Variant("fixed (original)", {**_ORIGINAL_OPTIONS, "sparsity": "fixed"}, ours=True),
    Variant("upper (original)", {**_ORIGINAL_OPTIONS, "sparsity": "upper"}, ours=True),
)
ABLATION = (
    ORIGINAL[0],
    ORIGINAL[1],
    Variant("+ constraint", {**ORIGINAL[0].options, "sparsity": "constraint"}, ours=True),
    Variant("+ projection", {**ORIGINAL[0].options, "sparsity": "projection"}, ours=True),
    Variant("+ correction", {**ORIGINAL[0].options, "correction": True}, ours=True),
    Variant("+ ramp", {**ORIGINAL[0].options, "ramp": 0.3}, ours=True),
    Variant("+ no task gradient", {**ORIGINAL[0].options, "task_gradient": False}, ours=True),
    Variant("+ constant threshold lr", {**ORIGINAL[0].options, "threshold_schedule": "constant"}, ours=True),
    Variant("+ fine-tune with fixed masks", {**ORIGINAL[0].options, "finetune": 0.2}, ours=True),
    DEFAULT,
    Variant("default, constraint instead of projection", {"sparsity": "constraint"}, ours=True),
    Variant("default, no task gradient", {"task_gradient": False}, ours=True),
    Variant("GMP global", {"method": "gmp"}),
)
EMBEDDED = (("mnist1d", "cnn1d"), ("digits", "cnn2d"))
ZOO = (("mnist1d", "cnn1d"), ("mnist1d", "resnet1d"), ("mnist1d", "transformer"), ("digits", "resnet2d"))
"""Normalization, residual blocks and attention beside the plain CNN."""
THRESHOLDS_IN_OPTIMIZER = Variant(
    "default, thresholds in the optimizer (lr/100)", {"threshold_update": "optimizer"}, ours=True
)
DENSE = Variant("dense", {"sparsity": "none"})

PRETRAIN_EPOCHS, FINETUNE_EPOCHS = 30, 7
"""The pretrained suite: dense pre-training (the zoo's dense runs, SGD), then pruning during a fine-tuning run of
under a quarter of its steps with AdamW."""
_FINETUNE = {"epochs": FINETUNE_EPOCHS, "optimizer": "adamw"}
PRETRAINED = (
    DENSE,
    Variant("pretrained + adasparse (default)", dict(_FINETUNE), ours=True, init_from="dense"),
    Variant("pretrained + GMP global", {**_FINETUNE, "method": "gmp"}, init_from="dense"),
    Variant("pretrained + one-shot + FT", {**_FINETUNE, "method": "oneshot-ft"}, init_from="dense"),
)

THRESHOLD_LRS = (0.2, 0.6, 2.0, 6.0, 20.0)
"""Two decades around the default threshold_lr (2.0)."""
THRESHOLD_LR_SCALES = (0.01, 0.1, 1.0)
"""The previous mode (thresholds an optimizer group at lr * threshold_lr_scale), for comparison."""
THRESHOLD_LR = tuple(
    variant
    for optimizer, name in (("sgd", "SGD"), ("adamw", "AdamW"))
    for variant in (
        *(
            Variant(f"threshold_lr {lr:g}, {name}", {"threshold_lr": lr, "optimizer": optimizer}, ours=True)
            for lr in THRESHOLD_LRS
        ),
        *(
            Variant(
                f"thresholds in the optimizer x{scale:g}, {name}",
                {"threshold_update": "optimizer", "threshold_lr_scale": scale, "optimizer": optimizer},
                ours=True,
            )
            for scale in THRESHOLD_LR_SCALES
        ),
    )
)

SUITES: dict[str, Suite] = {
    "methods": Suite(
        "methods",
        (Variant("dense", {"sparsity": "none"}), *BASELINES, *ORIGINAL, DEFAULT),
        EMBEDDED,
        (0.5, 0.8, 0.9, 0.95, 0.98),
    ),
    "ablation": Suite("ablation", ABLATION, (*EMBEDDED, ("mnist1d", "mlp")), (0.9, 0.95, 0.98)),
    "flops": Suite(
        "flops",
        (DEFAULT, Variant("adasparse (default), FLOPs budget", {"budget": "flops"}, ours=True)),
        EMBEDDED,
        (0.9,),
    ),
    "zoo": Suite(
        "zoo",
        (
            DENSE,
            BASELINES[1],
            BASELINES[2],
            ORIGINAL[0],
            THRESHOLDS_IN_OPTIMIZER,
            DEFAULT,
        ),
        ZOO,
        (0.9, 0.98),
        epochs=30,
    ),
    "pretrained": Suite("pretrained", PRETRAINED, ZOO, (0.9, 0.98), epochs=PRETRAIN_EPOCHS),
    "threshold-lr": Suite(
        "threshold-lr", THRESHOLD_LR, (("mnist1d", "resnet1d"), ("mnist1d", "transformer")), (0.98,), epochs=30
    ),
    "quick": Suite(
        "quick",
        (Variant("dense", {"sparsity": "none"}), BASELINES[1], BASELINES[2], ORIGINAL[0], DEFAULT),
        (("digits", "mlp"),),
        (0.9,),
        seeds=(0,),
        epochs=3,
    ),
}


@dataclass(frozen=True)
class Job:
    suite: str
    variant: Variant
    dataset: str
    model: str
    target: float
    seed: int
    epochs: int | None
    init_from: str | None = None
    """The key of the run whose final weights this one starts from (run before it), or ``None``."""

    @property
    def key(self) -> str:
        return _key(self.variant, self.dataset, self.model, self.target, self.seed)


def _key(variant: Variant, dataset: str, model: str, target: float, seed: int) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in variant.label.lower()).strip("-")
    return f"{dataset}-{model}/{slug}/t{target:g}/s{seed}"


def _dense(variant: Variant) -> bool:
    return variant.options.get("sparsity") == "none"


def jobs(suite: Suite) -> list[Job]:
    """Every run of ``suite``; dense variants run once per seed (their target is irrelevant)."""
    by_label = {variant.label: variant for variant in suite.variants}
    out = []
    for dataset, model in suite.datasets:
        for variant in suite.variants:
            parent = None
            if variant.init_from is not None:
                parent = by_label.get(variant.init_from)
                if parent is None or parent.init_from is not None:
                    raise ValueError(
                        f"suite {suite.name}: variant {variant.label!r} starts from {variant.init_from!r}, which "
                        "must be a variant of the suite that starts from scratch"
                    )
            targets = suite.targets[:1] if _dense(variant) else suite.targets
            for target in targets:
                for seed in suite.seeds:
                    init_from = None
                    if parent is not None:
                        init_from = _key(parent, dataset, model, suite.targets[0] if _dense(parent) else target, seed)
                    out.append(Job(suite.name, variant, dataset, model, target, seed, suite.epochs, init_from))
    return out


def phases(todo: list[Job]) -> list[list[Job]]:
    """``todo`` in the order it can run: the runs that start from scratch, then those starting from their weights
    (the second list is empty for a suite without ``init_from``)."""
    return [[job for job in todo if job.init_from is None], [job for job in todo if job.init_from is not None]]


def _same_config(run_dir: Path, config: Any) -> bool:
    """Whether the finished run in ``run_dir`` was made with ``config`` (a cached run is reused only then)."""
    from .train import load_run_config

    try:
        return _relevant(load_run_config(run_dir).to_dict()) == _relevant(config.resolved().to_dict())
    except ValueError:
        return False


_LEARNED_THRESHOLD_OPTIONS = (
    "sparsity",
    "lv",
    "dual_step",
    "correction",
    "ramp",
    "task_gradient",
    "centred",
    "threshold_update",
    "threshold_lr",
    "threshold_schedule",
    "budget",
    "finetune",
    "init_fraction",
    "calibrate",
)


def _newer_than_start(summary_path: Path, config: Any) -> bool:
    """Whether a finished run is newer than the weights it started from (a pre-training run redone since, e.g.
    after a change of defaults, makes the runs started from it stale)."""
    if config.init_from is None:
        return True
    start = Path(config.init_from) / "model_sparse.pt"
    return start.exists() and summary_path.stat().st_mtime >= start.stat().st_mtime


def _relevant(config: dict[str, Any]) -> dict[str, Any]:
    """The settings that can change a run: a baseline or dense run ignores our loss's options."""
    if config["method"] == "adasparse" and config["sparsity"] != "none":
        return config
    dense = config["sparsity"] == "none" or config["method"] == "dense"
    return {k: v for k, v in config.items() if k not in _LEARNED_THRESHOLD_OPTIONS} | {"dense": dense}


def _run_job(job: Job, root: str) -> dict[str, Any]:
    from .train import TrainConfig, run_training

    torch.set_num_threads(1)
    run_dir = Path(root) / job.key
    summary_path = run_dir / "summary.json"
    options: dict[str, Any] = {"epochs": job.epochs, **job.variant.options}
    if job.init_from is not None:
        options["init_from"] = str(Path(root) / job.init_from)
    config = TrainConfig(
        dataset=job.dataset, model=job.model, target=job.target, seed=job.seed, device="cpu", **options
    )
    if not (summary_path.exists() and _same_config(run_dir, config) and _newer_than_start(summary_path, config)):
        if run_dir.exists():  # an interrupted run, or one made with other settings (e.g. older defaults)
            shutil.rmtree(run_dir)
        run_training(config, run_dir, progress=False, log=lambda message: None)
    summary = json.loads(summary_path.read_text())
    layers_path = run_dir / "layers.csv"
    layers = list(csv.DictReader(layers_path.open())) if layers_path.exists() else []
    report = json.loads((run_dir / "report.json").read_text())
    return {
        "key": job.key,
        "suite": job.suite,
        "variant": job.variant.label,
        "ours": job.variant.ours,
        "dataset": job.dataset,
        "model": job.model,
        "target": job.target,
        "seed": job.seed,
        "summary": summary,
        "layers": layers,
        "final_layers": report["layers"],
    }


def run_suite(
    suite: Suite, out: Path, *, workers: int | None = None, log: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """Run (or reuse) every job of ``suite`` under ``out/runs``; return their records. The runs that start from
    another's weights run after all the others (:func:`phases`)."""
    todo = jobs(suite)
    workers = workers or os.cpu_count() or 1
    root = str(out / "runs")
    records = []
    started = time.perf_counter()
    index = 0
    for phase in phases(todo):
        if not phase:
            continue
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_run_job, job, root) for job in phase]
            for future in futures:
                index += 1
                record = future.result()
                records.append(record)
                s = record["summary"]
                log(
                    f"[{index}/{len(todo)}] {record['key']}: accuracy {s['test_accuracy']:.4f}"
                    + (f", sparsity {s['sparsity']:.4f}" if s.get("sparsity") is not None else "")
                    + f" ({time.perf_counter() - started:.0f}s)"
                )
    return records


def _mean_std(values: Iterable[float]) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def _group(records: list[dict[str, Any]]) -> dict[tuple[str, str, str, float], list[dict[str, Any]]]:
    groups: dict[tuple[str, str, str, float], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[(record["dataset"], record["model"], record["variant"], record["target"])].append(record)
    return groups


def _accuracy_table(records: list[dict[str, Any]], suite: Suite, dataset: str, model: str) -> str:
    groups = _group(records)
    header = "| method | " + " | ".join(f"{t:g}" for t in suite.targets) + " |"
    lines = [header, "|---|" + "---|" * len(suite.targets)]
    for variant in suite.variants:
        dense = variant.options.get("sparsity") == "none"
        cells = []
        for target in suite.targets:
            group = groups.get((dataset, model, variant.label, suite.targets[0] if dense else target), [])
            cells.append(_mean_std(r["summary"]["test_accuracy"] for r in group))
        lines.append(f"| {variant.label} | " + " | ".join(cells) + " |")
        if variant.ours and any(
            r["summary"].get("test_accuracy_before_calibration") != r["summary"]["test_accuracy"]
            for target in suite.targets
            for r in groups.get((dataset, model, variant.label, target), [])
        ):
            raw = [
                _mean_std(
                    r["summary"]["test_accuracy_before_calibration"]
                    for r in groups.get((dataset, model, variant.label, target), [])
                )
                for target in suite.targets
            ]
            lines.append(f"| {variant.label}, before calibration | " + " | ".join(raw) + " |")
    return "\n".join(lines)


def _target_table(records: list[dict[str, Any]], suite: Suite, dataset: str, model: str) -> str:
    groups = _group(records)
    header = "| method | " + " | ".join(f"{t:g}" for t in suite.targets) + " |"
    lines = [header, "|---|" + "---|" * len(suite.targets)]
    for variant in suite.variants:
        if variant.options.get("sparsity") == "none":
            continue
        raw_cells, final_cells = [], []
        for target in suite.targets:
            group = groups.get((dataset, model, variant.label, target), [])
            raw_cells.append(_points(r["summary"]["sparsity_before_calibration"] - target for r in group))
            final_cells.append(_points(r["summary"]["sparsity"] - target for r in group))
        lines.append(f"| {variant.label}, end of training | " + " | ".join(raw_cells) + " |")
        if variant.ours:
            lines.append(f"| {variant.label}, calibrated | " + " | ".join(final_cells) + " |")
    return "\n".join(lines)


def _compute_table(records: list[dict[str, Any]], suite: Suite) -> str:
    """Parameter sparsity next to the fraction of multiply-accumulates removed, per variant and data set."""
    lines = [
        "| data / model | variant | target | weights pruned | multiply-accumulates removed | test accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for (dataset, model, variant, target), group in sorted(_group(records).items(), key=lambda item: item[0]):
        if group[0]["summary"].get("sparsity") is None:
            continue
        lines.append(
            f"| {dataset} / {model} | {variant} | {target:g} | "
            f"{_mean_std(r['summary']['sparsity'] for r in group)} | "
            f"{_mean_std(r['summary'].get('flops_sparsity') for r in group)} | "
            f"{_mean_std(r['summary']['test_accuracy'] for r in group)} |"
        )
    return "\n".join(lines)


def _points(gaps: Iterable[float]) -> str:
    gaps = [100.0 * g for g in gaps]
    if not gaps:
        return "–"
    worst = max(gaps, key=abs)
    return f"{statistics.mean(gaps):+.2f} (worst {worst:+.2f})"


def _allocation(records: list[dict[str, Any]], dataset: str, model: str, target: float) -> dict[str, list[tuple]]:
    by_variant: dict[str, list[tuple]] = {}
    for record in records:
        if (record["dataset"], record["model"], record["target"], record["seed"]) != (dataset, model, target, 0):
            continue
        if record["variant"] == "dense":
            continue
        by_variant[record["variant"]] = [
            (layer["name"], layer["numel"], layer["actual"]) for layer in record["final_layers"]
        ]
    return by_variant


def _allocation_table(allocation: dict[str, list[tuple]]) -> str:
    if not allocation:
        return "(no runs)"
    variants = list(allocation)
    names = [name for name, _, _ in next(iter(allocation.values()))]
    sizes = {name: numel for name, numel, _ in next(iter(allocation.values()))}
    lines = ["| layer | weights | " + " | ".join(variants) + " |", "|---|---|" + "---|" * len(variants)]
    for index, name in enumerate(names):
        cells = [f"{allocation[v][index][2]:.3f}" if index < len(allocation[v]) else "–" for v in variants]
        lines.append(f"| {name} | {sizes[name]:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _gaussian_error(records: list[dict[str, Any]]) -> tuple[str, dict[str, list[tuple[int, float]]]]:
    """Per-layer |actual - analytic| at the last epoch with learned thresholds (table; fine-tuning with fixed masks
    has no estimate) and the worst layer's error by epoch (curves)."""
    rows, curves = [], {}
    for record in records:
        estimated = [row for row in record["layers"] if row["analytic"] not in ("", None)]
        if not estimated or record["seed"] != 0:
            continue
        last = max(int(row["epoch"]) for row in estimated)
        final = [row for row in estimated if int(row["epoch"]) == last]
        errors = [abs(float(row["actual"]) - float(row["analytic"])) for row in final]
        label = f"{record['dataset']}-{record['model']} {record['variant']} t={record['target']:g}"
        rows.append(f"| {label} | {last} | {statistics.mean(errors):.3f} | {max(errors):.3f} |")
        by_epoch: dict[int, float] = defaultdict(float)
        for row in estimated:
            epoch = int(row["epoch"])
            by_epoch[epoch] = max(by_epoch[epoch], abs(float(row["actual"]) - float(row["analytic"])))
        curves[label] = sorted(by_epoch.items())
    table = "| run (seed 0) | last epoch with thresholds | mean error | worst layer |\n|---|---|---|---|\n" + "\n".join(
        rows
    )
    return table, curves


def measure_overhead(
    dataset: str = "mnist1d", model: str = "cnn1d", steps: int = 200, methods: Iterable[str] | None = None
) -> dict[str, float]:
    """Median train-step time of each method over dense on one model, steps interleaved in one process."""
    import torch.nn.functional as F

    from .data import load_dataset
    from .methods import METHODS, create_method
    from .models import create_model
    from .train import RECIPES, TrainConfig

    data = load_dataset(dataset, seed=0)
    recipe = RECIPES[dataset]
    x = data.train_transform(data.x_train[: recipe.batch_size], None)
    y = data.y_train[: recipe.batch_size]
    names = list(methods or METHODS)
    setups = {}
    for name in names:
        torch.manual_seed(0)
        config = TrainConfig(dataset=dataset, model=model, method=name, epochs=recipe.epochs).resolved()
        net = create_model(model, num_classes=data.num_classes, input_shape=data.input_shape)
        method = create_method(name, net, config, x[:1], total_steps=10**9)
        optimizer = torch.optim.SGD(method.param_groups(recipe.lr, 5e-4), lr=recipe.lr, momentum=0.9)
        setups[name] = (net, method, optimizer)

    def step(name: str) -> float:
        net, method, optimizer = setups[name]
        start = time.perf_counter()
        loss = F.cross_entropy(net(x), y)
        extra = method.loss()
        if extra is not None:
            loss = loss + extra
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        method.end_step(1, 10**9)
        return time.perf_counter() - start

    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(20):
        for name in names:
            step(name)
    for _ in range(steps):
        for name in names:
            times[name].append(step(name))
    dense = statistics.median(times["dense"])
    return {name: statistics.median(values) / dense for name, values in times.items()}


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}"


def write_results(
    suites: list[tuple[Suite, list[dict[str, Any]]]],
    path: Path,
    *,
    command: str,
    overhead: dict[str, dict[str, float]] | None = None,
    wall_seconds: float | None = None,
) -> None:
    """Write the results page ``path``, its data (``path`` with ``.json``) and its plots (``figures/`` beside it).

    Args:
        suites: each suite run and its records (from :func:`run_suite`).
        path: the page, e.g. ``OUT/results.md``; ``docs/results.md`` replaces the project's committed results.
        command: the command line quoted on the page (how to regenerate it).
        overhead: train-step time ratios per data set and model, or ``None``.
        wall_seconds: the invocation's wall time, quoted when given.
    """
    from .plots import plot_accuracy_vs_sparsity, plot_allocation, plot_gaussian_error

    path.parent.mkdir(parents=True, exist_ok=True)
    figures = path.parent / "figures"
    parts = [
        "# Results",
        "",
        "Generated by `adasparse bench`; every number is a mean ± standard deviation over seeds, each run with "
        "the data set's recipe (equal epochs for every method). Accuracy is test accuracy of the final plain "
        "model (for ours: after calibration to the exact target, unless a row says otherwise).",
        "",
        f"- Command: `{command}`",
        f"- Date: {time.strftime('%Y-%m-%d')}; adasparse {__version__}",
        f"- Machine: {_machine()}",
    ]
    runs = {r["key"]: r["summary"]["wall_seconds"] for _, records in suites for r in records}
    parts.append(
        f"- Runs: {len(runs)}, {sum(runs.values()) / 3600:.1f} hours of training in all (one thread each, finished "
        "runs under `--out` are reused)"
    )
    if wall_seconds is not None:
        parts.append(f"- Wall time of this invocation: {wall_seconds / 60:.1f} min")
    parts += [
        "",
        "Why the defaults are what they are, and what the ablation shows: [method.md](method.md#why-these-defaults).",
    ]
    for suite, records in suites:
        parts += ["", f"## Suite `{suite.name}`", ""]
        parts.append(
            f"Targets {', '.join(f'{t:g}' for t in suite.targets)}; seeds {', '.join(map(str, suite.seeds))}; "
            f"epochs {'recipe' if suite.epochs is None else suite.epochs}."
        )
        notes = [
            f"- `{variant.label}`: "
            + (f"starts from the final weights of `{variant.init_from}`; " if variant.init_from else "")
            + ", ".join(f"{key}={value}" for key, value in variant.options.items())
            for variant in suite.variants
            if variant.init_from is not None or "epochs" in variant.options
        ]
        if notes:
            parts += ["", *notes]
        for dataset, model in suite.datasets:
            prefix = f"{suite.name}-{dataset}-{model}"
            parts += [
                "",
                f"### {dataset} / {model}: test accuracy",
                "",
                _accuracy_table(records, suite, dataset, model),
            ]
            image = figures / f"{prefix}-accuracy.png"
            if plot_accuracy_vs_sparsity(records, suite, dataset, model, image):
                parts += ["", f"![accuracy vs sparsity]({image.relative_to(path.parent)})"]
            parts += [
                "",
                f"### {dataset} / {model}: achieved minus target sparsity (points)",
                "",
                _target_table(records, suite, dataset, model),
            ]
            allocation_target = 0.9 if 0.9 in suite.targets else suite.targets[len(suite.targets) // 2]
            allocation = _allocation(records, dataset, model, allocation_target)
            parts += [
                "",
                f"### {dataset} / {model}: sparsity per layer at {allocation_target:g} (seed 0)",
                "",
                _allocation_table(allocation),
            ]
            image = figures / f"{prefix}-allocation.png"
            if allocation and plot_allocation(allocation, image, f"{dataset} / {model} at {allocation_target:g}"):
                parts += ["", f"![allocation]({image.relative_to(path.parent)})"]
        if any(variant.options.get("budget") == "flops" for variant in suite.variants):
            parts += ["", "### Parameter budget vs compute budget", "", _compute_table(records, suite)]
        table, curves = _gaussian_error([r for r in records if r["ours"]])
        parts += ["", "### Gaussian estimate vs measured sparsity per layer, end of training", "", table]
        image = figures / f"{suite.name}-gaussian-error.png"
        if curves and plot_gaussian_error(curves, image):
            parts += ["", f"![gaussian error]({image.relative_to(path.parent)})"]
    if overhead:
        parts += [
            "",
            "## Training-step time over dense",
            "",
            "Median of interleaved steps in one process (forward, backward, optimizer and the method's own "
            "work), one thread.",
            "",
        ]
        for label, ratios in overhead.items():
            parts += [f"**{label}**", "", "| method | time / dense |", "|---|---|"]
            parts += [f"| {name} | {ratio:.2f}× |" for name, ratio in ratios.items()]
            parts.append("")
    atomic_write_text(path, "\n".join(parts).rstrip() + "\n")
    atomic_write_json(
        path.with_suffix(".json"),
        {
            "command": command,
            "suites": {
                suite.name: [{k: v for k, v in r.items() if k != "layers"} for r in records]
                for suite, records in suites
            },
            "overhead": overhead,
        },
    )
