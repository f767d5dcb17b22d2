"""NeuroAL's sparsity ratios and alignment score (pure tensor math, no model).

* ``block_ramp``: block ``i`` of ``L`` gets ``clip(s - λ + 2λ·i/(L-1), lo, hi)`` (shifted
  so the mean stays ``s`` when the clip bites).
* ``row_ratios``: per-row sparsity of a linear from the alignment vector ``v`` of the
  linear consuming its outputs: ``d = 2λ (v - min v) / (max v - min v)``, re-centred so
  the mean density is ``1 - s``, sparsity ``1 - d`` clipped to ``[lo, hi]``. Unlike the
  reference (which clips after centring and so drifts off the unit's sparsity), the
  centring shift is solved *with* the clip, so the mean stays ``s``.
* ``row_counts``: integer pruned counts per row summing exactly to a unit's total
  (``unit_total``), so per-row ratios never change a unit's (or a block's) sparsity.
* ``alignment``: ``‖a_D/Σa_D − a_S/Σa_S‖₂ / n`` of two activation vectors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from secateurs.masks import pruned_count

BLOCK_GRID: tuple[float, ...] = (0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.10, 0.12, 0.15, 0.20, 0.25)
"""Λ_B of the paper (``0.25`` is dropped for targets ≥ 0.8, see ``block_grid``)."""
ROW_GRID: tuple[float, ...] = (0.0,) + BLOCK_GRID
"""Λ_R of the paper (``0`` = uniform rows: the block step's result)."""
LOW, HIGH = 0.01, 0.99

_BISECT_STEPS = 60


def block_grid(target: float, grid: Sequence[float] | None = None) -> tuple[float, ...]:
    """The block-step grid: ``grid`` as given, or the published one (without 0.25 at ≥ 80%)."""
    if grid is not None:
        return tuple(float(g) for g in grid)
    return tuple(g for g in BLOCK_GRID if not (target >= 0.8 and g == 0.25))


def block_ramp(target: float, lam: float, n_blocks: int, lo: float = LOW, hi: float = HIGH) -> torch.Tensor:
    """Per-block sparsity (float64): shallow blocks ``target - lam``, deep ``target + lam``,
    clipped to ``[lo, hi]``. When the clip bites (large ``lam`` at high targets) the ramp
    is shifted so its mean stays ``target`` (the reference lets the mean drop)."""
    if n_blocks == 1:
        return torch.tensor([target], dtype=torch.float64).clamp(lo, hi)
    pos = torch.arange(n_blocks, dtype=torch.float64) / (n_blocks - 1)
    ramp = target - lam + 2 * lam * pos
    if ramp.min() >= lo and ramp.max() <= hi:
        return ramp
    return _recentre(ramp, target, lo, hi)


def row_ratios(v: torch.Tensor, sparsity: float, lam: float, lo: float = LOW, hi: float = HIGH) -> torch.Tensor | None:
    """Per-row sparsity from consumer alignment ``v`` (rows with larger ``v`` lost more and
    keep more), mean exactly ``sparsity``, within ``[lo, hi]``. ``None`` when ``v`` is
    constant (no information: rows stay uniform) or ``lam`` is 0."""
    v = v.detach().to("cpu", torch.float64)
    spread = v.max() - v.min()
    if lam == 0 or not torch.isfinite(spread) or spread <= 0:
        return None
    density = 2 * lam * (v - v.min()) / spread
    density = density - density.mean() + (1 - sparsity)
    return _recentre(1 - density, sparsity, lo, hi)


def _recentre(ratios: torch.Tensor, mean: float, lo: float, hi: float) -> torch.Tensor:
    """``clip(ratios + t, lo, hi)`` with the shift ``t`` found by bisection so the mean is ``mean``."""
    low, high = lo - float(ratios.max()), hi - float(ratios.min())
    for _ in range(_BISECT_STEPS):
        mid = (low + high) / 2
        if float((ratios + mid).clamp(lo, hi).mean()) < mean:
            low = mid
        else:
            high = mid
    return (ratios + (low + high) / 2).clamp(lo, hi)


def count_bounds(width: int, lo: float = LOW, hi: float = HIGH) -> tuple[int, int]:
    """Fewest and most entries one row of ``width`` may prune: what ratios ``lo`` and ``hi``
    prune (``floor(width · ratio)``, as every mask does)."""
    return int(pruned_count(width, lo)), int(pruned_count(width, hi))


def unit_total(rows: int, width: int, sparsity: float, lo: float = LOW, hi: float = HIGH) -> int:
    """Entries a ``rows × width`` unit prunes at ``sparsity`` with uniform rows
    (``rows · floor(width · s)``), kept within what rows clipped to ``[lo, hi]`` can prune."""
    least, most = count_bounds(width, lo, hi)
    return rows * min(max(int(pruned_count(width, sparsity)), least), most)


def row_counts(ratios: torch.Tensor, width: int, total: int, lo: float = LOW, hi: float = HIGH) -> torch.Tensor:
    """Integer entries to prune per row (int64): close to ``ratios * width``, summing to
    exactly ``total``, each within ``count_bounds`` (largest remainders first)."""
    floor_lo, cap = count_bounds(width, lo, hi)
    rows = ratios.numel()
    if not rows * floor_lo <= total <= rows * cap:
        raise ValueError(f"cannot prune {total} entries from {rows} rows of {width} within [{lo}, {hi}]")
    exact = ratios.detach().to("cpu", torch.float64) * width
    counts = exact.floor().to(torch.int64).clamp(floor_lo, cap)
    while (deficit := total - int(counts.sum())) != 0:
        step = 1 if deficit > 0 else -1
        room = counts < cap if step > 0 else counts > floor_lo
        gap = (exact - counts) * step
        gap = torch.where(room, gap, torch.full_like(gap, float("-inf")))
        chosen = torch.topk(gap, min(abs(deficit), int(room.sum())), sorted=False).indices
        counts[chosen] += step
    return counts


def alignment(dense: torch.Tensor, sparse: torch.Tensor) -> float:
    """NeuroAL score of one linear: L2 distance of the normalised activation vectors over
    their length (0 when either vector is all zeros)."""
    d, s = dense.double(), sparse.double()
    dn = d / d.sum() if d.sum() > 0 else torch.zeros_like(d)
    sn = s / s.sum() if s.sum() > 0 else torch.zeros_like(s)
    return float(torch.linalg.vector_norm(dn - sn)) / d.numel()
