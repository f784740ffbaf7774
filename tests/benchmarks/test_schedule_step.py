"""benchmarks/schedule_step.py's stepped-ramp probe: the ramp's target raised at each measurement, held between."""

from __future__ import annotations

import pytest
from torch import nn

import adasparse

from . import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("schedule_step")


def test_the_stepped_ramp_holds_the_target_between_measurements(script) -> None:
    pruner = adasparse.Pruner(nn.Sequential(nn.Linear(64, 32)), target=0.9, total_steps=1_000)
    interval = pruner.config.correction_interval
    stepped = [script._stepped_target_at(pruner, step) for step in range(400)]
    ramp = [pruner._target_at(step) for step in range(400)]
    for step in range(400):
        assert stepped[step] == ramp[step - step % interval]  # raised only at a measurement
    raises = sum(later != earlier for earlier, later in zip(stepped, stepped[1:]))
    assert raises == 300 // interval  # the ramp ends at 30% of the steps; the per-step ramp rises at every step
    assert sum(later != earlier for earlier, later in zip(ramp, ramp[1:])) == 300
    assert script._stepped_target_at(pruner, 999) == pytest.approx(0.9)
    assert script.Pruner._target_at is script._target_at  # the probe patches the class only while it steps
