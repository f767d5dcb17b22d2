"""KEN's selection of the fine-tuned entries to keep, vectorized over rows.

Specification (ALGORITHMS.md §1, without the reference code's value-matching bug), per row
``x`` of width ``n`` and keep count ``k = min(k, n)``:

1. bandwidth ``h = |1.06 * std(x) * n ** (-1/5)|`` (population std), Gaussian kernel;
2. ``k`` evenly spaced grid points from ``min(x)`` to ``max(x)`` (``numpy.linspace``);
3. the kernel density of ``x`` at every grid point, rounded to an integer (as the
   published code does; ``round_density=False`` keeps it exact);
4. grid points visit in order of decreasing density (ties: lower grid index first) and
   each takes the nearest not-yet-taken entry (ties: lower entry index first).

Step 4 is sequential by nature (each point's choice depends on every earlier one), so
:func:`greedy_take` runs it as ``k`` steps that each advance *all rows at once*: per step a
handful of tensor operations over the rows, whatever their width. The free entries of each
row are kept as two union-find forests over the sorted values (nearest free entry to the
right and to the left, found with path halving), so a step costs ``O(rows)`` work, not
``O(rows * width)``. Callers batch many rows per call (``ken_state`` concatenates every
tensor of the same row width); ``tests/ken/test_select.py`` checks the result against a
straightforward per-row loop.
"""

from __future__ import annotations

import math

import torch

from secateurs.errors import SecateursError

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


_SPAN = 16.0  # width of a block of grid points, in bandwidths
_WINDOW = 9.0  # entries farther than this many bandwidths from a block contribute < e^-40
_FINE = 2.0  # the span of the ``Q2`` fine offsets, in bandwidths (keeps the factors in range)


def grid_step(lo: torch.Tensor, hi: torch.Tensor, keep: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The spacing of each row's grid points, in bandwidths (``[R]``)."""
    return (hi - lo) / (keep - 1).clamp(min=1) / h


def _block_shape(widest_step: float, kmax: int) -> tuple[int, int, int]:
    """``(Q1, Q2, blocks)`` for grid steps up to ``widest_step`` bandwidths."""
    widest = max(widest_step, 1e-12)
    blocks = -(-kmax // min(kmax, max(1, int(_SPAN / widest))))
    per_block = -(-kmax // blocks)  # spread the points evenly over the blocks
    q2 = max(1, min(round(math.sqrt(per_block)), int(_FINE / widest)))
    q1 = -(-per_block // q2)
    return q1, q2, -(-kmax // (q1 * q2))


def fast_grid_density(rows: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, keep: torch.Tensor, kmax: int,
                      bandwidth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel density at the :func:`grid_points` of ``rows`` ``[R, n]`` (float64) with
    float32 matrix products, and a bound on its error (both ``[R, kmax]``, float64).

    The grid points of a row are evenly spaced (step ``d``, in bandwidths), so within a block
    of ``Q1 * Q2`` consecutive points centred at ``o`` the kernel factorises: with
    ``t = s1 + s2`` (``s1 = (j1*Q2 - c) * d``, ``s2 = j2 * d``) and ``u = (x - o) / h``,
    ``exp(-(t - u)^2 / 2) = exp(-t^2/2) * exp(s1*u - u^2/2) * exp(s2*u)``, and the sum over
    the entries is the product of a ``[Q1, n]`` and an ``[n, Q2]`` table: ``Q1 + Q2``
    exponentials per entry and block instead of ``Q1 * Q2``. Blocks span at most ``_SPAN``
    bandwidths and entries beyond ``_WINDOW`` of a block are dropped, which keeps every
    exponent within [-80, 40] (the lower end clamped), safe in float32.
    """
    n_rows, n = rows.shape
    dev = rows.device
    h = torch.where(bandwidth > 0, bandwidth, torch.ones_like(bandwidth))
    step = grid_step(lo, hi, keep, h).view(-1, 1)
    q1, q2, blocks = _block_shape(float(step.max()), kmax)
    size = q1 * q2
    centre = (size - 1) / 2
    origin = lo.view(-1, 1) + (torch.arange(blocks, device=dev).view(1, -1) * size + centre) * step * h.view(-1, 1)
    u = (rows.view(n_rows, 1, n) - origin.unsqueeze(2)) / h.view(-1, 1, 1)  # [R, B, n]
    reach = (centre * step + _WINDOW).unsqueeze(2)
    inside = u.abs() <= reach
    half_sq = torch.where(inside, -0.5 * u.square(), -math.inf).to(torch.float32).unsqueeze(2)
    u = torch.where(inside, u, 0.0).to(torch.float32).unsqueeze(2)
    j = torch.arange(max(q1, q2), dtype=torch.float64, device=dev)
    s1 = ((j[:q1] * q2 - centre) * step).to(torch.float32).view(n_rows, 1, q1, 1)
    s2 = (j[:q2] * step).to(torch.float32).view(n_rows, 1, q2, 1)
    # [R, B, Q1, n]; floored at e^-80 (clear of float32 denormals, which are slow; an entry
    # that far from every point of its row of the block contributes < e^-40 either way)
    a = torch.addcmul(half_sq, s1, u).clamp_(min=-80.0).exp_()
    c = (s2 * u).exp_()  # [R, B, Q2, n]
    sums = torch.matmul(a, c.transpose(2, 3)).reshape(n_rows, blocks * size)[:, :kmax]
    local = torch.arange(blocks * size, dtype=torch.float64, device=dev)[:kmax] % size
    t = (local.view(1, -1) - centre) * step
    dens = sums.to(torch.float64) * torch.exp(-0.5 * t.square()) / (n * h.view(-1, 1) * math.sqrt(2 * math.pi))
    dens = torch.where(bandwidth.view(-1, 1) > 0, dens, torch.zeros_like(dens))
    # float32 error, in ulps of each term: the two exponents are off by at most
    # 3|s1 u| + |u^2/2| + |e| and 3|s2 u| + |e| ulps (absolute), each exp adds 1; the sum of
    # n positive terms adds n. The dropped entries add < e^-40 per entry.
    u_max = float(reach.max())
    s1_max, s2_max = float(s1.abs().max()), float(s2.abs().max())
    ulps = n + 4 * s1_max * u_max + 1.5 * u_max**2 + 4 * s2_max * u_max + 8
    bound = dens * (ulps * 2.0**-24) + math.exp(-40) / (h.view(-1, 1) * math.sqrt(2 * math.pi))
    return dens, bound


def priority_ranks(density: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Visiting rank of every grid point: decreasing density, ties by grid index; invalid
    (padding) points rank after all valid ones."""
    key = torch.where(valid, -density, torch.full_like(density, math.inf))
    order = torch.argsort(key, dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return ranks


_SHIFT = 5
_BITS = 1 << _SHIFT  # positions per word (32-bit words in int64: no sign-bit trouble)
_LOW = _BITS - 1
_FULL = (1 << _BITS) - 1


_DE_BRUIJN = 0x077CB531  # B(2, 5): the top 5 bits of (2^i * it) mod 2^32 differ for every i < 32
_DE_BRUIJN_POSITION: dict[torch.device, torch.Tensor] = {}


def _lowest_bit(m: torch.Tensor) -> torch.Tensor:
    """Index of the lowest set bit of each word ``m`` (de Bruijn multiplication: integer
    operations only). Junk where ``m == 0``."""
    table = _DE_BRUIJN_POSITION.get(m.device)
    if table is None:
        i = torch.arange(_BITS, dtype=torch.int64)
        table = torch.empty(_BITS, dtype=torch.int64).index_copy_(0, (((1 << i) * _DE_BRUIJN) & _FULL) >> 27, i)
        table = _DE_BRUIJN_POSITION.setdefault(m.device, table.to(m.device))
    return table.index_select(0, (((m & -m) * _DE_BRUIJN) & _FULL) >> 27)


class _FreeSet:
    """The free (untaken) positions ``0 .. n-1`` of every row as a hierarchy of bit sets:
    level 0 holds one bit per position, each higher level one bit per non-empty word of the
    level below, up to a single word. Each row is stored twice, as is and mirrored
    (position ``i`` at ``n - 1 - i``), so that the nearest free entry on either side is one
    batched "next free at or after" query. A query or a take costs a fixed number of tensor
    operations over the rows (one word per level), without loops over entries. Each row's
    words sit between two empty guard words, so queries just past either end need no bounds
    checks."""

    def __init__(self, n_rows: int, n: int, device: torch.device) -> None:
        self.n, self.n_rows = n, n_rows
        self.levels: list[torch.Tensor] = []  # flat [2 * n_rows * (words + 2)] each
        self.bases: list[torch.Tensor] = []  # index of each (row, copy)'s word 0
        self.words: list[int] = []
        bit = torch.ones(_BITS, dtype=torch.int64, device=device) << torch.arange(_BITS, device=device)
        self.bit, self.at_or_above = bit, _FULL ^ (bit - 1)
        count = n
        while True:
            words = -(-count // _BITS)
            full = torch.arange(words * _BITS, device=device).view(words, _BITS) < count
            word = torch.zeros(words + 2, dtype=torch.int64, device=device)
            word[1:-1] = (full.to(torch.int64) * bit).sum(dim=1)
            self.levels.append(word.repeat(2 * n_rows))
            self.bases.append(torch.arange(2 * n_rows, device=device) * (words + 2) + 1)
            self.words.append(words)
            if words == 1:
                break
            count = words

    def _next(self, q: torch.Tensor, bases: list[torch.Tensor]) -> torch.Tensor:
        """Smallest free position ``>= q`` in the stored rows whose word-0 indices per level
        are ``bases`` (``n`` if none)."""
        result = torch.full_like(q, self.n)
        done = torch.zeros_like(q, dtype=torch.bool)
        for level in range(len(self.words)):
            w = q >> _SHIFT
            m = self.levels[level].index_select(0, bases[level] + w) & self.at_or_above.index_select(0, q & _LOW)
            hit = (m != 0) & ~done
            idx = (w << _SHIFT) + _lowest_bit(m)
            for lower in range(level - 1, -1, -1):  # descend (junk for rows without a hit: clamp)
                word = self.levels[lower].index_select(0, bases[lower] + idx.clamp(-1, self.words[lower]))
                idx = (idx << _SHIFT) + _lowest_bit(word)
            result = torch.where(hit, idx, result)
            done |= hit
            if bool(done.all()):
                break
            q = w + 1
        return result

    def next_free(self, p: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Smallest free position ``>= p`` in each of ``rows`` (``n`` if none); ``p`` in ``[0, n]``."""
        return self._next(p, [b.index_select(0, rows) for b in self.bases])

    def nearest(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(largest free < p or -1, smallest free >= p or n)`` per row; ``p`` in ``[0, n]``."""
        both = self._next(torch.cat([p, self.n - p]), self.bases)
        return self.n - 1 - both[self.n_rows :], both[: self.n_rows]

    def take(self, positions: torch.Tensor, live: torch.Tensor | None = None) -> None:
        """Mark ``positions`` (one per row) taken; rows with ``live`` False are left alone."""
        q = torch.cat([positions, self.n - 1 - positions])
        clear = None if live is None else live.repeat(2)
        for level in range(len(self.words)):
            w = q >> _SHIFT
            at = self.bases[level] + w
            word = self.levels[level].index_select(0, at)
            new = word & ~self.bit.index_select(0, q & _LOW)
            if clear is not None:
                new = torch.where(clear, new, word)
            self.levels[level].index_copy_(0, at, new)
            emptied = new == 0
            clear = emptied if clear is None else clear & emptied
            if not bool(clear.any()):
                break
            q = w

    def taken(self) -> torch.Tensor:
        """Bool ``[n_rows, n]``: True where taken."""
        words = self.levels[0].view(2 * self.n_rows, -1)[: self.n_rows, 1:-1]
        bits = (words.unsqueeze(2) >> torch.arange(_BITS, device=words.device)) & 1
        return bits.reshape(self.n_rows, -1)[:, : self.n] == 0


def greedy_take(rows: torch.Tensor, grid: torch.Tensor, ranks: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Entries taken by the sequential greedy: grid points in increasing ``ranks`` order each
    take the nearest untaken entry of their row (ties: lower index). ``rows`` ``[R, n]``,
    ``grid``/``ranks``/``valid`` ``[R, K]`` (``ranks``: a permutation of ``0..K-1`` per row;
    invalid points take nothing; at most ``n`` valid points per row). Returns a bool mask
    ``[R, n]``."""
    xs, perm = torch.sort(rows, dim=1, stable=True)  # (float32 rows sort faster, same order)
    n_rows, n = xs.shape
    dev = xs.device
    order = torch.empty_like(ranks).scatter_(1, ranks, torch.arange(ranks.shape[1], device=dev).expand_as(ranks))
    # one contiguous row per step: [K, R]
    points = grid.to(torch.float64).gather(1, order).t().contiguous()
    live = valid.gather(1, order).t().contiguous()
    right_of = torch.searchsorted(xs.to(torch.float64), points.t().contiguous()).t().contiguous()  # first entry >= point
    all_live = live.all(dim=1).tolist()
    free = _FreeSet(n_rows, n, dev)
    # sorted values with sentinels at positions -1 (-inf) and n (+inf): a missing neighbour
    # is infinitely far; flat index of (row, position) = row * (n + 2) + 1 + position
    padded = torch.full((n_rows, n + 2), math.inf, dtype=torch.float64, device=dev)
    padded[:, 0] = -math.inf
    padded[:, 1:-1] = xs
    flat_xs = padded.view(-1)
    flat_perm = torch.cat([perm[:, :1], perm, perm[:, -1:]], dim=1).reshape(-1)
    origin = torch.arange(n_rows, device=dev) * (n + 2) + 1
    same = xs[:, 1:] == xs[:, :-1]
    group_start = None
    if bool(same.any()):  # first sorted position of each run of equal values (-1 at -1)
        positions = torch.arange(-1, n + 1, device=dev).expand(n_rows, n + 2)
        starts = torch.ones((n_rows, n + 2), dtype=torch.bool, device=dev)
        starts[:, 2:-1] = ~same
        group_start = torch.where(starts, positions, -1).cummax(dim=1).values.reshape(-1)
    for t in range(points.shape[0]):
        g = points[t]
        left, right = free.nearest(right_of[t])
        if group_start is not None:  # among equal values the lowest index is the leftmost free
            first = group_start.index_select(0, origin + left)
            moved = torch.nonzero(first != left).view(-1)
            if moved.numel():
                left = left.index_copy(0, moved, free.next_free(first.index_select(0, moved), moved))
        at_left, at_right = origin + left, origin + right
        d_left = g - flat_xs.index_select(0, at_left)
        d_right = flat_xs.index_select(0, at_right) - g
        take_left = d_left < d_right
        tie = d_left == d_right
        if bool(tie.any()):
            take_left |= tie & (flat_perm.index_select(0, at_left) < flat_perm.index_select(0, at_right))
        chosen = torch.where(take_left, left, right)
        free.take(chosen, None if all_live[t] else live[t])
    return torch.zeros((n_rows, n), dtype=torch.bool, device=dev).scatter_(1, perm, free.taken())


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
    chunk_elements: int = 1 << 23,
) -> torch.Tensor:
    """KEN keep-mask of ``rows`` ``[R, n]`` (bool, same shape and device): exactly
    ``min(k[r], n)`` entries per row, chosen as the module docstring specifies.

    ``k``: an int or one count per row. Rows are processed in chunks of at most
    ``chunk_elements`` entries (memory stays ~50 bytes per entry of a chunk); larger chunks
    run faster, since the greedy advances all rows of a chunk together.
    """
    if rows.dim() != 2:
        raise SecateursError(f"ken_select wants a [rows, width] tensor, got shape {tuple(rows.shape)}")
    n_rows, width = rows.shape
    keep = keep_per_row(k, n_rows, width)
    if not torch.isfinite(rows).all():
        raise SecateursError("KEN cannot select among non-finite values (NaN or inf in the tensor)")
    out = torch.zeros(rows.shape, dtype=torch.bool, device=rows.device)
    step = max(1, chunk_elements // max(1, width))
    for start in range(0, n_rows, step):
        chunk = rows[start : start + step].detach()
        if chunk.dtype not in (torch.float32, torch.float64):
            chunk = chunk.to(torch.float32)
        out[start : start + step] = _select_chunk(chunk, keep[start : start + step].to(rows.device), round_density)
    return out


def _select_chunk(rows: torch.Tensor, keep: torch.Tensor, round_density: bool) -> torch.Tensor:
    x = rows.to(torch.float64)
    kmax = int(keep.max())
    valid = torch.arange(kmax, device=x.device).view(1, -1) < keep.view(-1, 1)
    lo, hi = x.min(dim=1).values, x.max(dim=1).values
    # rows with fewer points: their own linspace, padded (padding never takes an entry)
    grid = grid_points(lo, hi, keep, kmax)
    h = silverman_bandwidth(x)
    dens = rounded_density(x, grid, lo, hi, keep, h) if round_density else _exact_density(x, grid, h)
    return greedy_take(rows, grid, priority_ranks(dens, valid), valid)


def rounded_density(
    x: torch.Tensor, grid: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, keep: torch.Tensor, h: torch.Tensor
) -> torch.Tensor:
    """``round(density)`` at the grid points, equal to rounding the float64 density: the fast
    float32 density decides every point farther than its error bound from a rounding
    boundary; the few others are recomputed directly in float64."""
    kmax, n = grid.shape[1], x.shape[1]
    h_safe = torch.where(h > 0, h, torch.ones_like(h))
    # rows with similar grid steps share a block shape (one odd row must not shrink the blocks
    # of all the others): sorted by step, in chunks of ~2^22 table entries
    step = grid_step(lo, hi, keep, h_safe)
    order = torch.argsort(step)
    dens = torch.empty(grid.shape, dtype=torch.float64, device=x.device)
    bound = torch.empty_like(dens)
    def table_entries(last: int) -> int:  # per row, for rows up to sorted position ``last``
        q1, q2, blocks = _block_shape(float(step[order[last]]), kmax)
        return blocks * (q1 + q2) * n

    start = 0
    while start < len(order):
        count = max(1, min(len(order) - start, (1 << 22) // table_entries(start)))
        while count > 1 and count * table_entries(start + count - 1) > 1 << 22:
            count //= 2
        idx = order[start : start + count]
        dens[idx], bound[idx] = fast_grid_density(x[idx], lo[idx], hi[idx], keep[idx], kmax, h[idx])
        start += count
    unsure = (dens - torch.floor(dens) - 0.5).abs() <= bound
    r, j = torch.nonzero(unsure, as_tuple=True)
    if r.numel():
        exact = grid_density(x[r], grid[r, j].view(-1, 1), h[r], torch.float64)
        dens[r, j] = exact.view(-1)
    return torch.round(dens)


def _exact_density(x: torch.Tensor, grid: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The float64 density at every grid point, directly (for unrounded priorities)."""
    per = max(1, (1 << 22) // max(1, x.shape[1] * grid.shape[1]))
    return torch.cat([grid_density(x[s : s + per], grid[s : s + per], h[s : s + per], torch.float64)
                      for s in range(0, x.shape[0], per)])


def grid_points(lo: torch.Tensor, hi: torch.Tensor, keep: torch.Tensor, kmax: int) -> torch.Tensor:
    """``numpy.linspace(lo[r], hi[r], keep[r])`` bit for bit, padded to ``kmax`` columns
    (padding = ``hi``); float64 ``[R, kmax]``."""
    idx = torch.arange(kmax, dtype=torch.float64, device=lo.device).view(1, -1)
    div = (keep - 1).clamp(min=1).to(torch.float64).view(-1, 1)
    grid = idx * ((hi - lo).view(-1, 1) / div) + lo.view(-1, 1)
    last = (keep - 1).view(-1, 1)
    grid = torch.where(idx >= last, hi.view(-1, 1), grid)
    return torch.where(keep.view(-1, 1) == 1, lo.view(-1, 1).expand_as(grid), grid)
