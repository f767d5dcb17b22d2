"""KEN's pipeline parts: the ``ken`` and ``delta-magnitude`` scorers, the ``ken-k``
allocator and the ``restore`` applier (``dare`` = ``restore`` with DARE's rescale).

Baselines that need no new code: ``magnitude`` with ``comparison = "row"`` (|W_ft| per
row) and ``random`` (row) from the core; DARE = scorer ``random`` + applier ``dare``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import attrs
import torch

from secateurs.errors import SecateursError
from secateurs.masks import build_mask
from secateurs.protocols import NEEDS_REFERENCE, BlockContext, ScoreContext
from secateurs.types import Allocation, Block, RunPlan, Unit, UnitAllocation
from secateurs_ken.select import ken_select
from secateurs_ken.states import as_rows


def _need(value: torch.Tensor | None, what: str, unit: Unit) -> torch.Tensor:
    if value is None:
        raise SecateursError(f"{what} is missing for {unit.qualified_name}; set it in the recipe")
    return value


def ken_scores(weight: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """1.0 where KEN keeps an entry of ``weight`` (rows = first dim; 1-D = one row), else 0."""
    return ken_select(as_rows(weight.detach()), keep).to(weight.dtype).view_as(weight)


@attrs.frozen
class KenScorer:
    """KEN: 1 on the entries the kernel-density selection keeps in each row of the
    fine-tuned weight (exactly ``keep[r]`` per row), 0 elsewhere."""

    requires: ClassVar[frozenset[str]] = frozenset({NEEDS_REFERENCE})
    comparison: ClassVar[str] = "row"
    selects: ClassVar[bool] = True

    def score(self, unit: Unit, ctx: ScoreContext) -> torch.Tensor:
        return ken_scores(unit.weight, _need(ctx.keep, "the per-row keep count", unit))


@attrs.frozen
class DeltaMagnitudeScorer:
    """``|W_ft - W_pre|`` (TIES' trim): keep the entries that moved most in fine-tuning."""

    requires: ClassVar[frozenset[str]] = frozenset({NEEDS_REFERENCE})
    comparison: ClassVar[str] = "row"
    selects: ClassVar[bool] = False

    def score(self, unit: Unit, ctx: ScoreContext) -> torch.Tensor:
        ref = _need(ctx.reference, "the reference (pre-trained) tensor", unit)
        return (unit.weight.detach() - ref.to(unit.weight.device, unit.weight.dtype)).abs()


def solve_k(widths: Sequence[tuple[int, int]], reduction: float) -> int:
    """The largest per-row ``k`` whose parameter reduction over ``widths`` (``(rows, width)``
    per tensor) is at least ``reduction``."""
    w = torch.tensor([wd for _, wd in widths], dtype=torch.float64)
    r = torch.tensor([rw for rw, _ in widths], dtype=torch.float64)
    total = float((w * r).sum())
    ks = torch.arange(1, int(w.max()) + 1, dtype=torch.float64).view(-1, 1)
    kept = (torch.minimum(ks, w.view(1, -1)) * r.view(1, -1)).sum(dim=1)
    ok = torch.nonzero(1 - kept / total >= reduction - 1e-12).view(-1)
    if not ok.numel():
        raise SecateursError(f"no k reaches a parameter reduction of {reduction}")
    return int(ok.max()) + 1


@attrs.define
class KenKAllocator:
    """Keep the same count per row in every unit: ``k`` entries, a ``fraction`` of each
    row, or the one ``k`` that reaches ``reduction`` (fraction of all selected parameters
    not kept). Rows narrower than ``k`` keep everything.

    The recipe's ``sparsity`` (``target``) and these parameters must agree: with none of
    them given, ``sparsity`` is the reduction (solved for one ``k`` like ``reduction``);
    with one given, ``sparsity`` must be 0 (ken-k decides) or equal ``reduction``, and
    any other value is refused rather than ignored.
    """

    k: int | None = None
    fraction: float | None = None
    reduction: float | None = None
    needs_scores: ClassVar[bool] = False
    records: dict = attrs.field(factory=dict)
    _solved_k: int | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        given = self.given()
        if len(given) > 1:
            raise ValueError(f"give one of k, fraction, reduction, not several (got {', '.join(given)})")
        if self.k is not None and (not isinstance(self.k, int) or self.k <= 0):
            raise ValueError(f"k must be a positive number of entries per row, got {self.k!r}")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction!r}")
        if self.reduction is not None and not 0 < self.reduction < 1:
            raise ValueError(f"reduction must be in (0, 1), got {self.reduction!r}")

    def given(self) -> dict[str, float]:
        """The keep-count parameters set, by name (``k``, ``fraction``, ``reduction``)."""
        named = {"k": self.k, "fraction": self.fraction, "reduction": self.reduction}
        return {n: v for n, v in named.items() if v is not None}

    def target_reduction(self, target: float) -> float | None:
        """The parameter reduction to solve ``k`` for (``None``: ``k`` or ``fraction`` fixes
        the counts); a ``SecateursError`` when ``target`` contradicts the parameters."""
        given = self.given()
        if not given:
            if not target:
                raise SecateursError("ken-k needs k, fraction or reduction, or a recipe sparsity > 0 to reach")
            return target
        if target and target != self.reduction:
            ((name, value),) = given.items()
            raise SecateursError(
                f"ken-k: the recipe's sparsity {target} contradicts {name} = {value}; set sparsity = 0 "
                f"(ken-k decides the counts) or drop {name} (ken-k then reaches the sparsity)"
            )
        return self.reduction

    def solve(self, widths: Sequence[tuple[int, int]], target: float = 0.0) -> None:
        """Fix ``k`` from ``widths`` (``(rows, width)`` per selected tensor) when the counts
        come from a reduction (``target_reduction``); records it as ``ken_k``."""
        reduction = self.target_reduction(target)
        if reduction is not None:
            self._solved_k = solve_k(widths, reduction)
            self.records["ken_k"] = self._solved_k

    def check(self, plan: RunPlan) -> None:
        """Refuse a recipe sparsity that contradicts the counts given (``CheckingAllocator``)."""
        self.target_reduction(plan.sparsity)

    def prepare(self, session, target: float) -> None:
        self.solve([(u.rows, u.row_width) for b in session.blocks for u in b.units], target)

    def keep(self, width: int) -> int:
        """Entries kept per row of this width."""
        if self.fraction is not None:
            return max(1, min(width, round(self.fraction * width)))
        k = self.k if self.k is not None else self._solved_k
        if k is None:
            raise SecateursError("ken-k with a reduction must be prepared on the model first")
        return min(k, width)

    def allocate(self, block: Block, scores: Mapping[str, torch.Tensor] | None, target: float) -> Allocation:
        return {u.name: UnitAllocation(sparsity=1 - self.keep(u.row_width) / u.row_width) for u in block.units}


def restore_tensor(
    finetuned: torch.Tensor, reference: torch.Tensor, keep: torch.Tensor, rescale: bool = False
) -> torch.Tensor:
    """``where(keep, finetuned, reference)`` as a new tensor; with ``rescale`` (DARE) the
    kept deltas are multiplied by ``row_width / kept_in_row``."""
    ref = reference.to(finetuned.device, finetuned.dtype)
    if not rescale:
        return torch.where(keep, finetuned, ref)
    rows = as_rows(keep)
    scale = (rows.shape[1] / rows.sum(dim=1).clamp(min=1)).to(finetuned.dtype)
    delta = (finetuned - ref).reshape(rows.shape) * scale.view(-1, 1)
    return torch.where(keep, ref + delta.view_as(finetuned), ref)


@attrs.frozen
class RestoreApplier:
    """KEN's applier: kept entries (top ``keep`` scores per row) keep the fine-tuned value,
    the others go back to the reference (pre-trained) value; nothing is zeroed.
    ``rescale = true`` is DARE's rescale of the kept deltas by ``1 / (1 - p)``."""

    rescale: bool = False
    requires: ClassVar[frozenset[str]] = frozenset()
    row_ratios: ClassVar[bool] = True

    def apply(
        self, block: Block, scores: Mapping[str, torch.Tensor], allocation: Allocation, ctx: BlockContext
    ) -> dict[str, torch.Tensor]:
        if ctx.reference is None:
            raise SecateursError("the restore applier needs `reference_model` (the pre-trained model) in the recipe")
        masks = {}
        for unit in block.units:
            if unit.name not in scores:
                continue
            mask = build_mask(scores[unit.name], allocation[unit.name], ctx.comparison)
            new = restore_tensor(unit.weight.detach(), ctx.reference(unit), mask, self.rescale)
            unit.weight.data.copy_(new)
            masks[unit.name] = mask
        return masks


def dare_applier(**params) -> RestoreApplier:
    """``restore`` with DARE's rescale."""
    return RestoreApplier(rescale=True, **params)
