"""The ``module`` adapter: any ``nn.Module``, unstructured, as one block.

For models no architecture adapter knows (an EfficientNet, your own network). The whole
model is one block whose units are the weights of its ``nn.Linear`` and ``nn.Conv*``
layers (a recipe's ``targets`` / ``exclude`` narrow them); calibration runs the model's
own forward on each batch, so input statistics (Wanda) come from the dense model in one
pass, without block-by-block propagation. Structured granularities are refused: which
channels couple to which is architecture knowledge this adapter does not have.

Batches: a tensor (``model(x)``), a tuple or list whose first item is a tensor (images
and labels: ``model(batch[0])``), a mapping with ``"images"`` (``model(images)``), or any
other mapping of keyword arguments (``model(**batch)``); tensors move to the model's
device, floating-point ones to its dtype.

It is tried after every other adapter (``generic``), and only for models given in memory
(``secateurs.prune(recipe, model=net)``) or built by a factory (``model =
"net.py:build"``): folders are loaded by the adapters that know their layout. ``save``
writes ``model.safetensors`` (the state dict) and ``secateurs-module.json`` (the class
and the factory); reload into a freshly built model with
``safetensors.torch.load_model(net, "model.safetensors")``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs
import torch
from torch import nn

from secateurs.errors import SecateursError
from secateurs.protocols import LoadedModel
from secateurs.types import Block, Unit

PRUNABLE = (nn.Linear, nn.modules.conv._ConvNd)
"""Module types whose ``weight`` the adapter prunes."""
FACTORY_KEY = "factory"
"""``LoadedModel.extra`` key of the ``"file.py:name"`` factory a model was built by."""
MANIFEST = "secateurs-module.json"


def prunable_units(model: nn.Module) -> tuple[Unit, ...]:
    """A unit for the weight of every Linear/Conv layer of ``model``, by module path."""
    return tuple(
        Unit(name, module, "weight", role=type(module).__name__)
        for name, module in model.named_modules()
        if isinstance(module, PRUNABLE) and isinstance(getattr(module, "weight", None), nn.Parameter)
    )


def _to_model(value: Any, param: torch.Tensor) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(param.device, param.dtype) if value.is_floating_point() else value.to(param.device)
    return value


@attrs.frozen
class ModuleAdapter:
    """Adapter for any ``nn.Module`` (see module docstring); a ``GenericAdapter``, an
    ``ExplainingAdapter`` and an ``ExplainingLoader`` (``secateurs.protocols``)."""

    name: str = "module"
    generic: ClassVar[bool] = True
    group_kinds: ClassVar[tuple[str, ...]] = ()

    def supports(self, model: nn.Module) -> bool:
        return isinstance(model, nn.Module) and bool(prunable_units(model))

    def explain(self, model: nn.Module) -> str | None:
        """Why ``supports`` declines ``model`` (``None`` when it does not)."""
        return None if self.supports(model) else "no nn.Linear or nn.Conv layer with a weight"

    def blocks(self, model: nn.Module) -> list[Block]:
        units = prunable_units(model)
        if not units:
            raise SecateursError(f"{type(model).__name__} has no nn.Linear or nn.Conv layer to prune")
        return [Block("model", 0, model, units)]

    def forward(self, model: nn.Module, batch: Any) -> Any:
        param = next(model.parameters())
        if isinstance(batch, torch.Tensor):
            return model(_to_model(batch, param))
        if isinstance(batch, tuple | list) and batch and isinstance(batch[0], torch.Tensor):
            return model(_to_model(batch[0], param))
        if isinstance(batch, Mapping):
            if isinstance(batch.get("images"), torch.Tensor):
                return model(_to_model(batch["images"], param))
            return model(**{k: _to_model(v, param) for k, v in batch.items()})
        raise SecateursError(
            "the module adapter takes batches that are a tensor, (inputs, labels), or a mapping of "
            f"keyword arguments; got {type(batch).__name__}"
        )

    def block_output(self, output: Any) -> Any:
        return output

    def load(self, path: Path, *, device: str, dtype: torch.dtype | None) -> LoadedModel | None:
        return None  # folders belong to the adapters that know their layout

    def explain_load(self, path: Path) -> str | None:
        """Why ``load`` declines ``path``: it never loads folders."""
        return "loads no folders: pass the model in Python (prune(model=...)) or as model = 'file.py:function'"

    def save(self, loaded: LoadedModel, directory: Path) -> list[Path]:
        from safetensors.torch import save_model

        weights = Path(directory) / "model.safetensors"
        save_model(loaded.model, str(weights))  # shared tensors (tied weights) once
        model_class = type(loaded.model)
        manifest = Path(directory) / MANIFEST
        manifest.write_text(
            json.dumps(
                {
                    "class": f"{model_class.__module__}.{model_class.__qualname__}",
                    FACTORY_KEY: loaded.extra.get(FACTORY_KEY),
                    "reload": "safetensors.torch.load_model(model, 'model.safetensors')",
                },
                indent=2,
            )
            + "\n"
        )
        return [weights, manifest]
