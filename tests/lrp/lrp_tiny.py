"""Tiny random timm and torchvision models for the LRP tests, with labelled random reference batches, and the
fixtures the test modules import (no conftest.py: test folders share the module name `conftest`)."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from secateurs.protocols import LoadedModel
from secateurs_timm.adapters import ADAPTERS, adapter_for
from secateurs_timm.narrow import narrow
from secateurs_timm.spec import TimmSpec
from secateurs_timm.tvspec import TorchvisionSpec

CLASSES = 4
SPECS: dict[str, tuple[str, TimmSpec, float]] = {
    "vgg": ("vgg", TimmSpec("vgg11_bn", {"num_classes": CLASSES, "in_chans": 1, "mlp_ratio": 1 / 64}, (), (1, 32, 32)), 1 / 16),
    "resnet": ("resnet", TimmSpec("resnet18", {"num_classes": CLASSES, "in_chans": 1, "channels": [8, 8, 16, 16]},
                                  ("cifar_stem",), (1, 16, 16)), 1.0),
    "bottleneck": ("resnet", TimmSpec("resnet26", {"num_classes": CLASSES, "in_chans": 1, "channels": [4, 4, 8, 8]},
                                      (), (1, 32, 32)), 1.0),
    "vit": ("vit", TimmSpec("vit_tiny_patch16_224", {"num_classes": CLASSES, "in_chans": 1, "img_size": 16,
                                                     "patch_size": 4, "depth": 2, "embed_dim": 32, "num_heads": 4,
                                                     "mlp_ratio": 2.0}, (), (1, 16, 16)), 1.0),
}
TV_VIT = {"image_size": 16, "patch_size": 4, "num_layers": 2, "num_heads": 4, "hidden_dim": 32, "mlp_dim": 64}
TV_SPECS: dict[str, tuple[str, TorchvisionSpec, float]] = {
    "tv_vgg": ("torchvision-vgg", TorchvisionSpec("vgg11_bn", {"num_classes": CLASSES}, (3, 32, 32)), 1 / 32),
    "tv_resnet18": ("torchvision-resnet", TorchvisionSpec("resnet18", {"num_classes": CLASSES}, (3, 32, 32)), 1 / 8),
    "tv_resnet50": ("torchvision-resnet", TorchvisionSpec("resnet50", {"num_classes": CLASSES}, (3, 32, 32)), 1 / 8),
    "tv_vit": ("torchvision-vit",
               TorchvisionSpec("VisionTransformer", {**TV_VIT, "num_classes": CLASSES}, (3, 16, 16)), 1.0),
}
ALL = {**SPECS, **TV_SPECS}


@functools.cache
def _prototype(name: str, biases: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    _, spec, width = ALL[name]
    model = spec.create()
    if width != 1.0:
        narrow(model, [g for b in adapter_for(model).blocks(model) for g in b.groups], width)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):  # non-trivial statistics: merging is tested for real
                m.running_var.uniform_(0.5, 1.5)
                m.weight.normal_(1, 0.2)
                m.running_mean.normal_(0, 0.2 if biases else 0.0)
                m.bias.normal_(0, 0.2 if biases else 0.0)
            elif isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.LayerNorm)) and m.bias is not None:
                m.bias.normal_(0, 0.1 if biases else 0.0)
            if isinstance(m, torch.nn.Linear) and not m.weight.any():  # torchvision's zero-initialised ViT head
                m.weight.normal_(0, 0.2)
    return model.eval()


def tiny(name: str, *, biases: bool = True) -> LoadedModel:
    """A fresh copy of the tiny ``name`` model with its adapter (``biases=False``: every
    bias, BatchNorm shift and running mean is zero, so ε-LRP must conserve exactly)."""
    return LoadedModel(copy.deepcopy(_prototype(name, biases)), ADAPTERS[ALL[name][0]](), f"tiny-{name}")


def images(name: str, n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, *ALL[name][1].input_size, generator=torch.Generator().manual_seed(seed))


def calibration(name: str, per_class: int = 3, batch: int = 8, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Labelled batches with ``per_class`` samples of every class, shuffled."""
    n = per_class * CLASSES
    labels = torch.arange(n) % CLASSES
    labels = labels[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]
    return list(zip(images(name, n, seed).split(batch), labels.split(batch), strict=True))


@pytest.fixture(params=sorted(SPECS))
def family(request) -> str:
    return request.param


@pytest.fixture(params=sorted(TV_SPECS))
def tv_family(request) -> str:
    return request.param


@pytest.fixture(params=sorted(ALL))
def any_family(request) -> str:
    """Every tiny model, timm and torchvision."""
    return request.param


#: the structured kinds each tiny model's adapter defines
KINDS = {"vgg": ["channels"], "resnet": ["channels"], "bottleneck": ["channels"], "vit": ["neurons", "heads"],
         "tv_vgg": ["channels"], "tv_resnet18": ["channels"], "tv_resnet50": ["channels"], "tv_vit": ["heads", "neurons"]}
