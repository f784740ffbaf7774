"""Helpers shared by the small in-memory data sets: split and standardise on the training part only."""

from __future__ import annotations

import torch

__all__ = ["float_transform", "standardise"]


def standardise(x_train: torch.Tensor, x_test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Scale both splits by the training split's global mean and standard deviation."""
    mean = x_train.mean()
    std = x_train.std().clamp_min(1e-8)
    stats = {"mean": float(mean), "std": float(std)}
    return (x_train - mean) / std, (x_test - mean) / std, stats


def float_transform(batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The identity for data already stored as normalised float32 (no augmentation)."""
    return batch.float()
