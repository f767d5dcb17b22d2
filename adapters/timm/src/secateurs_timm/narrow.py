"""Narrower variants of timm architectures that have no width argument (VGG): every
structured group keeps a fraction of its components, freshly initialised.

Only shapes are computed here (from the adapter's groups); ``resize_to`` rebuilds the
tensors, so the result saves and reloads like any shrunk model.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from secateurs.structured import coupled_slices
from secateurs.types import Group
from secateurs_timm.shapes import resize_to, shapes_of


def narrowed_shapes(model: nn.Module, groups: Iterable[Group], fraction: float) -> dict[str, list[int]]:
    """State shapes of ``model`` once every group keeps ``round(size * fraction)`` (≥ 1)
    components."""
    shapes = shapes_of(model)
    names = {m: n for n, m in model.named_modules()}
    for group in groups:
        drop = group.size - max(1, round(group.size * fraction))
        for s in coupled_slices(group):  # with companions: biases, norm statistics
            shapes[f"{names[s.module]}.{s.param}"][s.dim] -= drop * (s.span // group.size)
    return shapes


def narrow(model: nn.Module, groups: Iterable[Group], fraction: float) -> None:
    """Resize ``model`` in place to ``narrowed_shapes`` and re-initialise every module."""
    resize_to(model, narrowed_shapes(model, list(groups), fraction))
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        if isinstance(module, nn.modules.batchnorm._NormBase):
            module.reset_running_stats()
