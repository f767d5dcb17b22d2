"""The timm adapters by name, and picking the one for a model."""

from __future__ import annotations

from torch import nn

from secateurs.errors import SecateursError
from secateurs_timm.base import TimmAdapter
from secateurs_timm.resnet import ResNetAdapter
from secateurs_timm.vgg import VGGAdapter
from secateurs_timm.vit import ViTAdapter

ADAPTERS: dict[str, type[TimmAdapter]] = {"vit": ViTAdapter, "vgg": VGGAdapter, "resnet": ResNetAdapter}


def adapter_for(model: nn.Module) -> TimmAdapter:
    """The timm adapter supporting ``model``."""
    for cls in ADAPTERS.values():
        adapter = cls()
        if adapter.supports(model):
            return adapter
    raise SecateursError(
        f"no timm adapter supports {type(model).__name__}; secateurs-timm handles "
        "VisionTransformer (plain blocks), VGG and ResNet (BasicBlock/Bottleneck)"
    )
