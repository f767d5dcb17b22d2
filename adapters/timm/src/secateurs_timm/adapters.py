"""The timm and torchvision adapters by name, and picking the one for a model."""

from __future__ import annotations

from torch import nn

from secateurs.errors import SecateursError
from secateurs_timm.base import TimmAdapter
from secateurs_timm.resnet import ResNetAdapter
from secateurs_timm.tvision import TorchvisionResNetAdapter, TorchvisionVGGAdapter, TorchvisionViTAdapter
from secateurs_timm.vgg import VGGAdapter
from secateurs_timm.vit import ViTAdapter

ADAPTERS: dict[str, type[TimmAdapter]] = {
    "vit": ViTAdapter,
    "vgg": VGGAdapter,
    "resnet": ResNetAdapter,
    "torchvision-vit": TorchvisionViTAdapter,
    "torchvision-vgg": TorchvisionVGGAdapter,
    "torchvision-resnet": TorchvisionResNetAdapter,
}


def adapter_for(model: nn.Module) -> TimmAdapter:
    """The timm or torchvision adapter supporting ``model``."""
    for cls in ADAPTERS.values():
        adapter = cls()
        if adapter.supports(model):
            return adapter
    raise SecateursError(
        f"no timm adapter supports {type(model).__name__}; secateurs-timm handles timm and torchvision "
        "VisionTransformer (plain blocks), VGG and ResNet (BasicBlock/Bottleneck)"
    )
