"""The greedy as a compiled CPU kernel (numba): one pass per row.

The greedy is sequential within a row (each choice depends on every earlier one), so batched
tensor steps (:mod:`secateurs_ken.greedy_steps`) pay torch's per-operation cost ``k`` times.
Here each row runs its ``k`` choices in compiled code, with the free positions kept as two
path-halving "next free" forests (one per direction): a choice costs a few memory accesses,
amortised. The result is identical to the steps' (tests check both against the
specification).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise

import numba
import numpy as np
import torch

from secateurs_ken.matching import Matching

_ROWS_PER_THREAD = 64  # fewer rows than this per thread are not worth a thread


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
    """The sorted positions taken by the greedy on ``m`` (bool ``[R, n]``; CPU tensors only).
    The rows are split over ``torch.get_num_threads()`` threads (the kernel releases the GIL)."""
    taken = np.zeros(tuple(m.xs.shape), dtype=np.bool_)
    arrays = [a.contiguous().numpy() for a in (m.xs, m.perm, m.grid, m.order, m.count)]
    parts = max(1, min(torch.get_num_threads(), len(taken) // _ROWS_PER_THREAD))
    bounds = np.linspace(0, len(taken), parts + 1).astype(int)
    slices = [slice(lo, hi) for lo, hi in pairwise(bounds)]
    if parts == 1:
        _take_rows(*arrays, taken)
    else:
        with ThreadPoolExecutor(parts) as pool:
            list(pool.map(lambda part: _take_rows(*(a[part] for a in arrays), taken[part]), slices))
    return torch.from_numpy(taken)
