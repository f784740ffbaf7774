"""A ``torch.no_grad`` decorator that costs nothing when gradients are already off.

The pruner's step calls several helpers that each need gradients off; ``@torch.no_grad()`` enters a fresh context
(3-4 µs on CPU) even inside another one, which added up to a tenth of a step on a small model.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar, cast

import torch

__all__ = ["no_grad"]

_Function = TypeVar("_Function", bound=Callable[..., object])


def no_grad(function: _Function) -> _Function:
    """Run ``function`` with gradients off, entering ``torch.no_grad()`` only when they are on."""

    @functools.wraps(function)
    def wrapper(*args: object, **kwargs: object) -> object:
        if not torch.is_grad_enabled():
            return function(*args, **kwargs)
        with torch.no_grad():
            return function(*args, **kwargs)

    return cast(_Function, wrapper)
