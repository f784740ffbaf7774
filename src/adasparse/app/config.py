"""What determines a run of ``adasparse train``: :class:`TrainConfig`, the per-dataset :data:`RECIPES`, the device.

The pruning fields take their defaults from :class:`adasparse.PrunerConfig`, so the library, the CLI and the
integrations share one set of defaults.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch

from ..control.config import ADDED_SETTINGS, PrunerConfig, default_finetune
from ..control.loss import MODES
from ..core import _checks
from ..core.granularity import parse_granularity
from .data import DATASETS
from .methods import METHODS
from .models import check_model_name, default_model

__all__ = [
    "BUDGETS",
    "CHECKPOINT_FORMAT",
    "FORMAT_VERSION",
    "LEGACY_VALUES",
    "OPTIMIZERS",
    "RECIPES",
    "RECOMPUTE_BATCHNORM",
    "RUN_FORMAT",
    "SPARSITY_CHOICES",
    "THRESHOLD_SCHEDULES",
    "Recipe",
    "TrainConfig",
    "resolve_device",
]

SPARSITY_CHOICES = (*MODES, "none")
THRESHOLD_SCHEDULES = ("cosine", "constant")
BUDGETS = ("params", "flops", "latency")
OPTIMIZERS = ("sgd", "adamw")
RECOMPUTE_BATCHNORM = ("auto", "always", "never")
"""When a finished run's BatchNorm statistics are recomputed on its training inputs: ``auto`` where the stored ones
are stale (:func:`adasparse.app.batchnorm.recompute_stale_batchnorm`), ``always``, or ``never`` (the default: the
recorded results were measured so; stale statistics are then measured and reported, not replaced)."""
RUN_FORMAT = "adasparse.run"
CHECKPOINT_FORMAT = "adasparse.checkpoint"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Recipe:
    """Per-dataset defaults for the options left unset."""

    epochs: int
    lr: float
    batch_size: int
    adamw_lr: float | None = None
    """The learning rate with ``optimizer="adamw"`` (``None``: none measured, ``lr`` must be given)."""


RECIPES: dict[str, Recipe] = {
    # AdamW lr: the best for dense training (30 epochs, seed 0) of 1e-3, 3e-3, 1e-2 on cnn1d, resnet1d and
    # transformer (mnist1d), and of 3e-3, 1e-2 on cnn2d and resnet2d (digits)
    "mnist1d": Recipe(epochs=60, lr=0.05, batch_size=100, adamw_lr=1e-2),
    "digits": Recipe(epochs=30, lr=0.05, batch_size=64, adamw_lr=3e-3),
    "cifar10": Recipe(epochs=60, lr=0.1, batch_size=128),  # the original example's recipe
    "cifar100": Recipe(epochs=60, lr=0.1, batch_size=128),
}


_PRUNER = PrunerConfig()


@dataclass
class TrainConfig:
    """Everything that determines a run. ``None`` fields take the dataset's :data:`RECIPES` default.

    ``method`` is ours (``"adasparse"``) or a baseline (see :mod:`adasparse.methods`); ``sparsity`` is our loss
    mode (see :data:`adasparse.loss.MODES`) or ``"none"`` for dense training; ``target``/``lv``/``pthres`` are the
    original flags (target sparsity, loss weight, minimum layer size). ``dual_step`` is the constraint mode's
    multiplier step, ``correction`` steers on measured zeros, ``ramp`` raises the target along a cubic over that
    fraction of training (0: the full target from the first step), ``task_gradient`` lets the task loss move the
    thresholds, ``threshold_schedule`` anneals the thresholds' learning rate with the weights' (``"cosine"``) or
    keeps it (``"constant"``), ``budget`` counts weights (``"params"``) or multiply-accumulates (``"flops"``), and
    ``finetune`` is the final fraction of training spent fine-tuning with the masks fixed after an exact calibration
    (0: thresholds learn until the end, then calibrate; ``None``: :func:`adasparse.control.config.default_finetune`),
    and ``init_fraction`` starts every threshold at the
    Gaussian threshold of ``init_fraction * target`` when there is no ramp (the original recipe: 0.6).
    ``granularity`` prunes single weights (``"element"``), output channels and attention heads (``"channel"``: the
    target is then the fraction of the model's cost removed once they are, see :func:`adasparse.shrink`) or
    ``"block:RxC"``; ``channel_multiple`` rounds every channel set's kept count to a multiple of it when the zeros
    are fixed (for the L1 channel baselines too). ``threshold_update`` is ``"adam"`` (the pruner moves the
    thresholds, ``threshold_lr`` standard deviations over the whole training at most) or ``"optimizer"`` (an SGD
    group at ``lr * threshold_lr_scale``, the original).
    ``projection_slope`` is how the projection moves the thresholds onto the budget (``"gaussian"``, ``"measured"`` or
    ``"lamp"``).
    The pruning defaults are :class:`adasparse.PrunerConfig`'s.

    ``optimizer`` is ``"sgd"`` (momentum ``momentum``, the paper's recipe) or ``"adamw"`` (default betas; its
    learning rate is the data set's ``Recipe.adamw_lr`` unless ``lr`` is given); both apply ``weight_decay`` to the
    weights and none to the thresholds. ``init_from`` names a finished run directory of the same data set and
    model: this run starts from its ``model_sparse.pt`` instead of a fresh initialisation and trains ``epochs``
    as a fine-tuning run (one cosine decay of the learning rate instead of the recipe's warm restart; the
    one-shot + fine-tuning baseline prunes before the first step). A resumed run continues from its checkpoint and
    does not read ``init_from`` again.
    """

    dataset: str = "mnist1d"
    model: str | None = None
    method: str = "adasparse"
    sparsity: str = _PRUNER.mode
    target: float = 0.9
    lv: float = _PRUNER.weight
    pthres: int = _PRUNER.min_params
    dual_step: float = _PRUNER.dual_step
    correction: bool = _PRUNER.correction
    projection_slope: str = _PRUNER.projection_slope
    ramp: float = _PRUNER.ramp
    task_gradient: bool = _PRUNER.task_gradient
    centred: bool = _PRUNER.centred
    threshold_update: str = _PRUNER.threshold_update
    threshold_lr: float = _PRUNER.threshold_lr
    threshold_schedule: str = "constant"
    budget: str = _PRUNER.budget
    granularity: str = _PRUNER.granularity
    channel_multiple: int = _PRUNER.channel_multiple
    latency_batch: int | None = None
    """With ``granularity="channel"``: time the starting model at this batch size when the run starts
    (:func:`adasparse.measure_latency` on the CPU, counts on a grid of ``channel_multiple``, or 8; saved as
    ``latency-table.json`` in the run and read again on resume) and price the channels in it: ``budget="latency"``
    holds the predicted time, and with ``channel_multiple > 1`` the rounding takes the fastest of the equally close
    choices (for the L1 channel baselines too)."""
    pruned_gradient_bound: float | None = _PRUNER.pruned_gradient_bound
    pruned_gradient_bound_layers: str = _PRUNER.pruned_gradient_bound_layers
    finetune: float | None = _PRUNER.finetune
    init_fraction: float = _PRUNER.init_fraction
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    init_from: str | None = None
    threshold_lr_scale: float = _PRUNER.threshold_lr_scale
    seed: int = 0
    device: str = "auto"
    data_dir: str = "data"
    download: bool = False
    calibrate: bool = _PRUNER.calibrate
    recompute_batchnorm: str = "never"
    """One of :data:`RECOMPUTE_BATCHNORM`; ``True``/``False`` (the option's form before ``auto``) read as
    ``always``/``never``."""
    workers: int = 0
    tensorboard: bool = False

    def pruner_config(self) -> PrunerConfig:
        """The :class:`adasparse.PrunerConfig` of this run (the pruning fields under the original flag names:
        ``sparsity`` is the mode, ``lv`` the weight, ``pthres`` the minimum layer size)."""
        return PrunerConfig(
            mode=self.sparsity,
            weight=self.lv,
            min_params=self.pthres,
            dual_step=self.dual_step,
            correction=self.correction,
            projection_slope=self.projection_slope,
            ramp=self.ramp,
            finetune=self.finetune,
            calibrate=self.calibrate,
            threshold_update=self.threshold_update,
            threshold_lr=self.threshold_lr,
            threshold_lr_scale=self.threshold_lr_scale,
            task_gradient=self.task_gradient,
            centred=self.centred,
            pruned_gradient_bound=self.pruned_gradient_bound,
            pruned_gradient_bound_layers=self.pruned_gradient_bound_layers,
            init_fraction=self.init_fraction,
            budget=self.budget,
            granularity=self.granularity,
            channel_multiple=self.channel_multiple,
        )

    def resolved(self) -> TrainConfig:
        """A copy with every default filled in and every value checked (``ValueError`` naming the option)."""
        _checks.check_choice(self.dataset, "dataset", DATASETS)
        _checks.check_choice(self.method, "method", METHODS)
        _checks.check_choice(self.sparsity, "sparsity", SPARSITY_CHOICES)
        _checks.check_choice(self.threshold_schedule, "threshold_schedule", THRESHOLD_SCHEDULES)
        _checks.check_choice(self.budget, "budget", BUDGETS)
        parse_granularity(self.granularity)
        _checks.check_choice(self.optimizer, "optimizer", OPTIMIZERS)
        recompute = self.recompute_batchnorm
        if isinstance(recompute, bool):
            recompute = "always" if recompute else "never"
        _checks.check_choice(recompute, "recompute_batchnorm", RECOMPUTE_BATCHNORM)
        if self.init_from is not None and (not isinstance(self.init_from, str) or not self.init_from):
            raise ValueError(f"init_from must be a run directory, got {self.init_from!r}")
        recipe = RECIPES[self.dataset]
        lr = self.lr
        if lr is None:
            lr = recipe.adamw_lr if self.optimizer == "adamw" else recipe.lr
            if lr is None:
                raise ValueError(f"optimizer adamw has no default lr for {self.dataset}: give lr (--lr) explicitly")
        _checks.check_int(self.channel_multiple, "channel_multiple", 1)  # it decides the default finetune
        if self.latency_batch is not None:
            _checks.check_int(self.latency_batch, "latency_batch", 1)
            if parse_granularity(self.granularity).kind != "channel":
                raise ValueError(
                    f"latency_batch prices channels: it needs granularity channel, got {self.granularity!r}"
                )
        if self.budget == "latency" and self.latency_batch is None:
            raise ValueError(
                "budget latency needs latency_batch (--latency-batch N): the batch size to time the model at"
            )
        config = replace(
            self,
            model=self.model or default_model(self.dataset),
            finetune=default_finetune(self.channel_multiple) if self.finetune is None else self.finetune,
            epochs=recipe.epochs if self.epochs is None else self.epochs,
            lr=lr,
            batch_size=recipe.batch_size if self.batch_size is None else self.batch_size,
            recompute_batchnorm=recompute,
        )
        check_model_name(config.model)  # type: ignore[arg-type]
        _checks.check_fraction(config.target, "target")
        _checks.check_nonnegative(config.lv, "lv")
        _checks.check_int(config.pthres, "pthres", 0)
        _checks.check_positive(config.dual_step, "dual_step")
        if not 0.0 <= _checks.check_nonnegative(config.init_fraction, "init_fraction") <= 1.0:
            raise ValueError(f"init_fraction must be in [0, 1], got {config.init_fraction!r}")
        for name in ("ramp", "finetune"):
            value = getattr(config, name)
            if not 0.0 <= _checks.check_nonnegative(value, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        _checks.check_int(config.epochs, "epochs", 1)
        _checks.check_positive(config.lr, "lr")
        _checks.check_int(config.batch_size, "batch_size", 1)
        _checks.check_nonnegative(config.momentum, "momentum")
        _checks.check_nonnegative(config.weight_decay, "weight_decay")
        _checks.check_nonnegative(config.threshold_lr_scale, "threshold_lr_scale")
        _checks.check_int(config.seed, "seed", 0)
        _checks.check_int(config.workers, "workers", 0)
        resolve_device(config.device)
        if config.method == "adasparse" and config.sparsity != "none":
            config.pruner_config().validated()  # the options only the pruner knows (same names)
        return config

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown configuration keys: {', '.join(unknown)}")
        return cls(**{**LEGACY_VALUES, **data})


LEGACY_VALUES: dict[str, Any] = dict(ADDED_SETTINGS)
"""Fields whose default changed, or that came later, with the value a saved configuration without them ran with: the
Pruner's (:data:`~adasparse.control.config.ADDED_SETTINGS`, under the same names here), so a saved run resumes as it
ran."""


def resolve_device(name: str) -> torch.device:
    """``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; an unavailable GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    elif device.type != "cpu":
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return device
