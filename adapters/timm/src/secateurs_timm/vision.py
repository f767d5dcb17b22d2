"""Fashion-MNIST as a calibration source (``images``) and an evaluator (``accuracy``)."""

from __future__ import annotations

from typing import Any

import attrs

from secateurs.errors import SecateursError
from secateurs.protocols import LoadedModel
from secateurs_timm.base import spec_of
from secateurs.validators import optional, positive_int
from secateurs_timm.data import preprocess, subset
from secateurs_timm.train import accuracy


@attrs.frozen
class ImageCalibration:
    """``nsamples`` Fashion-MNIST training images (seeded), in batches of ``batch_size``,
    resized and replicated to the model's input size. Batches are ``(images, labels)``."""

    nsamples: int = attrs.field(default=128, validator=positive_int)
    batch_size: int = attrs.field(default=32, validator=positive_int)
    seed: int = 0
    split: str = "train"

    def batches(self, loaded: LoadedModel) -> list[Any]:
        images, labels = subset(self.split, self.nsamples, self.seed)
        x = preprocess(images, spec_of(loaded).input_size)
        return list(zip(x.split(self.batch_size), labels.split(self.batch_size), strict=True))


@attrs.frozen
class AccuracyEvaluator:
    """Top-1 accuracy on ``samples`` Fashion-MNIST test images (all 10,000 when None),
    drawn with ``seed``."""

    samples: int | None = attrs.field(default=None, validator=optional(positive_int))
    seed: int = 0
    batch_size: int = attrs.field(default=256, validator=positive_int)

    def evaluate(self, loaded: LoadedModel) -> dict[str, float]:
        spec = spec_of(loaded)
        head = getattr(loaded.model, "num_classes", 10)
        if head != 10:
            raise SecateursError(f"the accuracy evaluator scores 10 Fashion-MNIST classes; this model has {head}")
        top1 = accuracy(loaded.model, spec.input_size, samples=self.samples, seed=self.seed,
                        batch_size=self.batch_size, forward=loaded.adapter.forward)
        return {"accuracy": top1}
