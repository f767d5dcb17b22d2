"""Built-in applier ``remove``: physically removes the lowest-scored structured components
(heads, neurons, channels), so the pruned model is smaller and faster.

The same per-component masks as ``zero`` are chosen (``group_masks``); the coupled
tensors are sliced (``secateurs.structured.remove_components``) and the adapter's
optional ``resized(model, block, group, keep)`` (``ResizingAdapter``) updates architecture attributes and
the model's config. A structured mask applied by ``zero`` and by ``remove`` gives the
same outputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import attrs
import torch

from secateurs.builtins.appliers import ZeroApplier, group_masks
from secateurs.errors import SecateursError
from secateurs.protocols import UNSTRUCTURED, BlockContext, ResizingAdapter
from secateurs.structured import remove_components
from secateurs.types import Allocation, Block


@attrs.frozen
class RemoveApplier:
    """Remove whole components of the run's structured granularity (``granularity =
    "heads" | "neurons" | "channels"`` in the recipe)."""

    requires: ClassVar[frozenset[str]] = frozenset()
    row_ratios: ClassVar[bool] = False

    def check(self, blocks: Sequence[Block], granularity: str) -> None:
        """Fail before any work on an unstructured run."""
        if granularity == UNSTRUCTURED:
            raise SecateursError(
                "the 'remove' applier removes structured components: set the recipe's "
                "granularity to a group kind (heads, neurons, channels), or use the 'zero' applier"
            )

    def in_place(self) -> ZeroApplier:
        """Zeroing the same components gives the same outputs and keeps shapes (trials)."""
        return ZeroApplier()

    def apply(
        self, block: Block, scores: Mapping[str, torch.Tensor], allocation: Allocation, ctx: BlockContext
    ) -> dict[str, torch.Tensor]:
        masks = group_masks(block, scores, allocation, ctx.granularity)
        groups = [g for g in block.groups if g.name in masks]
        remove_components((g, masks[g.name]) for g in groups)
        if ctx.loaded is not None and isinstance(ctx.loaded.adapter, ResizingAdapter):
            for group in groups:
                ctx.loaded.adapter.resized(ctx.loaded.model, block, group, masks[group.name])
        return masks
