"""Cost of relevance collection vs a plain forward+backward, and relevance conservation,
on the Fashion-MNIST VGG, ResNet and ViT.

    .venv/bin/python benchmarks/lrp/cost.py [vgg resnet vit] [--repeats 5]

Reference set: 10 images per class (100), batches of 32. "plain": forward, then the
cross-entropy's backward to every parameter (a training step's forward+backward);
"plain_input_only": forward, then the true-class logits' gradient w.r.t. the input only.
"lrp" / "taylor": the scorer's whole attribution (composite and canonizers applied,
rules registered, layers checked, relevance read at every group's layer; the backward
stops at the earliest probed layer). Median of ``--repeats`` interleaved runs. Conservation: per-sample relevance reaching the input
(CNNs) or the tokens entering the first block (ViT), for an output relevance of 1.
Writes benchmarks/results/lrp_cost.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import KINDS, PER_CLASS, SplitAccuracy, curve_setup, write_results  # noqa: E402

from secateurs_lrp.composites import CompositeSpec  # noqa: E402
from secateurs_lrp.relevance import conservation, reference_set  # noqa: E402
from secateurs_lrp.scorers import LrpScorer, TaylorScorer  # noqa: E402


def plain(loaded, batches, *, parameters: bool) -> float:
    """Forward, then backward: of the cross-entropy to every parameter (a training
    step's backward), or of the true-class logits to the input only."""
    start = time.perf_counter()
    for images, labels in batches:
        if parameters:
            F.cross_entropy(loaded.adapter.forward(loaded.model, images), labels).backward()
        else:
            x = images.detach().requires_grad_(True)
            logits = loaded.adapter.forward(loaded.model, x)
            torch.autograd.grad(logits, x, F.one_hot(labels, logits.shape[-1]).float())
    seconds = time.perf_counter() - start
    loaded.model.zero_grad(set_to_none=True)
    return seconds


def attribution(scorer, loaded, calibration) -> float:
    scorer.prepare(loaded, calibration)
    return scorer.seconds


def conservation_figures(loaded, batches, spec: CompositeSpec) -> dict[str, float]:
    context = spec.build(loaded.model).context
    r = torch.cat([conservation(loaded.model, images, labels, context) for images, labels in batches])
    return {"mean": float(r.mean()), "median": float(r.median()), "min": float(r.min()), "max": float(r.max()),
            "samples": len(r)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", metavar="MODEL", help=f"{', '.join(KINDS)} (default: all)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if set(args.models) - set(KINDS):
        parser.error(f"unknown model(s) {sorted(set(args.models) - set(KINDS))}; choose from {', '.join(KINDS)}")
    torch.set_num_threads(args.threads)
    out = {}
    for model in args.models or list(KINDS):
        parts = curve_setup(model, KINDS[model][0], SplitAccuracy(0, 1))
        loaded, calibration = parts.loaded, parts.spec.calibration
        classes = loaded.model.num_classes
        batches = reference_set(calibration, PER_CLASS, classes, 32)
        times = {"plain": [], "plain_input_only": [], "lrp": [], "taylor": []}
        for _ in range(args.repeats):
            times["plain"].append(plain(loaded, batches, parameters=True))
            times["plain_input_only"].append(plain(loaded, batches, parameters=False))
            times["lrp"].append(attribution(LrpScorer(samples_per_class=PER_CLASS), loaded, calibration))
            times["taylor"].append(attribution(TaylorScorer(samples_per_class=PER_CLASS), loaded, calibration))
        median = {k: statistics.median(v) for k, v in times.items()}
        softmaxes = ("attnlrp", "cp") if model == "vit" else ("attnlrp",)
        out[model] = {
            "samples": sum(len(b[1]) for b in batches),
            "seconds": median,
            "lrp_over_plain": median["lrp"] / median["plain"],
            "taylor_over_plain": median["taylor"] / median["plain"],
            "lrp_over_plain_input_only": median["lrp"] / median["plain_input_only"],
            "conservation": {s: conservation_figures(loaded, batches, CompositeSpec(softmax=s)) for s in softmaxes},
        }
        print(model, out[model], flush=True)
    write_results("lrp_cost", {"models": out, "repeats": args.repeats})


if __name__ == "__main__":
    main()
