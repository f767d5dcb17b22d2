"""What the timm and torchvision adapters share: image batches, loading and saving, block naming."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from secateurs.errors import SecateursError
from secateurs.protocols import LoadedModel
from secateurs.types import Block, Group, ParamSlice, Unit
from secateurs_timm.optional import require_timm
from secateurs_timm.shapes import sync_attributes
from secateurs_timm.spec import infer_spec
from secateurs_timm.storage import (
    DESCRIPTION,
    Spec,
    is_saved_model,
    load_model,
    read_description,
    save_model,
    spec_from_json,
)

SPEC_KEY = "timm_spec"


def images_of(batch: Any) -> torch.Tensor:
    """The image tensor of a calibration batch: a tensor ``[B, C, H, W]``, or a tuple/list
    ``(images, labels)``, or a mapping with an ``"images"`` entry."""
    if isinstance(batch, torch.Tensor):
        images = batch
    elif isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        images = batch[0]
    elif isinstance(batch, dict) and isinstance(batch.get("images"), torch.Tensor):
        images = batch["images"]
    else:
        raise SecateursError(
            "a timm model takes image batches: a [B, C, H, W] tensor, (images, labels), or "
            f"{{'images': tensor}}; got {type(batch).__name__}"
        )
    if images.dim() != 4:
        raise SecateursError(f"image batches must be [B, C, H, W]; got shape {tuple(images.shape)}")
    return images


def spec_of(loaded: LoadedModel) -> Spec:
    """The model's spec: the one it was loaded with, or inferred by its adapter (timm's
    config for timm models, the module structure for torchvision's)."""
    spec = loaded.extra.get(SPEC_KEY)
    if isinstance(spec, Spec):
        return spec
    adapter = loaded.adapter
    return adapter.infer_spec(loaded.model) if isinstance(adapter, TimmAdapter) else infer_spec(loaded.model)


def unit(names: dict[nn.Module, str], module: nn.Module, role: str) -> Unit:
    """``module.weight`` as a unit named by the module's qualified name."""
    return Unit(names[module], module, "weight", role)


def slices(module: nn.Module, dim: int, params: tuple[str, ...] = ("weight", "bias"), **span: int) -> list[ParamSlice]:
    """The slices of ``module``'s ``params`` that exist (bias may be None)."""
    return [ParamSlice(module, p, dim, **span) for p in params if getattr(module, p, None) is not None]


def channel_group(names: dict[nn.Module, str], conv: nn.Module, norm: nn.Module | None, consumer: nn.Module) -> Group:
    """Output channels of ``conv`` (a Conv2d or Linear) with its BatchNorm's channels and
    the input channels of ``consumer`` (the next conv or linear).

    Only parameters are listed (so a weight-norm score sees weights, not statistics); the
    norm's running statistics are cut and zeroed with them as companions
    (``secateurs.structured.coupled_slices``)."""
    parts = slices(conv, 0)
    if norm is not None:
        parts += slices(norm, 0)
    parts += slices(consumer, 1, ("weight",))
    return Group(
        f"{names[conv]}.channels",
        "channels",
        conv.weight.shape[0],
        tuple(parts),
        {"producer": names[conv], "norm": names.get(norm), "consumer": names[consumer]},
    )


class TimmAdapter:
    """Base of the timm and torchvision adapters. Subclasses set ``name``, ``model_class``
    and ``families`` (module names of the architectures they load: ``timm.models.vgg``,
    ``torchvision.models.vgg``) and implement ``blocks``; ``infer_spec`` gives the spec a
    model built elsewhere saves with."""

    name: str = ""
    model_class: type[nn.Module] = nn.Module
    families: tuple[str, ...] = ()
    group_kinds: tuple[str, ...] = ()
    """The structured group kinds its blocks may have (``GroupingAdapter``)."""

    def supports(self, model: nn.Module) -> bool:
        return isinstance(model, self.model_class)

    def blocks(self, model: nn.Module) -> list[Block]:
        raise NotImplementedError

    def check(self, model: nn.Module) -> dict[nn.Module, str]:
        """Raise unless this adapter supports ``model``; return module → qualified name."""
        if not self.supports(model):
            raise SecateursError(
                f"the {self.name!r} adapter does not support {type(model).__name__}; "
                f"it handles {self.model_class.__module__.split('.')[0]} {self.model_class.__name__} models"
            )
        return {m: n for n, m in model.named_modules()}

    def forward(self, model: nn.Module, batch: Any) -> Any:
        param = next(model.parameters())
        return self.run(model, images_of(batch).to(param.device, param.dtype))

    def run(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The model's forward on preprocessed images, calling every block module once:
        ``model(images)``, or, when the blocks are views (``sequence``), the views in turn."""
        sequence = self.sequence(model)
        if sequence is None:
            return model(images)
        x = images
        for module in sequence:
            x = module(x)
        return x

    def sequence(self, model: nn.Module) -> list[nn.Module] | None:
        """The block modules whose chain is the whole forward, when the model's own forward
        does not call them (views); ``None`` when it does."""
        return None

    def block_output(self, output: Any) -> torch.Tensor:
        return output

    def load(self, path: Path, *, device: str = "cpu", dtype: torch.dtype | None = None) -> LoadedModel | None:
        path = Path(path)
        if self.explain_load(path) is not None:
            return None
        model, spec = load_model(path, device=device, dtype=dtype)
        if not self.supports(model):
            return None
        return LoadedModel(model, self, str(path), extra={SPEC_KEY: spec})

    def infer_spec(self, model: nn.Module) -> Spec:
        return infer_spec(model)

    def explain_load(self, path: Path) -> str | None:
        """Why ``load`` declines ``path`` (``None`` when the folder is a saved model of this
        adapter's families): not a saved model, a description that does not validate, or
        another architecture."""
        if not is_saved_model(path):
            return f"no {DESCRIPTION} (not a saved secateurs timm/torchvision model)"
        try:
            description = read_description(path)
            if "torchvision_model" in description:
                module = spec_from_json(description).module
            else:
                timmlib = require_timm(f"the timm model saved in {path}")
                module = timmlib.architecture_module(description["timm_model"])
        except SecateursError as exc:
            return str(exc)
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:
            return f"{DESCRIPTION} names no known architecture ({type(exc).__name__}: {exc})"
        return None if module in self.families else f"a {module} model, not {' or '.join(self.families)}"

    def save(self, loaded: LoadedModel, directory: Path) -> list[Path]:
        return save_model(loaded.model, spec_of(loaded), directory)

    def resized(self, model: nn.Module, block: Block, group: Group, keep: torch.Tensor) -> None:
        """Called by the ``remove`` applier after ``group`` lost components: updates
        timm's head counts and head widths (the saved shapes carry the rest)."""
        sync_attributes(model)
