"""The timm and torchvision adapters by name, and picking the one for a model.

The timm adapters (``vit``, ``vgg``, ``resnet``) exist only when timm is installed; without
it, ``TimmMissing`` stands in for each under its name, so naming one (or loading a saved
timm model) fails with the line saying how to install timm, never with another adapter.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from secateurs.errors import SecateursError
from secateurs.protocols import LoadedModel
from secateurs.types import Block
from secateurs_timm.base import TimmAdapter
from secateurs_timm.optional import HAS_TIMM, timm_missing
from secateurs_timm.storage import is_saved_model, read_description
from secateurs_timm.tvision import TorchvisionResNetAdapter, TorchvisionVGGAdapter, TorchvisionViTAdapter

TIMM_ADAPTERS = ("vit", "vgg", "resnet")
"""The names of the timm adapters (``secateurs_timm.timm_adapters``)."""
_TIMM: tuple[type[TimmAdapter], ...] = (
    importlib.import_module("secateurs_timm.timm_adapters").ADAPTERS if HAS_TIMM else ()
)
ADAPTERS: dict[str, type[TimmAdapter]] = {
    cls.name: cls for cls in (*_TIMM, TorchvisionViTAdapter, TorchvisionVGGAdapter, TorchvisionResNetAdapter)
}
"""The installed adapters by name: the timm ones (with timm), then the torchvision ones."""
MISSING: tuple[str, ...] = () if HAS_TIMM else TIMM_ADAPTERS
"""The timm adapter names ``TimmMissing`` stands in for (all of them without timm)."""


class TimmMissing(TimmAdapter):
    """A timm adapter's name when timm is not installed: supports no model, loads no
    torchvision model, and refuses a saved timm model or being asked for blocks with
    ``secateurs_timm.optional.timm_missing``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def supports(self, model: nn.Module) -> bool:
        return False

    def _refusal(self) -> SecateursError:
        return timm_missing(f"the {self.name!r} adapter")

    def explain(self, model: nn.Module) -> str:
        return str(self._refusal())

    def explain_load(self, path: Path) -> str:
        return str(self._refusal())

    def blocks(self, model: nn.Module) -> list[Block]:
        raise self._refusal()

    def load(self, path: Path, *, device: str = "cpu", dtype: torch.dtype | None = None) -> LoadedModel | None:
        try:
            timm_model = is_saved_model(path) and "timm_model" in read_description(path)
        except SecateursError:
            return None
        if timm_model:
            raise timm_missing(f"the timm model saved in {path}")
        return None


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
