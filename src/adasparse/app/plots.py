"""Plots of a run (matplotlib is an optional extra: without it the functions return False and draw nothing)."""

from __future__ import annotations

import io
import math
from pathlib import Path

from ..core._io import atomic_write_bytes
from ..core.report import SparsityReport

__all__ = ["plot_curves", "plot_layer_sparsity"]


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _save(plt, figure, path: str | Path) -> bool:
    """Write ``figure`` to ``path`` as a PNG and close it; True (drawn)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(Path(path), buffer.getvalue())
    plt.close(figure)
    return True


def _label_layers(axis, names: list[str], *, rotation: int, ylabel: str, title: str, legend_size: int) -> None:
    """Layer names under the bars, a 0-1 value axis, the title and the legend."""
    axis.set_xticks(range(len(names)))
    axis.set_xticklabels(names, rotation=rotation, ha="right", fontsize=8)
    axis.set_ylim(0, 1)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.legend(fontsize=legend_size)


def plot_layer_sparsity(report: SparsityReport, path: str | Path, title: str = "Sparsity per layer") -> bool:
    """Bar chart of each layer's actual sparsity (and analytic estimate when known). Returns False without
    matplotlib."""
    plt = _pyplot()
    if plt is None:
        return False
    names = [layer.name for layer in report.layers]
    positions = list(range(len(names)))
    figure, axis = plt.subplots(figsize=(max(6.0, 0.45 * len(names) + 2.0), 4.0))
    width = 0.4 if report.sparsified else 0.8
    axis.bar(
        [p - width / 2 if report.sparsified else p for p in positions],
        [layer.actual for layer in report.layers],
        width,
        label="actual",
    )
    if report.sparsified:
        axis.bar(
            [p + width / 2 for p in positions],
            [layer.analytic or 0.0 for layer in report.layers],
            width,
            label="analytic (Gaussian)",
        )
    axis.axhline(report.overall, color="black", linestyle="--", linewidth=1, label=f"overall {report.overall:.3f}")
    _label_layers(axis, names, rotation=60, ylabel="fraction of zero weights", title=title, legend_size=8)
    return _save(plt, figure, path)


def plot_curves(metrics: list[dict[str, float]], path: str | Path) -> bool:
    """Test accuracy and sparsity against epoch. Returns False without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return False
    epochs = [row["epoch"] for row in metrics]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.plot(epochs, [row["test_accuracy"] for row in metrics], label="test")
    left.plot(epochs, [row["train_accuracy"] for row in metrics], label="train", alpha=0.7)
    left.set_xlabel("epoch")
    left.set_ylabel("accuracy")
    left.legend()
    right.plot(epochs, [row["actual_sparsity"] for row in metrics], label="actual")
    analytic = [row.get("analytic_sparsity", math.nan) for row in metrics]
    if not all(math.isnan(value) for value in analytic):
        right.plot(epochs, analytic, label="analytic", linestyle="--")
    right.set_xlabel("epoch")
    right.set_ylabel("overall sparsity")
    right.set_ylim(0, 1)
    right.legend()
    return _save(plt, figure, path)


def plot_accuracy_vs_sparsity(records: list, suite, dataset: str, model: str, path: str | Path) -> bool:
    """Mean test accuracy (error bars: std over seeds) against target sparsity, one line per method."""
    plt = _pyplot()
    if plt is None:
        return False
    import statistics

    figure, axis = plt.subplots(figsize=(7.0, 4.2))
    for variant in suite.variants:
        dense = variant.dense
        means, stds = [], []
        for target in suite.targets:
            values = [
                r["summary"]["test_accuracy"]
                for r in records
                if (r["dataset"], r["model"], r["variant"]) == (dataset, model, variant.label)
                and (dense or r["target"] == target)
            ]
            means.append(statistics.mean(values) if values else math.nan)
            stds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
        style = {"linestyle": "--", "color": "black"} if dense else {"marker": "o"}
        axis.errorbar(list(suite.targets), means, yerr=stds, label=variant.label, capsize=3, **style)
    axis.set_xlabel("target sparsity")
    axis.set_ylabel("test accuracy")
    axis.set_title(f"{dataset} / {model}")
    axis.legend(fontsize=7)
    return _save(plt, figure, path)


def plot_allocation(allocation: dict[str, list[tuple]], path: str | Path, title: str) -> bool:
    """Grouped bars: each method's sparsity per layer."""
    plt = _pyplot()
    if plt is None:
        return False
    variants = list(allocation)
    names = [name for name, _, _ in allocation[variants[0]]]
    width = 0.8 / max(len(variants), 1)
    figure, axis = plt.subplots(figsize=(max(6.0, 0.9 * len(names) + 3.0), 4.0))
    for index, variant in enumerate(variants):
        values = [actual for _, _, actual in allocation[variant]]
        axis.bar(
            [p + (index - len(variants) / 2 + 0.5) * width for p in range(len(values))], values, width, label=variant
        )
    _label_layers(axis, names, rotation=45, ylabel="sparsity", title=title, legend_size=7)
    return _save(plt, figure, path)


def plot_gaussian_error(curves: dict[str, list[tuple[int, float]]], path: str | Path) -> bool:
    """The worst layer's |measured - Gaussian| sparsity against epoch, one line per run."""
    plt = _pyplot()
    if plt is None:
        return False
    figure, axis = plt.subplots(figsize=(7.0, 4.0))
    for label, points in curves.items():
        axis.plot([epoch for epoch, _ in points], [error for _, error in points], label=label, linewidth=1)
    axis.set_xlabel("epoch")
    axis.set_ylabel("max over layers of |actual - analytic|")
    axis.legend(fontsize=6)
    return _save(plt, figure, path)
