"""Shared helpers of the LRP benchmarks: the Fashion-MNIST models and data splits, and
atomic JSON results (``benchmarks/results_io.py``).

Evaluation images come from the Fashion-MNIST test split, permuted once (seed 1234):
the first ``tune`` images are the held-out subset the composite search optimises on,
the next ``test`` images measure every curve (disjoint from the tuning images).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import attrs
import torch

from secateurs.curve import CurveSetup
from secateurs.curve import curve_setup as setup_curve
from secateurs.protocols import LoadedModel
from secateurs_timm.base import spec_of
from secateurs_timm.data import load_split, preprocess

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from results_io import RESULTS, results_path, write_results  # noqa: E402,F401

REFERENCE_SAMPLES, PER_CLASS = 300, 10
KINDS = {"vgg": ("channels",), "resnet": ("channels",), "vit": ("neurons", "heads")}


@functools.cache
def _test_images(input_size: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = load_split("test")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(1234))
    return preprocess(images[order], input_size), labels[order]


@attrs.define
class SplitAccuracy:
    """Top-1 accuracy on test images ``[start, start + count)`` of the fixed permutation."""

    start: int
    count: int
    batch_size: int = 500

    def evaluate(self, loaded: LoadedModel) -> dict[str, float]:
        images, labels = _test_images(tuple(spec_of(loaded).input_size))
        images = images[self.start : self.start + self.count]
        labels = labels[self.start : self.start + self.count]
        correct = 0
        with torch.no_grad():
            for x, y in zip(images.split(self.batch_size), labels.split(self.batch_size), strict=True):
                correct += int((loaded.adapter.forward(loaded.model, x).argmax(-1) == y).sum())
        return {"accuracy": correct / len(labels)}


def curve_setup(model: str, kind: str, evaluator) -> CurveSetup:
    """The packaged Fashion-MNIST ``model`` (vgg / resnet / vit) pruned by ``kind`` with the
    global allocator and the zero applier; reference set: 10 per class of 300 training images."""
    recipe = {
        "model": f"fashion-mnist-{model}",
        "scorer": "lrp",
        "allocator": "global",
        "applier": "zero",
        "sparsity": 0.0,
        "granularity": kind,
        "calibration": {"name": "images", "nsamples": REFERENCE_SAMPLES, "batch_size": 50},
    }
    return setup_curve(recipe, evaluator=evaluator)
