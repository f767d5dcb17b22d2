"""Bayesian optimisation of the LRP composite for pruning (``secateurs lrp-tune``).

Search space: one rule per depth group (``low``, ``mid``, ``high``, ``fc``) from
epsilon / gamma / zplus / alphabeta(2, 1), with ε (log-uniform in [1e-8, 1]) and γ
(log-uniform in [0.01, 1]) per group, and the softmax rule (attnlrp / cp) when the model
has attention. Objective: the area under the accuracy-vs-pruning-rate curve of the
``lrp`` scorer with the candidate composite, on the held-out evaluator. The fixed
presets are evaluated first (enqueued trials), so the best composite found is at least
as good as the best preset on the tuning objective.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
import optuna

from secateurs.curve import CurveSetup, pruning_curve
from secateurs.errors import SecateursError
from secateurs_lrp.zoos import has_attention
from secateurs_lrp.composites import GROUPS, RULES, CompositeSpec
from secateurs_lrp.library import PRESETS

RULE_CHOICES = tuple(RULES)
SAMPLERS = ("tpe", "gp")


def suggest(trial: optuna.Trial, attention: bool) -> CompositeSpec:
    """One candidate composite from the trial's suggestions."""
    data: dict[str, Any] = {}
    for group in GROUPS:
        rule = trial.suggest_categorical(f"{group}.rule", RULE_CHOICES)
        entry: dict[str, Any] = {"rule": rule}
        if rule == "epsilon":
            entry["epsilon"] = trial.suggest_float(f"{group}.epsilon", 1e-8, 1.0, log=True)
        elif rule == "gamma":
            entry["gamma"] = trial.suggest_float(f"{group}.gamma", 0.01, 1.0, log=True)
        data[group] = entry
    if attention:
        data["softmax"] = trial.suggest_categorical("softmax", ("attnlrp", "cp"))
    return CompositeSpec.from_dict(data)


def _preset_params(spec: CompositeSpec, attention: bool) -> dict[str, Any]:
    """The trial parameters that reproduce ``spec`` (for enqueueing)."""
    params: dict[str, Any] = {}
    for group in GROUPS:
        rule = getattr(spec, group)
        params[f"{group}.rule"] = rule.rule
        if rule.rule in ("epsilon", "gamma"):  # the rules whose parameter ``suggest`` searches
            params[f"{group}.{rule.rule}"] = rule.params[rule.rule]
    if attention:
        params["softmax"] = spec.softmax
    return params


@attrs.frozen
class TuneResult:
    best: CompositeSpec
    best_area: float
    trials: list[dict[str, Any]]
    presets: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "best": self.best.to_dict(),
            "best_area": self.best_area,
            "presets": self.presets,
            "trials": self.trials,
        }


def tune(
    setup: CurveSetup,
    make_scorer: Callable[[CompositeSpec], Any],
    *,
    trials: int,
    seed: int = 0,
    rates: Sequence[float],
    sampler: str = "tpe",
    progress: bool = True,
) -> TuneResult:
    """Run the search; ``make_scorer(spec)`` builds the ``lrp`` scorer for a candidate."""
    if not isinstance(trials, int) or trials <= 0:
        raise SecateursError(f"the trial budget must be a positive integer, got {trials!r}")
    if sampler not in SAMPLERS:
        raise SecateursError(f"unknown sampler {sampler!r}; use one of {', '.join(SAMPLERS)}")
    attention = has_attention(setup.loaded.model)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    chooser = optuna.samplers.TPESampler(seed=seed) if sampler == "tpe" else optuna.samplers.GPSampler(seed=seed)
    study = optuna.create_study(direction="maximize", sampler=chooser)
    presets = [n for n in PRESETS if attention or n != "epsilon-cp"]
    for name in presets[:trials]:
        study.enqueue_trial(_preset_params(CompositeSpec.from_dict(PRESETS[name]), attention), user_attrs={"preset": name})

    def objective(trial: optuna.Trial) -> float:
        spec = suggest(trial, attention)
        curve = pruning_curve(setup, rates, scorer=make_scorer(spec))
        trial.set_user_attr("composite", spec.to_dict())
        trial.set_user_attr("values", curve.values)
        return curve.area

    study.optimize(objective, n_trials=trials, show_progress_bar=progress)
    records = [
        {
            "number": t.number,
            "area": t.value,
            "preset": t.user_attrs.get("preset"),
            "composite": t.user_attrs.get("composite"),
            "values": t.user_attrs.get("values"),
        }
        for t in study.trials
    ]
    preset_areas = {r["preset"]: r["area"] for r in records if r["preset"]}
    best = study.best_trial
    return TuneResult(CompositeSpec.from_dict(best.user_attrs["composite"]), float(best.value), records, preset_areas)

