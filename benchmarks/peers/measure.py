"""Timing and peak memory of one phase of a process, with the standard library only, so
that both the secateurs child and the llm-compressor child (in its own venv) use it."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

THREADS = 2


def pin_threads(threads: int = THREADS) -> None:
    """Give torch ``threads`` intra-op threads (call before any work)."""
    import torch

    torch.set_num_threads(threads)


def _vm(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


@contextmanager
def measured(into: dict[str, float]) -> Iterator[None]:
    """Fill ``into`` with the phase's ``wall_s``, ``cpu_s`` (this process, all threads),
    ``rss_before_mib`` and ``peak_rss_mib`` (the kernel's high-water mark, reset at the
    start so the peak is the phase's own)."""
    Path("/proc/self/clear_refs").write_text("5")
    into["rss_before_mib"] = _vm("VmRSS")
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        yield
    finally:
        into["wall_s"] = time.perf_counter() - wall
        into["cpu_s"] = time.process_time() - cpu
        into["peak_rss_mib"] = _vm("VmHWM")
        into["load_average"] = os.getloadavg()[0]
