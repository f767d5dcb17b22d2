"""KEN's selection of the fine-tuned entries to keep, vectorized over rows.

Specification (ALGORITHMS.md §1, without the reference code's value-matching bug), per row
``x`` of width ``n`` and keep count ``k = min(k, n)``:

1. bandwidth ``h = |1.06 * std(x) * n ** (-1/5)|`` (population std), Gaussian kernel;
2. ``k`` evenly spaced grid points from ``min(x)`` to ``max(x)`` (``numpy.linspace``);
3. the kernel density of ``x`` at every grid point, rounded to an integer (as the
   published code does; ``round_density=False`` keeps it exact);
4. grid points visit in order of decreasing density (ties: lower grid index first) and
   each takes the nearest not-yet-taken entry (ties: lower entry index first).

Steps 1–3 are :mod:`secateurs_ken.density`, step 4 :mod:`secateurs_ken.greedy`. Callers
should pass many rows per call (``ken_state`` concatenates every tensor of the same row
width): the density's matrix products, and off the CPU the greedy's ``k`` batched steps, are
shared by all rows of a call.
"""

from __future__ import annotations

from typing import Literal

import torch
from secateurs.errors import SecateursError

from secateurs_ken.density import exact_density, grid_points, rounded_density, silverman_bandwidth
from secateurs_ken.greedy import greedy_take, visiting_order

Kernels = Literal["auto", "compiled", "torch"]


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
    kernels: Kernels = "auto",
) -> torch.Tensor:
    """KEN keep-mask of ``rows`` ``[R, n]`` (bool, same shape and device): exactly
    ``min(k[r], n)`` entries per row, chosen as the module docstring specifies.

    ``k``: an int or one count per row. Rows are processed in chunks of at most
    ``chunk_elements`` entries (memory stays ~50 bytes per entry of a chunk); larger chunks
    run faster, since the greedy's batched steps advance all rows of a chunk together.
    ``kernels``: ``"compiled"`` sorts the rows and runs the greedy (step 4) as compiled CPU
    kernels (numba, :mod:`secateurs_ken.cpu_kernels`); ``"torch"`` uses tensor operations
    only, on any device; ``"auto"`` picks ``"compiled"`` on the CPU. Both give the same
    result; the compiled kernels are several times faster.
    """
    if rows.dim() != 2:
        raise SecateursError(f"ken_select wants a [rows, width] tensor, got shape {tuple(rows.shape)}")
    if kernels not in ("auto", "compiled", "torch"):
        raise SecateursError(f"unknown KEN kernels {kernels!r}; use 'auto', 'compiled' or 'torch'")
    on_cpu = rows.device.type == "cpu"
    if kernels == "compiled" and not on_cpu:
        raise SecateursError(f"the compiled KEN kernels run on the CPU only; got rows on {rows.device} "
                             "(use kernels='torch' or 'auto')")
    compiled = kernels == "compiled" or (kernels == "auto" and on_cpu)
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
        out[start : start + step] = _select_chunk(chunk, keep[start : start + step].to(rows.device), round_density,
                                                  compiled)
    return out


def sort_rows(rows: torch.Tensor, compiled: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values, indices)`` of each row sorted ascending, stably; values as float64.
    ``compiled`` (float32 CPU rows): :func:`secateurs_ken.cpu_kernels.sort_rows_compiled`,
    the same result faster."""
    if compiled and rows.device.type == "cpu" and rows.dtype == torch.float32:
        from secateurs_ken.cpu_kernels import sort_rows_compiled  # numba: imported on first use

        return sort_rows_compiled(rows)
    xs, perm = torch.sort(rows, dim=1, stable=True)
    return xs.to(torch.float64), perm


def _select_chunk(rows: torch.Tensor, keep: torch.Tensor, round_density: bool, compiled: bool) -> torch.Tensor:
    xs, perm = sort_rows(rows, compiled)
    kmax = int(keep.max())
    valid = torch.arange(kmax, device=xs.device).view(1, -1) < keep.view(-1, 1)
    lo, hi = xs[:, 0], xs[:, -1]
    # rows with fewer points: their own linspace, padded (padding never takes an entry)
    grid = grid_points(lo, hi, keep, kmax)
    h = silverman_bandwidth(rows)  # of the rows as given: sorted ones would sum in another order
    dens = rounded_density(xs, grid, lo, hi, keep, h) if round_density else exact_density(xs, grid, h)
    return greedy_take(xs, perm, grid, visiting_order(dens, valid), valid, compiled)
