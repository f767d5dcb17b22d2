"""KEN's selection of the fine-tuned entries to keep, vectorized over rows.

Specification (ALGORITHMS.md §1, without the reference code's value-matching bug), per row
``x`` of width ``n`` and keep count ``k = min(k, n)``:

1. bandwidth ``h = |1.06 * std(x) * n ** (-1/5)|`` (population std), Gaussian kernel;
2. ``k`` evenly spaced grid points from ``min(x)`` to ``max(x)`` (``numpy.linspace``);
3. the kernel density of ``x`` at every grid point, rounded to an integer (as the
   published code does; ``round_density=False`` keeps it exact);
4. grid points visit in order of decreasing density (ties: lower grid index first) and
   each takes the nearest not-yet-taken entry (ties: lower entry index first).

Step 4 is serial dictatorship: with one common priority order it yields the unique stable
matching of grid points to entries. :func:`greedy_take` computes it without visiting the
points one by one: every round *speculates* a choice for all pending points (each takes its
nearest free entry; points heading for the same entry from the same side take the next free
entries in priority order), then *verifies* every speculation against the entries left by
the higher-priority speculations with range-maximum (sparse table) queries, and commits the
verified priority prefix plus the first failing point (whose verified choice is exact). A
round commits at least one point and usually hundreds; the result equals the sequential
greedy exactly (``tests/ken/test_select.py`` checks it against a straightforward loop).
"""

from __future__ import annotations

import math

import torch

from secateurs.errors import SecateursError

_NONE = torch.iinfo(torch.int64).max // 4  # "no speculation" marker in the priority arrays


def silverman_bandwidth(rows: torch.Tensor) -> torch.Tensor:
    """``|1.06 * std * n^(-1/5)|`` per row of ``[R, n]`` (population std), float64."""
    x = rows.to(torch.float64)
    return (1.06 * x.std(dim=1, correction=0) * x.shape[1] ** (-0.2)).abs()


def grid_density(
    rows: torch.Tensor, grid: torch.Tensor, bandwidth: torch.Tensor, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Gaussian kernel density of each row's values at its grid points (``[R, k]``).

    Summed in ``dtype`` (float32 is ~3x faster; its relative error ~1e-6 only matters for
    densities within that distance of a rounding boundary). Rows with zero bandwidth
    (constant rows) get density 0 everywhere.
    """
    h = torch.where(bandwidth > 0, bandwidth, torch.ones_like(bandwidth)).view(-1, 1, 1)
    z = grid.to(dtype).unsqueeze(2) - rows.to(dtype).unsqueeze(1)
    z.div_(h.to(dtype)).square_().mul_(-0.5).exp_()
    dens = z.sum(dim=2).to(torch.float64) / (rows.shape[1] * h.view(-1, 1) * math.sqrt(2 * math.pi))
    return torch.where(bandwidth.view(-1, 1) > 0, dens, torch.zeros_like(dens))


def priority_ranks(density: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Visiting rank of every grid point: decreasing density, ties by grid index; invalid
    (padding) points rank after all valid ones."""
    key = torch.where(valid, -density, torch.full_like(density, math.inf))
    order = torch.argsort(key, dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return ranks


class _RangeMax:
    """Sparse table over ``[R, n]`` int64 values answering "nearest position at or left
    (right) of ``p`` whose value is ``>= t``" for batches of queries in ``O(log n)`` steps."""

    def __init__(self, values: torch.Tensor) -> None:
        self.n = values.shape[1]
        self.levels = [values]
        span = 1
        while span * 2 <= self.n:
            prev = self.levels[-1]
            nxt = prev.clone()
            nxt[:, : self.n - span] = torch.maximum(prev[:, : self.n - span], prev[:, span:])
            self.levels.append(nxt)
            span *= 2

    def left(self, start: torch.Tensor, thresh: torch.Tensor) -> torch.Tensor:
        """Largest ``j <= start`` with ``value[j] >= thresh`` (``-1`` if none); ``[R, Q]``."""
        pos = start + 1
        for lvl in range(len(self.levels) - 1, -1, -1):
            cand = pos - (1 << lvl)
            ok = cand >= 0
            window = self.levels[lvl].gather(1, cand.clamp(min=0))
            pos = torch.where(ok & (window < thresh), cand, pos)
        return pos - 1

    def right(self, start: torch.Tensor, thresh: torch.Tensor) -> torch.Tensor:
        """Smallest ``j >= start`` with ``value[j] >= thresh`` (``n`` if none); ``[R, Q]``."""
        pos = start
        for lvl in range(len(self.levels) - 1, -1, -1):
            ok = pos + (1 << lvl) <= self.n
            window = self.levels[lvl].gather(1, pos.clamp(max=self.n - 1))
            pos = torch.where(ok & (window < thresh), pos + (1 << lvl), pos)
        return pos


def _nearest(
    table: _RangeMax,
    xs: torch.Tensor,
    perm: torch.Tensor,
    grid: torch.Tensor,
    thresh: torch.Tensor,
) -> torch.Tensor:
    """Sorted position of the nearest entry with value-array ``>= thresh`` to each grid
    point (ties: lower original index). ``xs``: sorted row values, ``perm``: their indices."""
    n = xs.shape[1]
    left = table.left(torch.searchsorted(xs, grid, right=True) - 1, thresh)
    found_l = left >= 0
    left_c = left.clamp(min=0)
    # among equal values the lowest original index is the leftmost free one of the group
    group = torch.searchsorted(xs, xs.gather(1, left_c), right=False)
    left = torch.where(found_l, table.right(group, thresh).clamp(max=n - 1), left_c)
    right = table.right(torch.searchsorted(xs, grid, right=False), thresh)
    found_r = right < n
    right = right.clamp(max=n - 1)
    inf = torch.full_like(grid, math.inf)
    d_l = torch.where(found_l, grid - xs.gather(1, left), inf)
    d_r = torch.where(found_r, xs.gather(1, right) - grid, inf)
    take_left = (d_l < d_r) | ((d_l == d_r) & (perm.gather(1, left) < perm.gather(1, right)))
    return torch.where(take_left, left, right)


def _speculate(
    taken: torch.Tensor, xs: torch.Tensor, perm: torch.Tensor, grid: torch.Tensor,
    ranks: torch.Tensor, pending: torch.Tensor,
) -> torch.Tensor:
    """A guess of every pending point's entry (sorted positions, ``[R, K]``)."""
    rows, n = xs.shape
    free_val = torch.where(taken, -1, 1)
    target = _nearest(_RangeMax(free_val), xs, perm, grid, torch.zeros_like(ranks))
    away = (xs.gather(1, target) >= grid).long()  # 1: continue rightwards, 0: leftwards
    # rank of each point among the pending points sharing (target, direction)
    kp = ranks.shape[1] + 1
    key = (target * 2 + away) * kp + ranks
    key = torch.where(pending, key, torch.full_like(key, _NONE))
    skey, order = torch.sort(key, dim=1)
    gid = skey // kp
    idx = torch.arange(key.shape[1], device=key.device).expand_as(key)
    starts = torch.ones_like(pending)
    starts[:, 1:] = gid[:, 1:] != gid[:, :-1]
    first = torch.where(starts, idx, torch.zeros_like(idx)).cummax(dim=1).values
    within = torch.empty_like(idx).scatter_(1, order, idx - first)
    # the within-th free entry from the target, in the point's direction
    free = ~taken
    free_idx = free.long().cumsum(dim=1) - 1
    nfree = free.sum(dim=1, keepdim=True)
    free_pos = torch.argsort((~free).to(torch.uint8), dim=1, stable=True)
    step = torch.where(away.bool(), within, -within)
    want = (free_idx.gather(1, target) + step).clamp(min=0)
    want = torch.minimum(want, nfree - 1)
    return free_pos.gather(1, want)


def greedy_take(rows: torch.Tensor, grid: torch.Tensor, ranks: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Entries taken by the sequential greedy: grid points in increasing ``ranks`` order each
    take the nearest untaken entry of their row (ties: lower index). ``rows`` ``[R, n]``,
    ``grid``/``ranks``/``valid`` ``[R, K]`` (invalid points take nothing; at most ``n``
    valid points per row). Returns a bool mask ``[R, n]``."""
    xs, perm = torch.sort(rows.to(torch.float64), dim=1, stable=True)
    taken = torch.zeros_like(xs, dtype=torch.bool)
    pending = valid.clone()
    active = torch.nonzero(pending.any(dim=1)).view(-1)
    while active.numel():
        a_xs, a_perm, a_grid = xs[active], perm[active], grid[active]
        a_ranks, a_pend, a_taken = ranks[active], pending[active], taken[active]
        guess = _speculate(a_taken, a_xs, a_perm, a_grid, a_ranks, a_pend)
        spec = torch.full_like(a_xs, _NONE, dtype=torch.int64)
        spec.scatter_reduce_(1, torch.where(a_pend, guess, 0), torch.where(a_pend, a_ranks, _NONE), "amin")
        spec = torch.where(a_taken, -1, spec)
        truth = _nearest(_RangeMax(spec), a_xs, a_perm, a_grid, a_ranks)
        wrong = a_pend & (truth != guess)
        cut = torch.where(wrong, a_ranks, _NONE).amin(dim=1, keepdim=True)
        commit = a_pend & (a_ranks <= cut)
        chosen = torch.where(a_ranks == cut, truth, guess)
        hits = torch.zeros_like(a_xs, dtype=torch.int64).scatter_add_(1, chosen, commit.long())
        a_taken = a_taken | (hits > 0)
        taken[active] = a_taken
        pending[active] = a_pend & ~commit
        active = active[pending[active].any(dim=1)]
    return torch.zeros_like(taken).scatter_(1, perm, taken)


def keep_per_row(k: int | torch.Tensor, rows: int, width: int) -> torch.Tensor:
    """Keep counts ``min(k, width)`` per row as int64 (CPU); ``k`` an int or ``[rows]``."""
    kt = torch.as_tensor(k, dtype=torch.int64).to("cpu").reshape(-1)
    if kt.numel() == 1:
        kt = kt.expand(rows)
    if kt.numel() != rows:
        raise SecateursError(f"got {kt.numel()} keep counts for {rows} rows")
    if (kt <= 0).any():
        raise SecateursError(f"k must be a positive number of entries per row, got {int(kt.min())}")
    return kt.clamp(max=width)


def ken_select(
    rows: torch.Tensor,
    k: int | torch.Tensor,
    *,
    round_density: bool = True,
    density_dtype: torch.dtype | None = None,
    chunk_elements: int = 1 << 24,
) -> torch.Tensor:
    """KEN keep-mask of ``rows`` ``[R, n]`` (bool, same shape and device): exactly
    ``min(k[r], n)`` entries per row, chosen as the module docstring specifies.

    ``k``: an int or one count per row. Rows are processed in chunks so that the density
    evaluation holds at most ``chunk_elements`` kernel values at a time.
    ``density_dtype`` defaults to the rows' dtype when it is float32 or wider, else float32.
    """
    if rows.dim() != 2:
        raise SecateursError(f"ken_select wants a [rows, width] tensor, got shape {tuple(rows.shape)}")
    n_rows, width = rows.shape
    keep = keep_per_row(k, n_rows, width)
    if not torch.isfinite(rows).all():
        raise SecateursError("KEN cannot select among non-finite values (NaN or inf in the tensor)")
    dtype = density_dtype or (rows.dtype if rows.dtype in (torch.float32, torch.float64) else torch.float32)
    out = torch.zeros(rows.shape, dtype=torch.bool, device=rows.device)
    kmax = int(keep.max()) if n_rows else 0
    step = max(1, chunk_elements // max(1, kmax * width))
    for start in range(0, n_rows, step):
        chunk = rows[start : start + step].to(torch.float64)
        kc = keep[start : start + step].to(rows.device)
        out[start : start + step] = _select_chunk(chunk, kc, round_density, dtype)
    return out


def _select_chunk(x: torch.Tensor, keep: torch.Tensor, round_density: bool, dtype: torch.dtype) -> torch.Tensor:
    kmax = int(keep.max())
    valid = torch.arange(kmax, device=x.device).view(1, -1) < keep.view(-1, 1)
    lo, hi = x.min(dim=1).values, x.max(dim=1).values
    # rows with fewer points: their own linspace, padded (padding never takes an entry)
    grid = grid_points(lo, hi, keep, kmax)
    dens = grid_density(x, grid, silverman_bandwidth(x), dtype)
    if round_density:
        dens = torch.round(dens)
    return greedy_take(x, grid, priority_ranks(dens, valid), valid)


def grid_points(lo: torch.Tensor, hi: torch.Tensor, keep: torch.Tensor, kmax: int) -> torch.Tensor:
    """``numpy.linspace(lo[r], hi[r], keep[r])`` bit for bit, padded to ``kmax`` columns
    (padding = ``hi``); float64 ``[R, kmax]``."""
    idx = torch.arange(kmax, dtype=torch.float64, device=lo.device).view(1, -1)
    div = (keep - 1).clamp(min=1).to(torch.float64).view(-1, 1)
    grid = idx * ((hi - lo).view(-1, 1) / div) + lo.view(-1, 1)
    last = (keep - 1).view(-1, 1)
    grid = torch.where(idx >= last, hi.view(-1, 1), grid)
    return torch.where(keep.view(-1, 1) == 1, lo.view(-1, 1).expand_as(grid), grid)
