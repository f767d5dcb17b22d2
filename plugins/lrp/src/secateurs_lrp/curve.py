"""Accuracy-vs-pruning-rate curves with nested masks.

The recipe's scorer scores every target once, on the dense model (a pass at sparsity
0 records the scores). Each rate then prunes a fresh copy of the dense model with those
fixed scores and the recipe's allocator and applier, so the set pruned at a rate contains
the set pruned at every lower rate (one fixed ranking: the masks nest), and evaluates it.
The area under the curve is the mean metric over the rates (PXP's A_PR with the rates
0, .05, …, .95).
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs
import torch

from secateurs.errors import SecateursError
from secateurs.outputs import atomic_file
from secateurs.pipeline import PruneSpec, prune_model
from secateurs.plugins import PluginManager
from secateurs.protocols import Evaluator, LoadedModel, PreparingScorer, ScoreContext
from secateurs.recipe import Recipe
from secateurs.types import Group, Unit

DEFAULT_RATES = tuple(round(0.05 * i, 2) for i in range(20))


def parse_rates(text: str) -> tuple[float, ...]:
    """``"0:95:5"`` (percent start:stop:step, inclusive) or ``"0,10,50"`` (percent)."""
    try:
        if ":" in text:
            lo, hi, step = (float(v) for v in text.split(":"))
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


@attrs.define
class _Recording:
    """Wraps a scorer: delegates, and keeps every score it returns by target name."""

    inner: Any
    scores: dict[str, torch.Tensor] = attrs.field(factory=dict)

    @property
    def requires(self) -> frozenset[str]:
        return self.inner.requires

    @property
    def comparison(self) -> str:
        return self.inner.comparison

    @property
    def selects(self) -> bool:
        return self.inner.selects

    def prepare(self, loaded: LoadedModel, calibration) -> None:
        if hasattr(self.inner, "prepare"):
            self.inner.prepare(loaded, calibration)

    def score(self, unit: Unit, ctx: ScoreContext) -> torch.Tensor:
        return self.scores.setdefault(unit.name, self.inner.score(unit, ctx).detach().cpu())

    def score_group(self, group: Group, ctx: ScoreContext) -> torch.Tensor:
        return self.scores.setdefault(group.name, self.inner.score_group(group, ctx).detach().cpu())


@attrs.frozen
class _Fixed:
    """A data-free scorer serving recorded scores."""

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
class CurveParts:
    """What a curve is made of, built from a recipe once (model loaded, parts created)."""

    loaded: LoadedModel
    make_scorer: Callable[[], Any]
    make_allocator: Callable[[], Any]
    make_applier: Callable[[], Any]
    calibration: list[Any] | None
    evaluator: Evaluator
    granularity: str
    seed: int


def curve_parts(recipe: Recipe, manager: PluginManager, *, evaluator: Evaluator | None = None) -> CurveParts:
    """Load the recipe's model and create its parts (the evaluator may be overridden)."""
    from secateurs.loading import load
    from secateurs.run import create_part

    if evaluator is None:
        if recipe.evaluate is None:
            raise SecateursError("a pruning curve needs an evaluator: add an [evaluate] table to the recipe")
        evaluator = create_part(manager.evaluators, recipe.evaluate)

    make_scorer = functools.partial(create_part, manager.scorers, recipe.scorer)
    make_allocator = functools.partial(create_part, manager.allocators, recipe.allocator)
    make_applier = functools.partial(create_part, manager.appliers, recipe.applier)
    make_scorer(), make_allocator(), make_applier()  # unknown names, bad parameters fail before loading
    calibration_source = create_part(manager.calibration_sources, recipe.calibration, seed=recipe.seed)
    loaded = load(recipe.model, device=recipe.device, dtype=recipe.dtype, adapter=recipe.adapter, manager=manager)
    calibration = calibration_source.batches(loaded) if calibration_source is not None else None
    return CurveParts(
        loaded, make_scorer, make_allocator, make_applier, calibration, evaluator, recipe.granularity, recipe.seed
    )


def _copy(loaded: LoadedModel) -> LoadedModel:
    return attrs.evolve(loaded, model=copy.deepcopy(loaded.model), extra=dict(loaded.extra))


def dense_scores(parts: CurveParts, scorer: Any | None = None) -> tuple[_Fixed, float]:
    """Every target's score on the dense model (a recorded run at sparsity 0 on a copy)."""
    recorder = _Recording(scorer if scorer is not None else parts.make_scorer())
    start = time.perf_counter()
    prune_model(_copy(parts.loaded), _spec(parts, recorder, 0.0, parts.make_allocator()))
    return _Fixed(dict(recorder.scores), recorder.comparison), time.perf_counter() - start


def _spec(parts: CurveParts, scorer: Any, rate: float, allocator: Any) -> PruneSpec:
    return PruneSpec(
        scorer=scorer,
        allocator=allocator,
        applier=parts.make_applier(),
        sparsity=rate,
        granularity=parts.granularity,
        calibration=parts.calibration,
        seed=parts.seed,
        progress=False,
    )


def pruning_curve(
    parts: CurveParts,
    rates: Sequence[float] = DEFAULT_RATES,
    *,
    scorer: Any | None = None,
    metric: str | None = None,
    progress: Callable[[float, Mapping[str, float]], None] | None = None,
) -> Curve:
    """Prune copies of the dense model at every rate with one fixed ranking; evaluate each."""
    fixed, seconds = dense_scores(parts, scorer)
    metrics, params = [], []
    for rate in rates:
        pruned = _copy(parts.loaded)
        result = prune_model(pruned, _spec(parts, fixed, rate, parts.make_allocator()))
        values = parts.evaluator.evaluate(pruned)
        metrics.append(values)
        params.append(result.params_pruned / max(result.params_total, 1))
        if progress is not None:
            progress(rate, values)
        del pruned
    name = metric or next(iter(metrics[0]))
    if name not in metrics[0]:
        raise SecateursError(f"the evaluator reports {', '.join(metrics[0])}, not {name!r}")
    return Curve(tuple(rates), tuple(metrics), name, tuple(params), seconds)


def plot_curves(curves: Mapping[str, Curve], path: Path, title: str) -> Path:
    """One PNG with every curve (label: name and area), written atomically."""
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
