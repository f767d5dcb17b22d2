"""Built-in allocators: ``uniform`` (every unit at the target) and ``global`` (one
threshold over all units of the model)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import attrs
import torch

from secateurs.masks import pruned_count
from secateurs.protocols import SearchSession
from secateurs.types import Allocation, Block, UnitAllocation


def target_names(block: Block, scores: Mapping[str, torch.Tensor] | None) -> list[str]:
    """The names an allocation covers: the scored targets (units or groups), or the
    block's units when the scorer selects and no scores exist yet."""
    return list(scores) if scores is not None else [u.name for u in block.units]


@attrs.define
class UniformAllocator:
    """Every unit (or group) of every block gets the target sparsity."""

    needs_scores: ClassVar[bool] = False

    def prepare(self, session: SearchSession, target: float) -> None:
        return None

    def allocate(self, block: Block, scores: Mapping[str, torch.Tensor] | None, target: float) -> Allocation:
        return {name: UnitAllocation(target) for name in target_names(block, scores)}


@attrs.define
class GlobalAllocator:
    """One score threshold across all units of the model, found on a dense pass.

    ``prepare`` scores every block densely (for calibrated scorers: one dense calibration
    pass), keeps the scores on CPU (4 bytes per scored entry), and sets each unit's
    sparsity to the fraction of its scores below the global ``target`` quantile. The applier
    then enforces that sparsity in the scorer's comparison group, which for per-matrix
    scores is exactly the global threshold.
    """

    needs_scores: ClassVar[bool] = True
    records: dict[str, Any] = attrs.field(factory=dict, init=False)
    _sparsity: dict[str, float] = attrs.field(factory=dict, init=False)

    def prepare(self, session: SearchSession, target: float) -> None:
        names, flats = [], []
        for _, scores in session.dense_scores():
            for name, s in scores.items():
                names.append(name)
                flats.append(s.detach().float().reshape(-1).cpu())
        everything = torch.cat(flats)
        n_pruned = int(pruned_count(everything.numel(), target))
        order = torch.argsort(everything, stable=True)
        pruned = torch.zeros(everything.numel(), dtype=torch.bool)
        pruned[order[:n_pruned]] = True
        counts = torch.split(pruned, [f.numel() for f in flats])
        self._sparsity = {n: float(c.sum()) / c.numel() for n, c in zip(names, counts, strict=True)}
        threshold = float(everything[order[n_pruned - 1]]) if n_pruned else float("-inf")
        self.records = {"global": {"threshold": threshold, "sparsity": dict(self._sparsity)}}

    def allocate(self, block: Block, scores: Mapping[str, torch.Tensor] | None, target: float) -> Allocation:
        return {name: UnitAllocation(self._sparsity[name]) for name in target_names(block, scores)}
