"""Atomic file writes: a file is either its old version or its complete new one, never half-written.

Permissions are those a plain ``open(path, "w")`` would give: a new file gets ``0o666 & ~umask`` (the kernel applies
the umask, and a directory's default ACL, when the temporary file is created); a file that is replaced keeps its
permission bits.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_torch_save", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "create_temporary"]


def create_temporary(directory: str | Path, prefix: str, suffix: str = ".tmp") -> tuple[int, Path]:
    """Create a new, empty file in ``directory`` with a unique name, mode ``0o666 & ~umask``.

    Unlike :func:`tempfile.mkstemp` (always ``0o600``), the file gets the permissions any new file would get, so
    renaming it into place gives the group what the user's umask grants.

    Returns:
        An open, writable file descriptor and the file's path.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        candidate = Path(directory) / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            return os.open(candidate, flags, 0o666), candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file in {directory}: every name tried exists")


def atomic_write_bytes(path: str | Path, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, then rename it over ``path``.

    A new file gets mode ``0o666 & ~umask``; an existing file keeps its permission bits. With ``durable=False`` the
    replacement is still all or nothing for every reader, but neither the file nor the directory is flushed to
    disk (two ``fsync`` calls, a few milliseconds each): for a file rewritten whole from a durable one, where a
    power failure may cost its newest version and nothing else.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temporary(path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        try:
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        except FileNotFoundError:
            pass
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str, *, durable: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` into memory, then :func:`atomic_write_bytes`."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())
