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
from secateurs_ken.matching import prepare


def priority_ranks(density: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Visiting rank of every grid point: decreasing density, ties by grid index; invalid
    (padding) points rank after all valid ones."""
    key = torch.where(valid, -density, torch.full_like(density, math.inf))
    order = torch.argsort(key, dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return ranks


def greedy_take(xs: torch.Tensor, perm: torch.Tensor, grid: torch.Tensor, ranks: torch.Tensor,
                valid: torch.Tensor, compiled: bool = False) -> torch.Tensor:
    """Entries taken by the sequential greedy: grid points in increasing ``ranks`` order each
    take the nearest untaken entry of their row (ties: lower index). ``xs``/``perm``
    ``[R, n]``: the rows as :func:`secateurs_ken.matching.sort_rows` returns them;
    ``grid``/``ranks``/``valid`` ``[R, K]`` (``grid`` ascending; ``ranks``: a permutation of
    ``0..K-1`` per row; invalid points take nothing; at most ``n`` valid points per row).
    Returns a bool mask ``[R, n]`` over the rows' original positions. ``compiled``: the CPU
    kernel instead of batched steps.
    """
    m = prepare(xs, perm, grid, ranks, valid)
    if compiled:
        from secateurs_ken.cpu_kernels import take_compiled  # numba: imported on first use

        taken = take_compiled(m)
    else:
        taken = take_in_steps(m)
    return torch.zeros(xs.shape, dtype=torch.bool, device=xs.device).scatter_(1, perm, taken)
