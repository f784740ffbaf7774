"""The allocator fixed in its steady regime: a freed block is reused instead of mapped afresh."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

from adasparse.core.allocator import steady_allocator

_FAULTS = """
import ctypes, resource, sys
from adasparse.core.allocator import steady_allocator
fixed = steady_allocator() if sys.argv[1] == "steady" else None
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(4 << 20)
    ctypes.memset(block, 1, 4 << 20)
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(fixed, *faults)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_the_steady_allocator_reuses_a_freed_block_from_the_first_reuse() -> None:
    def faults(regime: str) -> list[str]:
        done = subprocess.run([sys.executable, "-c", _FAULTS, regime], capture_output=True, text=True, check=True)
        return done.stdout.split()

    default, steady = faults("default"), faults("steady")
    if steady[0] != "True":
        pytest.skip("not glibc")
    pages = (4 << 20) // resource.getpagesize()
    # By default the 4 MiB block is mapped afresh once more before the threshold has risen past it (a fault per page
    # again), then reused; fixed, it is reused from its first reuse on.
    assert int(default[2]) > pages // 2 and int(steady[2]) < pages // 8
    assert all(int(count) < pages // 8 for count in steady[2:] + default[3:])


def test_the_steady_allocator_checks_its_threshold() -> None:
    with pytest.raises(ValueError, match=r"mmap_threshold must be in \[0, 33554432\]"):
        steady_allocator(64 << 20)
