"""The suites of adasparse bench: every variant is a valid run configuration, the grids are the documented ones."""

from __future__ import annotations

import pytest

from adasparse.app.bench_suites import SUITES, Suite
from adasparse.app.train import TrainConfig

by_suite = pytest.mark.parametrize("suite", list(SUITES.values()), ids=list(SUITES))


@by_suite
def test_every_variant_is_a_valid_configuration(suite: Suite) -> None:
    for dataset, model in suite.datasets:
        for variant in suite.variants:
            options = {"epochs": suite.epochs, **variant.options}
            if variant.init_from is not None:
                options["init_from"] = "runs/start"
            for target in suite.targets:
                TrainConfig(dataset=dataset, model=model, target=target, **options).resolved()


@by_suite
def test_labels_are_unique_and_starts_run_from_scratch(suite: Suite) -> None:
    labels = [variant.label for variant in suite.variants]
    assert len(set(labels)) == len(labels)
    by_label = {variant.label: variant for variant in suite.variants}
    for variant in suite.variants:
        if variant.init_from is not None:
            assert by_label[variant.init_from].init_from is None
    assert all(variant.dense == (variant.options.get("sparsity") == "none") for variant in suite.variants)


def test_pretrained_suite_fine_tunes_for_under_a_quarter_of_the_pre_training() -> None:
    suite = SUITES["pretrained"]
    assert [variant.label for variant in suite.variants if variant.init_from is None] == ["dense"]
    for variant in suite.variants[1:]:
        assert variant.init_from == "dense" and variant.options["optimizer"] == "adamw"
        assert variant.options["epochs"] <= 0.25 * suite.epochs


def test_threshold_lr_grid() -> None:
    suite = SUITES["threshold-lr"]
    values = {
        (v.options.get("threshold_lr"), v.options.get("threshold_lr_scale"), v.options["optimizer"])
        for v in suite.variants
    }
    assert {lr for lr, _, _ in values} == {None, 0.2, 0.6, 2.0, 6.0, 20.0}
    assert {scale for _, scale, _ in values} == {None, 0.01, 0.1, 1.0}
    assert {optimizer for _, _, optimizer in values} == {"sgd", "adamw"} and len(values) == 16
    assert suite.targets == (0.98,) and suite.epochs == 30
