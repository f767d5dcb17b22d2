"""Built-in applier ``sparsegpt``: OBS mask selection and weight update (Frantar & Alistarh, 2023).

For every Linear unit with input Hessian ``H = (2/N) Σ x xᵀ`` (collected by the pipeline
because this applier requires ``"hessian"``): dampen ``H`` by ``percdamp · mean(diag H)``,
take the upper Cholesky factor ``U`` of ``H⁻¹`` and walk the columns in blocks of
``blocksize``. Inside a block the entries with the lowest ``w² / U_cc²`` are pruned
(unstructured), or the lowest ``M − N`` of every ``M`` consecutive columns of a row (N:M,
decided when the walk reaches the group); column by column the pruning error
``(w − q) / U_cc`` is pushed onto the block's remaining columns, and after each block onto
all later columns at once (lazy batch updates).

The mask is chosen by this OBS criterion, not by the recipe's scorer: the scorer's
scores are ignored here (allocators such as ``owl`` or ``global`` still use them to set
each unit's sparsity). Unstructured quotas are exact: a unit with sparsity ``s`` prunes
``floor(numel · s)`` entries, spread over the column blocks cumulatively and compared
across all rows of a block, as in the reference. With per-row ratios every row ``r``
prunes exactly ``floor(in · s_r)`` entries (compared within the row).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import ClassVar

import attrs
import torch

from secateurs.builtins.appliers import ZeroApplier
from secateurs.errors import SecateursError
from secateurs.masks import nm_mask, parse_nm, pruned_count, rows_topk
from secateurs.protocols import STAT_HESSIAN, UNSTRUCTURED, BlockContext
from secateurs.types import Allocation, Block, Unit, UnitAllocation
from secateurs.validators import in_open_unit_interval, positive_int

def _pattern(inst, _attribute, value) -> None:
    if value is None:
        return
    _, m = parse_nm(value)
    if inst.blocksize % m:
        raise ValueError(f"blocksize {inst.blocksize} must be a multiple of M={m} for pattern {value}")


def inverse_hessian_factor(hessian: torch.Tensor, percdamp: float, name: str) -> torch.Tensor:
    """The upper Cholesky factor of ``(H + λI)⁻¹`` with ``λ = percdamp · mean(diag H)``
    (float32 on ``hessian``'s device).

    Tried in float32, then float64. Raises ``SecateursError`` naming the layer when ``H``
    has non-finite entries or is still not positive definite after dampening; the
    damping is not raised silently (the reference does not either).
    """
    if not _finite(hessian):
        raise SecateursError(
            f"{name}: the Hessian of its inputs has inf/NaN entries (activations overflowed?); "
            "prune in float32 (recipe dtype = \"float32\")"
        )
    n = hessian.shape[0]
    damp = percdamp * float(torch.diagonal(hessian).mean())
    for dtype in (torch.float32, torch.float64):
        h = hessian.to(dtype) + damp * torch.eye(n, dtype=dtype, device=hessian.device)
        lower, info = torch.linalg.cholesky_ex(h)
        if int(info):
            continue
        upper, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(lower), upper=True)
        if not int(info) and _finite(upper):
            return upper.float()
    raise SecateursError(
        f"{name}: the Hessian of its inputs is not positive definite even after {percdamp:g} "
        "dampening (tried float32 and float64); raise the applier's `percdamp` (e.g. 0.1) "
        "or use more calibration samples"
    )


def _finite(t: torch.Tensor) -> bool:
    """Whether every entry of ``t`` is finite (one reduction; the entry-wise check only
    when the sum is not finite, e.g. overflowed)."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


@contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run on one CPU thread: the per-column loop's kernels are so small that thread-pool
    hand-offs cost more than they do (20x slower on a busy 2-core machine), and switching
    the thread count per tile is itself costly, so a whole unit runs inside it. Restored
    on exit."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _tile_quota(rows: int, start: int, end: int, allocation: UnitAllocation) -> torch.Tensor:
    """Entries to prune in columns ``[start, end)``: one count for the tile (no per-row
    ratios) or one per row, cumulative so that the unit's totals are exact."""
    if allocation.rows is None:
        s = float(allocation.sparsity)
        return pruned_count(rows * end, s) - pruned_count(rows * start, s)
    ratios = allocation.row_sparsity(rows)
    return pruned_count(end, ratios) - pruned_count(start, ratios)


def _select(loss: torch.Tensor, quota: torch.Tensor) -> torch.Tensor:
    """Prune-mask of a tile: its ``quota`` lowest losses (tile-wide), or ``quota[r]`` lowest
    of each row when ``quota`` has one entry per row."""
    if quota.dim() == 0:
        flat = torch.zeros(loss.numel(), dtype=torch.bool, device=loss.device)
        k = int(quota)
        if k:
            flat[torch.topk(loss.reshape(-1), k, largest=False, sorted=False).indices] = True
        return flat.view_as(loss)
    return ~rows_topk(loss, loss.shape[1] - quota)


_STEP = 16
"""Columns per sub-block of the column walk: inside a sub-block errors are pushed one
column at a time, onto the sub-block only; then onto the rest of the tile at once."""


def sparsegpt_prune(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    allocation: UnitAllocation,
    *,
    nm: tuple[int, int] | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
    name: str = "layer",
) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT on one ``[rows, in]`` weight: returns ``(pruned_and_updated_weight, keep_mask)``.

    ``weight`` is not modified; the result is float32 on its device. ``nm`` overrides the
    allocation (N kept of every M consecutive columns of a row).
    """
    w = weight.detach().float().clone()
    h = hessian.detach().to(w.device, torch.float32).clone()
    dead = torch.diagonal(h) == 0  # inputs that were always zero: their weights never matter
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    with _one_cpu_thread(w.device):
        hinv = inverse_hessian_factor(h, percdamp, name)
        return _sparsegpt(w, hinv, allocation, nm, blocksize)


def _sparsegpt(
    w: torch.Tensor, hinv: torch.Tensor, allocation: UnitAllocation, nm: tuple[int, int] | None, blocksize: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The column walk over ``w`` (updated in place) with the factor ``hinv``. Tiles are
    handled transposed (``[columns, rows]``), so that each column is contiguous."""
    rows, cols = w.shape
    step = _STEP if nm is None else nm[1] * max(1, _STEP // nm[1])  # N:M groups never straddle sub-blocks
    pruned = torch.zeros_like(w, dtype=torch.bool)
    for start in range(0, cols, blocksize):
        end = min(start + blocksize, cols)
        w1 = w[:, start:end].T.contiguous()  # [tile columns, rows]
        hinv1 = hinv[start:end, start:end]
        d = torch.diagonal(hinv1)
        if nm is None:
            p1 = _select(w1.T.pow(2) / d.pow(2), _tile_quota(rows, start, end, allocation)).T.contiguous()
        else:
            p1 = torch.zeros_like(w1, dtype=torch.bool)
        # err of column i = (w − q) / d_i = w · pruned / d_i
        scale = p1 / d[:, None]
        err1 = torch.empty_like(w1)
        for s0 in range(0, end - start, step):
            s1 = min(s0 + step, end - start)
            for i in range(s0, s1):
                if nm is not None and (i - s0) % nm[1] == 0:
                    group = slice(i, i + nm[1])
                    p1[group] = ~nm_mask(w1[group].T.pow(2) / d[group].pow(2), *nm).T
                    scale[group] = p1[group] / d[group, None]
                torch.mul(w1[i], scale[i], out=err1[i])
                w1[i:s1].addr_(hinv1[i, i:s1], err1[i], alpha=-1.0)  # leaves column i at q
            w1[s1:].addmm_(hinv1[s0:s1, s1:].T, err1[s0:s1], alpha=-1.0)
        w[:, start:end] = w1.masked_fill_(p1, 0.0).T  # pruned entries exactly zero
        w[:, end:].addmm_(err1.T, hinv[start:end, end:], alpha=-1.0)
        pruned[:, start:end] = p1.T
    return w, ~pruned


@attrs.frozen
class SparseGPTApplier:
    """Prune each Linear by the OBS criterion and update its kept weights (module docstring).

    ``pattern``: ``"N:M"`` semi-structured sparsity instead of the allocation's ratios.
    ``blocksize``: columns per lazy-update block (128). ``percdamp``: dampening as a
    fraction of the mean Hessian diagonal (0.01). ``true_sequential``: prune the block's
    ``stages`` (set by the adapter, in data-flow order) one after another, re-collecting
    the inputs of each stage with the earlier stages already pruned; units in no stage are
    pruned first, on the block's dense inputs.
    """

    blocksize: int = attrs.field(default=128, validator=positive_int)
    percdamp: float = attrs.field(default=0.01, validator=in_open_unit_interval)
    pattern: str | None = attrs.field(default=None, validator=_pattern)
    true_sequential: bool = False
    requires: ClassVar[frozenset[str]] = frozenset({STAT_HESSIAN})

    @property
    def row_ratios(self) -> bool:
        return self.pattern is None

    def check(self, blocks: Sequence[Block], granularity: str) -> None:
        """Fail before any work on structured granularity, or if a unit is not a 2-D weight
        or N:M does not divide it."""
        if granularity != UNSTRUCTURED:
            raise SecateursError(
                f"sparsegpt prunes entries (unstructured or N:M), not {granularity!r}; "
                "use the 'zero' applier for structured pruning"
            )
        for block in blocks:
            for unit in block.units:
                if unit.weight.dim() != 2:
                    raise SecateursError(
                        f"sparsegpt prunes Linear weights; {unit.name} has shape {tuple(unit.shape)}"
                    )
        ZeroApplier(pattern=self.pattern).check(blocks, granularity)

    def groups(self, block: Block, units: Sequence[Unit]) -> list[list[Unit]]:
        """``units`` (of ``block``) split into the pruning steps: one step unless
        ``true_sequential``, else the units in no stage, then one step per ``block.stages``."""
        if not self.true_sequential:
            return [list(units)]
        listed = {name for stage in block.stages for name in stage}
        steps = [[u for u in units if u.name not in listed]]
        steps += [[u for u in units if u.name in stage] for stage in block.stages]
        return [step for step in steps if step]

    def apply(
        self, block: Block, scores: Mapping[str, torch.Tensor], allocation: Allocation, ctx: BlockContext
    ) -> dict[str, torch.Tensor]:
        nm = parse_nm(self.pattern) if self.pattern is not None else None
        units = [u for u in block.units if u.name in allocation]
        masks: dict[str, torch.Tensor] = {}
        stats = ctx.stats
        for step, group in enumerate(self.groups(block, units)):
            if step:
                stats = ctx.recollect(group)
            for unit in group:
                unit_stats = stats.get(unit.name)
                if unit_stats is None or unit_stats.hessian is None:
                    raise SecateursError(
                        f"{unit.name}: sparsegpt needs the Hessian of its inputs (none collected)"
                    )
                new, keep = sparsegpt_prune(
                    unit.weight,
                    unit_stats.hessian,
                    allocation[unit.name],
                    nm=nm,
                    blocksize=self.blocksize,
                    percdamp=self.percdamp,
                    name=unit.name,
                )
                unit.weight.data.copy_(new.to(unit.weight.dtype))
                masks[unit.name] = keep
        return masks
