"""glibc heap settings for the "shrink" memory mode (docs/runtime.md, "Memory").

onnxruntime's arena gives its extra chunks back after every run, and finished requests
free their audio and encoding buffers, but all of that goes back to glibc, not to the
kernel. glibc keeps it: by default its mmap threshold rises to the size of the largest
block freed (up to 32 MiB), so later large buffers come from heaps that are trimmed only
when their top is free, and each thread may have a heap of its own. A server that
batches long segments then creeps up by a few tens of MiB per hundred requests (measured
with `tts-runtime soak`, batch 8). Two calls fix that, both no-ops where the C library
is not glibc (musl has neither):

- `keep_large_blocks_out_of_the_heap()`: a fixed 1 MiB mmap threshold, so every block of
  1 MiB and more is its own mapping and goes back to the kernel when it is freed;
- `trim()`: malloc_trim(0), which hands the free pages of every heap back, after each
  engine run.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any

M_MMAP_THRESHOLD = -3  # mallopt() parameter number, from glibc's malloc.h
MMAP_THRESHOLD_BYTES = 1 << 20


@functools.cache
def _glibc() -> Any | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError, TypeError):
        return None
    return libc


def keep_large_blocks_out_of_the_heap() -> bool:
    """Fix glibc's mmap threshold at 1 MiB (process-wide); False where it cannot."""
    libc = _glibc()
    return bool(libc is not None and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def trim() -> None:
    """Give the free pages of every glibc heap back to the kernel."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
