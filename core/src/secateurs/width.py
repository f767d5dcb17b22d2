"""Width pruning of the residual stream (``granularity = "hidden"``): the hidden channels of
the whole model narrowed together.

    check (a ``WidthPruning`` adapter, a ``StructuredScorer``, the default allocator and
    applier, a sparsity that removes some channels but not all) → for scorers that need
    input statistics: one dense block-by-block pass collecting them (``residual_stats``) →
    the scorer scores the adapter's ``hidden_group`` (one score per channel) → the
    highest-scored channels are kept, the adapter removes the others (``remove_hidden``).

The run removes ``floor(sparsity * hidden_size)`` channels (as structured groups round), so
``sparsity = 1 - 512 / 576`` leaves exactly 512. Nothing is changed before every channel is
scored, so the scores are the dense model's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

from secateurs.dense_pass import dense_pass
from secateurs.errors import SecateursError
from secateurs.masks import pruned_count
from secateurs.preflight import check_plan
from secateurs.protocols import (
    STAT_SQ_NORM,
    LoadedModel,
    PreparingScorer,
    ScoreContext,
    WidthPruning,
    merged_records,
)
from secateurs.stats import collect_stats
from secateurs.types import HIDDEN, Block, Group, InputStats, PruneResult, Unit, UnitReport

if TYPE_CHECKING:
    from secateurs.pipeline import PruneSpec


def check_hidden(loaded: LoadedModel, spec: PruneSpec) -> Group:
    """Check a ``hidden`` run before any work on the model (``SecateursError`` naming what
    is wrong); return the adapter's hidden group."""
    check_plan(spec.plan(), spec.allocator)
    if spec.targets is not None:
        raise SecateursError(f'granularity = "{HIDDEN}" narrows the whole model; leave out `targets`')
    adapter = loaded.adapter
    if not isinstance(adapter, WidthPruning):
        raise SecateursError(f"the {adapter.name!r} adapter cannot narrow the hidden width (it has no hidden_group)")
    reason = adapter.hidden_refusal(loaded.model, None)
    if reason is not None:
        raise SecateursError(f"cannot narrow the hidden width of this model: {reason}")
    group = adapter.hidden_group(loaded.model)
    kept = group.size - channels_to_remove(spec.sparsity, group.size, loaded.source)
    reason = adapter.hidden_refusal(loaded.model, kept)
    if reason is not None:
        raise SecateursError(f"cannot narrow the hidden width of this model to {kept} channels: {reason}")
    return group


def channels_to_remove(sparsity: float, size: int, source: str = "the model") -> int:
    """How many of ``size`` hidden channels a run at ``sparsity`` removes (``floor``, as
    structured groups round); ``SecateursError`` when that is none or all of them."""
    count = int(pruned_count(size, sparsity))
    if count == 0:
        raise SecateursError(
            f"nothing to remove: sparsity {sparsity:g} of {source}'s {size} hidden channels rounds to 0 "
            f"(at least {1 / size:.3g} removes one)"
        )
    if count >= size:
        raise SecateursError(f"sparsity {sparsity:g} removes all {size} hidden channels of {source}; keep at least one")
    return count


def readers(block: Block, reading: set[int]) -> list[tuple[int, Unit]]:
    """``(stage, unit)`` of the block's units whose module is in ``reading`` (``reading_modules``);
    units of no stage get -1."""
    stage_of = {name: i for i, stage in enumerate(block.stages) for name in stage}
    return [(stage_of.get(u.name, -1), u) for u in block.units if id(u.module) in reading and not u.transposed]


def reading_modules(group: Group) -> set[int]:
    """Ids of the modules whose whole input dimension is the hidden channels (``group``'s
    slices along a weight's dim 1): the residual readers."""
    return {id(s.module) for s in group.slices if s.param == "weight" and s.dim == 1 and s.start == 0}


@contextmanager
def _watching(units: list[tuple[int, Unit]], into: list[dict[str, InputStats]]) -> Iterator[None]:
    """Collect the input statistics of ``units`` into ``into``."""
    with collect_stats([u for _, u in units], hessian=False) as col:
        yield
    into.append(col.stats)


def residual_stats(loaded: LoadedModel, spec: PruneSpec, group: Group, blocks: Sequence[Block]) -> InputStats:
    """What every residual reader sees, per hidden channel, on the dense model.

    ``sq_norm[i]`` is the sum, over every block and every distinct input its residual
    readers take (the block's stages: q/k/v share one input, gate/up another), of the
    per-token mean of ``x_i²``; readers of one stage that saw different tokens (experts)
    are averaged. ``nsamples = ntokens = 1``: the values are per-token means already.
    """
    reading = reading_modules(group)
    units = {b.name: readers(b, reading) for b in blocks}
    total = torch.zeros(group.size, dtype=torch.float32)
    seen: list[dict[str, InputStats]] = []
    for block, _, _ in dense_pass(
        loaded, blocks, spec.calibration, desc="measuring the residual stream", progress=spec.progress,
        around=lambda b: _watching(units[b.name], seen),
    ):
        stats = seen.pop()
        by_stage: dict[int, list[torch.Tensor]] = {}
        for stage, unit in units[block.name]:
            s = stats.get(unit.name)
            if s is not None and s.ntokens:
                by_stage.setdefault(stage, []).append(s.sq_norm.float().cpu() * s.nsamples / s.ntokens)
        for means in by_stage.values():
            total += torch.stack(means).mean(0)
    if not total.any():
        raise SecateursError("no residual reader saw calibration input; give calibration data with tokens")
    return InputStats(sq_norm=total, nsamples=1, ntokens=1)


def kept_channels(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Bool ``[size]``: all but the ``count`` lowest ``scores``; among equal scores the later
    channel goes first."""
    size = scores.numel()
    order = size - 1 - torch.argsort(scores.flip(0), stable=True)  # ties: later channels first
    keep = torch.ones(size, dtype=torch.bool)
    keep[order[:count]] = False
    return keep


def prune_hidden(loaded: LoadedModel, spec: PruneSpec) -> PruneResult:
    """Remove the lowest-scored ``spec.sparsity`` share of ``loaded.model``'s hidden channels
    in place; return what was done. ``records["hidden"]`` holds the widths, the removed
    channels and the parameter counts."""
    model = loaded.model
    start = time.perf_counter()
    group = check_hidden(loaded, spec)
    scorer = spec.scorer
    count = channels_to_remove(spec.sparsity, group.size, loaded.source)
    params_before = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        if isinstance(scorer, PreparingScorer):
            scorer.prepare(loaded, spec.calibration)
        stats = None
        if STAT_SQ_NORM in spec.needed_stats():
            stats = residual_stats(loaded, spec, group, loaded.adapter.blocks(model))
        generator = torch.Generator().manual_seed(spec.seed)
        scores = scorer.score_group(group, ScoreContext(stats=stats, generator=generator)).detach().float().cpu()
    if scores.shape != (group.size,) or not torch.isfinite(scores).all():
        raise SecateursError(
            f"the scorer gave the hidden channels scores of shape {tuple(scores.shape)} (expected "
            f"({group.size},), all finite)"
        )
    scored = time.perf_counter()
    keep = kept_channels(scores, count)
    loaded.adapter.remove_hidden(model, keep, spec.calibration or None)
    params_after = sum(p.numel() for p in model.parameters())
    records = merged_records(spec.allocator, scorer)
    records[HIDDEN] = {
        "size_before": group.size,
        "size_after": group.size - count,
        "calibrated": bool(spec.calibration),
        "removed": (~keep).nonzero().view(-1).tolist(),
        "params_before": params_before,
        "params_after": params_after,
    }
    end = time.perf_counter()
    return PruneResult(
        units=[UnitReport(group.name, (group.size,), group.size, count, spec.sparsity)],
        params_total=params_before,
        params_pruned=params_before - params_after,
        timings={"score": scored - start, "remove": end - scored, "total": end - start},
        records=records,
    )

