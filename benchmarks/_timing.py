"""The timing benchmarks' allocator option: fix the C library's allocator before timing, unless asked not to."""

from __future__ import annotations

import argparse

from adasparse.app.latency import steady_allocator


def add_allocator_argument(parser: argparse.ArgumentParser) -> None:
    """``--default-allocator``: time with the allocator as the process left it."""
    parser.add_argument(
        "--default-allocator",
        action="store_true",
        help="time with the C library's allocator as the process left it (default: steady_allocator() first)",
    )


def fix_allocator(args: argparse.Namespace) -> None:
    """:func:`adasparse.app.latency.steady_allocator`, unless ``--default-allocator`` was given."""
    if not args.default_allocator:
        steady_allocator()
