"""tts_runtime.heap: glibc keeps large blocks out of its heaps once told to, and trims.

Each check runs in a fresh interpreter: the mmap threshold is process-wide, and glibc's
dynamic threshold depends on what the process freed before."""

from __future__ import annotations

import ctypes.util
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc" or not ctypes.util.find_library("c"),
    reason="glibc only: the heap settings are glibc's (no-ops elsewhere)",
)

# Free one 8 MiB block (glibc's dynamic threshold then rises to 8 MiB), then ask for
# 2 MiB and print whether it got a mapping of its own (mallinfo2's hblks grew).
_MAPPED_AFTER_A_LARGE_FREE = """
import ctypes, ctypes.util, sys
from tts_runtime import heap

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "fixed":
    assert heap.keep_large_blocks_out_of_the_heap()
libc.free(libc.malloc(8 << 20))
before = libc.mallinfo2().hblks
block = libc.malloc(2 << 20)
print(libc.mallinfo2().hblks > before)
libc.free(block)
heap.trim()
"""


def _mapped(mode: str) -> bool:
    run = subprocess.run(
        [sys.executable, "-c", _MAPPED_AFTER_A_LARGE_FREE, mode],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return run.stdout.strip() == "True"


def test_large_blocks_get_their_own_mapping_once_the_threshold_is_fixed() -> None:
    assert _mapped("fixed")


def test_without_it_glibc_serves_them_from_the_heap_after_a_large_free() -> None:
    # What the fix is for: the default dynamic threshold would keep this block in a heap.
    assert not _mapped("default")
