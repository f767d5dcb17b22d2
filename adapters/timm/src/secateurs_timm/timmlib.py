"""timm's API as secateurs-timm calls it: building a model by name, the module defining an
architecture, the eval transform, and the size attributes of timm's attention and
classifier head. Imported only when timm is installed (``secateurs_timm.optional``).
"""

from __future__ import annotations

from typing import Any

import timm
from timm.data import create_transform, resolve_data_config
from timm.layers import Attention, ClassifierHead
from torch import nn

from secateurs.errors import SecateursError

__all__ = ["architecture_module", "create_model", "create_transform", "resolve_data_config", "sync_attributes"]


def create_model(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """``timm.create_model(name, **kwargs)`` without pretrained weights."""
    return timm.create_model(name, pretrained=False, **kwargs)


def architecture_module(name: str) -> str:
    """The timm module defining the registered model ``name`` (``timm.models.vgg``...);
    raises ``RuntimeError`` for an unknown name."""
    return timm.models.model_entrypoint(name).__module__


def sync_attributes(model: nn.Module) -> None:
    """Rewrite timm's own size attributes from the tensors: attention head counts,
    classifier-head widths and the model's ``head_hidden_size``."""
    for module in model.modules():
        if isinstance(module, Attention):
            _sync_attention(module)
        elif isinstance(module, ClassifierHead) and isinstance(module.fc, nn.Linear):
            module.in_features = module.num_features = module.fc.in_features
    head = getattr(model, "head", None)
    if isinstance(head, ClassifierHead) and hasattr(model, "head_hidden_size"):
        model.head_hidden_size = head.num_features


def _sync_attention(attn: Attention) -> None:
    attn_dim = attn.proj.in_features
    if attn_dim % attn.head_dim:
        raise SecateursError(
            f"attention output width {attn_dim} is not a multiple of head_dim {attn.head_dim}: "
            "heads must be removed whole"
        )
    attn.attn_dim = attn_dim
    attn.num_heads = attn_dim // attn.head_dim
