"""The C library's allocator fixed in the regime a long-running process settles in, before timing anything: what a
process allocated before then does not move the times it measures (docs/structured.md, the latency protocol)."""

from __future__ import annotations

import ctypes
import sys

__all__ = ["STEADY_MMAP_THRESHOLD", "steady_allocator"]

STEADY_MMAP_THRESHOLD = 32 << 20
"""Bytes below which :func:`steady_allocator` has glibc's ``malloc`` serve a block from its heap: the largest value
its dynamic threshold rises to on a 64-bit machine (``DEFAULT_MMAP_THRESHOLD_MAX``), and the largest ``mallopt``
accepts."""

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def steady_allocator(mmap_threshold: int = STEADY_MMAP_THRESHOLD) -> bool:
    """Fix glibc's ``malloc`` in the regime a long-running process settles in, for the rest of the process; returns
    whether it could (``False`` off Linux or with another C library, where nothing changes).

    By default glibc maps every block above a dynamic threshold (128 KiB at start) freshly from the kernel and
    returns it on ``free``; each such block freed raises the threshold to its size (at most 32 MiB) and the heap's
    trim threshold to twice that. A forward pass whose activations are above the threshold then pays a page fault
    per 4 KiB touched, on every pass, until the threshold has risen past them, and how far it has risen depends on
    what the process allocated before: the same two models timed in two processes can differ by the history of
    each. Fixed here: blocks below ``mmap_threshold`` come from the heap, and the heap keeps up to twice that
    free at its top instead of returning it (``mallopt(M_MMAP_THRESHOLD)`` and ``mallopt(M_TRIM_THRESHOLD)``, which
    also stop the dynamic adjustment). Call it before timing, as the latency benchmarks do.
    """
    if mmap_threshold < 0 or mmap_threshold > STEADY_MMAP_THRESHOLD:
        raise ValueError(f"mmap_threshold must be in [0, {STEADY_MMAP_THRESHOLD}] bytes, got {mmap_threshold}")
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (glibc only: mallopt's options differ elsewhere)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 * mmap_threshold))
