"""benchmarks/pruner_step.py: every Pruner.step() of a run timed once, under the phase it belongs to."""

from __future__ import annotations

import pytest

from adasparse.control.config import DEFAULT_FINETUNE, PrunerConfig
from adasparse.control.pruner import Pruner

from . import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("pruner_step")


def test_a_run_s_steps_are_each_timed_once_under_their_phase(script) -> None:
    step = Pruner.step
    times = script.timed_run("digits", "mlp", seed=0, epochs=4)
    assert Pruner.step is step  # the timer is taken off again
    counts = {key: len(values) for key, values in times.items()}
    total = sum(counts.values())
    ramp = sum(count for key, count in counts.items() if key.startswith("ramp/"))
    tuned = sum(count for key, count in counts.items() if key.startswith("fine-tuning/"))
    assert set(counts) <= {f"{phase}/{kind}" for phase in script.PHASES for kind in ("between", "measurement")}
    defaults = PrunerConfig()
    assert ramp == pytest.approx(defaults.ramp * total, abs=1)
    assert tuned == pytest.approx(DEFAULT_FINETUNE * total, abs=1)
    measured = sum(count for key, count in counts.items() if key.endswith("/measurement"))
    assert measured == -(-(total - tuned) // defaults.correction_interval)  # the first step too, none once fixed
    assert "fine-tuning/measurement" not in counts
    assert all(value > 0.0 for values in times.values() for value in values)


def test_the_table_puts_the_two_codes_side_by_side_with_their_ratio(script) -> None:
    run = {"ramp/between": [0.002, 0.004, 0.006], "hold/measurement": [0.01]}
    other = {"ramp/between": [0.001, 0.001, 0.001], "hold/measurement": [0.01]}
    text = script.table({"mlp (digits)": {"this code": [run], "against": [other]}}, ["this code", "against"])
    lines = text.splitlines()
    assert len(lines) == 2 + 3  # header, rule, two phases and the whole run
    assert "| mlp (digits) | ramp, between | 3 | 0.012, 4000 | 0.003, 1000 | 4.00 |" in lines
    assert lines[-1].startswith("| mlp (digits) | all | 4 | 0.022 | 0.013 | 1.69 |")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--models", "cnn1d"], "--models takes DATASET:MODEL"),
        (["--repeats", "0"], "--repeats must be >= 1"),
        (["--against", "."], "no adasparse package in that folder"),
    ],
)
def test_bad_arguments_are_refused_by_name_before_anything_runs(script, capsys, argv, message) -> None:
    with pytest.raises(SystemExit):
        script.main([*argv, "--no-write"])
    assert message in capsys.readouterr().err
