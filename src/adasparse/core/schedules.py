"""Schedules over training progress: the cubic sparsity ramp of gradual magnitude pruning (Zhu & Gupta, 2017)."""

from __future__ import annotations

from ._checks import check_fraction

__all__ = ["cubic_ramp"]


def cubic_ramp(progress: float, final: float, *, initial: float = 0.0, start: float = 0.0, end: float = 1.0) -> float:
    """Sparsity at ``progress`` in ``[0, 1]`` of training: ``initial`` until ``start``, then
    ``final + (initial - final) * (1 - t)**3`` with ``t = (progress - start) / (end - start)``, then ``final``.

    The cubic prunes fast while many weights are redundant and slows down near the target.

    Example::

        >>> round(cubic_ramp(0.5, 0.9, start=0.1, end=0.7), 4)
        0.8667
    """
    final = check_fraction(final, "final")
    initial = check_fraction(initial, "initial")
    if not 0.0 <= start <= end <= 1.0:
        raise ValueError(f"need 0 <= start <= end <= 1, got start={start}, end={end}")
    if progress <= start:
        return initial
    if progress >= end or end == start:
        return final
    remaining = 1.0 - (progress - start) / (end - start)
    return final + (initial - final) * remaining**3
