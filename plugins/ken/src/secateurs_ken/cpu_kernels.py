"""KEN's compiled CPU kernels (numba): the row sort and the greedy.

The greedy is sequential within a row (each choice depends on every earlier one), so the
batched tensor steps of :mod:`secateurs_ken.greedy_steps` pay torch's per-operation cost
``k`` times. Here each row runs its ``k`` choices in compiled code, with the free positions
kept as two path-halving "next free" forests (one per direction): a choice costs a few
memory accesses, amortised. Rows are split over torch's threads (the kernels release the
GIL). Results are identical to the tensor versions' (tests check both against the
specification).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise

import numba
import numpy as np
import torch

from secateurs_ken.matching import Matching


def _over_row_slices(kernel: Callable[..., None], arrays: Sequence[np.ndarray], min_rows: int) -> None:
    """``kernel(*(a[part] for a in arrays))`` for slices ``part`` of the rows (the first axis
    of every array) that together cover all rows, at least ``min_rows`` rows each (fewer are
    not worth a thread); the kernel writes its results into some of ``arrays``."""
    n_rows = len(arrays[0])
    parts = max(1, min(torch.get_num_threads(), n_rows // min_rows))
    if parts == 1:
        kernel(*arrays)
        return
    bounds = np.linspace(0, n_rows, parts + 1).astype(int)
    with ThreadPoolExecutor(parts) as pool:
        list(pool.map(lambda lo_hi: kernel(*(a[slice(*lo_hi)] for a in arrays)), pairwise(bounds)))


@numba.njit(cache=True, nogil=True)
def _sort_keys(values, keys):
    """``keys[r, i]``: the order-preserving bits of ``values[r, i]`` (float32; -0.0 as +0.0)
    in the high 32 bits and ``i`` in the low ones, so that sorting the keys is a stable
    sort of the values."""
    bits = values.view(np.int32)
    for r in range(values.shape[0]):
        for i in range(values.shape[1]):
            b = np.int64(bits[r, i])
            if b == -(1 << 31):  # -0.0
                b = 0
            elif b < 0:  # negative floats: reverse their order
                b ^= 0x7FFFFFFF
            keys[r, i] = (b << 32) | i


@numba.njit(cache=True, nogil=True)
def _decode_keys(keys, values, xs, perm):
    for r in range(keys.shape[0]):
        for i in range(keys.shape[1]):
            j = keys[r, i] & 0xFFFFFFFF
            perm[r, i] = j
            xs[r, i] = values[r, j]


def sort_rows_compiled(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.sort(rows, dim=1, stable=True)`` of float32 CPU rows, the values as float64:
    one (vectorized) numpy sort of 64-bit keys ``(order-preserving value bits, index)``."""
    values = rows.contiguous().numpy()
    min_rows = -(-(1 << 20) // values.shape[1])  # a thread per ~1M entries (~1 ms)
    keys = np.empty(values.shape, dtype=np.int64)
    _over_row_slices(_sort_keys, [values, keys], min_rows)
    keys.sort(axis=1)
    xs = np.empty(values.shape, dtype=np.float64)
    perm = np.empty(values.shape, dtype=np.int64)
    _over_row_slices(_decode_keys, [keys, values, xs, perm], min_rows)
    return torch.from_numpy(xs), torch.from_numpy(perm)


@numba.njit(cache=True, nogil=True)
def _root(parent: np.ndarray, i: int) -> int:
    """Follow ``parent`` from ``i`` to a fixed point, halving the path on the way."""
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@numba.njit(cache=True, nogil=True)
def _take_rows(xs, perm, grid, order, count, taken):
    n_rows, n = xs.shape
    after = np.empty(n + 1, np.int64)  # after[i] == i: position i is free (or i == n)
    before = np.empty(n + 1, np.int64)  # before[i] == i: position i - 1 is free (or i == 0)
    first = np.empty(n, np.int64)  # the first position of each run of equal values
    right_of = np.empty(grid.shape[1], np.int64)  # the first position >= each grid point
    for r in range(n_rows):
        x, index, g_row = xs[r], perm[r], grid[r]
        for i in range(n + 1):
            after[i] = i
            before[i] = i
        first[0] = 0
        for i in range(1, n):
            first[i] = first[i - 1] if x[i] == x[i - 1] else i
        p = 0
        for j in range(len(g_row)):  # both ascending: one merge
            while p < n and x[p] < g_row[j]:
                p += 1
            right_of[j] = p
        for t in range(count[r]):
            j = order[r, t]
            g = g_row[j]
            p = right_of[j]
            right = _root(after, p)
            left = _root(before, p) - 1
            if left >= 0 and first[left] < left:  # among equal values the lowest index is the leftmost free
                left = _root(after, first[left])
            d_left = g - x[left] if left >= 0 else np.inf
            d_right = x[right] - g if right < n else np.inf
            if d_left < d_right or (d_left == d_right and index[left] < index[right]):
                chosen = left
            else:
                chosen = right
            taken[r, chosen] = True
            after[chosen] = chosen + 1
            before[chosen + 1] = chosen



def take_compiled(m: Matching) -> torch.Tensor:
    """The sorted positions taken by the greedy on ``m`` (bool ``[R, n]``; CPU tensors only)."""
    taken = np.zeros(tuple(m.xs.shape), dtype=np.bool_)
    arrays = [a.contiguous().numpy() for a in (m.xs, m.perm, m.grid, m.order, m.count)]
    _over_row_slices(_take_rows, [*arrays, taken], min_rows=64)  # a row takes a few µs
    return torch.from_numpy(taken)
