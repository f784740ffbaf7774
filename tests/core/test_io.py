"""Atomic writes: the old file survives any failure, no temporary file is left behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from adasparse.core import _io


def test_atomic_writes_create_and_replace(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.json"
    _io.atomic_write_json(target, {"a": 1})
    assert target.read_text() == '{\n  "a": 1\n}\n'
    _io.atomic_torch_save({"w": torch.ones(3)}, tmp_path / "x.pt")
    assert torch.equal(torch.load(tmp_path / "x.pt", weights_only=True)["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["file.json", "sub", "x.pt"]


def test_failure_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "state.txt"
    _io.atomic_write_text(target, "old")

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(_io.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        _io.atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.txt"]


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_new_files_honour_the_umask(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        _io.atomic_write_text(tmp_path / "new.txt", "x")
        _io.atomic_torch_save({"w": torch.ones(1)}, tmp_path / "new.pt")
    finally:
        os.umask(previous)
    for name in ("new.txt", "new.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


def test_replacing_a_file_keeps_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "shared.json"
    _io.atomic_write_json(target, {"a": 1})
    os.chmod(target, 0o640)
    _io.atomic_write_json(target, {"a": 2})
    assert stat.S_IMODE(target.stat().st_mode) == 0o640 and '"a": 2' in target.read_text()


@pytest.mark.parametrize("durable", [True, False])
def test_a_write_that_need_not_be_durable_skips_the_flushes_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool
) -> None:
    """``durable=False`` skips the file's and the directory's fsync; the replacement is atomic either way."""
    flushed: list[int] = []
    real_fsync = _io.os.fsync
    monkeypatch.setattr(_io.os, "fsync", lambda fd: (flushed.append(fd), real_fsync(fd)))
    target = tmp_path / "rows.csv"
    _io.atomic_write_text(target, "old", durable=durable)
    assert len(flushed) == (2 if durable else 0) and target.read_text() == "old"

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(_io.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        _io.atomic_write_text(target, "new", durable=durable)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["rows.csv"]
