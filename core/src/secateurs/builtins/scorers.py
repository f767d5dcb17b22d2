"""Built-in scorers: ``magnitude``, ``random`` (seeded), ``wanda`` and ``activation``."""

from __future__ import annotations

from typing import ClassVar

import attrs
import torch

from secateurs.errors import SecateursError
from secateurs.protocols import STAT_SQ_NORM, ScoreContext
from secateurs.structured import component_view
from secateurs.types import Group, Unit

_COMPARISONS = attrs.validators.in_(("row", "matrix"))


@attrs.frozen
class MagnitudeScorer:
    """``|W|``. ``comparison="matrix"`` is classic layer-wise magnitude pruning; ``"row"``
    compares within each output row. Groups score by the L2 norm of each component."""

    comparison: str = attrs.field(default="matrix", validator=_COMPARISONS)
    requires: ClassVar[frozenset[str]] = frozenset()
    selects: ClassVar[bool] = False

    def score(self, unit: Unit, ctx: ScoreContext) -> torch.Tensor:
        return unit.weight.detach().abs().float()

    def score_group(self, group: Group, ctx: ScoreContext) -> torch.Tensor:
        return torch.stack([component_view(group, s).float().pow(2).sum(1) for s in group.slices]).sum(0).sqrt()


@attrs.frozen
class RandomScorer:
    """Uniform random scores from the run's seeded generator: the sanity baseline."""

    comparison: str = attrs.field(default="row", validator=_COMPARISONS)
    requires: ClassVar[frozenset[str]] = frozenset()
    selects: ClassVar[bool] = False

    def score(self, unit: Unit, ctx: ScoreContext) -> torch.Tensor:
        w = unit.weight
        return torch.rand(w.shape, generator=ctx.generator, device=ctx.generator.device).to(w.device)

    def score_group(self, group: Group, ctx: ScoreContext) -> torch.Tensor:
        return torch.rand(group.size, generator=ctx.generator, device=ctx.generator.device)


@attrs.frozen
class WandaScorer:
    """Wanda: ``|W_ij| * sqrt(scaler_row[j])`` with ``scaler_row`` the mean over calibration
    samples of the squared input norm of feature ``j``; compared per output row."""

    comparison: str = attrs.field(default="row", validator=_COMPARISONS)
    requires: ClassVar[frozenset[str]] = frozenset({STAT_SQ_NORM})
    selects: ClassVar[bool] = False

    def score(self, unit: Unit, ctx: ScoreContext) -> torch.Tensor:
        w = unit.weight.detach().float()
        scale = ctx.stats.sq_norm.to(w.device).sqrt()
        groups = getattr(unit.module, "groups", 1) if w.dim() > 2 else 1
        if groups > 1:  # grouped conv: output channel o sees only the input channels of its group
            scale = scale.view(groups, 1, -1).expand(-1, w.shape[0] // groups, -1).reshape(w.shape[0], -1)
            return w.abs() * scale.view(*scale.shape, *[1] * (w.dim() - 2))
        shape = [1, -1] + [1] * (w.dim() - 2)  # input features on dim 1 (Linear and Conv)
        return w.abs() * scale.view(shape)


@attrs.frozen
class ActivationScorer:
    """Minitron's activation importance (Muralidharan et al. 2024) of structured components:
    the root of the per-token mean squared activation each carries over the calibration set.

    A group's ``ctx.stats`` are its reading unit's inputs over the group's span
    (``o_proj`` for heads, ``down_proj`` for neurons: ``structured.reading_stats``), ``width``
    entries per component (a head's columns, one per neuron or channel). Component ``c``
    scores ``sqrt(sum of its entries' sq_norm * nsamples / ntokens)``: ``sq_norm * nsamples``
    is the sum of ``x²`` over every calibration token, so this is the L2 norm over the
    component's features of their root-mean-square activation per token (per position for
    convolutions). Structured runs only: ``score`` refuses unstructured granularity.
    """

    comparison: ClassVar[str] = "matrix"
    requires: ClassVar[frozenset[str]] = frozenset({STAT_SQ_NORM})
    selects: ClassVar[bool] = False

    def score(self, unit: Unit, ctx: ScoreContext) -> torch.Tensor:
        raise SecateursError(
            "the 'activation' scorer scores structured components only, not single weights; "
            'set granularity to "heads", "neurons", "hidden" or "channels"'
        )

    def score_group(self, group: Group, ctx: ScoreContext) -> torch.Tensor:
        stats = ctx.stats
        if stats is None:
            raise SecateursError(
                f"the 'activation' scorer needs calibration data: group {group.name!r} is scored by the "
                "inputs of its reading unit (the layer reading its components as input features: "
                "o_proj for heads, down_proj for neurons), collected with the group's block, and none "
                "were given; add a calibration source to the recipe, or use another scorer where that "
                "layer is in a later block (VGG channels)"
            )
        if stats.sq_norm.numel() % group.size:
            raise SecateursError(
                f"group {group.name!r}: its reading unit's statistics have {stats.sq_norm.numel()} "
                f"entries, not a multiple of its {group.size} components"
            )
        per_token = stats.sq_norm.float() * (stats.nsamples / max(stats.ntokens, 1))
        return per_token.view(group.size, -1).sum(1).sqrt()
