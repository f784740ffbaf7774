"""The module paths of the flat layout keep working as aliases of the layered modules (adasparse/_paths.py)."""

from __future__ import annotations

import importlib
import pickle
import subprocess
import sys

import pytest

import adasparse
from adasparse._paths import ALIASES

OLD_PUBLIC = [
    "loss", "pruner", "sparsify", "operator", "parametrization", "report", "calibrate", "selection", "flops",
    "schedules", "magnitude", "export", "inference", "onnx_export", "train", "methods", "bench", "cli", "models",
    "data", "distributed", "compat",
]  # fmt: skip


@pytest.mark.parametrize("old", OLD_PUBLIC)
def test_import_of_an_old_path_gives_the_new_module(old: str) -> None:
    module = importlib.import_module(f"adasparse.{old}")
    if old in ALIASES:
        assert module is importlib.import_module(f"adasparse.{ALIASES[old]}")
        assert module.__name__ == f"adasparse.{ALIASES[old]}" and module.__spec__.name == module.__name__


def test_both_import_forms_and_submodules() -> None:
    import adasparse.loss
    import adasparse.models.mlp
    from adasparse.loss import SparsityLoss
    from adasparse.models.mlp import MLP

    from adasparse.app.models.mlp import MLP as NewMLP
    from adasparse.control.loss import SparsityLoss as NewLoss

    assert SparsityLoss is NewLoss is adasparse.loss.SparsityLoss
    assert MLP is NewMLP is adasparse.models.mlp.MLP
    # the functions keep their names on the package, the modules do not replace them
    assert callable(adasparse.calibrate) and callable(adasparse.sparsify)
    import adasparse.calibrate  # noqa: F811

    assert callable(adasparse.calibrate) and not isinstance(adasparse.calibrate, type(adasparse))


def test_the_export_module_keeps_its_names() -> None:
    from adasparse.app.runs import export_run as new_export_run
    from adasparse.export import RUN_FILES, RunWeights, export_run, load_run_weights, load_sparse, save_sparse

    assert export_run is new_export_run and callable(load_run_weights) and "config.json" in RUN_FILES
    assert callable(save_sparse) and callable(load_sparse) and RunWeights.__module__ == "adasparse.app.runs"


def test_pickles_naming_old_module_paths_load() -> None:
    from adasparse.app.train import TrainConfig

    config = TrainConfig(epochs=3)
    new = pickle.dumps(config, protocol=2)  # the class lives in adasparse.app.config now
    for earlier in (b"adasparse.train", b"adasparse.app.train"):  # where earlier versions defined it
        old = new.replace(b"adasparse.app.config", earlier)
        assert old != new and pickle.loads(old) == config == pickle.loads(new)


def test_public_names_of_the_package() -> None:
    for name in adasparse.__all__:
        assert hasattr(adasparse, name), name
    assert adasparse.magnitude.MagnitudePruner and adasparse.schedules.cubic_ramp and adasparse.compat.sparsity


@pytest.mark.parametrize("module", ["adasparse", "adasparse.cli", "adasparse.app.cli"])
def test_python_dash_m(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", module, "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and result.stdout.startswith("adasparse "), result.stdout + result.stderr


def test_import_adasparse_leaves_the_app_unimported() -> None:
    code = "import sys, adasparse; sys.exit(any(m in sys.modules for m in ('adasparse.app.train', 'adasparse.cli')))"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
