"""Runs that state the smaller model's sizes (``[sizes]``) or its parameter budget
(``target_params``) instead of one sparsity at one granularity.

A sized run is a list of steps on the same model, in the order ``layers`` → ``hidden`` →
``heads`` → ``neurons`` (``recipe.STEP_ORDER``): each step is one ``prune_model`` run at its
granularity with the ``uniform`` allocator, the ``remove`` applier and the sparsity that
lands exactly on the stated size (``sized_steps``). The model's sizes are read from
``loaded.model.config`` (transformers decoders); each step checks that it landed.

A ``target_params`` run searches a small grid of (``num_hidden_layers``, ``hidden_size``,
``intermediate_size``) combinations (``candidates``, after Minitron's search): each is
pruned on a copy of the model, ranked by its calibration next-token loss, and the lowest
is applied to the model itself. The search holds one extra copy of the model.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import torch

from secateurs.errors import SecateursError
from secateurs.pipeline import PruneSpec, prune_model
from secateurs.plugins import PluginManager
from secateurs.preflight import check_against_model, check_granularity, check_plan
from secateurs.protocols import Allocator, Applier, LayerContext, LoadedModel, PreparingScorer
from secateurs.recipe import HEADS, NEURONS, SIZE_STEPS, STEP_ORDER, Recipe
from secateurs.types import HIDDEN, LAYERS, Block, PruneResult, RunPlan

TOLERANCE = 0.02
"""How far (relative) a ``target_params`` candidate's parameter count may be from the target."""
DEPTH_SHARES = (1.0, 0.75, 0.5, 0.25, 0.0)
"""The ``target_params`` grid: the share of the parameters to remove that removing layers
takes, from depth only (1) to width only (0); width takes the rest."""


@attrs.frozen
class Step:
    """One step of a sized run: ``granularity`` pruned at ``sparsity`` takes the config sizes
    ``before`` to ``after``."""

    granularity: str
    sparsity: float
    before: Mapping[str, int]
    after: Mapping[str, int]


@attrs.frozen(eq=False)
class StepParts:
    """What every step runs with: ``scorers`` by granularity (with their recipe names in
    ``names``), the ``uniform`` allocator, the ``remove`` applier and the calibration batches."""

    scorers: Mapping[str, Any]
    names: Mapping[str, str]
    allocator: Allocator
    applier: Applier
    calibration: list[Any] | None
    seed: int = 0
    progress: bool = True

    def spec(self, step: Step) -> PruneSpec:
        return PruneSpec(
            scorer=self.scorers[step.granularity],
            allocator=self.allocator,
            applier=self.applier,
            sparsity=step.sparsity,
            granularity=step.granularity,
            calibration=self.calibration,
            seed=self.seed,
            progress=self.progress,
        )


def model_sizes(loaded: LoadedModel, keys: Sequence[str] = tuple(SIZE_STEPS)) -> dict[str, int]:
    """The model's current ``keys`` sizes from ``loaded.model.config`` (a config without
    ``num_key_value_heads`` has one per attention head); ``SecateursError`` when the model
    has no such config field."""
    config = getattr(loaded.model, "config", None)
    sizes = _read(lambda key: getattr(config, key, None), keys)
    missing = [key for key, value in sizes.items() if not isinstance(value, int) or isinstance(value, bool)]
    if missing:
        raise SecateursError(
            f"{loaded.source} has no config field {missing[0]!r} (adapter {loaded.adapter.name!r}); "
            "[sizes] and target_params need a transformers decoder's config"
        )
    return sizes


def _read(get: Callable[[str], Any], keys: Sequence[str]) -> dict[str, Any]:
    """``keys`` by ``get``; ``num_key_value_heads`` is ``num_attention_heads`` without GQA."""
    sizes = {key: get(key) for key in keys}
    if "num_key_value_heads" in sizes and sizes["num_key_value_heads"] is None:
        sizes["num_key_value_heads"] = get("num_attention_heads")
    return sizes


def size_keys(sizes: Mapping[str, int]) -> list[str]:
    """The model sizes ``sized_steps`` reads for ``sizes``: the stated ones, and both head
    counts when heads or the hidden size are stated."""
    keys = set(sizes)
    if keys & {"hidden_size", "num_attention_heads", "num_key_value_heads"}:
        keys |= {"num_attention_heads", "num_key_value_heads"}
    return [k for k in SIZE_STEPS if k in keys]


def sized_steps(current: Mapping[str, int], sizes: Mapping[str, int], source: str) -> list[Step]:
    """The steps that take a model of ``current`` sizes to ``sizes`` (a recipe's ``[sizes]``),
    in ``STEP_ORDER``; ``SecateursError`` for a size larger than the model's, query heads not
    in whole key/value groups, or sizes that remove nothing."""
    larger = [key for key in sizes if sizes[key] > current[key]]
    if larger:
        key = larger[0]
        raise SecateursError(f"[sizes] {key} = {sizes[key]} is larger than {source}'s {current[key]}; pruning only shrinks")
    wanted = dict(sizes)
    if "num_attention_heads" in sizes or "num_key_value_heads" in sizes:
        wanted |= _heads(current, sizes)
    heads = wanted.get("num_attention_heads") or current.get("num_attention_heads")
    if "hidden_size" in wanted and wanted["hidden_size"] % heads:
        lower = wanted["hidden_size"] // heads * heads
        options = f"{lower} or {lower + heads}" if lower else f"{heads}"
        raise SecateursError(
            f"[sizes] hidden_size = {wanted['hidden_size']} is not a multiple of num_attention_heads = {heads}, "
            f"which transformers requires of LLaMA and Gemma 2/3 configs; set hidden_size = {options}"
        )
    if all(wanted[key] == current[key] for key in wanted):
        has = ", ".join(f"{key} = {current[key]}" for key in sizes)
        raise SecateursError(f"nothing to remove: {source} already has {has}; state smaller sizes")
    steps = []
    for granularity in STEP_ORDER:
        keys = [k for k in SIZE_STEPS if SIZE_STEPS[k] == granularity and k in wanted and wanted[k] != current[k]]
        if not keys:
            continue
        key = keys[0] if granularity != HEADS else "num_key_value_heads"
        before, after = current[key], wanted[key]
        steps.append(Step(granularity, (before - after) / before, {k: current[k] for k in keys},
                          {k: wanted[k] for k in keys}))
    return steps


def plan_sizes(loaded: LoadedModel, sizes: Mapping[str, int]) -> list[Step]:
    """``sized_steps`` from ``loaded``'s config (``size_keys``)."""
    return sized_steps(model_sizes(loaded, size_keys(sizes)), sizes, loaded.source)


def _heads(current: Mapping[str, int], sizes: Mapping[str, int]) -> dict[str, int]:
    """Both head counts of ``sizes``: a step removes whole key/value groups (a key/value head
    with the query heads sharing it), so ``num_attention_heads`` is ``num_key_value_heads``
    times the model's query heads per key/value head."""
    per = current["num_attention_heads"] // current["num_key_value_heads"]
    queries = sizes.get("num_attention_heads")
    kv = sizes.get("num_key_value_heads")
    if kv is None:
        if queries % per:
            lower = max(per, queries // per * per)
            raise SecateursError(
                f"[sizes] num_attention_heads = {queries} is not a multiple of the model's {per} query heads per "
                f"key/value head (whole groups are removed); set num_attention_heads = {lower} or {lower + per}"
            )
        kv = queries // per
    if queries is not None and queries != kv * per:
        raise SecateursError(
            f"[sizes] num_attention_heads = {queries} does not match num_key_value_heads = {kv}: the model has "
            f"{per} query heads per key/value head (whole groups are removed); set num_attention_heads = {kv * per}"
        )
    return {"num_key_value_heads": kv, "num_attention_heads": kv * per}


def run_steps(loaded: LoadedModel, steps: Sequence[Step], parts: StepParts) -> PruneResult:
    """Run ``steps`` on ``loaded.model`` in place; one ``PruneResult`` for the whole run:
    parameters before and after all steps, every step's units, timings summed, records
    merged, and ``records["steps"]`` (granularity, scorer, sizes before and after, parameters
    after) for each."""
    params_total = _params(loaded)
    combined = PruneResult(params_total=params_total)
    done = []
    for step in steps:
        result = prune_model(loaded, parts.spec(step))
        landed = model_sizes(loaded, list(step.after))
        if landed != dict(step.after):
            raise SecateursError(
                f"the {step.granularity} step left {landed} instead of {dict(step.after)}: the adapter did not "
                "record the new sizes in the model's config"
            )
        combined.units += result.units
        combined.records |= result.records
        for phase, seconds in result.timings.items():
            combined.timings[phase] = combined.timings.get(phase, 0.0) + seconds
        done.append({"granularity": step.granularity, "scorer": parts.names[step.granularity],
                     "before": dict(step.before), "after": landed, "params_after": _params(loaded)})
    combined.params_pruned = params_total - _params(loaded)
    combined.records["steps"] = done
    return combined


def _params(loaded: LoadedModel) -> int:
    return sum(p.numel() for p in loaded.model.parameters())


# -- target_params: counting and the grid -------------------------------------------------

def param_count(config: Mapping[str, Any], sizes: Mapping[str, int] | None = None) -> int:
    """The parameter count of a LLaMA-layout decoder (``config`` as a dict, e.g.
    ``model.config.to_dict()``) with ``sizes`` (config field names) replacing its own.

    Counted from the config alone, so that the grid is sized with arithmetic instead of a
    model built per candidate (core does not depend on transformers): embeddings and an
    untied ``lm_head`` (``vocab_size × hidden_size``), per layer ``q/k/v/o_proj`` (``head_dim``
    kept: pruning removes whole heads, never head width) and ``gate/up/down_proj`` with the
    ``attention_bias`` / ``mlp_bias`` biases, two norms per layer and a final norm. Families
    with other tensors (QK norms, extra norms, other MLPs) differ; ``candidates`` refuses a
    model whose own count this formula misses."""
    c = {**config, **(sizes or {})}
    hidden, layers, inner = c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"]
    queries, kv = c["num_attention_heads"], c.get("num_key_value_heads") or c["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    attention = 2 * hidden * head_dim * (queries + kv)
    if c.get("attention_bias"):
        attention += head_dim * (queries + 2 * kv) + hidden
    mlp = 3 * hidden * inner + ((2 * inner + hidden) if c.get("mlp_bias") else 0)
    embeddings = c["vocab_size"] * hidden * (1 if c.get("tie_word_embeddings", True) else 2)
    return embeddings + layers * (attention + mlp + 2 * hidden) + hidden


@attrs.frozen
class Candidate:
    """One ``target_params`` candidate: its ``name``, the config ``sizes`` it prunes to and
    their ``param_count`` (``estimate``)."""

    name: str
    sizes: Mapping[str, int]
    estimate: int


def plan_search(loaded: LoadedModel, target: int) -> list[Candidate]:
    """``candidates`` for ``loaded``: its config, whether its adapter prunes ``hidden``, its
    parameter count."""
    model_sizes(loaded, ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads"))
    hidden = HIDDEN in getattr(loaded.adapter, "group_kinds", ())
    return candidates(loaded.model.config.to_dict(), target, hidden=hidden, params=_params(loaded))


def candidates(config: Mapping[str, Any], target: int, *, hidden: bool, params: int) -> list[Candidate]:
    """The grid a ``target_params`` run searches (``SecateursError`` when the target is not
    below the model's ``params`` or no candidate reaches it).

    For each depth share ``f`` of ``DEPTH_SHARES``: remove the whole layers worth ``f`` of
    the parameters to remove (nearest count, never so many that width must grow back), then
    scale ``hidden_size`` (only when ``hidden``: the adapter prunes it) and
    ``intermediate_size`` by one factor to the target, and trim ``intermediate_size`` to take
    up the rounding. Candidates are kept within ``TOLERANCE`` of ``target``, duplicates once;
    each is named for what it removes (``depth``: layers only; ``width``: no layer;
    ``depth -k + width``)."""
    if target >= params:
        raise SecateursError(f"target_params {target:,} is not below the model's {params:,} parameters; nothing to remove")
    missed = abs(param_count(config) - params) / params
    if missed > 0.005:
        raise SecateursError(
            f"target_params sizes candidates with the LLaMA-layout parameter count, which misses this model's "
            f"({config.get('model_type')}) by {missed:.1%}; state the sizes in [sizes] instead"
        )
    dense = {key: config[key] for key in ("num_hidden_layers", "hidden_size", "intermediate_size")}
    per_layer = (param_count(config) - param_count(config, {"num_hidden_layers": 0})) / dense["num_hidden_layers"]
    found: dict[tuple[int, ...], Candidate] = {}
    for share in DEPTH_SHARES:
        layers = dense["num_hidden_layers"] - round(share * (params - target) / per_layer)
        while layers < dense["num_hidden_layers"] and param_count(config, {"num_hidden_layers": layers}) < target * (1 - TOLERANCE):
            layers += 1  # width cannot add back what too many removed layers took
        sizes = _fit_width(config, target, max(layers, 1), hidden=hidden)
        estimate = param_count(config, sizes)
        if abs(estimate - target) <= TOLERANCE * target and sizes != dense:
            found.setdefault(tuple(sizes.values()), Candidate(_name(dense, sizes), sizes, estimate))
    if not found:
        raise SecateursError(f"no candidate of the grid reaches target_params {target:,} within {TOLERANCE:.0%}; "
                             "state the sizes in [sizes] instead")
    return list(found.values())


def _name(dense: Mapping[str, int], sizes: Mapping[str, int]) -> str:
    """``depth`` (layers only), ``width`` (no layer removed) or ``depth -k + width``."""
    removed = dense["num_hidden_layers"] - sizes["num_hidden_layers"]
    narrower = any(sizes[k] != dense[k] for k in ("hidden_size", "intermediate_size"))
    return "width" if not removed else f"depth -{removed} + width" if narrower else "depth"


def _fit_width(config: Mapping[str, Any], target: int, layers: int, *, hidden: bool) -> dict[str, int]:
    """Sizes with ``layers`` layers whose count is nearest ``target``: already within
    ``TOLERANCE`` at full width, kept; else hidden and intermediate sizes scaled by one factor
    (bisection; hidden sizes are multiples of the head count, as ``sized_steps`` requires),
    then ``intermediate_size`` alone to the target."""
    h0, i0, heads = config["hidden_size"], config["intermediate_size"], config["num_attention_heads"]
    sizes = {"num_hidden_layers": layers, "hidden_size": h0, "intermediate_size": i0}
    if abs(param_count(config, sizes) - target) <= TOLERANCE * target / 2:
        return sizes
    if hidden:
        low, high = 0.0, 1.0
        for _ in range(40):
            mid = (low + high) / 2
            probe = {**sizes, "hidden_size": _heads_multiple(h0 * mid, heads), "intermediate_size": max(1, round(i0 * mid))}
            low, high = (mid, high) if param_count(config, probe) < target else (low, mid)
        sizes["hidden_size"] = _heads_multiple(h0 * high, heads)
    # the count is linear in intermediate_size: solve for it
    at = {n: param_count(config, {**sizes, "intermediate_size": n}) for n in (0, 1)}
    sizes["intermediate_size"] = min(i0, max(1, round((target - at[0]) / (at[1] - at[0]))))
    return sizes


def _heads_multiple(width: float, heads: int) -> int:
    return max(heads, round(width / heads) * heads)


def search(loaded: LoadedModel, target: int, grid: Sequence[Candidate], parts: StepParts) -> PruneResult:
    """Prune a copy of ``loaded`` to each of ``grid``, measure each copy's calibration
    next-token loss, print the table on stderr (``parts.progress``), then prune ``loaded``
    itself to the lowest-loss candidate. ``records["search"]`` holds the target, every
    candidate (sizes, estimated and real parameter counts, loss) and the choice;
    ``timings["search"]`` the candidates' time, also counted in ``timings["total"]``."""
    from secateurs.builtins.layers import next_token_loss

    if not parts.calibration:
        raise SecateursError("target_params ranks candidates by calibration loss; add a [calibration] table")
    start = time.perf_counter()
    if LAYERS in parts.scorers:
        parts = attrs.evolve(parts, scorers={**parts.scorers, LAYERS: DenseLayerScores(parts.scorers[LAYERS])})
    rows = []
    for candidate in grid:
        trial = LoadedModel(copy.deepcopy(loaded.model), loaded.adapter, loaded.source, loaded.tokenizer, loaded.extra)
        run_steps(trial, plan_sizes(loaded, candidate.sizes), parts)
        with torch.no_grad():
            loss = next_token_loss(trial, parts.calibration)
        rows.append({"name": candidate.name, "sizes": dict(candidate.sizes), "params_estimated": candidate.estimate,
                     "params": _params(trial), "loss": loss})
        del trial
    best = min(range(len(rows)), key=lambda i: (rows[i]["loss"], i))
    if parts.progress:
        _print_table(target, rows, best)
    searched = time.perf_counter() - start
    result = run_steps(loaded, plan_sizes(loaded, grid[best].sizes), parts)
    result.timings["search"] = searched
    result.timings["total"] = result.timings.get("total", 0.0) + searched  # the whole run
    result.records["search"] = {"target_params": target, "tolerance": TOLERANCE, "candidates": rows,
                                "chosen": rows[best]["name"]}
    return result


@attrs.define(eq=False)
class DenseLayerScores:
    """The search's layer scorer: every candidate's ``layers`` step is its first, on the
    dense model, so each block is scored once by ``inner`` and the score reused (skip-loss
    runs the whole model once per block)."""

    inner: Any
    _scores: dict[str, float] = attrs.field(factory=dict, init=False)
    _prepared: bool = attrs.field(default=False, init=False)

    @property
    def comparison(self) -> str:
        return self.inner.comparison

    @property
    def requires(self) -> frozenset[str]:
        return self.inner.requires

    @property
    def selects(self) -> bool:
        return self.inner.selects

    def prepare(self, loaded: LoadedModel, calibration: list[Any] | None) -> None:
        if not self._prepared and isinstance(self.inner, PreparingScorer):
            self.inner.prepare(loaded, calibration)
        self._prepared = True

    def score_layer(self, block: Block, ctx: LayerContext) -> float:
        if block.name not in self._scores:
            self._scores[block.name] = float(self.inner.score_layer(block, ctx))
        return self._scores[block.name]


def _print_table(target: int, rows: Sequence[Mapping[str, Any]], best: int) -> None:
    lines = [f"target_params {target:,}: {len(rows)} candidates by calibration loss (* = chosen)",
             f"  {'candidate':<22}{'layers':>7}{'hidden':>8}{'intermediate':>14}{'params':>15}{'loss':>9}"]
    for i, row in enumerate(rows):
        s = row["sizes"]
        lines.append(f"{'*' if i == best else ' '} {row['name']:<22}{s['num_hidden_layers']:>7}{s['hidden_size']:>8}"
                     f"{s['intermediate_size']:>14}{row['params']:>15,}{row['loss']:>9.4f}")
    print("\n".join(lines), file=sys.stderr)


def steps_of(recipe: Recipe) -> tuple[str, ...]:
    """The granularities a sized run may step through, in ``STEP_ORDER``: those of its
    ``[sizes]`` keys, or for ``target_params`` layers, hidden (when the adapter prunes it)
    and neurons."""
    used = {SIZE_STEPS[k] for k in recipe.sizes} if recipe.sizes is not None else {LAYERS, HIDDEN, NEURONS}
    return tuple(g for g in STEP_ORDER if g in used)


def preflight_shaped(recipe: Recipe, parts: Any, manager: PluginManager, *, calibrated: bool) -> None:
    """Every check of a sized run that needs no weight (``preflight.preflight`` for the
    others): each step's scorer with the ``uniform`` allocator and ``remove`` applier
    (``parts``: ``run.RunParts``; a step's sparsity is known only once the model's config is
    read, so the checks see a stand-in), each step's granularity defined by the adapters
    (``hidden`` of a ``target_params`` run is optional), the calibration a search ranks by,
    the model's seqlen limits, and ``sized_steps`` on the sizes its config files give
    (``ModelFacts.sizes``)."""
    steps = steps_of(recipe)
    unused = sorted(set(recipe.scorers) - set(steps))
    if unused:
        raise SecateursError(f"[scorers] {unused[0]} names the scorer of a step this run has not; remove it")
    for granularity in steps:
        check_plan(RunPlan(0.5, granularity, parts.step_scorers[granularity], parts.applier, calibrated), parts.allocator)
        if recipe.sizes is not None or granularity != HIDDEN:
            check_granularity(granularity, manager, recipe.adapter)
    if recipe.target_params is not None and not calibrated:
        raise SecateursError("target_params ranks candidates by calibration loss; add a [calibration] table")
    facts = check_against_model(recipe.model, (parts.calibration, parts.evaluator), manager, recipe.adapter)
    if recipe.sizes is not None and facts is not None:
        current = _read(facts.sizes.get, size_keys(recipe.sizes))
        if all(isinstance(v, int) for v in current.values()):  # else checked once the model is loaded
            sized_steps(current, recipe.sizes, facts.source)
