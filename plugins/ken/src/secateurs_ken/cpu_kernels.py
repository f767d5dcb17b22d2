"""KEN's compiled CPU kernels (numba): the row sort and the greedy.

The greedy is sequential within a row (each choice depends on every earlier one), so the
batched tensor steps of :mod:`secateurs_ken.greedy_steps` pay torch's per-operation cost
``k`` times. Here each row runs its ``k`` choices in compiled code, with the free positions
kept as two path-halving "next free" forests (one per direction): a choice costs a few
memory accesses, amortised: a few µs per row, on one thread (a second thread loses more to
torch's spinning worker threads than it gains). Results are identical to the tensor
versions' (tests check both against the specification).
"""

from __future__ import annotations

import numba
import numpy as np
import torch

from secateurs_ken.matching import Matching


@numba.njit(cache=True)
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


@numba.njit(cache=True)
def _decode_keys(keys, values, xs, perm):
    """From sorted keys: ``perm`` (the entry indices) and ``xs`` (their values, float64)."""
    for r in range(keys.shape[0]):
        for i in range(keys.shape[1]):
            j = keys[r, i] & 0xFFFFFFFF
            perm[r, i] = j
            xs[r, i] = values[r, j]


def sort_rows_compiled(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.sort(rows, dim=1, stable=True)`` of float32 CPU rows, the values as float64:
    one (vectorized) numpy sort of 64-bit keys ``(order-preserving value bits, index)``."""
    values = rows.contiguous().numpy()
    keys = np.empty(values.shape, dtype=np.int64)
    _sort_keys(values, keys)
    keys.sort(axis=1)
    xs = np.empty(values.shape, dtype=np.float64)
    perm = np.empty(values.shape, dtype=np.int64)
    _decode_keys(keys, values, xs, perm)
    return torch.from_numpy(xs), torch.from_numpy(perm)


@numba.njit(cache=True)
def _root(parent: np.ndarray, i: int) -> int:
    """Follow ``parent`` from ``i`` to a fixed point, halving the path on the way."""
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@numba.njit(cache=True)
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
    _take_rows(*(a.contiguous().numpy() for a in (m.xs, m.perm, m.grid, m.order, m.count)), taken)
    return torch.from_numpy(taken)
