"""Per-layer and overall sparsity of a model: actual zero counts next to the analytic (Gaussian) estimate."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .channel_cost import shared_cost
from .latency_cost import LatencyCost
from .operator import analytic_sparsity_value
from .parametrization import PrunedTensor, pruned_tensors
from .selection import select_layers
from .state_keys import (
    CENTRED_SUFFIX,
    LAYOUT_SUFFIX,
    MASK_SUFFIX,
    ORIG_SUFFIX,
    THRESHOLD_SUFFIX,
    effective_from_state,
)

__all__ = [
    "LayerSparsity",
    "SparsityReport",
    "check_state_dict",
    "sparsity_report",
    "state_dict_report",
]


@dataclass(frozen=True)
class LayerSparsity:
    """Sparsity of one pruned tensor.

    ``threshold`` is ``r`` (in standard deviations) and ``analytic`` is ``erf(clamp(r,0,5)/sqrt(2))``; both are
    ``None`` for a plain (desparsified) model, where only the actual zeros are known.
    """

    name: str
    module_type: str
    shape: tuple[int, ...]
    numel: int
    zeros: int
    threshold: float | None
    analytic: float | None

    @property
    def actual(self) -> float:
        """Fraction of exact zeros in the effective weight."""
        return self.zeros / self.numel if self.numel else 0.0


@dataclass(frozen=True)
class SparsityReport:
    """Sparsity of every pruned tensor and of the model.

    Attributes:
        layers: one :class:`LayerSparsity` per pruned tensor, in module order.
        total_params: every parameter element of the model (thresholds excluded; raw weights counted once).
        total_zeros: exact zeros among them (effective weights for pruned tensors).
    """

    layers: tuple[LayerSparsity, ...]
    total_params: int
    total_zeros: int
    sparsified: bool = field(default=True)
    shrunk: dict[str, float] | None = None
    """For a model pruned by channels: the fraction of its weights (``"params"``) and of its multiply-accumulates
    (``"flops"``) that removing the pruned channels takes off (:mod:`~adasparse.core.channel_cost`)."""

    @property
    def pruned_params(self) -> int:
        return sum(layer.numel for layer in self.layers)

    @property
    def pruned_zeros(self) -> int:
        return sum(layer.zeros for layer in self.layers)

    @property
    def overall(self) -> float:
        """Actual sparsity over the pruned tensors (what the target refers to)."""
        return self.pruned_zeros / self.pruned_params if self.pruned_params else 0.0

    @property
    def overall_all_params(self) -> float:
        """Actual sparsity over every parameter of the model (biases, norms and small layers included)."""
        return self.total_zeros / self.total_params if self.total_params else 0.0

    @property
    def analytic(self) -> float | None:
        """Parameter-weighted overall analytic sparsity, ``None`` for a plain model or one pruned by groups."""
        if not self.sparsified or not self.pruned_params or any(layer.analytic is None for layer in self.layers):
            return None
        return sum(layer.numel * (layer.analytic or 0.0) for layer in self.layers) / self.pruned_params

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary (plain ints, floats, strings and lists)."""
        return {
            "sparsified": self.sparsified,
            "overall": self.overall,
            "overall_all_params": self.overall_all_params,
            "analytic": self.analytic,
            "pruned_params": self.pruned_params,
            "pruned_zeros": self.pruned_zeros,
            "total_params": self.total_params,
            "total_zeros": self.total_zeros,
            "layers": [dict(asdict(layer), shape=list(layer.shape), actual=layer.actual) for layer in self.layers],
            "shrunk": dict(self.shrunk) if self.shrunk is not None else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SparsityReport:
        """Rebuild a report from :meth:`to_dict`."""
        layers = tuple(
            LayerSparsity(
                layer["name"],
                layer["module_type"],
                tuple(layer["shape"]),
                int(layer["numel"]),
                int(layer["zeros"]),
                layer["threshold"],
                layer["analytic"],
            )
            for layer in data["layers"]
        )
        shrunk = data.get("shrunk")
        return cls(
            layers,
            int(data["total_params"]),
            int(data["total_zeros"]),
            sparsified=bool(data["sparsified"]),
            shrunk={key: float(value) for key, value in shrunk.items()} if shrunk else None,
        )

    def _rows(self) -> list[list[str]]:
        rows = []
        for layer in self.layers:
            rows.append(
                [
                    layer.name,
                    layer.module_type,
                    "×".join(str(d) for d in layer.shape),
                    f"{layer.numel:,}",
                    f"{layer.actual:.4f}",
                    _fmt(layer.analytic),
                    _fmt(layer.threshold, ".3f"),
                ]
            )
        rows.append(
            [
                "overall (pruned layers)",
                "",
                "",
                f"{self.pruned_params:,}",
                f"{self.overall:.4f}",
                _fmt(self.analytic),
                "",
            ]
        )
        rows.append(
            ["overall (all parameters)", "", "", f"{self.total_params:,}", f"{self.overall_all_params:.4f}", "", ""]
        )
        if self.shrunk is not None:
            labels = (("params", "weights"), ("flops", "multiply-accumulates"), ("latency", "predicted time"))
            for key, label in labels:
                if key in self.shrunk:
                    rows.append([f"removed once shrunk ({label})", "", "", "", f"{self.shrunk[key]:.4f}", "", ""])
        return rows

    _HEADER = ("layer", "type", "shape", "params", "actual", "analytic", "r")

    def to_markdown(self) -> str:
        """A GitHub-flavoured markdown table."""
        lines = ["| " + " | ".join(self._HEADER) + " |", "|" + "---|" * len(self._HEADER)]
        for row in self._rows():
            lines.append("| " + " | ".join(row) + " |")
        return "\n".join(lines)

    def __str__(self) -> str:
        rows = [list(self._HEADER), *self._rows()]
        widths = [max(len(row[i]) for row in rows) for i in range(len(self._HEADER))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * width for width in widths))
        return "\n".join(lines)


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "–" if value is None else format(value, spec)


def _count_zeros(tensor: torch.Tensor) -> int:
    return int(tensor.numel() - torch.count_nonzero(tensor))


def _check_finite(name: str, tensor: torch.Tensor) -> None:
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} has non-finite values (NaN or inf); training diverged")


def check_state_dict(state_dict: Mapping[Any, Any]) -> dict[str, torch.Tensor]:
    """``state_dict`` with string keys and tensor values checked, sparse-layout tensors made dense.

    Raises:
        TypeError: a key that is not a string or a value that is not a tensor (naming it).
    """
    result: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if not isinstance(key, str):
            raise TypeError(f"state_dict key {key!r} is {type(key).__name__}, not a string")
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"state_dict entry {key!r} holds {type(tensor).__name__}, not a tensor")
        result[key] = tensor.to_dense() if tensor.layout != torch.strided else tensor
    return result


def sparsity_report(model: nn.Module, *, min_params: int = 1000) -> SparsityReport:
    """Measure the sparsity of a model.

    For a sparsified model: every pruned tensor's actual zero fraction (of its effective weight), analytic
    estimate and threshold. For a plain model (e.g. after :func:`adasparse.desparsify`): the actual zeros of the
    layers :func:`adasparse.sparsify` would select with ``min_params``.

    Example::

        >>> report = sparsity_report(model)
        >>> print(report)                      # aligned text table
        >>> report.overall, report.analytic    # floats
        >>> json.dumps(report.to_dict())
    """
    layers: list[LayerSparsity] = []
    counted: dict[int, int] = {}
    with torch.no_grad():
        pruned = pruned_tensors(model)
        if pruned:
            for item in pruned:
                _check_finite(item.name, item.raw)
                effective = item.effective()
                zeros = _count_zeros(effective)
                r = item.threshold.item()
                layers.append(
                    LayerSparsity(
                        item.name,
                        type(item.module).__name__,
                        tuple(effective.shape),
                        effective.numel(),
                        zeros,
                        r,
                        analytic_sparsity_value(r) if item.layout is None else None,  # groups are not Gaussian
                    )
                )
                counted[id(item.raw)] = zeros
                counted[id(item.threshold)] = -1
        else:
            for selection in select_layers(model, min_params=min_params):
                for tensor_name in selection.tensor_names:
                    tensor = selection.module._parameters[tensor_name]
                    name = f"{selection.name}.{tensor_name}" if selection.name else tensor_name
                    zeros = _count_zeros(tensor)
                    shape = tuple(tensor.shape)
                    module_type = type(selection.module).__name__
                    layers.append(LayerSparsity(name, module_type, shape, tensor.numel(), zeros, None, None))
        total_params = total_zeros = 0
        for parameter in model.parameters():
            zeros = counted.get(id(parameter))
            if zeros == -1:
                continue
            total_params += parameter.numel()
            total_zeros += _count_zeros(parameter) if zeros is None else zeros
    return SparsityReport(tuple(layers), total_params, total_zeros, sparsified=bool(pruned), shrunk=_shrunk(pruned))


def _shrunk(pruned: list[PrunedTensor]) -> dict[str, float] | None:
    cost = shared_cost(pruned)
    if cost is None:
        return None
    fractions = cost.fractions()
    shrunk = {"params": cost.sparsity(fractions, "params"), "flops": cost.sparsity(fractions, "flops")}
    if isinstance(cost, LatencyCost):  # priced in time
        shrunk["latency"] = cost.sparsity(fractions, "latency")
    return shrunk


def state_dict_report(state_dict: Mapping[str, torch.Tensor], *, min_params: int = 1000) -> SparsityReport:
    """Like :func:`sparsity_report`, from a ``state_dict`` alone (a checkpoint of a sparsified or plain model).

    Pruned tensors are recognised by their ``<name>_orig`` / ``<name>_threshold`` pairs (learned thresholds) or
    ``<name>_orig`` / ``<name>_mask`` pairs (fixed masks, as ``torch.nn.utils.prune`` stores them); in a plain
    state dict, every floating tensor named ``*weight`` with at least ``min_params`` elements and two or more
    dimensions is reported. Sparse-layout tensors are counted as their dense values.

    Raises:
        TypeError: a key that is not a string or a value that is not a tensor.
        ValueError: a pruned weight that is not floating, or has non-finite values.
    """
    state_dict = check_state_dict(state_dict)
    layers: list[LayerSparsity] = []
    total_params = total_zeros = 0
    used: set[str] = set()
    with torch.no_grad():
        for key, tensor in state_dict.items():
            if not key.endswith(ORIG_SUFFIX):
                continue
            base = key[: -len(ORIG_SUFFIX)]
            threshold = state_dict.get(base + THRESHOLD_SUFFIX)
            mask = state_dict.get(base + MASK_SUFFIX)
            effective = effective_from_state(
                tensor,
                threshold,
                mask,
                state_dict.get(base + CENTRED_SUFFIX),
                name=base,
                layout=state_dict.get(base + LAYOUT_SUFFIX),
            )
            if effective is None:
                continue
            _check_finite(base, tensor)
            r: float | None = None
            analytic: float | None = None
            if isinstance(threshold, torch.Tensor) and threshold.numel() == 1:
                r = threshold.item()
                analytic = analytic_sparsity_value(r)
            companions = [
                k
                for k in (base + THRESHOLD_SUFFIX, base + MASK_SUFFIX, base + CENTRED_SUFFIX, base + LAYOUT_SUFFIX)
                if k in state_dict
            ]
            zeros = _count_zeros(effective)
            layers.append(LayerSparsity(base, "", tuple(tensor.shape), tensor.numel(), zeros, r, analytic))
            used.update((key, *companions))
            total_params += tensor.numel()
            total_zeros += zeros
        sparsified = bool(layers)
        for key, tensor in state_dict.items():
            if key in used or not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
                continue
            if _is_buffer_like(key):
                continue
            zeros = _count_zeros(tensor)
            total_params += tensor.numel()
            total_zeros += zeros
            if not sparsified and key.endswith("weight") and tensor.dim() >= 2 and tensor.numel() >= min_params:
                layers.append(LayerSparsity(key, "", tuple(tensor.shape), tensor.numel(), zeros, None, None))
    return SparsityReport(tuple(layers), total_params, total_zeros, sparsified=sparsified)


_BUFFER_SUFFIXES: Iterable[str] = ("running_mean", "running_var", "num_batches_tracked")


def _is_buffer_like(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in _BUFFER_SUFFIXES
