"""PrunerConfig's checks, configured() and the settings check of a resumed state; the old import path."""

from __future__ import annotations

import pytest

from adasparse.control.config import (
    BUDGETS,
    DEFAULT_FINETUNE,
    ROUNDED_FINETUNE,
    THRESHOLD_UPDATES,
    PrunerConfig,
    check_same_settings,
    configured,
    default_finetune,
)


def test_configured_applies_options_to_the_defaults_or_a_config() -> None:
    assert configured(None, {}, "unknown") == PrunerConfig().validated()
    config = configured(PrunerConfig(mode="adaptive"), {"ramp": 0.0, "finetune": 0.1}, "unknown")
    assert (config.mode, config.ramp, config.finetune) == ("adaptive", 0.0, 0.1)
    assert PrunerConfig().validated() is not None and PrunerConfig().budget in BUDGETS
    assert PrunerConfig().threshold_update in THRESHOLD_UPDATES


@pytest.mark.parametrize(
    "config, options, error, message",
    [
        ({"mode": "adaptive"}, {}, TypeError, "config must be a PrunerConfig, got dict"),
        (None, {"ramps": 0.1, "modes": 1}, TypeError, r"my prefix\(s\): modes, ramps \(PrunerConfig has: "),
        (None, {"mode": "budget"}, ValueError, "mode must be one of"),
        (None, {"budget": "macs"}, ValueError, "budget must be one of 'params', 'flops'"),
        (None, {"ramp": 1.0}, ValueError, r"ramp must be a fraction of the steps in \[0, 1\)"),
        (None, {"ramp": 0.5, "finetune": 0.5}, ValueError, r"ramp \+ finetune must be < 1"),
        (None, {"init_fraction": 1.5}, ValueError, r"init_fraction must be in \[0, 1\]"),
        (None, {"dual_step": 0.0}, ValueError, "dual_step must be > 0"),
        (None, {"correction_interval": 0}, ValueError, "correction_interval must be an integer >= 1"),
        (None, {"calibrate": 1}, TypeError, "calibrate must be True or False, got 1"),
    ],
)
def test_configured_rejects_bad_options(config: object, options: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        configured(config, options, "my prefix")  # type: ignore[arg-type]


def test_check_same_settings_names_what_differs() -> None:
    config = PrunerConfig()
    state = {"config": config.to_dict(), "target": 0.9, "total_steps": 100}
    check_same_settings(state, config, 0.9, 100)
    with pytest.raises(ValueError, match=r"other settings \(target, total_steps differ\)"):
        check_same_settings(state, config, 0.8, 50)
    with pytest.raises(ValueError, match=r"other settings \(config differ\)"):
        check_same_settings(state, PrunerConfig(ramp=0.1), 0.9, 100)


def test_the_names_stay_importable_from_the_pruner_module() -> None:
    from adasparse.control import config, pruner, result

    assert pruner.PrunerConfig is config.PrunerConfig and pruner.configured is config.configured
    assert pruner.BUDGETS is config.BUDGETS and pruner.THRESHOLD_UPDATES is config.THRESHOLD_UPDATES
    assert pruner.PrunerResult is result.PrunerResult


def test_finetune_defaults_to_more_steps_when_channel_counts_are_rounded() -> None:
    assert PrunerConfig().finetune is None  # filled in when the config is checked
    assert PrunerConfig().validated().finetune == DEFAULT_FINETUNE == default_finetune(1)
    rounded = PrunerConfig(granularity="channel", channel_multiple=8).validated()
    assert rounded.finetune == ROUNDED_FINETUNE == default_finetune(8)
    explicit = configured(None, {"granularity": "channel", "channel_multiple": 8, "finetune": 0.1}, "unknown")
    assert explicit.finetune == 0.1  # a given value is kept
    assert configured(None, {"finetune": 0.0}, "unknown").finetune == 0.0
    with pytest.raises(ValueError, match="channel_multiple"):
        PrunerConfig(channel_multiple=0).validated()
