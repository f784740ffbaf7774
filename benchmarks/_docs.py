"""Write a generated section into a markdown file between markers, atomically."""

from __future__ import annotations

import platform
from pathlib import Path

import torch
from adasparse._io import atomic_write_text

BENCHMARKS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
"""The page the timing benchmarks write their tables into."""


def machine() -> str:
    """The processor and torch version, for a table's caption."""
    return f"{platform.processor() or platform.machine()}, torch {torch.__version__}"


def write_section(path: Path, key: str, body: str) -> None:
    """Replace the text between ``<!-- begin:key -->`` and ``<!-- end:key -->`` (appended when absent)."""
    begin, end = f"<!-- begin:{key} -->", f"<!-- end:{key} -->"
    text = path.read_text() if path.exists() else ""
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + ("\n\n" if text else "") + block + "\n"
    atomic_write_text(path, text)


def publish(key: str, body: str, write: bool = True) -> None:
    """Print a timing table's section and, when ``write``, put it into :data:`BENCHMARKS_PAGE` under ``key``."""
    print(body)
    if write:
        write_section(BENCHMARKS_PAGE, key, body)
