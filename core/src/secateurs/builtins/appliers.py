"""Built-in applier ``zero``: sets pruned entries to zero, unstructured or N:M
(``pattern = "2:4"``), or zeroes whole components for structured groups."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

import attrs
import torch

from secateurs.errors import SecateursError
from secateurs.masks import build_mask, keep_counts, matrix_topk, parse_nm, ranked_keep
from secateurs.protocols import UNSTRUCTURED, BlockContext
from secateurs.structured import zero_components
from secateurs.types import Allocation, Block, Unit


def _check_pattern(pattern: str | None) -> None:
    if pattern is not None:
        parse_nm(pattern)


@attrs.frozen
class ZeroApplier:
    """Zero the lowest-scored entries: per the allocation in the scorer's comparison group,
    or N of every M consecutive entries of each row when ``pattern`` is set."""

    pattern: str | None = attrs.field(default=None, validator=lambda _i, _a, v: _check_pattern(v))
    requires: ClassVar[frozenset[str]] = frozenset()

    @property
    def row_ratios(self) -> bool:
        return self.pattern is None

    def check(self, blocks: Sequence[Block], granularity: str) -> None:
        """Fail before any work if the N:M pattern cannot apply: on structured groups, or
        to rows it does not divide."""
        if self.pattern is None:
            return
        if granularity != UNSTRUCTURED:
            raise SecateursError(
                f"an N:M pattern ({self.pattern}) prunes entries within rows; it cannot apply to "
                f"granularity {granularity!r}. Drop the pattern or use granularity = \"unstructured\""
            )
        _, m = parse_nm(self.pattern)
        for block in blocks:
            for unit in block.units:
                if unit.row_width % m:
                    raise SecateursError(
                        f"N:M pattern {self.pattern} does not divide the rows of {unit.name} "
                        f"(width {unit.row_width}); choose an M that divides it"
                    )

    @property
    def ranks_rows(self) -> bool:
        return self.pattern is None

    def apply(
        self, block: Block, scores: Mapping[str, torch.Tensor], allocation: Allocation, ctx: BlockContext
    ) -> dict[str, torch.Tensor]:
        if ctx.granularity != UNSTRUCTURED:
            return zero_groups(block, scores, allocation, ctx.granularity)
        return _zero_units(
            block, scores, lambda unit, s: build_mask(s, allocation[unit.name], ctx.comparison, self.pattern)
        )

    def apply_ranked(
        self, block: Block, ranks: Mapping[str, torch.Tensor], allocation: Allocation, ctx: BlockContext
    ) -> dict[str, torch.Tensor]:
        """``apply`` with per-row comparison, masks from ``masks.row_ranks`` of the scores."""
        if not self.ranks_rows or ctx.comparison != "row" or ctx.granularity != UNSTRUCTURED:
            raise SecateursError("apply_ranked needs unstructured per-row masks without an N:M pattern")

        def mask(unit: Unit, r: torch.Tensor) -> torch.Tensor:
            keep = keep_counts(allocation[unit.name], unit.rows, unit.row_width)
            return ranked_keep(r, keep).view_as(unit.weight)

        return _zero_units(block, ranks, mask)


def _zero_units(
    block: Block, by_unit: Mapping[str, torch.Tensor], mask_of: Callable[[Unit, torch.Tensor], torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Zero ``mask_of(unit, by_unit[name])``'s pruned entries in every unit named in ``by_unit``."""
    masks = {}
    for unit in block.units:
        if unit.name in by_unit:
            mask = mask_of(unit, by_unit[unit.name])
            unit.weight.data.mul_(mask.to(unit.weight.device))
            masks[unit.name] = mask
    return masks


def group_masks(block: Block, scores: Mapping[str, torch.Tensor], allocation: Allocation, kind: str) -> dict[str, torch.Tensor]:
    """Per-component keep masks of the ``kind`` groups of ``block``."""
    return {g.name: matrix_topk(scores[g.name], allocation[g.name].sparsity) for g in block.targets(kind)}


def zero_groups(block: Block, scores: Mapping[str, torch.Tensor], allocation: Allocation, kind: str) -> dict[str, torch.Tensor]:
    masks = group_masks(block, scores, allocation, kind)
    for group in block.groups:
        if group.name in masks:
            zero_components(group, masks[group.name])
    return masks
