"""Accuracy-vs-pruning-rate curves of the Fashion-MNIST VGG, ResNet and ViT for random,
weight norm, Taylor, LRP-ε, the best fixed composite and the tuned composite.

    .venv/bin/python benchmarks/lrp/pruning_curves.py [vgg resnet vit] [--trials 8] [--tune 500] [--test 500]

Per model and component kind (VGG / ResNet: conv channels; ViT: MLP neurons and
attention heads): the composite search (``secateurs_lrp.tune``, TPE, seed 0) runs on
the first ``--tune`` test images (permutation seed 1234) with rates 0-90% step 10; then
every scorer's curve (rates 0-95% step 5, one global ranking, nested masks) is measured
on the next ``--test`` test images (disjoint from the tuning ones).
Writes benchmarks/results/lrp_curves.json (updated after every curve), one PNG per
model and kind, and the tuned composites as benchmarks/results/lrp_tuned_<model>_<kind>.json
(usable as ``composite = "<that path>"`` in a recipe).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import attrs
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import KINDS, PER_CLASS, RESULTS, SplitAccuracy, curve_setup, results_path, write_results  # noqa: E402

from secateurs.curve import DEFAULT_RATES, plot_curves, pruning_curve  # noqa: E402
from secateurs_lrp.library import PRESETS  # noqa: E402
from secateurs.outputs import write_json  # noqa: E402
from secateurs_lrp.scorers import LrpScorer  # noqa: E402
from secateurs_lrp.tune import tune  # noqa: E402
from secateurs.plugins import get_manager  # noqa: E402

TUNE_RATES = tuple(round(0.1 * i, 1) for i in range(10))
NAME = "lrp_curves"


def _existing() -> dict:
    path = results_path(NAME)
    return json.loads(path.read_text()).get("runs", {}) if path.exists() else {}


def _save(key: str, record: dict) -> None:
    """Update this run's entry, keeping the others (several processes may write)."""
    runs = _existing()
    runs[key] = record
    write_results(NAME, {"runs": runs})


def run(model: str, kind: str, trials: int, n_tune: int, n_test: int) -> None:
    key = f"{model}/{kind}"
    parts = curve_setup(model, kind, SplitAccuracy(n_tune, n_test))
    manager = get_manager()
    record: dict = {"curves": {}, "settings": settings(trials, n_tune, n_test)}
    start = time.perf_counter()
    tuned = tune(
        attrs.evolve(parts, evaluator=SplitAccuracy(0, n_tune)),
        lambda spec: LrpScorer(composite=spec.to_dict(), samples_per_class=PER_CLASS),
        trials=trials,
        seed=0,
        rates=TUNE_RATES,
        progress=False,
    )
    record["tuning"] = {**tuned.to_dict(), "seconds": time.perf_counter() - start, "trials_budget": trials}
    write_json(RESULTS / f"lrp_tuned_{model}_{kind}.json", {"composite": tuned.best.to_dict(), "tuning_area": tuned.best_area})
    best_preset = max(tuned.presets, key=tuned.presets.get)
    scorers = {
        "random": manager.scorers.create("random"),
        "weight norm": manager.scorers.create("magnitude"),
        "taylor": manager.scorers.create("taylor", samples_per_class=PER_CLASS),
        "lrp-epsilon": LrpScorer(composite="epsilon", samples_per_class=PER_CLASS),
        f"lrp-{best_preset} (best preset)": LrpScorer(composite=PRESETS[best_preset], samples_per_class=PER_CLASS),
        "lrp-tuned": LrpScorer(composite=tuned.best.to_dict(), samples_per_class=PER_CLASS),
    }
    curves = {}
    for label, scorer in scorers.items():
        t0 = time.perf_counter()
        curve = pruning_curve(parts, DEFAULT_RATES, scorer=scorer)
        curves[label] = curve
        record["curves"][label] = {**curve.to_dict(), "seconds": time.perf_counter() - t0}
        print(f"{key:<12} {label:<30} area {curve.area:.4f}", flush=True)
        _save(key, record)
    plot_curves(curves, RESULTS / f"lrp_curve_{model}_{kind}.png", f"Fashion-MNIST {model}: {kind}")


def settings(trials: int, n_tune: int, n_test: int) -> dict[str, str]:
    return {
        "reference": f"{PER_CLASS} per class from 300 seeded training images",
        "tuning": f"first {n_tune} test images (permutation seed 1234), rates 0-90% step 10, TPE seed 0, {trials} trials",
        "evaluation": f"next {n_test} test images, rates 0-95% step 5, global ranking, zero applier",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", metavar="MODEL", help=f"{', '.join(KINDS)} (default: all)")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--tune", type=int, default=500, help="tuning images")
    parser.add_argument("--test", type=int, default=500, help="evaluation images")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if set(args.models) - set(KINDS):
        parser.error(f"unknown model(s) {sorted(set(args.models) - set(KINDS))}; choose from {', '.join(KINDS)}")
    torch.set_num_threads(args.threads)
    for model in args.models or list(KINDS):
        for kind in KINDS[model]:
            run(model, kind, args.trials, args.tune, args.test)


if __name__ == "__main__":
    main()
