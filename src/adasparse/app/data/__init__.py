"""Data sets for `adasparse train`: real data held in memory as tensors, with batched augmentation in torch.

Every loader returns a :class:`Dataset`. Inputs are kept compact (CIFAR as uint8) and turned into model inputs
batch by batch by the dataset's ``train_transform`` / ``test_transform``, which run on whatever device the batch is
on (so augmentation happens on the GPU when training there).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = ["DATASETS", "DataError", "Dataset", "load_dataset"]

DATASETS = ("mnist1d", "digits", "cifar10", "cifar100")

Transform = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]


class DataError(ValueError):
    """A data set is missing, corrupt, or cannot be fetched; the message says what to do."""


@dataclass
class Dataset:
    """An in-memory train/test split.

    Attributes:
        name: registry name, e.g. ``"mnist1d"``.
        x_train, y_train, x_test, y_test: stored inputs (any dtype) and int64 labels.
        num_classes: number of classes.
        input_shape: shape of one transformed example, as the model receives it (e.g. ``(1, 40)``).
        train_transform: ``fn(batch, generator) -> float batch``; random augmentation draws from ``generator``
            (``None`` for no augmentation beyond conversion).
        test_transform: same signature, deterministic (the generator is ignored).
        info: free-form provenance for config.json (source, split, normalisation statistics).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    train_transform: Transform | None = None
    test_transform: Transform | None = None
    info: dict = field(default_factory=dict)


def load_dataset(name: str, *, data_dir: str | Path = "data", download: bool = False, seed: int = 0) -> Dataset:
    """Load a data set by name (one of :data:`DATASETS`).

    Args:
        name: ``"mnist1d"`` (generated locally), ``"digits"`` (bundled with scikit-learn), ``"cifar10"`` or
            ``"cifar100"`` (the official python archives in ``data_dir``).
        data_dir: where CIFAR archives or extracted folders are looked for (and downloaded to).
        download: fetch a missing CIFAR archive (verifying its published MD5).
        seed: seeds the generated data and the train/test split of the small data sets.

    Raises:
        DataError: unknown name, missing optional package, missing or corrupt files.
    """
    if name == "mnist1d":
        from .mnist1d import load_mnist1d

        return load_mnist1d(seed=seed)
    if name == "digits":
        from .digits import load_digits

        return load_digits(seed=seed)
    if name in ("cifar10", "cifar100"):
        from .cifar import load_cifar

        return load_cifar(name, Path(data_dir), download=download)
    raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
