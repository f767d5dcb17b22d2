"""The one place a pruning session runs, block by block.

    adapter.blocks(model) → capture block 0's inputs for every calibration batch (and
    every block's own extra arguments: ``block_inputs``) →
    allocator.prepare(session) → for each block: collect input statistics (hooks) →
    score → allocate → apply → re-run the block so the next one sees pruned outputs.

Memory stays at the model plus one block boundary of calibration activations (inputs and
outputs) plus one block's working set. Data-free runs (no statistics needed) never run
the model. Allocators that search get a ``Session`` handle to run blocks with candidate
allocations; they never re-implement this loop.
"""

from __future__ import annotations

import fnmatch
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import attrs
import torch
from torch import nn
from tqdm.auto import tqdm

from secateurs.block_inputs import BlockCall, Inputs, capture_inputs
from secateurs.errors import SecateursError
from secateurs.protocols import (
    NEEDS_REFERENCE,
    STAT_HESSIAN,
    STAT_SQ_NORM,
    UNSTRUCTURED,
    Allocator,
    Applier,
    BlockContext,
    CheckingApplier,
    LoadedModel,
    PreparingScorer,
    RankingApplier,
    ResizingApplier,
    Scorer,
    ScoreContext,
    StructuredRefusing,
    StructuredScorer,
    merged_records,
)
from secateurs.depth import check_layers, prune_layers
from secateurs.width import check_hidden, prune_hidden
from secateurs.masks import keep_counts, row_ranks
from secateurs.offload import materialized
from secateurs.stats import StatsComplete, collect_stats
from secateurs.structured import entry_layout, reading_stats, removed_entries
from secateurs.preflight import check_plan
from secateurs.types import HIDDEN, LAYERS, Allocation, Block, Group, InputStats, PruneResult, RunPlan, Unit, UnitReport

@attrs.define(eq=False)
class PruneSpec:
    """Everything one pruning run needs, already resolved to objects.

    ``granularity``: ``"unstructured"`` (entries of units) or a group kind (``"heads"``,
    ``"neurons"``, ``"channels"``). ``targets``: glob patterns over parameter names
    (``"*"`` = every parameter); when given, the run prunes those parameters instead of
    the adapter's block units, as one block (the whole model: calibration statistics come
    from the dense model's own forward). ``reference``: the tensor of a reference model
    by parameter name (KEN's pre-trained model). ``calibration``: batches for the adapter's
    ``forward``; required when the scorer or applier needs statistics.
    """

    scorer: Scorer
    allocator: Allocator
    applier: Applier
    sparsity: float
    granularity: str = UNSTRUCTURED
    targets: Sequence[str] | None = None
    exclude: Sequence[str] = ()
    calibration: list[Any] | None = None
    reference: Callable[[str], torch.Tensor] | None = None
    seed: int = 0
    progress: bool = True

    def needed_stats(self) -> set[str]:
        return (set(self.scorer.requires) | set(self.applier.requires)) & {STAT_SQ_NORM, STAT_HESSIAN}

    def plan(self) -> RunPlan:
        """The run as the checks that need no model see it (``preflight.check_plan``)."""
        return RunPlan(self.sparsity, self.granularity, self.scorer, self.applier, calibrated=bool(self.calibration))


def target_blocks(model: nn.Module, patterns: Sequence[str], exclude: Sequence[str] = ()) -> list[Block]:
    """One pseudo-block, the whole model, holding every parameter whose name matches
    ``patterns`` (and none of ``exclude``)."""
    modules = dict(model.named_modules())
    units = []
    for name, _ in model.named_parameters():
        if any(fnmatch.fnmatchcase(name, p) for p in patterns) and not any(
            fnmatch.fnmatchcase(name, p) for p in exclude
        ):
            owner, _, param = name.rpartition(".")
            units.append(Unit(name, modules[owner], param, role=param, module_path=owner))
    if not units:
        raise SecateursError(f"no parameter matches targets {list(patterns)} (exclude {list(exclude)})")
    return [Block("model", 0, model, tuple(units))]


def capture(loaded: LoadedModel, blocks: Sequence[Block], batches: Iterable[Any]) -> Inputs:
    """Block 0's inputs for every calibration batch, each block with the arguments the
    model itself gives it (``secateurs.block_inputs.capture_inputs``)."""
    adapter = loaded.adapter
    return capture_inputs(
        lambda batch: adapter.forward(loaded.model, batch),
        [b.module for b in blocks],
        adapter.block_output,
        batches,
    )


class Session:
    """A pruning session over one model: the ``SearchSession`` allocators get in ``prepare``.

    ``blocks`` in order; ``inputs`` are block 0's captured calibration inputs (empty for
    data-free runs); the ``Inputs`` a block's run returns carry the next block's own
    arguments. Methods run blocks; none of them changes weights unless asked to
    (``prune_block``), and ``trial(block)`` restores a block's weights on exit.
    """

    def __init__(self, loaded: LoadedModel, spec: PruneSpec, blocks: list[Block], inputs: Inputs | None = None) -> None:
        self.loaded, self.spec, self.blocks = loaded, spec, blocks
        self.inputs = Inputs() if inputs is None else inputs
        self.timings: dict[str, float] = {}
        self._generator = torch.Generator(device="cpu").manual_seed(spec.seed)
        self._trying: set[str] = set()  # blocks inside ``trial``: a resizing applier zeroes there

    # -- timing ----------------------------------------------------------------------
    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[phase] = self.timings.get(phase, 0.0) + time.perf_counter() - start

    # -- what a block is pruned by -----------------------------------------------------
    def targets(self, block: Block) -> list[Unit] | list[Group]:
        """The units (unstructured) or groups of the run's kind in ``block``."""
        return block.targets(self.spec.granularity)

    # -- the run's parts, read-only (``SearchSession``) ---------------------------------
    @property
    def calibration(self) -> list[Any] | None:
        return self.spec.calibration

    @property
    def scorer(self) -> Scorer:
        return self.spec.scorer

    @property
    def applier(self) -> Applier:
        return self.spec.applier

    @property
    def granularity(self) -> str:
        return self.spec.granularity

    @property
    def data_free(self) -> bool:
        return not self.spec.needed_stats()

    # -- running blocks ----------------------------------------------------------------
    def run(self, block: Block, inputs: Inputs, *, keep_outputs: bool = True) -> Inputs:
        """Run ``block`` on every input; return the next block's inputs (empty unless
        ``keep_outputs``; a forward that statistics hooks cut short, ``StatsComplete``,
        then counts as done)."""
        outputs: list[torch.Tensor] = []
        with torch.no_grad(), self.timed("forward"):
            for args, kwargs in inputs:
                try:
                    out = self.loaded.adapter.block_output(block.module(*args, **kwargs))
                except StatsComplete:
                    if keep_outputs:
                        raise
                    continue
                if keep_outputs:
                    outputs.append(out)
        return inputs.following(outputs) if keep_outputs else Inputs()

    def collect(
        self,
        block: Block,
        inputs: Inputs,
        units: Sequence[Unit] | None = None,
        *,
        keep_outputs: bool = False,
        hessian: bool | None = None,
    ) -> tuple[dict[str, InputStats], Inputs]:
        """Run ``block`` with statistics hooks on ``units`` (default: all the block's units).

        ``hessian``: collect Hessians (default: when the scorer or applier needs them);
        ``False`` skips them for callers that only need ``sq_norm``. Without
        ``keep_outputs`` each forward stops once every unit has seen its input.
        """
        units = list(block.units if units is None else units)
        stop_in = None if keep_outputs else block.module
        with collect_stats(units, hessian=self._want_hessian(hessian), stop_in=stop_in) as col:
            outputs = self.run(block, inputs, keep_outputs=keep_outputs)
        return col.stats, outputs

    def _want_hessian(self, hessian: bool | None) -> bool:
        return STAT_HESSIAN in self.spec.needed_stats() if hessian is None else hessian

    def capture(self, batches: Iterable[Any]) -> Inputs:
        """Block 0's inputs for other calibration ``batches`` (e.g. a search subset)."""
        with self.timed("capture"):
            return capture(self.loaded, self.blocks, batches)

    def collect_streams(
        self,
        block: Block,
        streams: Sequence[Inputs],
        units: Sequence[Unit] | None = None,
        *,
        hessian: bool | None = None,
        max_streams: int | None = None,
    ) -> list[dict[str, InputStats]]:
        """Statistics of ``units`` for each of several input ``streams`` of ``block``, with
        the block's current weights, running up to ``max_streams`` streams (default: all) in
        one forward per sample so the block's weights are read once per sample.

        Streams must be of equal length and come from the same captured inputs (what
        ``run`` returns keeps the capture's arguments, so candidates evaluated from the
        same block-0 inputs qualify: ``Inputs.shares_calls``). Hidden states are then
        concatenated along the batch dimension (stream-major); extra tensors whose leading
        dimension is the batch size (> 1) are repeated to match, others broadcast. Streams
        that do not qualify run one after another. Results equal separate ``collect`` calls
        up to float rounding.
        """
        units = list(block.units if units is None else units)
        if not streams:
            return []
        step = max_streams or len(streams)
        if step < len(streams):
            return [
                stats
                for start in range(0, len(streams), step)
                for stats in self.collect_streams(block, streams[start : start + step], units, hessian=hessian)
            ]
        want_hessian = self._want_hessian(hessian)
        if len(streams) == 1 or not all(streams[0].shares_calls(s) for s in streams[1:]):
            return [self.collect(block, s, units, hessian=want_hessian)[0] for s in streams]
        n = len(streams)
        stats = collect_stats(units, hessian=want_hessian, splits=n, stop_in=block.module)
        with stats as col, torch.no_grad(), self.timed("forward"):
            for j, call in enumerate(streams[0].block_calls()):
                batch = streams[0].hidden[j].shape[0]
                repeated = BlockCall(_repeat_batch(call.args, n, batch), _repeat_batch(call.kwargs, n, batch), call.hidden_key)
                args, kwargs = repeated.arguments(torch.cat([s.hidden[j] for s in streams]))
                with suppress(StatsComplete):  # the rest of the forward is not needed
                    block.module(*args, **kwargs)
        return col.split_stats

    def score(
        self, block: Block, stats: Mapping[str, InputStats], allocation: Allocation | None = None
    ) -> dict[str, torch.Tensor]:
        """Scores of every target of ``block`` (``allocation`` gives ``keep`` to selectors)."""
        scorer = self.spec.scorer
        scores = {}
        with torch.no_grad(), self.timed("score"):
            for target in self.targets(block):
                if isinstance(target, Group):
                    ctx = self._score_context(target, stats, None, block.units)
                    scores[target.name] = scorer.score_group(target, ctx)
                    continue
                keep = None
                if allocation is not None and scorer.selects:
                    keep = keep_counts(allocation[target.name], target.rows, target.row_width)
                scores[target.name] = scorer.score(target, self._score_context(target, stats, keep))
        return scores

    def _score_context(
        self, target: Unit | Group, stats: Mapping[str, InputStats], keep, units: Sequence[Unit] = ()
    ) -> ScoreContext:
        """A unit's context holds its own statistics; a group's, those of its reading unit
        among ``units`` (the block's), over the group's span (``structured.reading_stats``)."""
        reference = None
        if isinstance(target, Unit) and NEEDS_REFERENCE in self.spec.scorer.requires:
            reference = self.reference(target)
        device = target.weight.device if isinstance(target, Unit) else "cpu"
        gen = torch.Generator(device=device).manual_seed(self._next_seed())
        own = stats.get(target.name) if isinstance(target, Unit) else reading_stats(target, units, stats)
        return ScoreContext(stats=own, reference=reference, keep=keep, generator=gen)

    def _next_seed(self) -> int:
        return int(torch.randint(0, 2**62, (1,), generator=self._generator))

    def reference(self, unit: Unit) -> torch.Tensor:
        """The reference model's tensor for ``unit`` (on the unit's device and dtype)."""
        if self.spec.reference is None:
            raise SecateursError(
                "this scorer or applier needs a reference model (set `reference_model` in the recipe)"
            )
        tensor = unit.orient(self.spec.reference(unit.qualified_name))
        if tensor.shape != unit.weight.shape:
            raise SecateursError(
                f"reference tensor {unit.qualified_name} has shape {tuple(tensor.shape)}, "
                f"the model's has {tuple(unit.weight.shape)}"
            )
        return tensor.to(unit.weight.device, unit.weight.dtype)

    def allocate(self, block: Block, scores: Mapping[str, torch.Tensor] | None) -> Allocation:
        allocation = self.spec.allocator.allocate(block, scores, self.spec.sparsity)
        missing = [t.name for t in self.targets(block) if t.name not in allocation]
        if missing:
            raise SecateursError(f"allocator gave no sparsity for {missing[:3]} in block {block.name!r}")
        return allocation

    def ranks(self, block: Block, scores: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        """``masks.row_ranks`` of every unit's ``scores``, for ``prune_block(..., ranks=)``;
        ``None`` when the run cannot apply masks from ranks (the applier is not a
        ``RankingApplier`` for this configuration, the scorer selects or does not compare
        per row, or the granularity is structured)."""
        applier, scorer = self.spec.applier, self.spec.scorer
        if not (isinstance(applier, RankingApplier) and applier.ranks_rows):
            return None
        if scorer.selects or scorer.comparison != "row" or self.spec.granularity != UNSTRUCTURED:
            return None
        with torch.no_grad(), self.timed("score"):
            return {u.name: row_ranks(u.as_rows(scores[u.name])) for u in block.units if u.name in scores}

    def prune_block(
        self,
        block: Block,
        stats: Mapping[str, InputStats],
        inputs: Inputs,
        allocation: Allocation | None = None,
        scores: Mapping[str, torch.Tensor] | None = None,
        ranks: Mapping[str, torch.Tensor] | None = None,
    ) -> tuple[dict[str, torch.Tensor], Allocation]:
        """Score, allocate (unless ``allocation`` is given) and apply masks to ``block``.

        ``scores``: this block's scores computed earlier with the same weights and
        statistics (allocators that try several allocations share them); ignored for
        scorers that select given keep counts. ``ranks``: what ``ranks(block, scores)``
        returned for them (with ``scores`` and ``allocation``): the masks come from the
        ranks, no sorting.
        """
        if ranks is not None:
            if scores is None or allocation is None:
                raise SecateursError("prune_block(ranks=...) needs the scores the ranks came from and an allocation")
            return self._apply(block, stats, inputs, scores, allocation, ranks), allocation
        if self.spec.scorer.selects:
            allocation = allocation or self.allocate(block, None)
            scores = self.score(block, stats, allocation)
        else:
            scores = scores if scores is not None else self.score(block, stats)
            allocation = allocation or self.allocate(block, scores)
        return self._apply(block, stats, inputs, scores, allocation), allocation

    def _apply(
        self,
        block: Block,
        stats: Mapping[str, InputStats],
        inputs: Inputs,
        scores: Mapping[str, torch.Tensor],
        allocation: Allocation,
        ranks: Mapping[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        ctx = BlockContext(
            block=block,
            stats=stats,
            comparison=self.spec.scorer.comparison,
            generator=torch.Generator().manual_seed(self._next_seed()),
            recollect=lambda units: self.collect(block, inputs, units)[0],
            reference=self.reference if self.spec.reference is not None else None,
            granularity=self.spec.granularity,
            loaded=self.loaded,
        )
        applier = self.spec.applier
        if block.name in self._trying and isinstance(applier, ResizingApplier):
            applier = applier.in_place()  # same outputs, shapes kept: the trial can undo it
        with torch.no_grad(), self.timed("apply"):
            if ranks is not None:
                return applier.apply_ranked(block, ranks, allocation, ctx)
            return applier.apply(block, scores, allocation, ctx)

    @contextmanager
    def trial(self, block: Block) -> Iterator[None]:
        """Restore ``block``'s parameters on exit (for allocators that try candidates)."""
        # offloaded blocks: real tensors while trying; restored on exit, so nothing to write back
        with materialized(block.module, writeback=False):
            saved = {name: p.detach().clone() for name, p in block.module.named_parameters()}
            self._trying.add(block.name)
            try:
                yield
            finally:
                self._trying.discard(block.name)
                with torch.no_grad():
                    for name, p in block.module.named_parameters():
                        if p.shape != saved[name].shape:
                            raise SecateursError(
                                f"the applier changed the shape of {block.name}.{name} inside a trial, so "
                                "the trial cannot be undone; an applier that resizes tensors must declare "
                                "ResizingApplier.in_place (docs/plugins.md)"
                            )
                        p.copy_(saved[name])

    def dense_scores(self) -> Iterator[tuple[Block, dict[str, torch.Tensor]]]:
        """One dense pass: each block with its scores on dense inputs; nothing is pruned."""
        inputs = self.inputs
        for block in self.blocks:
            stats: dict[str, InputStats] = {}
            with materialized(block.module, writeback=False):
                if not self.data_free:
                    stats, inputs = self.collect(
                        block,
                        inputs,
                        keep_outputs=block is not self.blocks[-1],
                        hessian=STAT_HESSIAN in self.spec.scorer.requires,  # scores only: no applier Hessians
                    )
                scores = self.score(block, stats)
            yield block, scores


def check_spec(loaded: LoadedModel, spec: PruneSpec, blocks: list[Block] | None = None) -> list[Block]:
    """Check the run before any work on the model (sparsity, parts, granularity, hookable
    units: ``SecateursError`` naming what is wrong); return the blocks it prunes
    (``blocks``, else the recipe's targets, else the adapter's blocks). ``layers`` runs:
    ``secateurs.depth.check_layers``; ``hidden`` runs: ``secateurs.width.check_hidden``."""
    if spec.granularity == LAYERS:
        return check_layers(loaded, spec, blocks)
    if spec.granularity == HIDDEN:
        check_hidden(loaded, spec)
        return loaded.adapter.blocks(loaded.model) if blocks is None else blocks
    check_plan(spec.plan(), spec.allocator)
    model = loaded.model
    if blocks is None:
        blocks = (
            target_blocks(model, spec.targets, spec.exclude)
            if spec.targets is not None
            else loaded.adapter.blocks(model)
        )
    if spec.needed_stats():
        _check_hookable(blocks)
    if isinstance(spec.applier, CheckingApplier):
        spec.applier.check(blocks, spec.granularity)
    if spec.granularity != UNSTRUCTURED:
        if not [t for block in blocks for t in block.targets(spec.granularity)]:
            adapter = loaded.adapter
            refuses = isinstance(adapter, StructuredRefusing)
            reason = adapter.structured_refusal(model, spec.granularity) if refuses else None
            raise SecateursError(
                f"the {loaded.adapter.name!r} adapter defines no {spec.granularity!r} groups for this model"
                + (f" ({reason})" if reason else "")
                + "; unstructured pruning still works"
            )
        if not isinstance(spec.scorer, StructuredScorer):
            raise SecateursError(f"this scorer cannot score structured {spec.granularity!r} groups")
    return blocks


def _open_session(loaded: LoadedModel, spec: PruneSpec, blocks: list[Block] | None) -> Session:
    """A session ready to walk the blocks: the run checked (``check_spec``), a preparing
    scorer prepared and block 0's calibration inputs captured."""
    session = Session(loaded, spec, check_spec(loaded, spec, blocks))
    if isinstance(spec.scorer, PreparingScorer):  # whole-model scorers: once, before any pruning
        with session.timed("score"):
            spec.scorer.prepare(loaded, spec.calibration)
    if not session.data_free:  # check_spec refused a run that needs calibration without it
        with session.timed("capture"):
            session.inputs = capture(loaded, session.blocks, spec.calibration)
    return session


def dense_scores(
    loaded: LoadedModel, spec: PruneSpec, blocks: list[Block] | None = None, *, to_cpu: bool = True
) -> dict[str, torch.Tensor]:
    """Every target's score by target name on the dense model (moved to the CPU unless
    ``to_cpu`` is false): one pass in which block ``i`` sees the dense outputs of the
    blocks before it. Nothing is pruned; ``spec``'s allocator and applier are not used."""
    session = _open_session(loaded, spec, blocks)
    with torch.no_grad():
        return {
            name: score.detach().cpu() if to_cpu else score.detach()
            for _, scores in tqdm(session.dense_scores(), total=len(session.blocks), desc="scoring",
                                  unit="block", disable=not spec.progress)
            for name, score in scores.items()
        }


def prune_model(loaded: LoadedModel, spec: PruneSpec, blocks: list[Block] | None = None) -> PruneResult:
    """Prune ``loaded.model`` in place according to ``spec``; return what was done.

    The model object is modified: copy it first if you need the original. ``layers`` runs
    remove whole blocks (``secateurs.depth.prune_layers``), ``hidden`` runs narrow the
    residual stream (``secateurs.width.prune_hidden``).
    """
    if spec.granularity == LAYERS:
        return prune_layers(loaded, spec, blocks)
    if spec.granularity == HIDDEN:
        return prune_hidden(loaded, spec)
    params_total = sum(p.numel() for p in loaded.model.parameters())
    start = time.perf_counter()
    session = _open_session(loaded, spec, blocks)
    blocks = session.blocks
    targets = _all_targets(session)
    layout = entry_layout(targets) if spec.granularity != UNSTRUCTURED else None
    with session.timed("prepare"):
        spec.allocator.prepare(session, spec.sparsity)

    reports: list[UnitReport] = []
    keeps: list[torch.Tensor] = []  # structured runs: each group's kept components
    inputs, session.inputs = session.inputs, Inputs()  # hold one block boundary, not two
    with torch.no_grad():
        for block in tqdm(blocks, desc="pruning", unit="block", disable=not spec.progress):
            stats: dict[str, InputStats] = {}
            with materialized(block.module):  # no-op unless accelerate offloads the block
                if not session.data_free:
                    stats, _ = session.collect(block, inputs)
                masks, allocation = session.prune_block(block, stats, inputs)
                reports += _reports(session.targets(block), masks, allocation)
                if layout is not None:
                    keeps += [masks[t.name] for t in session.targets(block)]
                if not session.data_free and block is not blocks[-1]:
                    inputs = session.run(block, inputs)
    session.timings["total"] = time.perf_counter() - start
    if layout is None:
        pruned = sum(r.pruned for r in reports)
    else:
        _check_components_removed(targets, reports, spec.sparsity)
        pruned = removed_entries(layout, keeps)
    return PruneResult(
        units=reports,
        params_total=params_total,
        params_pruned=pruned,
        timings=session.timings,
        records=merged_records(spec.allocator, spec.scorer),
    )


def _repeat_batch(value: Any, n: int, batch: int) -> Any:
    """``value`` with every tensor whose leading dimension is ``batch`` (> 1) repeated ``n``
    times along it (stream-major, like the concatenated hidden states)."""
    if isinstance(value, torch.Tensor):
        if batch > 1 and value.dim() and value.shape[0] == batch:
            return value.repeat(n, *([1] * (value.dim() - 1)))
        return value
    if isinstance(value, tuple | list):
        items = [_repeat_batch(v, n, batch) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    if isinstance(value, dict):
        return {k: _repeat_batch(v, n, batch) for k, v in value.items()}
    return value


def _all_targets(session: Session) -> list[Unit] | list[Group]:
    return [t for block in session.blocks for t in session.targets(block)]


def _reports(targets: Sequence[Unit | Group], masks: Mapping[str, torch.Tensor], allocation: Allocation) -> list[UnitReport]:
    out = []
    for target in targets:
        mask = masks[target.name]
        shape = tuple(mask.shape)
        out.append(
            UnitReport(
                name=target.name,
                shape=shape,
                numel=mask.numel(),
                pruned=int(mask.numel() - mask.sum()),
                target_sparsity=float(allocation[target.name].sparsity),
            )
        )
    return out


def _check_hookable(blocks: Sequence[Block]) -> None:
    """Input statistics are collected from a unit's module input: every unit must be the
    weight of a layer that multiplies its input by it."""
    for block in blocks:
        for unit in block.units:
            if unit.param != "weight" or unit.weight.dim() < 2 or isinstance(unit.module, nn.Embedding):
                raise SecateursError(
                    f"{unit.qualified_name} is not a Linear/Conv weight, so this scorer or applier has no "
                    "input statistics for it; narrow `targets` to weights (e.g. '*.weight') or use "
                    "a data-free scorer (magnitude, random)"
                )


def _check_components_removed(groups: Sequence[Group], reports: Sequence[UnitReport], sparsity: float) -> None:
    """Warn about groups whose sparsity rounded down to no component; refuse a run in
    which no group lost one. Both name the smallest rate that removes one component."""
    idle = [(g, r) for g, r in zip(groups, reports, strict=True) if r.target_sparsity > 0 and r.pruned == 0]
    if not idle:
        return
    smallest = min(g.size for g, _ in idle)
    advice = f"a sparsity of at least {1 / smallest:.4g} removes one of {smallest} components"
    if len(idle) == len(groups) and sparsity > 0:
        raise SecateursError(
            f"nothing was pruned: at sparsity {sparsity:g} every {groups[0].kind} group rounds down "
            f"to 0 components ({advice})"
        )
    names = ", ".join(g.name for g, _ in idle[:3]) + (" ..." if len(idle) > 3 else "")
    warnings.warn(
        f"{len(idle)} of {len(groups)} {groups[0].kind} groups lose no component: their sparsity "
        f"rounds down to 0 ({names}; {advice})",
        stacklevel=3,
    )
