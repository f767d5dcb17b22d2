"""Tiny random timm models for the adapter tests (a few blocks, widths of 4-32); imported by
name (fixtures live in conftest.py)."""

from __future__ import annotations

import copy
import functools

import torch

from secateurs.protocols import LoadedModel
from secateurs_timm.adapters import ADAPTERS, adapter_for
from secateurs_timm.base import SPEC_KEY
from secateurs_timm.narrow import narrow
from secateurs_timm.spec import TimmSpec

SPECS: dict[str, tuple[TimmSpec, float]] = {
    "vit": (TimmSpec("vit_tiny_patch16_224", {"num_classes": 5, "in_chans": 1, "img_size": 16, "patch_size": 4,
                                                "depth": 2, "embed_dim": 32, "num_heads": 4, "mlp_ratio": 2.0},
                     (), (1, 16, 16)), 1.0),
    "vgg": (TimmSpec("vgg11_bn", {"num_classes": 5, "in_chans": 3, "mlp_ratio": 1 / 64}, (), (3, 32, 32)), 1 / 16),
    "vgg_nobn": (TimmSpec("vgg11", {"num_classes": 5, "in_chans": 1, "mlp_ratio": 1 / 64}, (), (1, 32, 32)), 1 / 16),
    "resnet": (TimmSpec("resnet18", {"num_classes": 5, "in_chans": 1, "channels": [8, 8, 16, 16]},
                        ("cifar_stem",), (1, 16, 16)), 1.0),
    "bottleneck": (TimmSpec("resnet26", {"num_classes": 5, "in_chans": 1, "channels": [4, 4, 8, 8]}, (), (1, 32, 32)), 1.0),
}
FAMILY = {"vit": "vit", "vgg": "vgg", "vgg_nobn": "vgg", "resnet": "resnet", "bottleneck": "resnet"}


def random_model(spec, width: float) -> torch.nn.Module:
    """``spec.create()`` seeded, every group narrowed to ``width`` of its components (its
    adapter's groups), with random BatchNorm statistics; in train mode."""
    torch.manual_seed(0)
    model = spec.create()
    if width != 1.0:
        narrow(model, [g for b in adapter_for(model).blocks(model) for g in b.groups], width)
    randomize_batchnorm(model)
    return model


@functools.cache
def _prototype(name: str) -> torch.nn.Module:
    return random_model(*SPECS[name]).eval()


def randomize_batchnorm(model: torch.nn.Module) -> None:
    """Random non-trivial BatchNorm statistics and affine parameters, so removal is tested
    for real."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.normal_(1, 0.2)
                m.bias.normal_(0, 0.2)


def tiny(name: str) -> LoadedModel:
    """A fresh copy of the tiny ``name`` model wrapped with its adapter."""
    model = copy.deepcopy(_prototype(name))
    return LoadedModel(model, ADAPTERS[FAMILY[name]](), f"tiny-{name}", extra={SPEC_KEY: SPECS[name][0]})


def images(name: str, n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, *SPECS[name][0].input_size, generator=torch.Generator().manual_seed(seed))
