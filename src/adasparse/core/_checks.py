"""Argument validation shared by the public functions: every error names the argument and the allowed range."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["check_choice", "check_fraction", "check_int", "check_nonnegative", "check_positive"]


def _number(value: Any, argument: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{argument} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{argument} must be finite, got {value!r}")
    return value


def check_fraction(value: Any, argument: str = "target") -> float:
    """A sparsity fraction in ``[0, 1)``."""
    number = _number(value, argument)
    if not 0.0 <= number < 1.0:
        raise ValueError(f"{argument} must be in [0, 1), got {value!r}")
    return number


def check_ramp(value: Any, argument: str = "ramp") -> float:
    """A fraction of training in ``[0, 1]``."""
    number = _number(value, argument)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{argument} must be a fraction of training in [0, 1], got {value!r}")
    return number


def check_nonnegative(value: Any, argument: str) -> float:
    number = _number(value, argument)
    if number < 0.0:
        raise ValueError(f"{argument} must be >= 0, got {value!r}")
    return number


def check_positive(value: Any, argument: str) -> float:
    number = _number(value, argument)
    if number <= 0.0:
        raise ValueError(f"{argument} must be > 0, got {value!r}")
    return number


def check_choice(value: Any, argument: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{argument} must be one of {allowed}, got {value!r}")
    return value


def check_int(value: Any, argument: str, minimum: int) -> int:
    """An integer (not a bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{argument} must be an integer >= {minimum}, got {value!r}")
    return value
