"""A model's forward time as a function of the channels each channel set keeps, measured in place: a latency
lookup table, as NetAdapt and HALP build one, for a budget priced in time rather than in multiply-accumulates.

:func:`measure_latency` plans the model's channel sets as ``sparsify(granularity="channel")`` does, then

1. finds which sets each module's time can depend on: a module (a leaf, or a whole attention layer) depends on set
   ``k`` when its input or output shape changes with set ``k`` alone narrowed;
2. times shrunk copies of the model (:func:`adasparse.shrink`) at allocations chosen so that every module is timed
   at every combination of its sets' kept counts on a grid (multiples of ``multiple``, and the full count), each
   module timed *in place* by hooks around its forward inside the whole model's pass (CPU kernels pick their
   algorithm by the exact widths, and a layer timed alone mispredicts its time in the model);
3. fits what the hooks do not see (residual additions, activations called as functions, attention's products) as
   a constant plus a term proportional to each set's kept fraction.

:meth:`LatencyTable.seconds` predicts one forward pass at any kept counts: the modules' times interpolated between
grid widths (multilinear, at most two sets per module), plus that remainder. The table belongs to the machine, the
batch size and the thread count it was measured with; measure it where the model will run.
"""

from __future__ import annotations

import bisect
import copy
import itertools
import json
import random
import statistics
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy
import torch
from torch import nn

from ._checks import check_int
from ._io import atomic_write_json
from .allocator import steady_allocator
from .attention_heads import HeadsArgument
from .channel_cost import shared_cost
from .parametrization import pruned_tensors
from .pruned_attention import PrunedMultiheadAttention
from .selection import Selector
from .shrink import _tensors, shrink
from .sparsify import sparsify

__all__ = ["LatencyTable", "TimedModule", "measure_latency"]

_FORMAT = "adasparse-latency-table/1"
_WHOLE_UNITS = (nn.MultiheadAttention, PrunedMultiheadAttention)
"""Modules timed as one unit, their children not separately (their computation is mostly functional)."""


@dataclass(frozen=True)
class TimedModule:
    """One module's measured seconds per forward pass on the grid of kept counts of the sets it depends on.

    ``seconds`` is nested by set: ``seconds[i][j]`` at ``grids[0][i]`` and ``grids[1][j]`` kept channels (one level
    for one set), as measured: it need not grow with the counts (on a CPU an odd multiple of 8 channels can take
    longer than the next multiple of 16)."""

    name: str
    sets: tuple[int, ...]
    grids: tuple[tuple[int, ...], ...]
    seconds: Any

    def value_and_slopes(self, kept: Sequence[float]) -> tuple[float, list[float]]:
        """Seconds at ``kept`` (counts of the model's sets, all of them) and their derivatives along this module's
        sets, by multilinear interpolation (linear extrapolation below the first grid width, floored at zero). Plain
        float arithmetic on the nested lists: the projection evaluates it dozens of times per step."""
        table = self.seconds
        if not self.sets:
            return float(table), []
        if len(self.sets) == 1:
            low, high, weight, width = _cell(self.grids[0], kept[self.sets[0]])
            a, b = table[low], table[high]
            value = a + weight * (b - a)
            return (value, [(b - a) / width if width else 0.0]) if value > 0.0 else (0.0, [0.0])
        l0, h0, w0, d0 = _cell(self.grids[0], kept[self.sets[0]])
        l1, h1, w1, d1 = _cell(self.grids[1], kept[self.sets[1]])
        v00, v10, v01, v11 = table[l0][l1], table[h0][l1], table[l0][h1], table[h0][h1]
        value = (1 - w0) * (1 - w1) * v00 + w0 * (1 - w1) * v10 + (1 - w0) * w1 * v01 + w0 * w1 * v11
        slope0 = ((1 - w1) * (v10 - v00) + w1 * (v11 - v01)) / d0 if d0 else 0.0
        slope1 = ((1 - w0) * (v01 - v00) + w0 * (v11 - v10)) / d1 if d1 else 0.0
        return (value, [slope0, slope1]) if value > 0.0 else (0.0, [0.0, 0.0])


def _cell(grid: Sequence[int], x: float) -> tuple[int, int, float, float]:
    """The grid segment used at ``x``: low and high indices, the weight of the high end, the segment's width."""
    if len(grid) == 1:
        return 0, 0, 0.0, 0.0
    low = min(max(bisect.bisect_right(grid, x) - 1, 0), len(grid) - 2)
    width = float(grid[low + 1] - grid[low])
    return low, low + 1, (x - grid[low]) / width, width


class LatencyTable:
    """Measured seconds per forward pass as a function of each channel set's kept count (see the module docstring).

    Args:
        sets: ``(leading member name, channel count)`` of each channel set, in the cost model's order.
        modules: the timed modules.
        rest: the time outside them: a constant, then one coefficient per set (seconds at all its channels kept,
            in proportion to its kept fraction).
        batch: the batch size it was measured at.
        multiple: the grid step.
        measured: allocations and their measured whole-pass seconds (kept counts, seconds), for checking the fit.
    """

    def __init__(
        self,
        sets: Sequence[tuple[str, int]],
        modules: Sequence[TimedModule],
        rest: Sequence[float],
        batch: int,
        multiple: int,
        measured: Sequence[tuple[Sequence[int], float]] = (),
    ) -> None:
        self.sets = [(str(name), int(size)) for name, size in sets]
        self.modules = list(modules)
        self.rest = [float(value) for value in rest]
        if len(self.rest) != len(self.sets) + 1:
            raise ValueError(
                f"rest has {len(self.rest)} terms, expected {len(self.sets) + 1} (a constant and one per set)"
            )
        self.batch = int(batch)
        self.multiple = int(multiple)
        self.measured = [([int(k) for k in counts], float(seconds)) for counts, seconds in measured]

    @property
    def sizes(self) -> list[int]:
        return [size for _, size in self.sets]

    def seconds(self, kept: Sequence[float]) -> float:
        """Predicted seconds of one forward pass when set ``k`` keeps ``kept[k]`` channels."""
        return self.seconds_and_gradient(kept)[0]

    def seconds_and_gradient(self, kept: Sequence[float]) -> tuple[float, list[float]]:
        """:meth:`seconds` and its derivative with respect to every set's kept count."""
        kept = self._checked(kept)
        total = self.rest[0]
        gradient = [0.0] * len(self.sets)
        for k, (coefficient, size) in enumerate(zip(self.rest[1:], self.sizes)):
            total += coefficient * kept[k] / size
            gradient[k] += coefficient / size
        for module in self.modules:
            value, slopes = module.value_and_slopes(kept)
            total += value
            for index, slope in zip(module.sets, slopes):
                gradient[index] += slope
        return total, gradient

    def dense_seconds(self) -> float:
        """Predicted seconds with every channel kept."""
        return self.seconds(self.sizes)

    def _checked(self, kept: Sequence[float]) -> list[float]:
        values = [float(k) for k in kept]
        if len(values) != len(self.sets):
            raise ValueError(f"kept gives {len(values)} counts, the table has {len(self.sets)} channel sets")
        return values

    def check_sets(self, sets: Sequence[Any]) -> None:
        """Raise ``ValueError`` unless ``sets`` (channel sets, in the cost model's order) are the ones measured."""
        found = [(s.names[0], int(s.channels)) for s in sets]
        if found != self.sets:
            raise ValueError(
                "the latency table was measured for other channel sets "
                f"({_described(self.sets)}) than this model has ({_described(found)}): measure it on this model, "
                "with the same min_params, include, exclude and heads"
            )

    def prediction_errors(self) -> list[float]:
        """Relative error of the prediction on every measured allocation (``predicted / measured - 1``)."""
        return [self.seconds(counts) / seconds - 1.0 for counts, seconds in self.measured if seconds > 0.0]

    # -- serialisation -----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "batch": self.batch,
            "multiple": self.multiple,
            "sets": [{"name": name, "channels": size} for name, size in self.sets],
            "rest": self.rest,
            "modules": [
                {"name": m.name, "sets": list(m.sets), "grids": [list(g) for g in m.grids], "seconds": m.seconds}
                for m in self.modules
            ],
            "measured": [{"kept": counts, "seconds": seconds} for counts, seconds in self.measured],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyTable:
        """The table :meth:`to_dict` gave (``ValueError`` for anything else)."""
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError(f"not a latency table (expected format {_FORMAT!r})")
        try:
            modules = [
                TimedModule(m["name"], tuple(m["sets"]), tuple(tuple(g) for g in m["grids"]), m["seconds"])
                for m in data["modules"]
            ]
            sets = [(s["name"], s["channels"]) for s in data["sets"]]
            measured = [(m["kept"], m["seconds"]) for m in data.get("measured", [])]
            return cls(sets, modules, data["rest"], data["batch"], data["multiple"], measured)
        except (KeyError, TypeError) as error:
            raise ValueError(f"a latency table with a missing or malformed field: {error}") from None

    def save(self, path: str | Path) -> None:
        """Write the table as JSON (atomically)."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        """The table :meth:`save` wrote."""
        with open(path, encoding="utf-8") as handle:
            return cls.from_dict(json.load(handle))

    def __repr__(self) -> str:
        return (
            f"LatencyTable(sets={len(self.sets)}, modules={len(self.modules)}, batch={self.batch}, "
            f"dense={self.dense_seconds() * 1e3:.3g} ms)"
        )


def _described(sets: Sequence[tuple[str, int]]) -> str:
    return ", ".join(f"{name}: {size}" for name, size in sets) or "none"


def _grid(size: int, multiple: int) -> tuple[int, ...]:
    """Kept counts a set is timed at: every count up to ``multiple``-sized sets, else the multiples and the size."""
    if size <= multiple:
        return tuple(range(1, size + 1))
    points = list(range(multiple, size + 1, multiple))
    if points[-1] != size:
        points.append(size)
    return tuple(points)


def _shapes(value: Any) -> tuple:
    """The shapes of the tensors in a module's arguments or output (nested tuples, lists and dicts)."""
    return tuple(tuple(tensor.shape) for tensor in _tensors(value))


def _timing_units(model: nn.Module) -> list[str]:
    """Names of the modules timed one by one: leaves, and attention layers as a whole."""
    names: list[str] = []
    whole: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in whole):
            continue
        if isinstance(module, _WHOLE_UNITS):
            whole.append(name)
            names.append(name)
        elif next(module.children(), None) is None:
            names.append(name)
    return names


class _Planned:
    """A model's channel sets as the Pruner plans them, and shrunk copies of any allocation of their channels."""

    def __init__(self, model: nn.Module, example: Any, sparsify_options: dict[str, Any]) -> None:
        self.planned = copy.deepcopy(model).eval()
        self.trace_input = _first_examples(example, 2)
        self.heads = sparsify_options.get("heads")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # layers left dense are left dense by the Pruner too
            sparsify(
                self.planned,
                init_threshold=0.0,
                trainable=False,
                granularity="channel",
                example_input=self.trace_input,
                **sparsify_options,
            )
        cost = shared_cost(pruned_tensors(self.planned))
        if cost is None:
            raise ValueError("the model has no channel set to prune (nothing for a latency table to measure)")
        self.sets = cost.channel_sets
        self.sizes = [int(s.channels) for s in self.sets]

    def build(self, counts: Sequence[int]) -> nn.Module:
        """The shrunk copy in which set ``k`` keeps its first ``counts[k]`` channels."""
        planned = copy.deepcopy(self.planned)
        for channel_set, count in zip(shared_cost(pruned_tensors(planned)).channel_sets, counts):
            keep = torch.zeros(channel_set.channels, dtype=torch.bool)
            keep[: int(count)] = True
            channel_set.fix(keep)
        return shrink(planned, self.trace_input, heads=self.heads).eval()


def _first_examples(example: Any, count: int) -> Any:
    if isinstance(example, torch.Tensor):
        return example[:count] if example.dim() > 0 and example.shape[0] > count else example
    if isinstance(example, tuple):
        return tuple(_first_examples(item, count) for item in example)
    return example


def _module_shapes(model: nn.Module, inputs: tuple, names: Sequence[str]) -> dict[str, tuple]:
    record: dict[str, tuple] = {}
    handles = []
    for name in names:

        def hook(module: nn.Module, args: tuple, output: Any, name: str = name) -> None:
            record[name] = (_shapes(args), _shapes(output))

        handles.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        with torch.inference_mode():
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return record


def _dependencies(planned: _Planned, inputs: tuple, grids: list[tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """For every timing unit, the sets whose kept count changes its input or output shapes."""
    full = planned.build(planned.sizes)
    names = _timing_units(full)
    reference = _module_shapes(full, inputs, names)
    depends: dict[str, list[int]] = {name: [] for name in names}
    for k, grid in enumerate(grids):
        if grid[0] == planned.sizes[k]:
            continue
        counts = list(planned.sizes)
        counts[k] = grid[0]
        shapes = _module_shapes(planned.build(counts), inputs, names)
        for name in names:
            if shapes.get(name) != reference.get(name):
                depends[name].append(k)
    found = {name: tuple(sets) for name, sets in depends.items() if sets}
    for name, sets in found.items():
        if len(sets) > 2:
            described = ", ".join(planned.sets[k].names[0] for k in sets)
            raise ValueError(
                f"module {name!r} depends on {len(sets)} channel sets ({described}); a latency table times modules "
                "that depend on at most two"
            )
    return found


def _covering_allocations(
    sizes: list[int],
    grids: list[tuple[int, ...]],
    depends: dict[str, tuple[int, ...]],
    seed: int,
    dense_first: bool = True,
) -> list[list[int]]:
    """Allocations (kept counts per set) under which every module meets every combination of its sets' grid counts
    (the dense allocation first if ``dense_first``): greedily, the module with the most combinations left choosing
    first, in an order and with free counts drawn from ``seed``."""
    rng = random.Random(seed)
    needed = {name: set(itertools.product(*(grids[k] for k in sets))) for name, sets in depends.items()}
    allocations: list[list[int]] = []
    counts: list[int | None] = list(sizes) if dense_first else [None] * len(sizes)
    while True:
        chosen = [int(c) if c is not None else rng.choice(grids[k]) for k, c in enumerate(counts)]
        allocations.append(chosen)
        for name, sets in depends.items():
            needed[name].discard(tuple(chosen[k] for k in sets))
        if not any(needed.values()):
            return allocations
        counts = [None] * len(sizes)
        for name in sorted(needed, key=lambda n: (-len(needed[n]), rng.random())):
            sets = depends[name]
            for combination in rng.sample(sorted(needed[name]), len(needed[name])):
                if all(counts[k] is None or counts[k] == value for k, value in zip(sets, combination)):
                    for k, value in zip(sets, combination):
                        counts[k] = value
                    break


class _Clock:
    """Hooks around named modules recording each one's seconds per call."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        self.times: dict[str, list[float]] = {name: [] for name in names}
        self._started: dict[str, float] = {}
        self._handles = []
        for name in names:
            module = model.get_submodule(name)
            self._handles.append(module.register_forward_pre_hook(self._start(name)))
            self._handles.append(module.register_forward_hook(self._stop(name)))

    def _start(self, name: str) -> Any:
        def hook(module: nn.Module, args: tuple) -> None:
            self._started[name] = time.perf_counter()

        return hook

    def _stop(self, name: str) -> Any:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            self.times[name].append(time.perf_counter() - self._started[name])

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def _fit_rest(allocations: list[list[int]], rests: list[float], sizes: list[int]) -> list[float]:
    """``rest ~ c0 + sum_k c_k kept_k / size_k`` by least squares, coefficients kept non-negative."""
    design = numpy.array([[1.0] + [k / n for k, n in zip(counts, sizes)] for counts in allocations])
    target = numpy.array(rests)
    active = list(range(design.shape[1]))
    coefficients = numpy.zeros(design.shape[1])
    for _ in range(design.shape[1]):
        solution, *_ = numpy.linalg.lstsq(design[:, active], target, rcond=None)
        if (solution >= 0.0).all() or len(active) == 1:
            coefficients[:] = 0.0
            coefficients[active] = numpy.maximum(solution, 0.0)
            break
        active = [column for column, value in zip(active, solution) if value > 0.0 or column == 0]
    return [float(value) for value in coefficients]


def measure_latency(
    model: nn.Module,
    example_input: Any,
    *,
    multiple: int = 8,
    rounds: int = 10,
    warmup: int = 2,
    coverings: int = 3,
    fix_allocator: bool = True,
    min_params: int = 1000,
    include: Selector | Sequence[Selector] | None = None,
    exclude: Selector | Sequence[Selector] | None = None,
    heads: HeadsArgument | None = None,
    seed: int = 0,
) -> LatencyTable:
    """Measure ``model``'s forward time as a function of the channels each of its channel sets keeps.

    Args:
        model: a plain model (not modified), on the CPU, in the dtype it will run in.
        example_input: a batch of the size the model will run at (a tensor or a tuple of them): the table holds
            for that batch size, on this machine, with the current ``torch.get_num_threads()``.
        multiple: grid step of the kept counts (sets of at most this many channels, and heads, are timed at every
            count); prune with ``channel_multiple`` equal to it so that the final counts lie on the grid.
        rounds: timed passes per allocation (split over two sweeps, the second in reverse order).
        warmup: untimed passes of each allocation before each sweep's timed ones.
        coverings: how many times every module meets every combination of its sets' counts, each time beside other
            counts of the other sets (a module's time in place depends on its neighbours' widths, through the
            cache); each table entry is the median over them.
        fix_allocator: first fix the C library's allocator in its steady regime, for the rest of the process
            (:func:`~adasparse.core.allocator.steady_allocator`): with glibc's default, activations above its
            dynamic threshold are mapped afresh on every pass, and a table measured so priced mobilenet2d at batch
            256 at three times its time (21.8 ms dense against 7.5 ms), wrongly between layers.
        min_params, include, exclude, heads: as given to the :class:`~adasparse.Pruner` (or
            :func:`adasparse.sparsify`) that will use the table: they decide the channel sets.
        seed: for the counts of sets an allocation leaves free.

    Returns:
        The :class:`LatencyTable`; :meth:`LatencyTable.prediction_errors` tells how well it predicts the
        allocations it timed.

    Raises:
        ValueError: a model without channel sets or not on the CPU, a module depending on more than two sets, or bad
            arguments.
    """
    multiple = check_int(multiple, "multiple", 1)
    rounds = check_int(rounds, "rounds", 2)
    warmup = check_int(warmup, "warmup", 0)
    coverings = check_int(coverings, "coverings", 1)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if pruned_tensors(model):
        raise ValueError("model is sparsified: measure the latency table on the plain model (desparsify it first)")
    devices = {str(t.device) for t in itertools.chain(model.parameters(), model.buffers())} - {"cpu"}
    if devices:
        raise ValueError(
            f"measure_latency times on the CPU (with the host's clock), the model is on {', '.join(sorted(devices))}: "
            "measure a CPU copy"
        )
    if fix_allocator:
        steady_allocator()
    options = {"min_params": min_params, "include": include, "exclude": exclude, "heads": heads}
    planned = _Planned(model, example_input, options)
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    grids = [_grid(size, multiple) for size in planned.sizes]
    depends = _dependencies(planned, inputs, grids)
    allocations = [
        counts
        for repeat in range(coverings)
        for counts in _covering_allocations(planned.sizes, grids, depends, seed + repeat, dense_first=repeat == 0)
    ]
    models = [planned.build(counts) for counts in allocations]
    names = sorted(depends)
    per_module: list[dict[str, list[float]]] = [{name: [] for name in names} for _ in models]
    totals: list[list[float]] = [[] for _ in models]
    first = rounds // 2
    with torch.inference_mode():
        _time_allocations(models, inputs, names, per_module, totals, (first, rounds - first), warmup)
    medians = [{name: statistics.median(times[name]) for name in names} for times in per_module]
    total_medians = [statistics.median(times) for times in totals]
    modules = []
    for name in names:
        sets = depends[name]
        shape = tuple(len(grids[k]) for k in sets)
        samples: dict[tuple[int, ...], list[float]] = {}
        for counts, timing in zip(allocations, medians):
            position = tuple(grids[k].index(counts[k]) for k in sets)
            samples.setdefault(position, []).append(timing[name])
        values = numpy.zeros(shape)
        for position, found in samples.items():
            values[position] = statistics.median(found)
        modules.append(TimedModule(name, sets, tuple(grids[k] for k in sets), values.tolist()))
    rests = [total - sum(timing.values()) for total, timing in zip(total_medians, medians)]
    rest = _fit_rest(allocations, rests, planned.sizes)
    batch = _batch_size(inputs)
    return LatencyTable(
        [(s.names[0], size) for s, size in zip(planned.sets, planned.sizes)],
        modules,
        rest,
        batch,
        multiple,
        list(zip(allocations, total_medians)),
    )


def _time_allocations(
    models: list[nn.Module],
    inputs: tuple,
    names: list[str],
    per_module: list[dict[str, list[float]]],
    totals: list[list[float]],
    passes: tuple[int, int],
    warmup: int,
) -> None:
    """Time every model in two sweeps (the second in reverse order): each pass's total and each named module's."""
    for sweep, order in enumerate((range(len(models)), reversed(range(len(models))))):
        for index in order:
            candidate = models[index]
            for _ in range(warmup):
                candidate(*inputs)
            clock = _Clock(candidate, names)
            for _ in range(passes[sweep]):
                start = time.perf_counter()
                candidate(*inputs)
                totals[index].append(time.perf_counter() - start)
            clock.remove()
            for name in names:
                per_module[index][name].extend(clock.times[name])


def _batch_size(inputs: tuple) -> int:
    for item in inputs:
        if isinstance(item, torch.Tensor) and item.dim() > 0:
            return int(item.shape[0])
    return 1
