"""The suites of ``adasparse bench``: which variants (method and options), data sets and models, targets, seeds and
epochs each one trains (``adasparse bench --suite NAME``); :mod:`.bench` runs them, :mod:`.bench_results` writes
their page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "Variant",
    "Suite",
    "SUITES",
    "DEFAULT",
    "BASELINES",
    "ORIGINAL",
    "ABLATION",
    "EMBEDDED",
    "ZOO",
    "GAUSSIAN",
    "PRETRAINED_GAUSSIAN",
    "THRESHOLDS_IN_OPTIMIZER",
    "DENSE",
    "PRETRAIN_EPOCHS",
    "FINETUNE_EPOCHS",
    "PRETRAINED",
    "STRUCTURED",
    "STRUCTURED_ZOO",
    "STRUCTURED_HELDOUT",
    "LAYERNORM_HELDOUT",
    "THRESHOLD_LRS",
    "THRESHOLD_LR_SCALES",
    "THRESHOLD_LR",
]


@dataclass(frozen=True)
class Variant:
    """One column of the results: a label and the :class:`~adasparse.train.TrainConfig` options it sets (they
    override the suite's, ``epochs`` included).

    ``init_from`` is the label of another variant of the suite: each run then starts from the final weights of
    that variant's run with the same data set, model and seed (its target too, unless it is dense), which runs
    first (:func:`.bench.phases`)."""

    label: str
    options: dict[str, Any]
    ours: bool = False
    init_from: str | None = None

    @property
    def dense(self) -> bool:
        """Whether the variant trains without pruning (it runs once per seed: its target is irrelevant)."""
        return self.options.get("sparsity") == "none"


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
_UNBOUNDED = {"pruned_gradient_bound": None}
"""Pinned in the variants measured before the pruned-gradient bound became the default (on the layers a BatchNorm
reads): their columns stay what ``adasparse bench`` reproduces."""
BASELINES = (
    Variant("one-shot", {"method": "oneshot"}),
    Variant("one-shot + FT", {"method": "oneshot-ft"}),
    Variant("GMP global", {"method": "gmp"}),
    Variant("GMP per layer", {"method": "gmp-layer"}),
)
_ORIGINAL_OPTIONS = {
    "projection_slope": "gaussian",
    "threshold_update": "optimizer",
    "centred": True,
    "correction": False,
    "ramp": 0.0,
    "threshold_schedule": "cosine",
    "task_gradient": True,
    "finetune": 0.0,
    "init_fraction": 0.6,
    **_UNBOUNDED,
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
    Variant("default, constraint instead of projection", {"sparsity": "constraint", **_UNBOUNDED}, ours=True),
    Variant(
        "Gaussian projection, no task gradient",
        {"projection_slope": "gaussian", "task_gradient": False, **_UNBOUNDED},
        ours=True,
    ),
    Variant("GMP global", {"method": "gmp"}),
)
EMBEDDED = (("mnist1d", "cnn1d"), ("digits", "cnn2d"))
ZOO = (("mnist1d", "cnn1d"), ("mnist1d", "resnet1d"), ("mnist1d", "transformer"), ("digits", "resnet2d"))
"""Normalization, residual blocks and attention beside the plain CNN."""
THRESHOLDS_IN_OPTIMIZER = Variant(
    "default, thresholds in the optimizer (lr/100)",
    {"projection_slope": "gaussian", "threshold_update": "optimizer", **_UNBOUNDED},
    ours=True,
)
"""The default two steps back: the Gaussian projection, the thresholds an SGD group at lr/100."""
GAUSSIAN = Variant("adasparse, Gaussian projection", {"projection_slope": "gaussian", **_UNBOUNDED}, ours=True)
"""The default before the layer-adaptive allocation: the projection along the Gaussian slope, the thresholds
moved by the task gradient with the pruner's own scale-free step."""
_BOUND_ALL = {"pruned_gradient_bound": 3.0, "pruned_gradient_bound_layers": "all"}
BOUNDED = Variant("adasparse, pruned-gradient bound 3", dict(_BOUND_ALL), ours=True)
"""The default with every pruned weight's straight-through gradient clamped to 3 times the root mean square of its
layer's kept weights' gradients on every layer (``pruned_gradient_bound_layers="all"``; the default bounds only the
layers a BatchNorm reads)."""
UNBOUNDED = Variant("adasparse, no pruned-gradient bound", dict(_UNBOUNDED), ours=True)
"""The default as it was measured before the pruned-gradient bound (on the layers a BatchNorm reads) joined it."""
DENSE = Variant("dense", {"sparsity": "none"})
MEASURED_SLOPE = Variant("adasparse, measured slope", {"projection_slope": "measured", **_UNBOUNDED}, ours=True)
"""The default with the projection moving each threshold along its layer's measured slope."""

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
PRETRAINED_GAUSSIAN = Variant(
    "pretrained + adasparse, Gaussian projection",
    {**_FINETUNE, "projection_slope": "gaussian", **_UNBOUNDED},
    ours=True,
    init_from="dense",
)
"""The default before the layer-adaptive allocation, from a pretrained start."""
PRETRAINED_BOUNDED = Variant(
    "pretrained + adasparse, pruned-gradient bound 3",
    {**_FINETUNE, **_BOUND_ALL},
    ours=True,
    init_from="dense",
)
"""The default with ``pruned_gradient_bound=3`` on every layer, from a pretrained start."""
PRETRAINED_UNBOUNDED = Variant(
    "pretrained + adasparse, no pruned-gradient bound",
    {**_FINETUNE, **_UNBOUNDED},
    ours=True,
    init_from="dense",
)
"""The default before the pruned-gradient bound joined it, from a pretrained start."""

STRUCTURED_ZOO = (*ZOO, ("digits", "cnn2d"))
"""The structured suite's models: the zoo and the plain 2-D CNN."""
_CHANNELS = {**_FINETUNE, "granularity": "channel", "budget": "flops"}
STRUCTURED = (
    DENSE,
    Variant("pretrained + adasparse channels", dict(_CHANNELS), ours=True, init_from="dense"),
    Variant(
        "pretrained + adasparse channels, budget-only thresholds",
        {**_CHANNELS, "task_gradient": False},
        ours=True,
        init_from="dense",
    ),
    Variant("pretrained + L1 channels (global)", {**_CHANNELS, "method": "l1-channels"}, init_from="dense"),
    Variant("pretrained + L1 channels (uniform)", {**_CHANNELS, "method": "l1-channels-uniform"}, init_from="dense"),
)
"""The structured suite: the pretrained protocol with output channels and attention heads pruned to a fraction of
the model's multiply-accumulates (targets 0.5 and 0.75: half and a quarter of the dense FLOPs), against L1-norm
channel pruning of the dense model with the same fine-tuning budget."""


def _rounded(multiple: int, suffix: str = "", **options: Any) -> tuple[Variant, Variant]:
    """Ours and L1-norm channel pruning (global) from the dense run, every kept count rounded to ``multiple``
    (labels "... multiple of N" and ``suffix``), with ``options`` on both."""
    rounded = {**_CHANNELS, "channel_multiple": multiple, **options}
    return (
        Variant(
            f"pretrained + adasparse channels, multiple of {multiple}{suffix}", rounded, ours=True, init_from="dense"
        ),
        Variant(
            f"pretrained + L1 channels (global), multiple of {multiple}{suffix}",
            {**rounded, "method": "l1-channels"},
            init_from="dense",
        ),
    )


STRUCTURED_MULTIPLE = (DENSE, *_rounded(8))
"""The structured suite's protocol with every channel set's kept count rounded to a multiple of 8 when the zeros
are fixed (``channel_multiple=8``), for ours and for L1-norm channel pruning: what the rounding costs in accuracy and
gains in latency."""

STRUCTURED_MULTIPLE16 = (
    DENSE,
    STRUCTURED_MULTIPLE[1],
    *_rounded(16),
    *_rounded(16, ", fastest rounding", latency_batch=256),
)
"""Kept counts rounded to a multiple of 16 (the width of a 512-bit vector of floats) beside a multiple of 8, at half
the FLOPs: on the CPU these pages are measured on, a convolution with an odd multiple of 8 channels runs slower than
one with the next multiple of 16 (``adasparse.measure_latency``'s tables, docs/structured.md). The last two variants
time the starting model at batch 256 when the run starts (``latency_batch``) and round to the fastest of the
choices that meet the FLOPs budget."""

_TIME_BUDGET = {
    **_FINETUNE,
    "granularity": "channel",
    "budget": "latency",
    "latency_batch": 256,
    "channel_multiple": 16,
}
STRUCTURED_TIME = (
    DENSE,
    Variant(
        "pretrained + adasparse channels, time budget, multiple of 16", dict(_TIME_BUDGET), ours=True, init_from="dense"
    ),
    Variant(
        "pretrained + L1 channels (global), time budget, multiple of 16",
        {**_TIME_BUDGET, "method": "l1-channels"},
        init_from="dense",
    ),
)
"""The target a fraction of the forward time at batch 256 (``budget="latency"``: each run times its starting model
first, ``latency_batch``), kept counts rounded to multiples of 16; ours against L1-norm channel pruning of the dense
model held to the same predicted time."""

STRUCTURED_HELDOUT = (("digits", "mobilenet2d"), ("digits", "wrn-16-2"))
"""Models the channel controller was not designed on: inverted residual blocks with depthwise convolutions, and a
wide ResNet (pre-activation blocks, 1x1 shortcuts)."""
LAYERNORM_HELDOUT = (("digits", "convnext2d"),)
"""A model added after every default was fixed: ConvNeXt-style blocks, LayerNorm instead of BatchNorm, depthwise 7x7
convolutions and per-pixel MLPs."""

THRESHOLD_LRS = (0.2, 0.6, 2.0, 6.0, 20.0)
"""Two decades around the default threshold_lr (2.0)."""
THRESHOLD_LR_SCALES = (0.01, 0.1, 1.0)
"""The previous mode (thresholds an optimizer group at lr * threshold_lr_scale), for comparison."""
THRESHOLD_LR = tuple(
    variant
    for optimizer, name in (("sgd", "SGD"), ("adamw", "AdamW"))
    for variant in (
        *(
            Variant(
                f"threshold_lr {lr:g}, {name}",
                {"projection_slope": "gaussian", "threshold_lr": lr, "optimizer": optimizer, **_UNBOUNDED},
                ours=True,
            )
            for lr in THRESHOLD_LRS
        ),
        *(
            Variant(
                f"thresholds in the optimizer x{scale:g}, {name}",
                {
                    "threshold_update": "optimizer",
                    "threshold_lr_scale": scale,
                    "optimizer": optimizer,
                    **_UNBOUNDED,
                },
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
            GAUSSIAN,
            DEFAULT,
        ),
        ZOO,
        (0.9, 0.95, 0.98),
        epochs=30,
    ),
    "pretrained": Suite(
        "pretrained", (*PRETRAINED, PRETRAINED_GAUSSIAN), ZOO, (0.9, 0.95, 0.98), epochs=PRETRAIN_EPOCHS
    ),
    "structured": Suite("structured", STRUCTURED, STRUCTURED_ZOO, (0.5, 0.75), epochs=PRETRAIN_EPOCHS),
    "slope": Suite(
        "slope", (BASELINES[2], GAUSSIAN, MEASURED_SLOPE), (*ZOO, *STRUCTURED_HELDOUT), (0.9, 0.98), epochs=30
    ),
    "lamp": Suite(
        "lamp",
        (BASELINES[2], GAUSSIAN, UNBOUNDED, DEFAULT, BOUNDED),
        (*ZOO, *STRUCTURED_HELDOUT, *LAYERNORM_HELDOUT),
        (0.9, 0.95, 0.98),
        epochs=30,
    ),
    "lamp-methods": Suite(
        "lamp-methods", (BASELINES[2], GAUSSIAN, UNBOUNDED, DEFAULT, BOUNDED), EMBEDDED, (0.5, 0.8, 0.9, 0.95, 0.98)
    ),
    "lamp-pretrained": Suite(
        "lamp-pretrained",
        (
            DENSE,
            PRETRAINED[2],
            PRETRAINED_GAUSSIAN,
            PRETRAINED_UNBOUNDED,
            PRETRAINED[1],
            PRETRAINED_BOUNDED,
        ),
        ZOO,
        (0.9, 0.95, 0.98),
        epochs=PRETRAIN_EPOCHS,
    ),
    "slope-methods": Suite(
        "slope-methods", (BASELINES[2], GAUSSIAN, MEASURED_SLOPE), EMBEDDED, (0.5, 0.8, 0.9, 0.95, 0.98)
    ),
    "slope-pretrained": Suite(
        "slope-pretrained",
        (
            DENSE,
            PRETRAINED_GAUSSIAN,
            Variant(
                "pretrained + adasparse, measured slope",
                {**_FINETUNE, "projection_slope": "measured", **_UNBOUNDED},
                ours=True,
                init_from="dense",
            ),
        ),
        ZOO,
        (0.9, 0.98),
        epochs=PRETRAIN_EPOCHS,
    ),
    "structured-multiple": Suite(
        "structured-multiple", STRUCTURED_MULTIPLE, STRUCTURED_ZOO, (0.5, 0.75), epochs=PRETRAIN_EPOCHS
    ),
    "structured-multiple16": Suite(
        "structured-multiple16", STRUCTURED_MULTIPLE16, STRUCTURED_ZOO, (0.5,), epochs=PRETRAIN_EPOCHS
    ),
    "structured-time": Suite("structured-time", STRUCTURED_TIME, STRUCTURED_ZOO, (0.4,), epochs=PRETRAIN_EPOCHS),
    "structured-time-heldout": Suite(
        "structured-time-heldout", STRUCTURED_TIME, STRUCTURED_HELDOUT, (0.4,), epochs=PRETRAIN_EPOCHS
    ),
    "structured-multiple-heldout": Suite(
        "structured-multiple-heldout", STRUCTURED_MULTIPLE, STRUCTURED_HELDOUT, (0.5, 0.75), epochs=PRETRAIN_EPOCHS
    ),
    "structured-heldout": Suite(
        "structured-heldout", STRUCTURED, STRUCTURED_HELDOUT, (0.5, 0.75), epochs=PRETRAIN_EPOCHS
    ),
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
