"""Built-in allocator ``owl``: outlier-weighted layerwise sparsity (Yin et al., 2024).

One dense pass (``session.dense_scores()``) scores every block with the recipe's scorer
(Wanda in the paper; any scorer works). A block's outlier ratio is
``D = 100 · #(S > M · mean(S)) / numel(S)`` over the concatenated scores of its units.
The ratios are scaled to ``[0, 2λ]`` and shifted so that their mean is the target
density: ``density_l = D̃_l − mean(D̃) + (1 − s)``. Blocks with more outliers keep more
weights; every unit of a block gets the block's sparsity. The mean over blocks is the
target exactly (the mean over parameters too, as the blocks of a decoder are equal in
size).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import attrs
import torch

from secateurs.builtins.allocators import target_names
from secateurs.errors import SecateursError
from secateurs.protocols import SearchSession
from secateurs.types import Allocation, Block, RunPlan, UnitAllocation
from secateurs.validators import non_negative, positive


def outlier_ratio(scores: Mapping[str, torch.Tensor], m: float) -> float:
    """Percentage of the block's scores above ``m`` times their mean."""
    flat = torch.cat([s.detach().float().reshape(-1) for s in scores.values()])
    return 100.0 * float((flat > m * flat.mean()).sum()) / flat.numel()


def owl_sparsities(ratios: torch.Tensor, target: float, lam: float) -> torch.Tensor:
    """Per-block sparsity from outlier ratios: scaled to ``[0, 2·lam]``, mean density ``1 − target``.

    Equal ratios give every block the target. Raises ``SecateursError`` when a block's
    sparsity would leave ``[0, 1)`` (``lam`` too large for this target).
    """
    ratios = ratios.to(torch.float64)
    spread = ratios.max() - ratios.min()
    scaled = (ratios - ratios.min()) / spread * (2 * lam) if spread > 0 else torch.zeros_like(ratios)
    sparsity = 1.0 - (scaled - scaled.mean() + (1.0 - target))
    if sparsity.min() < 0 or sparsity.max() >= 1:
        raise SecateursError(
            f"OWL with lam={lam} puts block sparsities in [{float(sparsity.min()):.3f}, "
            f"{float(sparsity.max()):.3f}], outside [0, 1) for target {target}; use a smaller lam"
        )
    return sparsity


@attrs.define
class OWLAllocator:
    """OWL block sparsities (module docstring). ``m``: outlier threshold as a multiple of
    the mean score (5). ``lam``: half-width of the sparsity range around the target (0.08).

    ``records["owl"]`` holds each block's outlier ratio and sparsity.
    """

    m: float = attrs.field(default=5.0, validator=positive)
    lam: float = attrs.field(default=0.08, validator=non_negative)
    needs_scores: ClassVar[bool] = True
    records: dict[str, Any] = attrs.field(factory=dict, init=False)
    _sparsity: dict[str, float] = attrs.field(factory=dict, init=False)

    def check(self, plan: RunPlan) -> None:
        """Refuse a ``lam`` no model can serve (``CheckingAllocator``): OWL spreads block
        sparsities over exactly ``2·lam``, which must fit inside [0, 1)."""
        if 2 * self.lam >= 1:
            raise SecateursError(
                f"allocator 'owl': lam = {self.lam} spreads block sparsities over 2·lam = {2 * self.lam:g}, "
                "which cannot fit in [0, 1); use lam < 0.5 (the paper's default is 0.08)"
            )

    def prepare(self, session: SearchSession, target: float) -> None:
        names, ratios = [], []
        for block, scores in session.dense_scores():
            names.append(block.name)
            ratios.append(outlier_ratio(scores, self.m))
        sparsity = owl_sparsities(torch.tensor(ratios), target, self.lam)
        self._sparsity = dict(zip(names, sparsity.tolist(), strict=True))
        self.records = {
            "owl": {
                "m": self.m,
                "lam": self.lam,
                "outlier_ratio": dict(zip(names, ratios, strict=True)),
                "sparsity": dict(self._sparsity),
            }
        }

    def allocate(self, block: Block, scores: Mapping[str, torch.Tensor] | None, target: float) -> Allocation:
        if block.name not in self._sparsity:
            raise SecateursError(f"OWL has no ratio for block {block.name!r}: prepare() did not see it")
        sparsity = self._sparsity[block.name]
        return {name: UnitAllocation(sparsity) for name in target_names(block, scores)}
