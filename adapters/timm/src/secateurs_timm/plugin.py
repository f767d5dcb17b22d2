"""secateurs plugin of the timm and torchvision adapters (ViT, VGG, ResNet), image data
(Fashion-MNIST, image folders), accuracy evaluators and the Fashion-MNIST models.

The timm adapters are registered only when timm is installed; without it their names
refuse with the line saying how to install it (``secateurs_timm.adapters.TimmMissing``), as
do the Fashion-MNIST models, which are timm models."""

from __future__ import annotations

import functools

from secateurs.hookspecs import hookimpl
from secateurs.protocols import PackagedModel
from secateurs_timm.adapters import ADAPTERS, MISSING, TimmMissing
from secateurs_timm.folder import ImageFolderAccuracy, ImageFolderCalibration
from secateurs_timm.vision import AccuracyEvaluator, ImageCalibration
from secateurs_timm.zoo import ZOO, fashion_mnist_model


@hookimpl
def secateurs_register_adapters(register) -> None:
    for name, adapter in ADAPTERS.items():
        register(name, adapter)
    for name in MISSING:
        register(name, functools.partial(TimmMissing, name))


@hookimpl
def secateurs_register_calibration_sources(register) -> None:
    register("images", ImageCalibration)
    register("image-folder", ImageFolderCalibration)


@hookimpl
def secateurs_register_evaluators(register) -> None:
    register("accuracy", AccuracyEvaluator)
    register("image-folder-accuracy", ImageFolderAccuracy)


def _packaged(name: str):
    return lambda: PackagedModel(
        f"fashion-mnist-{name}",
        ZOO[name].description + " (trained on first use, then cached)",
        lambda: fashion_mnist_model(name),
    )


@hookimpl
def secateurs_register_models(register) -> None:
    for name in ZOO:
        register(f"fashion-mnist-{name}", _packaged(name))
