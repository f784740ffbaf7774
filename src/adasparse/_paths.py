"""The module paths of the flat layout (``adasparse.loss``, ``adasparse.train``, ``adasparse.models.mlp``, ...) as
aliases of the modules in the layered one (``adasparse.control.loss``, ``adasparse.app.train``, ...).

An alias is the very module object, not a copy: ``adasparse.loss.SparsityLoss is adasparse.control.loss.SparsityLoss``,
``monkeypatch.setattr("adasparse.train.X", ...)`` patches the real module, and pickles that name a class by its old
module path still load. Aliases of modules the top-level package imports anyway are registered in ``sys.modules`` at
once; the others (the app: ``adasparse.train``, ``adasparse.cli``, ``adasparse.models``, ...) are resolved on first
import by a meta path finder, so ``import adasparse`` stays as light as before, and so do their submodules
(``adasparse.data.loader``). ``python -m adasparse.cli`` runs the real module as ``__main__``.

``adasparse.export`` is a package now; the run-directory names it used to hold (``export_run``, ``RunWeights``, ...)
moved to :mod:`adasparse.app.runs` and are put back on it by :func:`install`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import CodeType, ModuleType
from typing import Any

__all__ = ["ALIASES", "RUN_NAMES", "install"]

ALIASES = {
    "_checks": "core._checks",
    "_io": "core._io",
    "calibrate": "core.calibrate",
    "flops": "core.flops",
    "operator": "core.operator",
    "parametrization": "core.parametrization",
    "report": "core.report",
    "schedules": "core.schedules",
    "selection": "core.selection",
    "sparsify": "core.sparsify",
    "loss": "control.loss",
    "pruner": "control.pruner",
    "magnitude": "baselines.magnitude",
    "inference": "export.inference",
    "onnx_export": "export.onnx_export",
    "bench": "app.bench",
    "cli": "app.cli",
    "data": "app.data",
    "distributed": "app.distributed",
    "methods": "app.methods",
    "models": "app.models",
    "plots": "app.plots",
    "train": "app.train",
}
"""Old name under ``adasparse`` -> new name under ``adasparse`` (submodules follow their package)."""

RUN_NAMES = ("RUN_FILES", "ExportResult", "RunWeights", "export_run", "load_run_weights", "read_weights_file")
"""Names of the former ``adasparse.export`` module that now live in :mod:`adasparse.app.runs`."""

_PACKAGE = __name__.rpartition(".")[0]


def _target(fullname: str) -> str | None:
    """The new module name behind an old one, or ``None`` when ``fullname`` is no alias."""
    prefix = _PACKAGE + "."
    if not fullname.startswith(prefix):
        return None
    head, _, rest = fullname[len(prefix) :].partition(".")
    if head not in ALIASES:
        return None
    return prefix + ALIASES[head] + ("." + rest if rest else "")


class _AliasSpec(importlib.machinery.ModuleSpec):
    """A spec whose ``parent`` is the real module's package, so relative imports resolve under ``python -m``."""

    def __init__(self, name: str, loader: _AliasLoader) -> None:
        super().__init__(name, loader)
        self._real_parent = loader.target.rpartition(".")[0]

    @property
    def parent(self) -> str:
        return self._real_parent


class _AliasLoader(importlib.abc.Loader):
    """Loads an old name as the module of its new one (imported under the new name, once)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._real_spec: Any = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self._real_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._real_spec  # the import system set the alias spec on the shared module: undo that

    def get_code(self, fullname: str) -> CodeType | None:
        """The real module's code (``python -m adasparse.cli`` runs ``adasparse.app.cli`` as ``__main__``)."""
        spec = importlib.util.find_spec(self.target)
        if spec is None or spec.loader is None:
            return None
        return spec.loader.get_code(self.target)  # type: ignore[attr-defined]

    def is_package(self, fullname: str) -> bool:
        return False


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        new = _target(fullname)
        if new is None:
            return None
        return _AliasSpec(fullname, _AliasLoader(new))


def install() -> None:
    """Register the aliases: at once for modules already imported, the finder for the rest; run names on export."""
    package = sys.modules[_PACKAGE]
    for old, new in ALIASES.items():
        module = sys.modules.get(f"{_PACKAGE}.{new}")
        if module is None:
            continue
        sys.modules.setdefault(f"{_PACKAGE}.{old}", module)
        if not hasattr(package, old):  # ``adasparse.calibrate`` and ``adasparse.sparsify`` stay the functions
            setattr(package, old, module)
    if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())
    from .app import runs
    from .export import sparse  # noqa: F401 - the package attribute ``export.sparse``

    export = sys.modules[f"{_PACKAGE}.export"]
    for name in RUN_NAMES:
        setattr(export, name, getattr(runs, name))
