"""Tiny random torchvision models (VGG-11-BN, ResNet-18, ResNet-50, ViT) for the adapter
tests: narrowed so each runs in milliseconds, with non-trivial BatchNorm statistics and
no all-zero layer."""

from __future__ import annotations

import copy
import functools

import torch

from secateurs.loading import wrap
from secateurs.protocols import LoadedModel
from secateurs_timm.tvspec import TorchvisionSpec
from timm_models import random_model

VIT = {"image_size": 16, "patch_size": 4, "num_layers": 2, "num_heads": 4, "hidden_dim": 32, "mlp_dim": 64}
SPECS: dict[str, tuple[TorchvisionSpec, float]] = {
    "tv_vgg": (TorchvisionSpec("vgg11_bn", {"num_classes": 5}, (3, 32, 32)), 1 / 32),
    "tv_resnet18": (TorchvisionSpec("resnet18", {"num_classes": 5}, (3, 32, 32)), 1 / 8),
    "tv_resnet50": (TorchvisionSpec("resnet50", {"num_classes": 5}, (3, 32, 32)), 1 / 8),
    "tv_vit": (TorchvisionSpec("VisionTransformer", {**VIT, "num_classes": 5}, (3, 16, 16)), 1.0),
}
ADAPTER = {"tv_vgg": "torchvision-vgg", "tv_resnet18": "torchvision-resnet", "tv_resnet50": "torchvision-resnet",
           "tv_vit": "torchvision-vit"}
KINDS = {"tv_vgg": ["channels"], "tv_resnet18": ["channels"], "tv_resnet50": ["channels"],
         "tv_vit": ["heads", "neurons"]}


@functools.cache
def _prototype(name: str) -> torch.nn.Module:
    model = random_model(*SPECS[name])
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear) and not m.weight.any():  # torchvision's zero-initialised ViT head
                m.weight.normal_(0, 0.2)
    return model.eval()


def tv_model(name: str) -> torch.nn.Module:
    """A fresh copy of the tiny torchvision ``name`` model, as a user would build it."""
    return copy.deepcopy(_prototype(name))


def tv_tiny(name: str) -> LoadedModel:
    """``tv_model(name)`` wrapped with the adapter secateurs picks for it."""
    return wrap(tv_model(name))


def tv_images(name: str, n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, *SPECS[name][0].input_size, generator=torch.Generator().manual_seed(seed))
