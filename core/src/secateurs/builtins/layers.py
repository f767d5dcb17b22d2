"""Built-in layer scorers, for ``granularity = "layers"`` (``secateurs.depth``):
``block-influence`` and ``skip-loss``. Both need calibration; neither scores entries or
groups (their ``comparison`` is ``"layer"``, so other granularities refuse them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs
import torch
from torch.nn import functional as F

from secateurs.depth import skipped
from secateurs.errors import SecateursError
from secateurs.protocols import LAYER_COMPARISON, NEEDS_CALIBRATION, LayerContext, LoadedModel, ScoreContext
from secateurs.types import LAYERS, Block, Unit


class _LayersOnly:
    """What makes a layer scorer a ``Scorer``: a comparison no other granularity takes, and
    a ``score`` that refuses (the run's checks refuse first)."""

    comparison: ClassVar[str] = LAYER_COMPARISON
    requires: ClassVar[frozenset[str]] = frozenset({NEEDS_CALIBRATION})
    selects: ClassVar[bool] = False

    def score(self, unit: Unit, ctx: ScoreContext) -> torch.Tensor:
        raise SecateursError(f'this scorer scores whole layers only; set granularity = "{LAYERS}"')


@attrs.frozen
class BlockInfluence(_LayersOnly):
    """ShortGPT's block influence: ``1 - cos(x, y)`` of the hidden state entering a block
    (``x``) and leaving it (``y``) at every calibration token, averaged over the tokens. A
    block that barely turns the residual stream scores near 0 and goes first."""

    def score_layer(self, block: Block, ctx: LayerContext) -> float:
        total, tokens = 0.0, 0
        for x, y in zip(ctx.inputs, ctx.outputs, strict=True):
            cos = F.cosine_similarity(x.float(), y.float().to(x.device), dim=-1)
            total += float((1 - cos).sum())
            tokens += cos.numel()
        return total / tokens


def next_token_loss(loaded: LoadedModel, batches: Sequence[Any]) -> float:
    """The mean next-token cross-entropy of ``loaded``'s causal LM over ``batches`` (each a
    mapping with ``input_ids``; the adapter's ``forward`` must return ``logits``)."""
    total, tokens = 0.0, 0
    for batch in batches:
        ids = batch.get("input_ids") if isinstance(batch, Mapping) else None
        logits = getattr(loaded.adapter.forward(loaded.model, batch), "logits", None)
        if ids is None or logits is None:
            raise SecateursError(
                "skip-loss needs a causal language model: batches with input_ids and a forward that returns logits"
            )
        targets = ids[:, 1:].to(logits.device)
        total += float(F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), reduction="sum"))
        tokens += targets.numel()
    return total / tokens


@attrs.define
class SkipLoss(_LayersOnly):
    """The increase of the calibration next-token loss when the block alone is skipped (its
    output replaced by its input), measured on the whole dense model: one forward of every
    calibration batch per block, plus one for the dense loss (``prepare``). Causal LMs only."""

    _dense: float | None = attrs.field(default=None, init=False)

    def prepare(self, loaded: LoadedModel, calibration: list[Any] | None) -> None:
        with torch.no_grad():
            self._dense = next_token_loss(loaded, calibration or ())

    def score_layer(self, block: Block, ctx: LayerContext) -> float:
        if self._dense is None:
            raise SecateursError("skip-loss scores layers after prepare(loaded, calibration)")
        with torch.no_grad(), skipped(block.module, ctx.loaded.adapter.block_output):
            return next_token_loss(ctx.loaded, ctx.calibration or ()) - self._dense
