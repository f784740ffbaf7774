"""The package's layers (pyproject.toml, ``[tool.importlinter]``): app > integrations > export | baselines > control >
core. A module importing a layer above its own fails here, so ``python -m pytest`` catches it before review."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter", reason="the layer contract is checked with import-linter (the test extra)")

ROOT = Path(__file__).resolve().parents[1]


def _lint(source_root: Path, config: Path) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(source_root)!r})\n"
        "from importlinter.cli import lint_imports\n"
        f"sys.exit(lint_imports(config_filename={str(config)!r}, no_cache=True, no_logo=True))\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=config.parent)


def test_the_layer_contracts_are_kept() -> None:
    result = _lint(ROOT / "src", ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Layers: app > integrations > export | baselines > control > core KEPT" in result.stdout


@pytest.mark.parametrize(
    ("module", "imported"),
    [("core/flops.py", "from ..control import loss"), ("export/inference.py", "from ..baselines import magnitude")],
)
def test_an_import_against_the_layers_breaks_the_contract(tmp_path: Path, module: str, imported: str) -> None:
    shutil.copytree(ROOT / "src" / "adasparse", tmp_path / "src" / "adasparse")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / "src" / "adasparse" / module
    path.write_text(path.read_text() + f"\n{imported}  # noqa\n")
    result = _lint(tmp_path / "src", tmp_path / "pyproject.toml")
    assert result.returncode != 0 and "BROKEN" in result.stdout, result.stdout + result.stderr
