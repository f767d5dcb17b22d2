"""secateurs plugin of the timm and torchvision adapters (ViT, VGG, ResNet), image data
(Fashion-MNIST, image folders), accuracy evaluators and the Fashion-MNIST models; every
part registered by reference, imported when first built (timm and torchvision import torch).

The timm adapters are registered only when timm is installed; without it their names
refuse with the line saying how to install it (``secateurs_timm.adapters.TimmMissing``), as
do the Fashion-MNIST models, which are timm models."""

from __future__ import annotations

import importlib.util

from secateurs.hookspecs import hookimpl
from secateurs.references import lazy

TIMM_ADAPTERS = {"vit": "ViTAdapter", "vgg": "VGGAdapter", "resnet": "ResNetAdapter"}
"""``secateurs_timm.timm_adapters.ADAPTERS`` by name."""
TORCHVISION_ADAPTERS = {
    "torchvision-vit": "TorchvisionViTAdapter",
    "torchvision-vgg": "TorchvisionVGGAdapter",
    "torchvision-resnet": "TorchvisionResNetAdapter",
}
"""The adapters of ``secateurs_timm.tvision`` by name."""
FASHION_MNIST = ("vgg", "resnet", "vit")
"""The models of ``secateurs_timm.zoo.ZOO``, registered as ``fashion-mnist-NAME``."""


@hookimpl
def secateurs_register_adapters(register) -> None:
    has_timm = importlib.util.find_spec("timm") is not None  # as secateurs_timm.optional.HAS_TIMM
    if has_timm:
        for name, cls in TIMM_ADAPTERS.items():
            register(name, f"secateurs_timm.timm_adapters:{cls}")
    for name, cls in TORCHVISION_ADAPTERS.items():
        register(name, f"secateurs_timm.tvision:{cls}")
    if not has_timm:
        for name in TIMM_ADAPTERS:
            register(name, lazy("secateurs_timm.adapters:TimmMissing", name))


@hookimpl
def secateurs_register_calibration_sources(register) -> None:
    register("images", "secateurs_timm.vision:ImageCalibration")
    register("image-folder", "secateurs_timm.folder:ImageFolderCalibration")


@hookimpl
def secateurs_register_evaluators(register) -> None:
    register("accuracy", "secateurs_timm.vision:AccuracyEvaluator")
    register("image-folder-accuracy", "secateurs_timm.folder:ImageFolderAccuracy")


@hookimpl
def secateurs_register_models(register) -> None:
    for name in FASHION_MNIST:
        register(f"fashion-mnist-{name}", lazy("secateurs_timm.zoo:packaged_model", name))
