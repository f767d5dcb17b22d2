"""Depth pruning (``granularity = "layers"``): whole blocks removed.

    check (a ``LayerScorer``, a ``LayerRemoving`` adapter, a sparsity that removes some
    layers but not all) → capture block 0's calibration inputs → for each block: run it on
    its dense inputs, score it (``score_layer``) → once the pass is done, choose the
    lowest-scored blocks → the adapter removes them (``remove_layers``).

No block is removed or changed during the pass, so every block is scored on the dense
model's own hidden states. Memory stays at one block boundary of calibration activations
(inputs and outputs) plus one block's working set, as in ``secateurs.pipeline``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from secateurs.block_inputs import _split, _template
from secateurs.dense_pass import dense_pass
from secateurs.errors import SecateursError
from secateurs.preflight import check_plan, layers_to_remove
from secateurs.protocols import LayerContext, LayerRemoving, LoadedModel, PreparingScorer, merged_records
from secateurs.types import LAYERS, Block, PruneResult, UnitReport

if TYPE_CHECKING:
    from secateurs.pipeline import PruneSpec


def check_layers(loaded: LoadedModel, spec: PruneSpec, blocks: list[Block] | None = None) -> list[Block]:
    """Check a ``layers`` run before any work on the model (``SecateursError`` naming what
    is wrong); return its blocks (``blocks``, else the adapter's)."""
    check_plan(spec.plan(), spec.allocator)
    if spec.targets is not None:
        raise SecateursError(f'granularity = "{LAYERS}" removes the adapter\'s blocks; leave out `targets`')
    adapter = loaded.adapter
    if not isinstance(adapter, LayerRemoving):
        raise SecateursError(f"the {adapter.name!r} adapter cannot remove whole layers (it has no remove_layers)")
    reason = adapter.layer_refusal(loaded.model)
    if reason is not None:
        raise SecateursError(f"cannot remove layers of this model: {reason}")
    blocks = adapter.blocks(loaded.model) if blocks is None else blocks
    layers_to_remove(spec.sparsity, len(blocks), loaded.source)
    return blocks


def layer_scores(loaded: LoadedModel, spec: PruneSpec, blocks: Sequence[Block]) -> list[float]:
    """Every block's ``score_layer`` on the dense model, in one block-by-block pass."""
    scorer = spec.scorer
    if isinstance(scorer, PreparingScorer):
        scorer.prepare(loaded, spec.calibration)
    scores = []
    for block, inputs, outputs in dense_pass(loaded, blocks, spec.calibration, desc="scoring layers",
                                             progress=spec.progress):
        score = float(scorer.score_layer(block, LayerContext(inputs.hidden, outputs, loaded, spec.calibration)))
        if not math.isfinite(score):
            raise SecateursError(f"the scorer gave layer {block.name} the score {score}; scores must be finite")
        scores.append(score)
    return scores


@contextmanager
def skipped(module: nn.Module, block_output: Callable[[Any], torch.Tensor]) -> Iterator[None]:
    """While inside, the block ``module`` returns its input hidden state in place of its own
    (in its output's structure: ``block_output`` finds the hidden state there), as if it
    were removed; the rest of the model runs unchanged."""

    def identity(mod: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        hidden, _ = _split(type(mod).__name__, args, kwargs)
        return _template(output, block_output, 0)(hidden)

    handle = module.register_forward_hook(identity, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def choose_removed(scores: Sequence[float], count: int) -> list[int]:
    """The indices of the ``count`` lowest ``scores``, ascending; among equal scores the
    later layer goes first."""
    order = sorted(range(len(scores)), key=lambda i: (scores[i], -i))
    return sorted(order[:count])


def prune_layers(loaded: LoadedModel, spec: PruneSpec, blocks: list[Block] | None = None) -> PruneResult:
    """Remove the lowest-scored ``spec.sparsity`` share of ``loaded.model``'s blocks in
    place (the nearest whole number of them); return what was done. ``records["layers"]``
    holds every layer's score, the removed layers and the parameter counts."""
    model = loaded.model
    start = time.perf_counter()
    blocks = check_layers(loaded, spec, blocks)
    params_before = sum(p.numel() for p in model.parameters())
    count = layers_to_remove(spec.sparsity, len(blocks), loaded.source)
    with torch.no_grad():
        scores = layer_scores(loaded, spec, blocks)
    scored = time.perf_counter()
    removed = set(choose_removed(scores, count))
    sizes = [sum(p.numel() for p in b.module.parameters()) for b in blocks]
    loaded.adapter.remove_layers(model, [b.index for i, b in enumerate(blocks) if i not in removed])
    params_after = sum(p.numel() for p in model.parameters())
    units = [
        UnitReport(b.name, (size,), size, size if i in removed else 0, spec.sparsity)
        for i, (b, size) in enumerate(zip(blocks, sizes, strict=True))
    ]
    records = merged_records(spec.allocator, spec.scorer)
    records[LAYERS] = {
        "scores": {b.name: s for b, s in zip(blocks, scores, strict=True)},
        "removed": [blocks[i].name for i in sorted(removed)],
        "layers_before": len(blocks),
        "layers_after": len(blocks) - count,
        "params_before": params_before,
        "params_after": params_after,
    }
    end = time.perf_counter()
    return PruneResult(
        units=units,
        params_total=params_before,
        params_pruned=params_before - params_after,
        timings={"score": scored - start, "remove": end - scored, "total": end - start},
        records=records,
    )
