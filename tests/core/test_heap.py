"""``returning_freed_memory``: large buffers freed inside it leave the resident set."""

from __future__ import annotations

from pathlib import Path

import pytest

from secateurs import heap

pytestmark = pytest.mark.skipif(heap._glibc() is None, reason="needs glibc's mallopt and malloc_trim")

MIB = 2**20


def _anon_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def test_buffers_freed_inside_go_back_although_live_ones_lie_between(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    # Each large buffer is followed by a small one that stays alive: in the heap, the
    # freed large ones would be holes that no trimming of its top returns. Freeing a
    # 16 MiB buffer first raises glibc's own threshold past 600 KiB, as a run does that
    # has freed large tensors.
    bytearray(16 * MIB)  # allocated and freed at once
    with heap.returning_freed_memory(threshold=256 * 1024):
        start = _anon_mib()
        pairs = [(bytearray(600 * 1024), bytearray(64)) for _ in range(200)]
        grown = _anon_mib() - start
        kept = [small for _, small in pairs]
        del pairs
        left = _anon_mib() - start
    assert grown > 100, f"the buffers did not take memory ({grown:.0f} MiB)"
    assert left < 10, f"{left:.0f} MiB of freed buffers stayed resident"
    assert len(kept) == 200
