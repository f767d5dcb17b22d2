"""Run a recipe end to end: validate, load, evaluate, prune, evaluate, export atomically.

The steps are public so that every command runs a recipe the same way:
``build_parts(recipe)`` (every part created and checked before any work),
``load_for(recipe)`` (the model, offloaded under ``max_memory``) and
``spec_for(recipe, parts, loaded)`` (the pruning run, every recipe key honoured) and
``reference_state(recipe)`` (the reference model's tensors, read lazily under ``max_memory``).
``secateurs.curve`` and plugins' commands use them instead of re-building a run."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from secateurs import shapes
from secateurs.devices import check_device
from secateurs.errors import SecateursError
from secateurs.loading import load, wrap
from secateurs.offload import Budget, LazyState, dispatch
from secateurs.outputs import Reads, atomic_output_dir, check_output, weights_size
from secateurs.pipeline import PruneSpec, check_spec, prune_model
from secateurs.preflight import check_against_model, check_batches, preflight
from secateurs.plugins import PluginManager, Registry, get_manager
from secateurs.protocols import LoadedModel
from secateurs.recipe import Part, Recipe, load_recipe
from secateurs.types import PruneResult


@attrs.frozen
class RunOutcome:
    """What a run produced: the pruning result, where it was written, and the metrics of
    the recipe's evaluator before and after pruning (when it names one)."""

    result: PruneResult
    loaded: LoadedModel
    output: Path | None = None
    before: Mapping[str, float] | None = None
    after: Mapping[str, float] | None = None


@attrs.frozen
class RunParts:
    """A recipe's parts, created from their registries (``None`` where the recipe names
    none): ``calibration`` is the calibration *source* (``batches(loaded)`` gives batches).
    A sized run (``[sizes]``, ``target_params``) has no ``scorer`` but ``step_scorers`` by
    granularity, and the ``remove`` applier (``secateurs.shapes``)."""

    scorer: Any
    allocator: Any
    applier: Any
    exporters: list[Any]
    calibration: Any
    evaluator: Any
    step_scorers: Mapping[str, Any] = attrs.field(factory=dict)


def build_parts(
    recipe: Recipe,
    manager: PluginManager | None = None,
    *,
    progress: bool = True,
    calibration: Sequence[Any] | None = None,
) -> RunParts:
    """Create every part the recipe names, check its device and make every check that needs
    no weight (``secateurs.preflight``: granularity, what the allocator can serve, a
    ``seqlen`` past the model's positions, the ``calibration`` batches given in Python
    instead of the recipe's source), so bad input fails before any model is loaded.
    Every command that runs a recipe starts here."""
    manager = manager or get_manager()
    steps = shapes.steps_of(recipe) if recipe.shaped else ()
    parts = RunParts(
        calibration=create_part(manager.calibration_sources, recipe.calibration, seed=recipe.seed),
        evaluator=create_part(manager.evaluators, recipe.evaluate, progress=progress),
        scorer=create_part(manager.scorers, recipe.scorer),
        allocator=create_part(manager.allocators, recipe.allocator),
        applier=create_part(manager.appliers, Part("remove") if recipe.shaped else recipe.applier),
        exporters=[create_part(manager.exporters, p) for p in recipe.exporters],
        step_scorers={g: create_part(manager.scorers, recipe.step_scorer(g)) for g in steps},
    )
    check_device(recipe.device)
    if calibration is not None:
        check_batches(calibration)
    if recipe.shaped:
        calibrated = calibration is not None or parts.calibration is not None
        shapes.preflight_shaped(recipe, parts, manager, calibrated=calibrated)
    else:
        preflight(recipe, parts, manager, calibrated=True if calibration is not None else None)
    return parts


def create_part(registry: Registry[Any], part: Part | None, **defaults: Any) -> Any:
    """``part`` built from ``registry`` (``None`` for no part). The run-wide settings in
    ``defaults`` (``seed``, ``progress``) reach a part whose factory is an attrs class with
    a field of that name, unless the part's own parameters set it: declare such a field to
    receive them (``docs/plugins.md``, "Seeds and progress bars")."""
    if part is None:
        return None
    factory = registry.entry(part.name).factory
    accepted = {f.name for f in attrs.fields(factory)} if attrs.has(factory) else set()
    params = {k: v for k, v in defaults.items() if k in accepted} | dict(part.params)
    return registry.create(part.name, **params)


def load_for(
    recipe: Recipe, manager: PluginManager | None = None, *, model: nn.Module | LoadedModel | None = None
) -> LoadedModel:
    """The model a run of ``recipe`` prunes: ``model`` when given (a module no adapter
    knows goes to the generic ``module`` adapter), else ``recipe.model`` loaded with the
    recipe's adapter, device and dtype; under ``max_memory`` the model is streamed (its
    weights read lazily, blocks that do not fit offloaded through accelerate), and an
    in-memory model is dispatched within the budget."""
    manager = manager or get_manager()
    _require_model(recipe, model)
    budget = None if recipe.max_memory is None else Budget(recipe.max_memory, recipe.offload_folder)
    if model is None:  # within a budget: streamed, weights read lazily (secateurs.offload)
        loaded = load(
            recipe.model, device=recipe.device, dtype=recipe.dtype, adapter=recipe.adapter, manager=manager, budget=budget
        )
    else:
        loaded = model if isinstance(model, LoadedModel) else wrap(model, recipe.adapter, manager)
        if budget is not None:
            dispatch(loaded, max_memory=budget.max_memory, offload_folder=budget.offload_folder, device=recipe.device)
    return loaded


def spec_for(
    recipe: Recipe,
    parts: RunParts,
    loaded: LoadedModel,
    *,
    calibration: Sequence[Any] | None = None,
    progress: bool = True,
    manager: PluginManager | None = None,
) -> PruneSpec:
    """The pruning run ``recipe`` describes on ``loaded``, with every key honoured
    (sparsity, granularity, targets, exclude, reference_model, seed). ``calibration``:
    batches to use instead of the recipe's calibration source."""
    return PruneSpec(
        scorer=parts.scorer,
        allocator=parts.allocator,
        applier=parts.applier,
        sparsity=recipe.sparsity,
        granularity=recipe.granularity,
        targets=recipe.targets,
        exclude=recipe.exclude,
        calibration=_calibration(loaded, parts.calibration, calibration),
        reference=_reference(recipe, manager or get_manager()),
        seed=recipe.seed,
        progress=progress,
    )


def as_recipe(recipe: Recipe | Mapping[str, Any] | str | Path) -> Recipe:
    """``recipe`` as a ``Recipe``: kept, built from a dict, or loaded from a TOML path."""
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, str | Path):
        return load_recipe(recipe)
    return Recipe.from_dict(recipe)


def _require_model(recipe: Recipe, model: object) -> None:
    if model is None and recipe.model is None:
        raise SecateursError("recipe is missing required key 'model' (or pass model= in Python)")


def _calibration(loaded: LoadedModel, source: Any, given: Sequence[Any] | None) -> list[Any] | None:
    if given is not None:
        return list(given)
    return source.batches(loaded) if source else None


def reference_state(recipe: Recipe, manager: PluginManager | None = None) -> Mapping[str, torch.Tensor] | None:
    """The tensors of ``recipe.reference_model`` by state-dict name (``None`` without one),
    on the CPU in the recipe's dtype. Without a budget the model is loaded whole; under
    ``max_memory`` every block stays in its shards (``Budget.disk_only``) and each tensor
    is read when looked up (``LazyState``), so the reference adds one tensor at a time to
    the run's memory."""
    if recipe.reference_model is None:
        return None
    budget = None if recipe.max_memory is None else Budget(recipe.max_memory, recipe.offload_folder).disk_only()
    state = load(
        recipe.reference_model, device="cpu", dtype=recipe.dtype, adapter=recipe.adapter, manager=manager, budget=budget
    )
    return LazyState(state.model)


def _reference(recipe: Recipe, manager: PluginManager) -> Callable[[str], torch.Tensor] | None:
    tensors = reference_state(recipe, manager)
    if tensors is None:
        return None

    def lookup(name: str) -> torch.Tensor:
        if name not in tensors:
            raise SecateursError(f"reference model {recipe.reference_model} has no tensor {name!r}")
        return tensors[name]

    return lookup


def prune(
    recipe: Recipe | Mapping[str, Any] | str | Path,
    *,
    model: nn.Module | LoadedModel | None = None,
    calibration: Sequence[Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    manager: PluginManager | None = None,
    reads: Reads = (),
    resume: bool = False,
) -> RunOutcome:
    """Run a recipe (object, dict, or TOML path). Writes ``recipe.output`` atomically when set.
    A ``[recover]`` table distils the pruned model from the dense one before the "after"
    evaluation and the export (``secateurs.recover``; ``resume``: from its checkpoint).

    ``model``: prune this in-memory model (pruned in place) instead of loading
    ``recipe.model``; a module no architecture adapter knows is pruned by the generic
    ``module`` adapter (``secateurs.loading.wrap``). ``calibration``: batches for the
    adapter's ``forward`` (for example input tensors of your own module), instead of the
    recipe's calibration source.

    Bad input (sparsity, names, parameters, device, an output that would lose data:
    ``check_output`` against ``recipe.read_paths()``, the recipe file and the further
    ``reads``) fails before the model is loaded, and nothing is written.
    """
    manager = manager or get_manager()
    if isinstance(recipe, str | Path):
        reads = [*reads, ("recipe", recipe)]
    recipe = as_recipe(recipe)
    _require_model(recipe, model)
    parts = build_parts(recipe, manager, progress=progress, calibration=calibration)
    from secateurs.recover_run import PruneRecovery  # here: secateurs.recover_run imports this module

    recovery = PruneRecovery.plan(recipe, manager, resume=resume)
    reads = [*recipe.read_paths(), *reads]
    if recipe.output is not None:  # the saved model is as large as the input, at most
        needs = weights_size(recipe.model) if recipe.model is not None else 0
        check_output(recipe.output, reads=reads, overwrite=overwrite, needs_bytes=needs)

    started = time.perf_counter()
    loaded = load_for(recipe, manager, model=model)
    load_seconds = time.perf_counter() - started
    pruning = _pruning(recipe, parts, loaded, calibration=calibration, progress=progress, manager=manager)
    before = parts.evaluator.evaluate(loaded) if parts.evaluator else None
    teacher = recovery.keep_teacher(loaded, given=model is not None) if recovery else None
    result = pruning()
    if recovery:
        result.records["recover"] = recovery.run(recipe, loaded, result, teacher, manager, progress=progress)
    result.timings["load"] = load_seconds
    result.recipe = recipe.to_dict()
    after = parts.evaluator.evaluate(loaded) if parts.evaluator else None
    if after is not None:
        result.records["evaluation"] = {"before": before, "after": after}
    output = None
    if recipe.output is not None:
        with atomic_output_dir(recipe.output, overwrite=overwrite, reads=reads) as tmp:
            for exporter in parts.exporters:
                exporter.export(loaded, result, tmp)
        output = Path(recipe.output).expanduser().resolve()
    if recovery:
        recovery.finished()
    return RunOutcome(result=result, loaded=loaded, output=output, before=before, after=after)


def _pruning(
    recipe: Recipe,
    parts: RunParts,
    loaded: LoadedModel,
    *,
    calibration: Sequence[Any] | None,
    progress: bool,
    manager: PluginManager,
) -> Callable[[], PruneResult]:
    """The run's pruning of ``loaded``, checked against the model (``check_spec``; a sized
    run's sizes against its config) before the calibration batches are made and before
    minutes of evaluating it."""
    if not recipe.shaped:
        spec = spec_for(recipe, parts, loaded, calibration=calibration, progress=progress, manager=manager)
        check_spec(loaded, spec)
        return lambda: prune_model(loaded, spec)
    if recipe.sizes is not None:
        steps = shapes.plan_sizes(loaded, recipe.sizes)
    else:
        grid = shapes.plan_search(loaded, recipe.target_params)
    step_parts = shapes.StepParts(
        scorers=parts.step_scorers,
        names={g: recipe.step_scorer(g).name for g in parts.step_scorers},
        allocator=parts.allocator,
        applier=parts.applier,
        calibration=_calibration(loaded, parts.calibration, calibration),
        seed=recipe.seed,
        progress=progress,
    )
    if recipe.sizes is not None:
        return lambda: shapes.run_steps(loaded, steps, step_parts)
    return lambda: shapes.search(loaded, recipe.target_params, grid, step_parts)


def evaluate(
    model: str | Path,
    evaluator: Part | str = "perplexity",
    *,
    device: str = "cpu",
    dtype: str = "auto",
    manager: PluginManager | None = None,
    **params: Any,
) -> dict[str, float]:
    """Load ``model`` (in its own dtype unless ``dtype`` says) and measure it with a registered evaluator."""
    manager = manager or get_manager()
    part = Part(evaluator, params) if isinstance(evaluator, str) else evaluator
    ev = manager.evaluators.create(part.name, **part.params)
    check_against_model(str(model), [ev], manager)
    return ev.evaluate(load(model, device=device, dtype=dtype, manager=manager))
