"""``adasparse bench``: every pruning method on the embedded data sets, several targets and seeds, one command.

Runs :func:`adasparse.train.run_training` for each (suite variant, data set, target, seed) of a suite
(:mod:`.bench_suites`) into ``OUT/runs/...`` (a finished run is skipped, so an interrupted sweep resumes), collects
the summaries, measures the training-step time of each method over dense side by side, and leaves the results page
to :mod:`.bench_results` (``OUT/results.md``; the project's ``docs/results.md`` only with ``--docs docs``).

Runs are spread over worker processes with one thread each (``--jobs``, default: the CPU count).
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..control.config import acting_settings
from .bench_results import write_results
from .bench_suites import (  # defined in this module before: importable from it still
    ABLATION,
    BASELINES,
    DEFAULT,
    DENSE,
    EMBEDDED,
    FINETUNE_EPOCHS,
    ORIGINAL,
    PRETRAIN_EPOCHS,
    PRETRAINED,
    SUITES,
    THRESHOLD_LR,
    THRESHOLD_LR_SCALES,
    THRESHOLD_LRS,
    THRESHOLDS_IN_OPTIMIZER,
    ZOO,
    Suite,
    Variant,
)

__all__ = [
    "Variant",
    "Suite",
    "SUITES",
    "Job",
    "jobs",
    "phases",
    "run_suite",
    "write_results",
    "measure_overhead",
    "Schedule",
    "ABLATION",
    "BASELINES",
    "DEFAULT",
    "DENSE",
    "EMBEDDED",
    "FINETUNE_EPOCHS",
    "ORIGINAL",
    "PRETRAIN_EPOCHS",
    "PRETRAINED",
    "THRESHOLD_LR",
    "THRESHOLD_LR_SCALES",
    "THRESHOLD_LRS",
    "THRESHOLDS_IN_OPTIMIZER",
    "ZOO",
]


@dataclass(frozen=True)
class Job:
    """One run of a suite: a variant on one data set and model, at one target and seed."""

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
            targets = suite.targets[:1] if variant.dense else suite.targets
            for target in targets:
                for seed in suite.seeds:
                    init_from = None
                    if parent is not None:
                        init_from = _key(parent, dataset, model, suite.targets[0] if parent.dense else target, seed)
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
    "projection_slope",
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
    "pruned_gradient_bound",
    "pruned_gradient_bound_layers",
)


def _newer_than_start(summary_path: Path, config: Any) -> bool:
    """Whether a finished run is newer than the weights it started from (a pre-training run redone since, e.g.
    after a change of defaults, makes the runs started from it stale)."""
    if config.init_from is None:
        return True
    start = Path(config.init_from) / "model_sparse.pt"
    return start.exists() and summary_path.stat().st_mtime >= start.stat().st_mtime


def _relevant(config: dict[str, Any]) -> dict[str, Any]:
    """The settings that can change a run: a baseline or dense run ignores our loss's options, a run without the
    pruned-gradient bound the layers it would act on."""
    if config["method"] == "adasparse" and config["sparsity"] != "none":
        return acting_settings(config)
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


class Schedule:
    """Several methods set up to run a whole training's schedule on one batch, one step at a time: ``steps``
    optimizer steps, by default the data set's recipe (its epochs of batches), so that each phase (our ramp,
    measurements and fine-tuning; GMP's pruning events) weighs what it weighs in a training.

    Args:
        dataset: the data set (its first batch is the one every step trains on).
        model: the model name.
        methods: label → ``adasparse train`` method of each variant (a label may differ from its method).
        steps: the schedule's length (default: the recipe's).
    """

    def __init__(self, dataset: str, model: str, methods: Mapping[str, str], steps: int | None = None) -> None:
        from .data import load_dataset
        from .methods import create_method
        from .models import create_model
        from .train import RECIPES, TrainConfig

        data = load_dataset(dataset, seed=0)
        recipe = RECIPES[dataset]
        self.x = data.train_transform(data.x_train[: recipe.batch_size], None)
        self.y = data.y_train[: recipe.batch_size]
        self.total_steps = steps or recipe.epochs * math.ceil(len(data.x_train) / recipe.batch_size)
        self._setups: dict[str, tuple[Any, Any, torch.optim.Optimizer]] = {}
        for label, name in methods.items():
            torch.manual_seed(0)
            config = TrainConfig(dataset=dataset, model=model, method=name, epochs=recipe.epochs).resolved()
            net = create_model(model, num_classes=data.num_classes, input_shape=data.input_shape)
            method = create_method(name, net, config, self.x[:1], total_steps=self.total_steps)
            optimizer = torch.optim.SGD(method.param_groups(recipe.lr, 5e-4), lr=recipe.lr, momentum=0.9)
            self._setups[label] = (net, method, optimizer)

    def step(self, label: str, index: int) -> float:
        """Seconds of step ``index`` (0-based) of one variant: forward, the method's loss, backward, the optimizer
        and the method's end of step."""
        import torch.nn.functional as F

        net, method, optimizer = self._setups[label]
        start = time.perf_counter()
        loss = F.cross_entropy(net(self.x), self.y)
        extra = method.loss()
        if extra is not None:
            loss = loss + extra
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        method.end_step(index + 1, self.total_steps)
        return time.perf_counter() - start


def measure_overhead(
    dataset: str = "mnist1d", model: str = "cnn1d", steps: int | None = None, methods: Iterable[str] | None = None
) -> dict[str, float]:
    """Mean train-step time of each method over dense on one model, one thread.

    Every method runs a whole training's :class:`Schedule` on one batch. The methods' steps are interleaved in one
    process, so the machine's noise hits them alike; the mean of all steps counts the rare costly ones (a
    calibration, a pruning event) as a training does."""
    from .methods import METHODS

    names = list(methods or METHODS)
    schedule = Schedule(dataset, model, {name: name for name in names}, steps)
    times: dict[str, float] = dict.fromkeys(names, 0.0)
    for index in range(schedule.total_steps):
        for name in names:
            times[name] += schedule.step(name, index)
    return {name: elapsed / times["dense"] for name, elapsed in times.items()}
