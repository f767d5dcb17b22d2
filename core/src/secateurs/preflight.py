"""Checks a run makes before any weight is read: from the recipe, the parts it names and the
model's own config files.

``preflight(recipe, parts)`` runs them all; every command that runs a recipe calls it right
after building the parts (``secateurs.run.build_parts``), so a bad ``granularity``, an
allocator that cannot serve the run, or a ``seqlen`` past the model's positions is one line
before the model is loaded, not after minutes of loading and evaluating.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from secateurs.errors import SecateursError
from secateurs.plugins import PluginManager
from secateurs.protocols import (
    LAYER_COMPARISON,
    NEEDS_CALIBRATION,
    STAT_HESSIAN,
    STAT_SQ_NORM,
    CheckingAllocator,
    DescribingAdapter,
    GroupingAdapter,
    LayerScorer,
    ModelChecking,
    StructuredScorer,
)
from secateurs.types import HIDDEN, LAYERS, UNSTRUCTURED, ModelFacts, RunPlan
from secateurs.validators import check_sparsity


def check_plan(plan: RunPlan, allocator: Any) -> None:
    """What a run's parts say of each other and of the target, before any model exists:
    the sparsity, a selecting scorer with an allocator that needs scores, calibration for
    the statistics the scorer or applier needs, and the allocator's own ``check``
    (``CheckingAllocator``); for ``layers`` and ``hidden`` runs, a scorer of layers or of
    groups and no allocator or applier but the defaults (``check_layer_plan``,
    ``check_hidden_plan``)."""
    check_sparsity(plan.sparsity)
    if plan.granularity == LAYERS:
        check_layer_plan(plan, allocator)
    elif plan.scorer.comparison == LAYER_COMPARISON:
        raise SecateursError(
            f"this scorer scores whole layers, not {plan.granularity} entries or groups; "
            f'set granularity = "{LAYERS}" or pick another scorer'
        )
    if plan.granularity == HIDDEN:
        check_hidden_plan(plan, allocator)
    if plan.scorer.selects and allocator.needs_scores:
        raise SecateursError(
            "this scorer selects entries given each row's keep count, so it needs an allocator "
            "that works without scores (e.g. 'uniform')"
        )
    needs = {STAT_SQ_NORM, STAT_HESSIAN, NEEDS_CALIBRATION}
    if not plan.calibrated and (set(plan.scorer.requires) | set(plan.applier.requires)) & needs:
        raise SecateursError("this scorer or applier needs calibration data; the recipe gives none")
    if isinstance(allocator, CheckingAllocator):
        allocator.check(plan)


WHOLE_MODEL_PARTS = {
    "allocator": ("secateurs.builtins.allocators:UniformAllocator",),
    "applier": ("secateurs.builtins.appliers:ZeroApplier", "secateurs.builtins.remove:RemoveApplier"),
}
"""The parts a ``layers`` or ``hidden`` run accepts besides its scorer (the recipe's
defaults, and ``remove``): the run decides and removes the layers or channels itself
(``secateurs.depth``, ``secateurs.width``)."""


def check_layer_plan(plan: RunPlan, allocator: Any) -> None:
    """A ``layers`` run needs a ``LayerScorer`` and uses neither an allocator nor an applier
    of its own: refuse any but the defaults rather than ignore them."""
    if not isinstance(plan.scorer, LayerScorer):
        raise SecateursError(
            f'this scorer cannot score whole layers (granularity = "{LAYERS}"); '
            "use 'block-influence' or 'skip-loss', or a plugin scorer with score_layer"
        )
    _check_default_parts(plan, allocator, "removes the lowest-scored layers itself")


def check_hidden_plan(plan: RunPlan, allocator: Any) -> None:
    """A ``hidden`` run scores the hidden channels as one group (a ``StructuredScorer``) and
    uses neither an allocator nor an applier of its own."""
    if not isinstance(plan.scorer, StructuredScorer):
        raise SecateursError(
            f'this scorer cannot score hidden channels (granularity = "{HIDDEN}"); use '
            "'activation', 'magnitude' or 'random', or a plugin scorer with score_group"
        )
    _check_default_parts(plan, allocator, "removes the lowest-scored hidden channels of the whole model itself")


def _check_default_parts(plan: RunPlan, allocator: Any, what: str) -> None:
    for kind, part in (("allocator", allocator), ("applier", plan.applier)):
        if f"{type(part).__module__}:{type(part).__qualname__}" not in WHOLE_MODEL_PARTS[kind]:
            raise SecateursError(
                f'granularity = "{plan.granularity}" {what}; leave out the '
                f"recipe's {kind} (its {type(part).__name__} is not used)"
            )


def layers_to_remove(sparsity: float, layers: int, source: str = "the model") -> int:
    """How many of ``layers`` blocks a ``layers`` run at ``sparsity`` removes (the nearest
    whole number, halves up); ``SecateursError`` when that is none or all of them."""
    count = math.floor(sparsity * layers + 0.5)
    if count == 0:
        raise SecateursError(
            f"nothing to remove: sparsity {sparsity:g} of {source}'s {layers} layers rounds to 0 layers "
            f"(at least {0.5 / layers:.3g} removes one)"
        )
    if count >= layers:
        raise SecateursError(
            f"sparsity {sparsity:g} of {source}'s {layers} layers removes every layer; "
            f"below {(layers - 0.5) / layers:.3g} keeps at least one"
        )
    return count


def check_granularity(granularity: str, manager: PluginManager, adapter: str | None = None) -> None:
    """Refuse a ``granularity`` that no adapter that may prune the model defines: the named
    ``adapter``, else every installed one. Adapters that do not declare their group kinds
    (``GroupingAdapter``) may define any, so then nothing is refused here."""
    if granularity == UNSTRUCTURED:
        return
    from secateurs.loading import candidate_adapters

    declared: set[str] = set()
    for part in candidate_adapters(manager, adapter):
        if not isinstance(part, GroupingAdapter):
            return
        declared.update(part.group_kinds)
    if granularity not in declared:
        where = f"the {adapter!r} adapter defines" if adapter else "the installed adapters define"
        kinds = ", ".join(sorted({UNSTRUCTURED, *declared}))
        raise SecateursError(f"unknown granularity {granularity!r}; {where}: {kinds}")


def model_facts(source: str | None, manager: PluginManager, adapter: str | None = None) -> ModelFacts | None:
    """What ``source`` (a folder, file or packaged model name; ``None``: a model given in
    memory) is, read from its config files by the adapters that can (``DescribingAdapter``);
    ``None`` when none can. Reads no weight."""
    if source is None:
        return None
    from secateurs.loading import candidate_adapters, resolve_source

    path = Path(str(source)).expanduser()
    if not path.exists() and str(source) not in manager.models:
        return None  # a factory "file.py:name", or a missing model ``load`` reports
    path = resolve_source(source, manager)
    for part in candidate_adapters(manager, adapter):  # created as reached: stops at the first that knows it
        facts = part.describe(path) if isinstance(part, DescribingAdapter) else None
        if facts is not None:
            return attrs.evolve(facts, source=str(source))  # named as the user gave it
    return None


def check_batches(batches: Sequence[Any]) -> None:
    """Refuse calibration batches no adapter's ``forward`` takes: each must be a tensor, a
    tuple or list of tensors, or a mapping of tensors (what ``CalibrationSource.batches``
    returns)."""
    import torch

    if isinstance(batches, str | bytes) or not isinstance(batches, Sequence):
        raise SecateursError(
            f"calibration must be a list of batches, got a {type(batches).__name__}; "
            "give a list of tensors or of dicts of tensors (e.g. [{'input_ids': ids}])"
        )
    for i, batch in enumerate(batches):
        if isinstance(batch, torch.Tensor):
            continue
        items = list(batch.values()) if isinstance(batch, Mapping) else batch if isinstance(batch, tuple | list) else None
        if not items or not any(isinstance(item, torch.Tensor) for item in items):
            raise SecateursError(
                f"calibration batch {i} is a {type(batch).__name__} with no tensor; a batch is a tensor, a "
                "tuple/list of tensors or a dict of tensors, as the adapter's forward takes "
                "(tokenize text first: [{'input_ids': ids}])"
            )


def preflight(recipe: Any, parts: Any, manager: PluginManager, *, calibrated: bool | None = None) -> ModelFacts | None:
    """Every check of ``recipe`` (a ``Recipe``) and its built ``parts`` (``RunParts``) that
    needs no weight; returns the model's facts (``None`` when unknown). ``calibrated``:
    whether calibration batches will be given (default: the recipe names a source)."""
    plan = RunPlan(
        sparsity=recipe.sparsity,
        granularity=recipe.granularity,
        scorer=parts.scorer,
        applier=parts.applier,
        calibrated=parts.calibration is not None if calibrated is None else calibrated,
    )
    check_plan(plan, parts.allocator)
    check_granularity(recipe.granularity, manager, recipe.adapter)
    facts = check_against_model(recipe.model, (parts.calibration, parts.evaluator), manager, recipe.adapter)
    if recipe.granularity == LAYERS and facts is not None and facts.layers is not None:
        layers_to_remove(recipe.sparsity, facts.layers, facts.source)
    return facts


def check_against_model(
    source: str | None, parts: Iterable[Any], manager: PluginManager, adapter: str | None = None
) -> ModelFacts | None:
    """Hand the facts of the model at ``source`` (``model_facts``) to every part that checks
    them (``ModelChecking``); return the facts (``None`` when unknown: nothing checked)."""
    facts = model_facts(source, manager, adapter)
    if facts is not None:
        for part in parts:
            if isinstance(part, ModelChecking):
                part.check_model(facts)
    return facts
