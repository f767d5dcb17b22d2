"""The input of KEN's greedy, sorted once for both implementations.

The greedy visits grid points in a given order and gives each the nearest not-yet-taken entry
of its row (ties: lower entry index). Entries are worked on in sorted order, where "nearest
free" means the first free position on either side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Matching:
    """Rows sorted by value, with their grid points and the order to visit them in.

    ``xs`` float64 ``[R, n]``: each row's values, ascending (stable);
    ``perm`` int64 ``[R, n]``: the entry index at each sorted position;
    ``grid`` float64 ``[R, K]``: each row's grid points, ascending;
    ``order`` int64 ``[R, K]``: the grid index visited at each step; the first ``count[r]``
    steps are real, the rest padding; ``count`` int64 ``[R]``.
    """

    xs: torch.Tensor
    perm: torch.Tensor
    grid: torch.Tensor
    order: torch.Tensor
    count: torch.Tensor

    def points(self) -> torch.Tensor:
        """``[R, K]``: the grid points in visiting order."""
        return self.grid.gather(1, self.order)

    def group_start(self) -> torch.Tensor:
        """``[R, n]``: the first sorted position of each run of equal values."""
        n_rows, n = self.xs.shape
        positions = torch.arange(n, device=self.xs.device).expand(n_rows, n)
        new_value = torch.ones((n_rows, n), dtype=torch.bool, device=self.xs.device)
        new_value[:, 1:] = self.xs[:, 1:] != self.xs[:, :-1]
        return torch.where(new_value, positions, 0).cummax(dim=1).values


def prepare(rows: torch.Tensor, grid: torch.Tensor, ranks: torch.Tensor, valid: torch.Tensor) -> Matching:
    """The :class:`Matching` of ``rows`` ``[R, n]`` and their ascending ``grid`` ``[R, K]``,
    visited in increasing ``ranks`` (a permutation of ``0..K-1`` per row that ranks the
    ``valid`` points first)."""
    xs, perm = sort_rows(rows)
    order = torch.empty_like(ranks).scatter_(1, ranks, torch.arange(ranks.shape[1], device=ranks.device).expand_as(ranks))
    return Matching(xs=xs.to(torch.float64), perm=perm, grid=grid.to(torch.float64), order=order,
                    count=valid.sum(dim=1))


def sort_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.sort(rows, dim=1, stable=True)``, faster for float32 rows on the CPU: one
    (vectorized) numpy sort of 64-bit keys ``(order-preserving value bits, index)``."""
    if rows.device.type != "cpu" or rows.dtype != torch.float32:
        return torch.sort(rows, dim=1, stable=True)
    values = (rows + 0.0).numpy()  # -0.0 becomes +0.0: the two are equal values
    bits = values.view(np.int32).astype(np.int64)
    bits ^= (bits >> 31) & 0x7FFFFFFF  # negative floats: reverse their order
    keys = np.sort((bits << 32) | np.arange(rows.shape[1], dtype=np.int64), axis=1)
    perm = keys & 0xFFFFFFFF
    return torch.from_numpy(np.take_along_axis(values, perm, axis=1)), torch.from_numpy(perm)
