"""Returning freed memory to the operating system while an output is written.

glibc serves allocations below its mmap threshold from the heap and keeps them there when
they are freed; the threshold grows (up to 32 MiB) each time a larger mapped block is
freed. Saving an offloaded model brings one shard's tensors in after another, so the
freed shards pile up in the heap and the resident size grows shard by shard, past the
run's memory bound. ``returning_freed_memory`` (active while ``outputs.atomic_output_dir``
is written) trims the heap, then lowers the threshold, so each shard tensor is a mapping
of its own that ``free`` returns. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

MIB = 2**20
_M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
_GROWN_THRESHOLD = 32 * MIB  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit systems
_USER_SETTING = "MALLOC_MMAP_THRESHOLD_"  # the user's own threshold: left as it is


@cache
def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it has glibc's ``mallopt`` and ``malloc_trim``."""
    try:
        libc = ctypes.CDLL(None)
    except (OSError, TypeError):  # TypeError: platforms without a process-wide handle
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@contextmanager
def returning_freed_memory(threshold: int = MIB) -> Iterator[None]:
    """Returns the heap's free memory (``malloc_trim``, every arena), then, while active,
    maps allocations of at least ``threshold`` bytes on their own, so they go back to the
    system when freed. On leaving, the threshold is set to the largest value glibc's own
    adjustment reaches (later large allocations stay as fast as before) and the heap's
    free memory is returned again. A threshold the user set in the environment
    (``MALLOC_MMAP_THRESHOLD_``) is kept."""
    libc = _glibc()
    if libc is None:
        yield
        return
    own_threshold = _USER_SETTING not in os.environ
    libc.malloc_trim(0)
    if own_threshold:
        libc.mallopt(_M_MMAP_THRESHOLD, threshold)
    try:
        yield
    finally:
        if own_threshold:
            libc.mallopt(_M_MMAP_THRESHOLD, _GROWN_THRESHOLD)
        libc.malloc_trim(0)
