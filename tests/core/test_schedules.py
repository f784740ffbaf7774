"""The cubic ramp of gradual magnitude pruning."""

from __future__ import annotations

import pytest

from adasparse.core.schedules import cubic_ramp


def test_cubic_ramp_shape() -> None:
    assert cubic_ramp(0.0, 0.9, start=0.1, end=0.7) == 0.0
    assert cubic_ramp(0.1, 0.9, start=0.1, end=0.7) == 0.0
    assert cubic_ramp(0.4, 0.9, start=0.1, end=0.7) == pytest.approx(0.9 * (1 - 0.5**3))
    assert cubic_ramp(0.7, 0.9, start=0.1, end=0.7) == 0.9
    assert cubic_ramp(1.0, 0.9, start=0.1, end=0.7) == 0.9
    assert cubic_ramp(0.5, 0.9, initial=0.5, end=1.0) == pytest.approx(0.9 - 0.4 * 0.125)
    values = [cubic_ramp(p / 100, 0.95, end=0.5) for p in range(101)]
    assert values == sorted(values)


def test_cubic_ramp_arguments() -> None:
    with pytest.raises(ValueError, match="need 0 <= start <= end <= 1"):
        cubic_ramp(0.5, 0.9, start=0.8, end=0.2)
    with pytest.raises(ValueError, match=r"final must be in \[0, 1\)"):
        cubic_ramp(0.5, 1.2)
