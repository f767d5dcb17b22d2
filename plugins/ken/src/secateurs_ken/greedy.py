"""KEN's greedy matching of grid points to entries, for many rows at once.

Grid points visit in order of decreasing (rounded) density, ties by lower grid index, and
each takes the nearest not-yet-taken entry of its row, ties by lower entry index. Two
implementations give identical results: a compiled per-row kernel for the CPU
(:mod:`secateurs_ken.cpu_kernels`) and batched tensor steps for any device
(:mod:`secateurs_ken.greedy_steps`). ``tests/ken/test_select.py`` checks both against a
straightforward per-row loop.
"""

from __future__ import annotations

import math

import torch

from secateurs_ken.greedy_steps import take_in_steps
from secateurs_ken.matching import Matching


def visiting_order(density: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The grid indices of each row in visiting order: decreasing density, ties by grid
    index; invalid (padding) points after all valid ones."""
    key = torch.where(valid, -density, torch.full_like(density, math.inf))
    return torch.argsort(key, dim=1, stable=True)


def greedy_take(xs: torch.Tensor, perm: torch.Tensor, grid: torch.Tensor, order: torch.Tensor,
                valid: torch.Tensor, compiled: bool = False) -> torch.Tensor:
    """Entries taken by the sequential greedy: grid points in ``order`` each take the nearest
    untaken entry of their row (ties: lower index). ``xs``/``perm`` ``[R, n]``: the rows as
    :func:`secateurs_ken.select.sort_rows` returns them; ``grid``/``valid`` ``[R, K]``
    (``grid`` ascending float64; invalid points take nothing; at most ``n`` valid points per
    row); ``order`` ``[R, K]``: :func:`visiting_order`. Returns a bool mask ``[R, n]`` over
    the rows' original positions. ``compiled``: the CPU kernel instead of batched steps.
    """
    m = Matching(xs=xs, perm=perm, grid=grid, order=order, count=valid.sum(dim=1))
    if compiled:
        from secateurs_ken.cpu_kernels import take_compiled  # numba: imported on first use

        taken = take_compiled(m)
    else:
        taken = take_in_steps(m)
    return torch.zeros(xs.shape, dtype=torch.bool, device=xs.device).scatter_(1, perm, taken)
