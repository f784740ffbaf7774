"""A run directory's saved state: its configuration, its checkpoint (read, checked against the run, restored) and
the weights a pretrained start loads."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .config import CHECKPOINT_FORMAT, LEGACY_VALUES, RUN_FORMAT, TrainConfig
from .models import default_model

if TYPE_CHECKING:
    from .methods import Method

__all__ = [
    "ADDED_FIELDS",
    "CHECKPOINT_KEYS",
    "RESUMABLE_ELSEWHERE",
    "check_checkpoint",
    "load_checkpoint",
    "load_init_weights",
    "load_run_config",
    "restore",
    "rng_state",
    "set_rng_state",
]


def load_run_config(run_dir: str | Path) -> TrainConfig:
    """The configuration of an existing run directory (``ValueError`` for a directory adasparse did not write)."""
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not path.is_file():
        raise ValueError(f"{run_dir} is not an adasparse run directory (no config.json)")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not readable JSON: {error}") from error
    if not isinstance(data, dict) or data.get("format") != RUN_FORMAT or "config" not in data:
        raise ValueError(f"{run_dir} is not an adasparse run directory (config.json was not written by adasparse)")
    return TrainConfig.from_dict(data["config"])


def load_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "checkpoint.pt"
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path} is not a readable checkpoint: {reason}") from error
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an adasparse checkpoint")
    return state


CHECKPOINT_KEYS = ("epoch", "config", "model", "optimizer", "scheduler", "method", "rng", "metrics")

RESUMABLE_ELSEWHERE = ("device", "data_dir", "download", "workers", "tensorboard")
"""Configuration fields that may change between a checkpoint and its resume: where and how the run executes."""

ADDED_FIELDS = {
    **{field.name: field.default for field in fields(TrainConfig)},
    "optimizer": "sgd",
    "init_from": None,
    **LEGACY_VALUES,
}
"""Configuration fields newer than format version 1, with the value a checkpoint written without them ran with: a
field's default when it was added (fields are added with the default that keeps what runs did before), except where
that default changed since (:data:`~adasparse.app.config.LEGACY_VALUES`)."""


def check_checkpoint(state: dict[str, Any], config: TrainConfig, path: Path) -> None:
    """Refuse a checkpoint that is not this run's: missing keys, another configuration, an impossible epoch."""
    missing = [key for key in CHECKPOINT_KEYS if key not in state]
    if missing:
        raise ValueError(f"{path} has no {', '.join(map(repr, missing))}: it is incomplete or not this run's")
    saved = state["config"]
    if not isinstance(saved, dict):
        raise ValueError(f"{path} has no readable configuration (config is a {type(saved).__name__})")
    saved = {**ADDED_FIELDS, **saved}
    current = config.to_dict()

    def shown(values: dict[str, Any], name: str) -> str:
        return repr(values[name]) if name in values else "missing"

    absent = object()
    differences = [
        f"{name} (checkpoint {shown(saved, name)}, run {shown(current, name)})"
        for name in [*current, *(name for name in saved if name not in current)]
        if name not in RESUMABLE_ELSEWHERE and saved.get(name, absent) != current.get(name, absent)
    ]
    if differences:
        raise ValueError(
            f"{path} is not this run's checkpoint: its configuration differs from config.json in "
            f"{', '.join(differences)}; resume the run it came from, or delete it to start this run over"
        )
    epoch, metrics = state["epoch"], state["metrics"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 1 <= epoch <= config.epochs:  # type: ignore[operator]
        raise ValueError(f"{path}: epoch must be an integer in [1, {config.epochs}] (the run's epochs), got {epoch!r}")
    if not isinstance(metrics, list) or len(metrics) != epoch:
        rows = len(metrics) if isinstance(metrics, list) else type(metrics).__name__
        raise ValueError(f"{path} is inconsistent: {rows} rows of metrics for epoch {epoch}")


def restore(
    state: dict[str, Any],
    path: Path,
    model: nn.Module,
    method: Method,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
    device: torch.device,
) -> None:
    """Load a checked checkpoint into the freshly built run; a state that does not fit is a one-line ``ValueError``."""
    try:
        method.load_state_dict(state["method"])
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"], generator, device)
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as error:
        lines = str(error).strip().splitlines()
        reason = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
        raise ValueError(f"{path} does not fit this run's model and optimizer ({reason})") from error


def load_init_weights(config: TrainConfig) -> dict[str, torch.Tensor]:
    """The weights ``config.init_from`` names: the ``model_sparse.pt`` of a finished run of the same data set and
    model (``ValueError`` naming ``init_from`` for anything else)."""
    source = Path(config.init_from)  # type: ignore[arg-type]
    try:
        trained = load_run_config(source)
    except ValueError as error:
        raise ValueError(f"init_from: {error}") from error
    trained_model = trained.model or default_model(trained.dataset)
    if (trained.dataset, trained_model) != (config.dataset, config.model):
        raise ValueError(
            f"init_from: {source} is a {trained.dataset}/{trained_model} run, this run is "
            f"{config.dataset}/{config.model}: another architecture"
        )
    path = source / "model_sparse.pt"
    if not path.is_file():
        raise ValueError(f"init_from: {source} has no model_sparse.pt (the run has not finished)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"init_from: {path} is not readable: {reason}") from error
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ValueError(f"init_from: {path} is not a state_dict")
    return state


def rng_state(generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state(), "loader": generator.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, torch.Tensor], generator: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["loader"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
