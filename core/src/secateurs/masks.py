"""Exact keep-masks from scores: per row, per matrix, per-row ratios, and N:M patterns.

Every function is vectorized over rows and works on any device. A mask is a bool tensor
of the scores' shape, ``True`` = keep. Exactness: a group of ``n`` entries with sparsity
``s`` prunes exactly ``floor(n * s)`` entries (a tiny tolerance absorbs float error, so
``0.3 * 10`` prunes 3). Ties are broken deterministically: by position within rows (as a
stable sort: the earlier entry is kept), as ``torch.topk`` does over a whole matrix and
within N:M groups.
"""

from __future__ import annotations

import torch

from secateurs.errors import SecateursError
from secateurs.types import UnitAllocation

_EPS = 1e-9


def pruned_count(n: int | torch.Tensor, sparsity: float | torch.Tensor) -> torch.Tensor:
    """``floor(n * sparsity)`` with float error absorbed, as an int64 tensor."""
    n_t = torch.as_tensor(n, dtype=torch.float64)
    s_t = torch.as_tensor(sparsity, dtype=torch.float64)
    return torch.floor(n_t * s_t + _EPS).to(torch.int64)


def keep_counts(allocation: UnitAllocation, rows: int, width: int) -> torch.Tensor:
    """Entries each row keeps under ``allocation`` (int64, CPU)."""
    return width - pruned_count(width, allocation.row_sparsity(rows))


_FEW_KEEPS = 4


def rows_topk(scores: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Keep the ``keep[r]`` highest scores of every row of a ``[R, n]`` tensor.

    Ties go to the earlier position (as a stable descending sort). When rows share a few
    keep counts (uniform rows), each set of rows uses a threshold (``_threshold_topk``)
    instead of a full sort: the same mask, faster on CPU.
    """
    counts = keep.unique()
    if counts.numel() <= _FEW_KEEPS and scores.is_floating_point() and not torch.isnan(scores.sum()):  # no NaN
        if counts.numel() == 1:
            return _threshold_topk(scores, int(counts[0]))
        mask = torch.empty_like(scores, dtype=torch.bool)
        rows_of = keep.to(scores.device)
        for count in counts.tolist():
            rows = rows_of == count
            mask[rows] = _threshold_topk(scores[rows], count)
        return mask
    return ranked_keep(row_ranks(scores), keep)


def row_ranks(scores: torch.Tensor) -> torch.Tensor:
    """Each entry's rank within its row of a ``[R, n]`` tensor, 0 = the highest score
    (int32; ties ranked by position, the earlier first, as ``rows_topk`` breaks them).

    One sort serves many keep counts: ``ranked_keep(row_ranks(s), keep)`` equals
    ``rows_topk(s, keep)`` for every ``keep``.
    """
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    positions = torch.arange(scores.shape[1], device=scores.device, dtype=torch.int32).expand_as(order)
    return torch.empty_like(order, dtype=torch.int32).scatter_(1, order, positions)


def ranked_keep(ranks: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Keep-mask from ``row_ranks``: every row ``r`` keeps its ``keep[r]`` best-ranked entries."""
    return ranks < keep.to(ranks.device, torch.int32).view(-1, 1)


def _threshold_topk(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """``rows_topk`` with one keep count for every row: the ``n - keep``-th smallest score
    of a row (the largest of its ``n - keep`` smallest: ``topk``, faster than
    ``kthvalue`` on CPU) is its threshold; entries above it are kept, and of the entries
    equal to it the earliest ones, up to ``keep``."""
    width = scores.shape[1]
    if keep >= width:
        return torch.ones_like(scores, dtype=torch.bool)
    if keep <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    threshold = torch.topk(scores, width - keep, dim=1, largest=False, sorted=False).values.amax(1, keepdim=True)
    mask = scores > threshold
    room = keep - mask.sum(1, keepdim=True)
    short = (room > 0).view(-1)  # rows with entries tied at the threshold; usually none
    if short.any():
        part, limit = scores[short], threshold[short]
        tied = part == limit
        mask[short] |= tied & (torch.cumsum(tied, 1) <= room[short])
    return mask


def matrix_topk(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep the highest ``numel - floor(numel * sparsity)`` scores of the whole tensor."""
    flat = scores.reshape(-1)
    keep = flat.numel() - int(pruned_count(flat.numel(), sparsity))
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if keep > 0:
        mask[torch.topk(flat, keep, sorted=False).indices] = True
    return mask.view_as(scores)


def parse_nm(pattern: str) -> tuple[int, int]:
    """``"2:4"`` → ``(2, 4)``: keep N of every M consecutive entries of a row."""
    try:
        n_str, m_str = pattern.split(":")
        n, m = int(n_str), int(m_str)
    except (ValueError, AttributeError):  # AttributeError: not a string (pattern = 24)
        raise SecateursError(
            f"N:M pattern {pattern!r} is not a string of the form 'N:M'; write it quoted, e.g. pattern = \"2:4\""
        ) from None
    if not 0 < n < m:
        raise SecateursError(f"N:M pattern {pattern!r} needs 0 < N < M")
    return n, m


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` highest of every ``m`` consecutive entries of each row of ``[R, w]``."""
    rows, width = scores.shape
    if width % m:
        raise SecateursError(
            f"N:M pattern {n}:{m} does not divide rows of width {width}; "
            f"choose an M that divides {width} or prune this layer unstructured"
        )
    groups = scores.reshape(rows, width // m, m)
    top = torch.topk(groups, n, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top, True)
    return mask.reshape(rows, width)


def build_mask(
    scores: torch.Tensor,
    allocation: UnitAllocation,
    comparison: str,
    pattern: str | None = None,
) -> torch.Tensor:
    """The keep-mask of one unit.

    ``scores`` has the weight's shape (viewed as rows: first dimension = rows; 1-D = one
    row). ``comparison`` is ``"row"`` (every row prunes its own share; per-row ratios
    honoured) or ``"matrix"`` (one ranking over the tensor). ``pattern`` (``"N:M"``)
    overrides both: N of every M consecutive entries of a row, whatever the sparsity.
    """
    rows2d = scores.reshape(1, -1) if scores.dim() == 1 else scores.reshape(scores.shape[0], -1)
    if pattern is not None:
        return nm_mask(rows2d, *parse_nm(pattern)).view_as(scores)
    if comparison == "matrix":
        if allocation.rows is not None:
            raise SecateursError("per-row sparsity ratios need the 'row' comparison group")
        return matrix_topk(scores, allocation.sparsity)
    if comparison != "row":
        raise SecateursError(f"unknown comparison group {comparison!r}; use 'row' or 'matrix'")
    keep = keep_counts(allocation, rows2d.shape[0], rows2d.shape[1])
    return rows_topk(rows2d, keep).view_as(scores)
