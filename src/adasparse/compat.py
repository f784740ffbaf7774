"""The original code's function names and signatures (``sparse_utils.py``), on top of the new library.

Semantics are the original ones with its defects fixed: layers are selected by kind (subclasses included) and
counted with ``weight.numel()`` (grouped convolutions right), nothing is mutated in place during forward, and
the sparsity of a frozen threshold is ``erf(r / sqrt(2))`` as documented.
"""

from __future__ import annotations

import torch
from torch import nn

from .control.loss import SparsityLoss
from .core.report import sparsity_report
from .core.sparsify import desparsify, sparsify

__all__ = ["adaptive_loss", "iter_desparsify", "iter_sparsify", "sparsity"]


def iter_sparsify(model: nn.Module, thresh: float, trainable: bool = True, pthres: int = 1000) -> nn.Module:
    """Sparsify every prunable layer with at least ``pthres`` weights, starting every threshold at ``thresh``.

    Same as ``adasparse.sparsify(model, init_threshold=thresh, trainable=trainable, min_params=pthres,
    centred=True)``: the original operator, kept weights centred.
    """
    return sparsify(model, init_threshold=thresh, trainable=trainable, min_params=pthres, centred=True)


def iter_desparsify(model: nn.Module) -> nn.Module:
    """Remove the thresholds and bake the zeros into the weights (``adasparse.desparsify``)."""
    return desparsify(model)


def sparsity(model: nn.Module, print_per_layer: bool = False) -> tuple[float, int]:
    """Percentage of zero weights over the pruned layers and their count: ``(percent_zero, zero_count)``.

    With ``print_per_layer`` each layer's percentage is printed, as the original did.
    """
    report = sparsity_report(model)
    if print_per_layer:
        for layer in report.layers:
            print(f"{layer.name}: {100.0 * layer.actual:.2f}% zeros ({layer.zeros}/{layer.numel})")
    return 100.0 * report.overall, report.pruned_zeros


def adaptive_loss(model: nn.Module, reduce: bool = True) -> torch.Tensor:
    """Analytic *density* ``1 - erf(r / sqrt(2))``: the parameter-weighted overall value when ``reduce``,
    otherwise one value per pruned layer (a 1-D tensor). Differentiable in the thresholds.

    The original example drove it with ``lv * (adaptive_loss(model) - (1 - starget)) ** 2``.
    """
    loss = SparsityLoss(model, target=0.0)
    if reduce:
        return 1.0 - loss.overall()
    return 1.0 - loss.layer_sparsities()
