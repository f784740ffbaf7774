"""The settings of the pruning life cycle: :class:`PrunerConfig` (every default of the library, the CLI and the
integrations, stated once), :func:`configured`, which applies and checks keyword options, and
:func:`check_same_settings` for a resumed state."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cached_property
from typing import Any

from ..core._checks import check_choice, check_int, check_nonnegative, check_positive
from ..core.granularity import parse_granularity
from .loss import DEFAULT_CORRECTION_INTERVAL, DEFAULT_DUAL_STEP, MODES
from .projection import PROJECTION_SLOPES, check_slope_needs_correction

__all__ = [
    "ADDED_SETTINGS",
    "BOUNDED_LAYERS",
    "BUDGETS",
    "DEFAULT_FINETUNE",
    "ROUNDED_FINETUNE",
    "THRESHOLD_UPDATES",
    "PrunerConfig",
    "acting_settings",
    "check_same_settings",
    "configured",
    "default_finetune",
]

THRESHOLD_UPDATES = ("adam", "optimizer")
BOUNDED_LAYERS = ("normalized", "all")
BUDGETS = ("params", "flops", "latency")

DEFAULT_FINETUNE = 0.2
"""The final fraction of the steps trained with the zeros fixed, when ``finetune`` is not given."""

ROUNDED_FINETUNE = 0.5
"""The same when ``channel_multiple > 1``: fixing the zeros then also rounds every channel set's kept count, a change
of the model's structure (channels brought back from their state when pruned, learned ones removed) that needs
more steps to recover from. Measured on seven models with channel counts rounded to 8: against no rounding, 0.2 lost
1.8-2.3 points on a MobileNet, 0.5 at most 0.5, within a seed's spread on all seven (docs/structured.md)."""


def default_finetune(channel_multiple: int) -> float:
    """The ``finetune`` used when none is given: :data:`ROUNDED_FINETUNE` when channel counts are rounded
    (``channel_multiple > 1``), else :data:`DEFAULT_FINETUNE`."""
    return ROUNDED_FINETUNE if channel_multiple > 1 else DEFAULT_FINETUNE


def _option(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class PrunerConfig:
    """Every setting of the pruning life cycle, with the library's defaults (the CLI, ``TrainConfig`` and the
    integrations take theirs from here). Field metadata ``"help"`` is the option's one-line description."""

    mode: str = _option(
        "projection",
        "how the budget is enforced: projection (held exactly after every step), constraint (augmented "
        "Lagrangian), or the paper's penalties adaptive, fixed, upper",
    )
    weight: float = _option(10.0, "loss weight lv of the penalty modes (>= 0)")
    correction: bool = _option(True, "steer on the measured zero fractions instead of the Gaussian estimate")
    projection_slope: str = _option(
        "lamp",
        "how the projection moves the thresholds onto the budget: gaussian (along erf's slope ds/dr at each "
        "threshold), measured (along the layer's measured zero fraction's: a layer whose weights turned "
        "heavy-tailed and has almost none left near its threshold is no longer pushed further) or lamp (every "
        "layer at one level of the layer-adaptive magnitude score, LAMP: the allocation is the weights' own); "
        "measured and lamp need correction",
    )
    correction_interval: int = _option(
        DEFAULT_CORRECTION_INTERVAL, "optimizer steps between two measurements of the weight distributions (>= 1)"
    )
    ramp: float = _option(
        0.3, "raise the target along a cubic over this fraction of the steps (0: full target at once)"
    )
    finetune: float | None = _option(
        None,
        "final fraction of the steps trained with the zeros fixed after an exact calibration (0: none; default "
        "0.2, or 0.5 when channel_multiple > 1 rounds the channel counts at that point)",
    )
    calibrate: bool = _option(True, "calibrate the thresholds to exactly the target before fixing the zeros")
    threshold_update: str = _option(
        "adam",
        "adam: the pruner moves each threshold by its own scale-free step after every optimizer step; "
        "optimizer: the thresholds are an optimizer group at lr * threshold_lr_scale (the paper's recipe)",
    )
    threshold_lr: float = _option(
        2.0,
        "with threshold_update=adam: how far (in standard deviations) a threshold can move over the whole "
        "training; each step moves it by at most about threshold_lr / total_steps",
    )
    threshold_lr_scale: float = _option(
        0.01, "with threshold_update=optimizer: the thresholds' learning rate over the weights' (>= 0)"
    )
    task_gradient: bool = _option(
        True,
        "let the task loss move the thresholds through the weights they prune (projection_slope lamp sets them "
        "from the weights alone and takes none)",
    )
    centred: bool = _option(
        False,
        "kept weights hold w - mean(w) as in the paper's hardshrink(w - mean(w), b) (True), or keep their own "
        "values (False: a pretrained layer is unchanged where nothing is pruned)",
    )
    dual_step: float = _option(DEFAULT_DUAL_STEP, "dual-ascent step of the constraint mode (> 0)")
    init_fraction: float = _option(
        0.6, "without a ramp: thresholds start at the Gaussian threshold of init_fraction * target (the paper: 0.6)"
    )
    budget: str = _option(
        "params",
        "params: the target counts weights; flops: multiply-accumulates per example; latency (granularity channel, "
        "from Python: Pruner(..., latency=adasparse.measure_latency(model, batch))): the forward time it predicts",
    )
    min_params: int = _option(
        1000,
        "tensors with fewer elements stay dense (the paper's pthres); a channel set counts the weights its "
        "channels reach, its readers' columns included",
    )
    granularity: str = _option(
        "element",
        "what one threshold zeroes at once: element (single weights), channel (output channels and attention "
        "heads, tied layers together; the budget is then the model's cost once they are removed, and "
        "adasparse.shrink removes them), or block:RxC",
    )
    pruned_gradient_bound: float | None = _option(
        3.0,
        "clamp the straight-through gradient of every pruned weight to this many times the root mean square of "
        "its layer's kept weights' gradients, on the layers pruned_gradient_bound_layers names (None: no bound; "
        "docs/method.md); single weights only, layers pruned by blocks or channels take none",
    )
    pruned_gradient_bound_layers: str = _option(
        "normalized",
        "where pruned_gradient_bound acts: normalized (the layers whose output a BatchNorm, InstanceNorm or "
        "GroupNorm reads, directly or through activation modules, found on the first forward pass: there an "
        "emptied channel's pruned weights get gradients hundreds of times the live ones') or all",
    )
    channel_multiple: int = _option(
        1,
        "granularity channel: when the zeros are fixed, every channel set keeps a multiple of this many channels "
        "(8 or 16 fill the vector units of CPU and GPU kernels; heads are left as they are), the budget then met "
        "to within that many channels",
    )

    @cached_property
    def allocates_by_level(self) -> bool:
        """Whether the projection sets every threshold from the weights alone (``projection_slope="lamp"``, by
        elements or blocks): the thresholds then take no step of their own and need no task gradient (read at
        every ``Pruner.step()``: computed once, the config being frozen)."""
        return (
            self.mode == "projection"
            and self.projection_slope == "lamp"
            and parse_granularity(self.granularity).kind != "channel"
        )

    def validated(self) -> PrunerConfig:
        """Check every value (``ValueError``/``TypeError`` naming the option); returns the config with
        ``finetune`` filled in (:func:`default_finetune` when it is ``None``)."""
        if self.finetune is None:
            check_int(self.channel_multiple, "channel_multiple", 1)
            return replace(self, finetune=default_finetune(self.channel_multiple)).validated()
        check_choice(self.mode, "mode", MODES)
        check_choice(self.threshold_update, "threshold_update", THRESHOLD_UPDATES)
        check_choice(self.budget, "budget", BUDGETS)
        check_choice(self.projection_slope, "projection_slope", PROJECTION_SLOPES)
        check_slope_needs_correction(self.projection_slope, self.correction, self.mode)
        check_nonnegative(self.weight, "weight")
        check_int(self.correction_interval, "correction_interval", 1)
        check_int(self.min_params, "min_params", 0)
        check_int(self.channel_multiple, "channel_multiple", 1)
        if self.channel_multiple > 1 and parse_granularity(self.granularity).kind != "channel":
            raise ValueError(
                f"channel_multiple={self.channel_multiple} rounds channel counts: it needs granularity='channel', "
                f"got granularity={self.granularity!r}"
            )
        if self.budget == "latency" and parse_granularity(self.granularity).kind != "channel":
            raise ValueError(
                f"budget='latency' prices channels in time: it needs granularity='channel', "
                f"got granularity={self.granularity!r}"
            )
        if parse_granularity(self.granularity).kind == "channel" and self.mode != "projection":
            raise ValueError(
                f"granularity='channel' is held to its budget by mode='projection', got mode={self.mode!r}"
            )
        for name in ("ramp", "finetune"):
            value = getattr(self, name)
            if not 0.0 <= check_nonnegative(value, name) < 1.0:
                raise ValueError(f"{name} must be a fraction of the steps in [0, 1), got {value!r}")
        if self.ramp + self.finetune >= 1.0:
            raise ValueError(
                f"ramp + finetune must be < 1 (the target must be reached before the zeros are fixed), "
                f"got ramp={self.ramp!r}, finetune={self.finetune!r}"
            )
        check_nonnegative(self.threshold_lr, "threshold_lr")
        check_nonnegative(self.threshold_lr_scale, "threshold_lr_scale")
        check_positive(self.dual_step, "dual_step")
        if not 0.0 <= check_nonnegative(self.init_fraction, "init_fraction") <= 1.0:
            raise ValueError(f"init_fraction must be in [0, 1], got {self.init_fraction!r}")
        check_choice(self.pruned_gradient_bound_layers, "pruned_gradient_bound_layers", BOUNDED_LAYERS)
        if self.pruned_gradient_bound is not None:
            check_positive(self.pruned_gradient_bound, "pruned_gradient_bound")
        for name in ("correction", "calibrate", "task_gradient", "centred"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def configured(config: PrunerConfig | None, options: dict[str, Any], unknown: str) -> PrunerConfig:
    """``config`` (default :class:`PrunerConfig`) with the keyword ``options`` applied and every value checked,
    before any model is touched: ``TypeError`` starting with ``unknown`` for an option that is no field,
    ``ValueError``/``TypeError`` naming a bad value."""
    if config is None:
        config = PrunerConfig()
    elif not isinstance(config, PrunerConfig):
        raise TypeError(f"config must be a PrunerConfig, got {type(config).__name__}")
    known = {f.name for f in fields(PrunerConfig)}
    names = sorted(set(options) - known)
    if names:
        raise TypeError(f"{unknown}(s): {', '.join(names)} (PrunerConfig has: {', '.join(sorted(known))})")
    return replace(config, **options).validated()


ADDED_SETTINGS: dict[str, Any] = {"pruned_gradient_bound": None, "pruned_gradient_bound_layers": "all"}
"""Settings added after Pruner states were first written, with the value those states were made with (the bound
was off by default, and acted on every layer, until ``pruned_gradient_bound_layers`` came)."""


def acting_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """A config's settings (a :class:`PrunerConfig` or ``TrainConfig`` as a dict) without those that cannot act:
    where the pruned-gradient bound acts, when there is no bound. Two runs whose acting settings agree are the same
    run."""
    values = dict(config)
    if values.get("pruned_gradient_bound") is None:
        values.pop("pruned_gradient_bound_layers", None)
    return values


def check_same_settings(state: Mapping[str, Any], config: PrunerConfig, target: float, total_steps: int) -> None:
    """``ValueError`` unless the saved Pruner ``state`` was written with these settings (config, target, steps)."""
    saved = dict(state)
    if isinstance(saved.get("config"), Mapping):  # a state written before a setting existed had its default
        saved["config"] = acting_settings({**ADDED_SETTINGS, **saved["config"]})
    current = (("config", acting_settings(config.to_dict())), ("target", target), ("total_steps", total_steps))
    differing = [key for key, value in current if saved.get(key) != value]
    if differing:
        raise ValueError(
            f"the Pruner state was written with other settings ({', '.join(differing)} differ): "
            "build the Pruner with the settings of the run you resume"
        )
