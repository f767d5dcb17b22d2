"""The input of KEN's greedy, sorted once (``secateurs_ken.select.sort_rows``) for both
implementations.

The greedy visits grid points in a given order and gives each the nearest not-yet-taken entry
of its row (ties: lower entry index). Entries are worked on in sorted order, where "nearest
free" means the first free position on either side.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Matching:
    """Rows sorted by value, with their grid points and the order to visit them in.

    ``xs`` float64 ``[R, n]``: each row's values, ascending (stable);
    ``perm`` int64 ``[R, n]``: the entry index at each sorted position;
    ``grid`` float64 ``[R, K]``: each row's grid points, ascending;
    ``order`` int64 ``[R, K]``: the grid index visited at each step; the first ``count[r]``
    steps are real, the rest padding; ``count`` int64 ``[R]``. Built by
    :func:`secateurs_ken.greedy.greedy_take`.
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
