"""Scoring candidate allocations by NeuroAL's alignment, all candidates block by block.

Every candidate is a ``Plan`` (block → allocation). Candidates advance together: at block
``i`` each one has its own input stream (the outputs of *its* pruned blocks ``0..i-1``).
What the sparse activations are compared with (``dense_inputs``):

* ``"dense"``: the dense model's own activations: one dense pass per block on the dense
  stream, shared by every candidate; the base scores come from it too, so each block is
  scored once and sorted once per linear (``SearchSession.ranks``) for every candidate;
* ``"pruned"`` (the published code): the dense block on each candidate's own inputs, in
  one pass per sample for every distinct stream (``SearchSession.collect_streams``; block
  0's, where all streams are the search inputs, once per search); scores per distinct
  stream (once per block for scorers that need no input statistics).

Per candidate, inside ``SearchSession.trial(block)`` (only this block's weights are saved
and restored, never the model): prune with the candidate's allocation through the
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


DENSE_INPUTS = ("dense", "pruned")


class Search:
    """Evaluates plans on fixed search ``inputs`` (block 0's inputs of the search samples).

    ``dense_inputs``: ``"dense"`` or ``"pruned"`` (module docstring). ``max_streams``
    bounds how many candidate streams share one dense forward under ``"pruned"`` (memory:
    the block's activations for that many samples at once).
    """

    def __init__(
        self, session: SearchSession, inputs: Inputs, *, dense_inputs: str = "dense", max_streams: int | None = None
    ) -> None:
        if dense_inputs not in DENSE_INPUTS:
            raise ValueError(f"dense_inputs must be one of {DENSE_INPUTS}, got {dense_inputs!r}")
        self.session, self.inputs, self.max_streams = session, inputs, max_streams
        self.shared = dense_inputs == "dense"
        self._samples = sum(int(h.shape[0]) for h in inputs.hidden)
        self.profile = Profile()
        scorer = session.scorer
        self._input_free_scores = not scorer.selects and not (set(scorer.requires) & {STAT_SQ_NORM, STAT_HESSIAN})
        self._first: tuple[dict[str, InputStats], Mapping[str, torch.Tensor] | None] | None = None

    def evaluate(self, plans: Sequence[Plan], *, keep_vectors: bool = False) -> list[Outcome]:
        """Score every plan (same order); ``keep_vectors`` keeps the alignment vectors."""
        if not plans:
            return []
        session, blocks = self.session, self.session.blocks
        outcomes = [Outcome() for _ in plans]
        streams: list[Inputs] = [self.inputs] * len(plans)
        reference = self.inputs  # the dense model's stream ("dense")
        self.profile.candidates += len(plans)
        with torch.no_grad():
            for block in blocks:
                last = block is blocks[-1]
                if self.shared:  # one dense reference for every stream
                    stats, reference = self._collect_dense(block, reference, keep_outputs=not last)
                    scores = self._scores(block, stats)
                    by_stream = dict.fromkeys(map(id, streams), (stats, scores, self._ranks(block, scores)))
                else:
                    dense, shareable = self._dense(block, streams)
                    by_stream = {key: (dense[key], shareable[key], None) for key in dense}
                for c, plan in enumerate(plans):
                    stats, scores, ranks = by_stream[id(streams[c])]
                    with session.trial(block):
                        start = time.perf_counter()
                        session.prune_block(block, stats, streams[c], allocation=plan(block), scores=scores, ranks=ranks)
                        mid = time.perf_counter()
                        sparse, streams[c] = session.collect(block, streams[c], hessian=False, keep_outputs=not last)
                    self.profile.prune_seconds += mid - start
                    self.profile.sparse_seconds += time.perf_counter() - mid
                    self.profile.sample_forwards += self._samples
                    self.profile.prunes += 1
                    _record(outcomes[c], block, stats, sparse, keep_vectors)
        return outcomes

    def _collect_dense(
        self, block: Block, stream: Inputs, *, keep_outputs: bool
    ) -> tuple[dict[str, InputStats], Inputs]:
        """The dense model's statistics at ``block`` and its next stream ("dense")."""
        start = time.perf_counter()
        stats, outputs = self.session.collect(block, stream, keep_outputs=keep_outputs)
        self.profile.dense_seconds += time.perf_counter() - start
        self.profile.sample_forwards += self._samples
        return stats, outputs

    def _ranks(self, block: Block, scores: Mapping[str, torch.Tensor] | None) -> Mapping[str, torch.Tensor] | None:
        """One sort per unit for every candidate, when the run's applier can use it."""
        if scores is None:
            return None
        start = time.perf_counter()
        ranks = self.session.ranks(block, scores)
        self.profile.prune_seconds += time.perf_counter() - start
        return ranks

    def _dense(
        self, block: Block, streams: list[Inputs]
    ) -> tuple[dict[int, dict[str, InputStats]], dict[int, Mapping[str, torch.Tensor] | None]]:
        """Dense statistics and shareable scores per distinct stream (keyed by ``id``)."""
        if block is self.session.blocks[0]:  # every candidate starts from the search inputs
            if self._first is None:
                stats = self._collect(block, [self.inputs])[0]
                self._first = (stats, self._scores(block, stats))
            stats, scores = self._first
            return {id(self.inputs): stats}, {id(self.inputs): scores}
        distinct = list({id(s): s for s in streams}.values())
        stats = dict(zip(map(id, distinct), self._collect(block, distinct), strict=True))
        if self._input_free_scores:
            return stats, dict.fromkeys(stats, self._scores(block, next(iter(stats.values()))))
        return stats, {key: self._scores(block, st) for key, st in stats.items()}

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


def _record(outcome: Outcome, block: Block, dense: Mapping[str, InputStats], sparse: Mapping[str, InputStats], keep: bool) -> None:
    total = 0.0
    for unit in block.units:
        a_d, a_s = dense[unit.name].sq_norm.sqrt(), sparse[unit.name].sq_norm.sqrt()
        total += alignment(a_d, a_s)
        if keep:
            outcome.vectors[unit.name] = (a_d - a_s).float().cpu()
    outcome.blocks.append(total)
    outcome.score += total
