"""KEN's kernel density at the grid points of many rows at once.

Per row ``x`` of width ``n`` with ``k`` grid points (ALGORITHMS.md §1): Silverman bandwidth
``h = |1.06 * std(x) * n ** (-1/5)|``, ``k`` evenly spaced points from ``min(x)`` to
``max(x)`` (``numpy.linspace``), the Gaussian kernel density at each, rounded to an integer
as the published code does. :func:`rounded_density` computes it fast in float32 with a
proven error bound and settles the few points near a rounding boundary in float64, so the
result equals rounding the float64 density.
"""

from __future__ import annotations

import math
import threading

import torch


def silverman_bandwidth(rows: torch.Tensor) -> torch.Tensor:
    """``|1.06 * std * n^(-1/5)|`` per row of ``[R, n]`` (population std), float64."""
    x = rows.to(torch.float64)
    return (1.06 * x.std(dim=1, correction=0) * x.shape[1] ** (-0.2)).abs()


def grid_points(lo: torch.Tensor, hi: torch.Tensor, keep: torch.Tensor, kmax: int) -> torch.Tensor:
    """``numpy.linspace(lo[r], hi[r], keep[r])`` bit for bit, padded to ``kmax`` columns
    (padding = ``hi``); float64 ``[R, kmax]``."""
    idx = torch.arange(kmax, dtype=torch.float64, device=lo.device).view(1, -1)
    div = (keep - 1).clamp(min=1).to(torch.float64).view(-1, 1)
    grid = idx * ((hi - lo).view(-1, 1) / div) + lo.view(-1, 1)
    last = (keep - 1).view(-1, 1)
    grid = torch.where(idx >= last, hi.view(-1, 1), grid)
    return torch.where(keep.view(-1, 1) == 1, lo.view(-1, 1).expand_as(grid), grid)


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


_CHUNK = 1 << 21  # table entries per chunk of rows (measured fastest on the CPU)
_SCRATCH_KEPT = 1 << 22  # float32 entries (16 MiB) kept between calls, per thread and device
_SCRATCH = threading.local()


def _scratch(unit: int, counts: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    """Consecutive float32 buffers of ``count * unit`` entries each, carved from one buffer
    that this thread keeps between calls when it is at most ``_SCRATCH_KEPT`` entries: fresh
    memory costs a page fault per 4 KiB, a large part of the density's time on the CPU."""
    need = unit * sum(counts)
    kept: dict[torch.device, torch.Tensor] = _SCRATCH.__dict__.setdefault("buffers", {})
    buffer = kept.get(device)
    if buffer is None or buffer.numel() < need:
        buffer = torch.empty(need, dtype=torch.float32, device=device)
        if need <= _SCRATCH_KEPT:
            kept[device] = buffer
    return buffer[:need].split([count * unit for count in counts])


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
    bandwidths and entries beyond ``_WINDOW`` of a block are moved to the window's edge, which
    keeps every exponent within [-80, 40] (the lower end clamped), safe in float32.
    """
    n_rows, n = rows.shape
    dev = rows.device
    h = torch.where(bandwidth > 0, bandwidth, torch.ones_like(bandwidth))
    step = grid_step(lo, hi, keep, h).view(-1, 1)
    q1, q2, blocks = _block_shape(float(step.max()), kmax)
    size = q1 * q2
    centre = (size - 1) / 2
    origin = lo.view(-1, 1) + (torch.arange(blocks, device=dev).view(1, -1) * size + centre) * step * h.view(-1, 1)
    # u = (x - o) / h, [R, B, n]; entries beyond the window are moved to its edge, where they
    # contribute < e^-40 to every point of the block, as if dropped
    scaled, shift = (rows / h.view(-1, 1)).to(torch.float32), (origin / h.view(-1, 1)).to(torch.float32)
    reach = centre * step + _WINDOW
    buffers = _scratch(n_rows * blocks * n, (q1, q2, 1, 1), dev)
    a, c, u, half_sq = (t.view(n_rows * blocks, -1, n) for t in buffers)
    edge = reach.to(torch.float32).unsqueeze(2)
    torch.sub(scaled.view(n_rows, 1, n), shift.unsqueeze(2), out=u.view(n_rows, blocks, n))
    u.view(n_rows, blocks, n).clamp_(min=-edge, max=edge)
    torch.mul(u, u, out=half_sq).mul_(-0.5)
    j = torch.arange(max(q1, q2), dtype=torch.float64, device=dev)
    s1 = ((j[:q1] * q2 - centre) * step).to(torch.float32)  # [R, Q1]
    s2 = (j[:q2] * step).to(torch.float32)  # [R, Q2]
    # one matrix product per table and block, [R * B, Q, n] (faster on the CPU than broadcast
    # products); a is floored at e^-80 (clear of float32 subnormals, which are slow; an entry
    # that far from every point of its row of the block contributes < e^-40 either way)
    per_block = (n_rows, blocks, -1, 1)
    torch.baddbmm(half_sq, s1.view(n_rows, 1, q1, 1).expand(per_block).reshape(n_rows * blocks, q1, 1), u, out=a)
    a.clamp_(min=-80.0).exp_()
    torch.bmm(s2.view(n_rows, 1, q2, 1).expand(per_block).reshape(n_rows * blocks, q2, 1), u, out=c).exp_()
    sums = torch.bmm(a, c.transpose(1, 2)).reshape(n_rows, blocks * size)[:, :kmax]
    local = torch.arange(blocks * size, dtype=torch.float64, device=dev)[:kmax] % size
    t = (local.view(1, -1) - centre) * step
    dens = sums.to(torch.float64) * torch.exp(-0.5 * t.square()) / (n * h.view(-1, 1) * math.sqrt(2 * math.pi))
    dens = torch.where(bandwidth.view(-1, 1) > 0, dens, torch.zeros_like(dens))
    # float32 error, in ulps of each term: the two exponents are off by at most
    # 3|s1 u| + |u^2/2| + |e| and 3|s2 u| + |e| ulps (absolute), each exp adds 1; the sum of
    # n positive terms adds n. u itself is off by up to 2 max(|x|/h, |o|/h) ulps (absolute),
    # which moves the exponent -(t - u)^2 / 2 by |t - u| times that. Each entry moved to the
    # window's edge is off by < e^-40.
    u_max = float(reach.max())
    s1_max, s2_max = float(s1.abs().max()), float(s2.abs().max())
    magnitude = torch.maximum(scaled.abs().amax(dim=1), shift.abs().amax(dim=1)).to(torch.float64).view(-1, 1)
    ulps = n + 4 * s1_max * u_max + 1.5 * u_max**2 + 4 * s2_max * u_max + 8
    ulps = ulps + 2 * magnitude * (s1_max + s2_max + u_max)
    bound = dens * (ulps * 2.0**-24) + math.exp(-40) / (h.view(-1, 1) * math.sqrt(2 * math.pi))
    return dens, bound


def rounded_density(
    x: torch.Tensor, grid: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, keep: torch.Tensor, h: torch.Tensor
) -> torch.Tensor:
    """``round(density)`` at the grid points, equal to rounding the float64 density: the fast
    float32 density decides every point farther than its error bound from a rounding
    boundary; the few others are recomputed directly in float64."""
    kmax, n = grid.shape[1], x.shape[1]
    h_safe = torch.where(h > 0, h, torch.ones_like(h))
    # rows with similar grid steps share a block shape (one odd row must not shrink the blocks
    # of all the others): sorted by step, in chunks of ~_CHUNK table entries
    step = grid_step(lo, hi, keep, h_safe)
    order = torch.argsort(step)
    dens = torch.empty(grid.shape, dtype=torch.float64, device=x.device)
    bound = torch.empty_like(dens)
    def table_entries(last: int) -> int:  # per row, for rows up to sorted position ``last``
        q1, q2, blocks = _block_shape(float(step[order[last]]), kmax)
        return blocks * (q1 + q2 + 2) * n  # (the tables, u and u^2 / 2)

    start = 0
    while start < len(order):
        count = max(1, min(len(order) - start, _CHUNK // table_entries(start)))
        while count > 1 and count * table_entries(start + count - 1) > _CHUNK:
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


def exact_density(x: torch.Tensor, grid: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """The float64 density at every grid point, directly (for unrounded priorities)."""
    per = max(1, (1 << 22) // max(1, x.shape[1] * grid.shape[1]))
    return torch.cat([grid_density(x[s : s + per], grid[s : s + per], h[s : s + per], torch.float64)
                      for s in range(0, x.shape[0], per)])
