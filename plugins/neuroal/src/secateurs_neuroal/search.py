"""Scoring candidate allocations by NeuroAL's alignment, all candidates block by block.

Every candidate is a ``Plan`` (block → allocation). Candidates advance together: at block
``i`` each one has its own input stream (the outputs of *its* pruned blocks ``0..i-1``), so
nothing computed from block ``i``'s inputs is shared between candidates unless their
streams are the same object (block 0, where all start from the search inputs). Per block:

1. dense statistics of every distinct stream in one pass per sample
   (``SearchSession.collect_streams``: the block's dense weights are read once for all of them);
   block 0's are computed once per search and reused by later ``evaluate`` calls;
2. base scores once per block for scorers that need no input statistics (magnitude),
   else once per distinct stream; scores shared by several candidates are sorted once
   (``SearchSession.ranks``) and each candidate's masks read from the ranks;
3. per candidate, inside ``SearchSession.trial(block)`` (only this block's weights are saved and
   restored, never the model): prune with the candidate's allocation through the
   pipeline's scorer and applier, then one sparse pass collecting ``sq_norm`` only (no
   Hessian) and the outputs, which become the candidate's next stream.

Alignment of a linear: ``a = sqrt(sq_norm)`` dense vs sparse (``ratios.alignment``); a
candidate's score is the sum over every linear of every block (lower is better).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import attrs
import torch

from secateurs.block_inputs import Inputs
from secateurs.protocols import STAT_HESSIAN, STAT_SQ_NORM, SearchSession
from secateurs.types import Allocation, Block, InputStats
from secateurs_neuroal.ratios import alignment

Plan = Callable[[Block], Allocation]


@attrs.define
class Outcome:
    """One candidate's result: total ``score``, per-block sums, and (when asked) per-linear
    raw alignment vectors ``a_D - a_S`` (float32, CPU)."""

    score: float = 0.0
    blocks: list[float] = attrs.field(factory=list)
    vectors: dict[str, torch.Tensor] = attrs.field(factory=dict)


@attrs.define
class Profile:
    """Where the search's time went (wall seconds) and how much work it did."""

    dense_seconds: float = 0.0
    prune_seconds: float = 0.0
    sparse_seconds: float = 0.0
    sample_forwards: int = 0
    prunes: int = 0
    candidates: int = 0

    def to_dict(self) -> dict[str, float | int]:
        return attrs.asdict(self)


@attrs.frozen
class Dense:
    """What the candidates with one input stream share at a block: the dense ``stats``,
    the base ``scores`` (``None`` for scorers that select: they score per allocation) and,
    when several candidates share those scores, their per-row ``ranks`` (``None``: each
    candidate's applier sorts)."""

    stats: dict[str, InputStats]
    scores: Mapping[str, torch.Tensor] | None
    ranks: Mapping[str, torch.Tensor] | None = None


class Search:
    """Evaluates plans on fixed search ``inputs`` (block 0's inputs of the search samples).

    ``max_streams`` bounds how many candidate streams share one dense forward (memory:
    the block's activations for that many samples at once).
    """

    def __init__(self, session: SearchSession, inputs: Inputs, *, max_streams: int | None = None) -> None:
        self.session, self.inputs, self.max_streams = session, inputs, max_streams
        self._samples = sum(int(h.shape[0]) for h in inputs.hidden)
        self.profile = Profile()
        scorer = session.scorer
        self._input_free_scores = not scorer.selects and not (set(scorer.requires) & {STAT_SQ_NORM, STAT_HESSIAN})
        self._first: Dense | None = None

    def evaluate(self, plans: Sequence[Plan], *, keep_vectors: bool = False) -> list[Outcome]:
        """Score every plan (same order); ``keep_vectors`` keeps the alignment vectors."""
        if not plans:
            return []
        session, blocks = self.session, self.session.blocks
        outcomes = [Outcome() for _ in plans]
        streams: list[Inputs] = [self.inputs] * len(plans)
        self.profile.candidates += len(plans)
        with torch.no_grad():
            for block in blocks:
                last = block is blocks[-1]
                dense = self._dense(block, streams)
                for c, plan in enumerate(plans):
                    ref = dense[id(streams[c])]
                    with session.trial(block):
                        start = time.perf_counter()
                        session.prune_block(
                            block, ref.stats, streams[c], plan(block), scores=ref.scores, ranks=ref.ranks
                        )
                        mid = time.perf_counter()
                        sparse, streams[c] = session.collect(block, streams[c], hessian=False, keep_outputs=not last)
                    self.profile.prune_seconds += mid - start
                    self.profile.sparse_seconds += time.perf_counter() - mid
                    self.profile.sample_forwards += self._samples
                    self.profile.prunes += 1
                    _record(outcomes[c], block, ref.stats, sparse, keep_vectors)
        return outcomes

    def _dense(self, block: Block, streams: list[Inputs]) -> dict[int, Dense]:
        """What the candidates of each distinct stream share at ``block`` (keyed by ``id``)."""
        several = len(streams) > 1  # candidates to share one sort
        if block is self.session.blocks[0]:  # every candidate starts from the search inputs
            if self._first is None:
                stats = self._collect(block, [self.inputs])[0]
                scores = self._scores(block, stats)
                self._first = Dense(stats, scores, self._ranks(block, scores) if several else None)
            return {id(self.inputs): self._first}
        distinct = list({id(s): s for s in streams}.values())
        stats = dict(zip(map(id, distinct), self._collect(block, distinct), strict=True))
        if self._input_free_scores:  # one scoring (and one sort) for every stream
            scores = self._scores(block, next(iter(stats.values())))
            ranks = self._ranks(block, scores) if several else None
            return {key: Dense(st, scores, ranks) for key, st in stats.items()}
        return {key: Dense(st, self._scores(block, st)) for key, st in stats.items()}

    def _collect(self, block: Block, distinct: list[Inputs]) -> list[dict[str, InputStats]]:
        start = time.perf_counter()
        out = self.session.collect_streams(block, distinct, max_streams=self.max_streams)
        self.profile.dense_seconds += time.perf_counter() - start
        self.profile.sample_forwards += len(distinct) * self._samples
        return out

    def _scores(self, block: Block, stats: Mapping[str, InputStats]) -> Mapping[str, torch.Tensor] | None:
        """Scores to share between candidates with these statistics (``None`` for scorers
        that select given keep counts: they score per allocation)."""
        if self.session.scorer.selects:
            return None
        start = time.perf_counter()
        scores = self.session.score(block, stats)
        self.profile.prune_seconds += time.perf_counter() - start
        return scores

    def _ranks(self, block: Block, scores: Mapping[str, torch.Tensor] | None) -> Mapping[str, torch.Tensor] | None:
        """``scores`` sorted once for the candidates sharing them (``None``: each sorts its own)."""
        if scores is None:
            return None
        start = time.perf_counter()
        ranks = self.session.ranks(block, scores)
        self.profile.prune_seconds += time.perf_counter() - start
        return ranks


def _record(outcome: Outcome, block: Block, dense: Mapping[str, InputStats], sparse: Mapping[str, InputStats], keep: bool) -> None:
    total = 0.0
    for unit in block.units:
        a_d, a_s = dense[unit.name].sq_norm.sqrt(), sparse[unit.name].sq_norm.sqrt()
        total += alignment(a_d, a_s)
        if keep:
            outcome.vectors[unit.name] = (a_d - a_s).float().cpu()
    outcome.blocks.append(total)
    outcome.score += total
