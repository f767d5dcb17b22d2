"""secateurs plugin of the timm adapters: ViT, VGG, ResNet, Fashion-MNIST data and models."""

from __future__ import annotations

from secateurs.hookspecs import hookimpl
from secateurs.protocols import PackagedModel
from secateurs_timm.resnet import ResNetAdapter
from secateurs_timm.vgg import VGGAdapter
from secateurs_timm.vision import AccuracyEvaluator, ImageCalibration
from secateurs_timm.vit import ViTAdapter
from secateurs_timm.zoo import ZOO, fashion_mnist_model


@hookimpl
def secateurs_register_adapters(register) -> None:
    register("vit", ViTAdapter)
    register("vgg", VGGAdapter)
    register("resnet", ResNetAdapter)


@hookimpl
def secateurs_register_calibration_sources(register) -> None:
    register("images", ImageCalibration)


@hookimpl
def secateurs_register_evaluators(register) -> None:
    register("accuracy", AccuracyEvaluator)


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
