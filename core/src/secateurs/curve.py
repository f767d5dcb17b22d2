"""Metric-vs-pruning-rate curves with nested masks, for any scorer.

The recipe's scorer scores every target once, on the dense model
(``pipeline.dense_scores``). Each rate then prunes a fresh copy of the dense model with
those fixed scores and the recipe's allocator and applier, so the set pruned at a rate
contains the set pruned at every lower rate (one fixed ranking: the masks nest), and
evaluates it with the recipe's evaluator. The area under the curve is the mean metric
over the rates (PXP's A_PR with the rates 0, .05, …, .95). Every recipe key is honoured
(targets, exclude, reference_model, granularity, seed; under ``max_memory`` each rate
reloads the model instead of copying it in memory).
"""

from __future__ import annotations

import copy
import importlib.util
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs
import torch
from torch import nn

from secateurs.errors import SecateursError
from secateurs.outputs import atomic_file
from secateurs.pipeline import PruneSpec, dense_scores, prune_model
from secateurs.plugins import PluginManager, get_manager
from secateurs.protocols import Evaluator, LoadedModel, ScoreContext
from secateurs.recipe import Recipe
from secateurs.run import as_recipe, build_parts, create_part, load_for, spec_for
from secateurs.types import HIDDEN, LAYERS, Group, Unit

DEFAULT_RATES = tuple(round(0.05 * i, 2) for i in range(20))


def parse_rates(text: str) -> tuple[float, ...]:
    """``"0:95:5"`` (percent start:stop:step, inclusive) or ``"0,10,50"`` (percent)."""
    try:
        if ":" in text:
            lo, hi, step = (float(v) for v in text.split(":"))
            if not (step > 0 and lo <= hi and math.isfinite(hi)):
                raise SecateursError(
                    f"--rates {text!r}: START:STOP:STEP needs START <= STOP and a STEP > 0 (e.g. 0:50:10)"
                )
            n = int(round((hi - lo) / step)) + 1
            values = [lo + i * step for i in range(n)]
        else:
            values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SecateursError(f"--rates takes percents as START:STOP:STEP or a comma list, got {text!r}") from None
    rates = tuple(round(v / 100.0, 6) for v in values)
    if not rates or any(not 0.0 <= r < 1.0 for r in rates):
        raise SecateursError(f"pruning rates must be percents in [0, 100), got {text!r}")
    return rates


@attrs.frozen
class FixedScores:
    """A data-free scorer serving scores recorded earlier, by target name."""

    scores: Mapping[str, torch.Tensor]
    comparison: str
    requires: ClassVar[frozenset[str]] = frozenset()
    selects: ClassVar[bool] = False

    def score(self, unit: Unit, ctx: ScoreContext) -> torch.Tensor:
        return self.scores[unit.name]

    def score_group(self, group: Group, ctx: ScoreContext) -> torch.Tensor:
        return self.scores[group.name]


@attrs.frozen
class Curve:
    """Metric per pruning rate; ``area`` = mean of ``metric`` over the rates."""

    rates: tuple[float, ...]
    metrics: tuple[Mapping[str, float], ...]
    metric: str
    params_pruned: tuple[float, ...] = ()
    score_seconds: float = 0.0

    @property
    def values(self) -> list[float]:
        return [m[self.metric] for m in self.metrics]

    @property
    def area(self) -> float:
        return sum(self.values) / len(self.values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "area": self.area,
            "rates": list(self.rates),
            "values": self.values,
            "params_pruned_fraction": list(self.params_pruned),
            "metrics": [dict(m) for m in self.metrics],
            "score_seconds": self.score_seconds,
        }

    def table(self) -> str:
        lines = [f"{'rate':>6}  {self.metric:>10}  {'params pruned':>13}"]
        for rate, value, params in zip(self.rates, self.values, self.params_pruned, strict=True):
            lines.append(f"{rate:>6.0%}  {value:>10.4f}  {params:>13.2%}")
        lines.append(f"area under the curve (mean {self.metric} over {len(self.rates)} rates): {self.area:.4f}")
        return "\n".join(lines)


@attrs.frozen
class CurveSetup:
    """A recipe made ready for curves once: its parts built, its model loaded (the dense
    model every rate starts from; never modified), its pruning run at the recipe's
    settings (``spec``) and the evaluator."""

    recipe: Recipe
    manager: PluginManager
    loaded: LoadedModel
    spec: PruneSpec
    evaluator: Evaluator


def curve_setup(
    recipe: Recipe | Mapping[str, Any] | str | Path,
    *,
    model: nn.Module | LoadedModel | None = None,
    calibration: Sequence[Any] | None = None,
    evaluator: Evaluator | None = None,
    manager: PluginManager | None = None,
) -> CurveSetup:
    """Build, load and calibrate what a curve of ``recipe`` needs. ``model`` /
    ``calibration`` as in ``secateurs.prune``; ``evaluator`` replaces the recipe's
    ``[evaluate]`` part (e.g. a held-out subset)."""
    manager = manager or get_manager()
    recipe = as_recipe(recipe)
    recipe.require_single("a pruning curve")
    if recipe.granularity in (LAYERS, HIDDEN):
        raise SecateursError(
            "a pruning curve prunes nested masks from fixed scores; removing layers or hidden channels "
            f'(granularity = "{recipe.granularity}") is not drawn as a curve yet: run `secateurs prune` at each rate'
        )
    parts = build_parts(recipe, manager, progress=False, calibration=calibration)
    evaluator = evaluator if evaluator is not None else parts.evaluator
    if evaluator is None:
        raise SecateursError("a pruning curve needs an evaluator: add an [evaluate] table to the recipe")
    if parts.scorer.selects:
        raise SecateursError(
            f"the {recipe.scorer.name!r} scorer selects entries given each row's keep count, so it has no "
            "fixed ranking to draw a curve with nested masks; use a ranking scorer (magnitude, wanda, lrp, ...)"
        )
    if recipe.max_memory is not None and model is not None:
        raise SecateursError(
            "a pruning curve under max_memory reloads the model for every rate: give the model as the "
            "recipe's `model` path instead of an in-memory model, or drop max_memory"
        )
    loaded = load_for(recipe, manager, model=model)
    spec = spec_for(recipe, parts, loaded, calibration=calibration, progress=False, manager=manager)
    return CurveSetup(recipe, manager, loaded, spec, evaluator)


def _fresh(setup: CurveSetup) -> LoadedModel:
    """A dense model to prune at one rate: a copy in memory, or a reload under a budget."""
    if setup.recipe.max_memory is not None:
        return load_for(setup.recipe, setup.manager)
    loaded = setup.loaded
    return attrs.evolve(loaded, model=copy.deepcopy(loaded.model), extra=dict(loaded.extra))


def scores_of(setup: CurveSetup, scorer: Any | None = None) -> tuple[FixedScores, float]:
    """Every target's score on the dense model (the recipe's scorer unless ``scorer``),
    and the seconds it took."""
    spec = setup.spec if scorer is None else attrs.evolve(setup.spec, scorer=scorer)
    start = time.perf_counter()
    scores = dense_scores(setup.loaded, spec)
    return FixedScores(scores, spec.scorer.comparison), time.perf_counter() - start


def pruning_curve(
    setup: CurveSetup,
    rates: Sequence[float] = DEFAULT_RATES,
    *,
    scorer: Any | None = None,
    metric: str | None = None,
    progress: Callable[[float, Mapping[str, float]], None] | None = None,
) -> Curve:
    """Prune fresh copies of the dense model at every rate with one fixed ranking (the
    recipe's scorer unless ``scorer``) and evaluate each; ``progress(rate, metrics)`` is
    called after each rate."""
    fixed, seconds = scores_of(setup, scorer)
    metrics, params = [], []
    for rate in rates:
        values, fraction = _point(setup, fixed, rate)
        metrics.append(values)
        params.append(fraction)
        if progress is not None:
            progress(rate, values)
    name = metric or next(iter(metrics[0]))
    if name not in metrics[0]:
        raise SecateursError(f"the evaluator reports {', '.join(metrics[0])}, not {name!r}")
    return Curve(tuple(rates), tuple(metrics), name, tuple(params), seconds)


def _point(setup: CurveSetup, fixed: FixedScores, rate: float) -> tuple[Mapping[str, float], float]:
    """The metrics of the dense model pruned at ``rate`` with ``fixed`` scores, and the
    fraction of its parameters pruned. Rate 0 evaluates the dense model itself (there is
    nothing to prune, and allocators such as OWL refuse a zero target)."""
    if rate == 0:
        return setup.evaluator.evaluate(setup.loaded), 0.0
    pruned = _fresh(setup)
    spec = attrs.evolve(
        setup.spec,
        scorer=fixed,
        allocator=create_part(setup.manager.allocators, setup.recipe.allocator),
        applier=create_part(setup.manager.appliers, setup.recipe.applier),
        sparsity=rate,
    )
    result = prune_model(pruned, spec)
    return setup.evaluator.evaluate(pruned), result.params_pruned / max(result.params_total, 1)


def check_plotting() -> None:
    """Refuse, before any work, when matplotlib (needed for curve PNGs) is missing."""
    if importlib.util.find_spec("matplotlib") is None:
        raise SecateursError("plotting a curve needs matplotlib: pip install matplotlib (or run without --output)")


def plot_curves(curves: Mapping[str, Curve], path: Path, title: str) -> Path:
    """One PNG with every curve (label: name and area), written atomically."""
    check_plotting()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for label, curve in curves.items():
        ax.plot([100 * r for r in curve.rates], curve.values, marker="o", markersize=3, label=f"{label} ({curve.area:.3f})")
    metric = next(iter(curves.values())).metric
    ax.set(xlabel="components pruned (%)", ylabel=metric, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        with atomic_file(path, suffix=".png") as tmp:
            fig.savefig(tmp)
    finally:
        plt.close(fig)
    return path
