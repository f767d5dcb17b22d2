"""Structured components: views of a group's coupled slices, and zeroing components.

A ``Group`` of ``size`` components owns, in each coupled ``ParamSlice``, the entries
``[c * width, (c + 1) * width)`` along ``slice.dim`` for component ``c``.
"""

from __future__ import annotations

import torch

from secateurs.errors import SecateursError
from secateurs.types import Group, ParamSlice


def slice_width(group: Group, s: ParamSlice) -> int:
    length = getattr(s.module, s.param).shape[s.dim]
    if length % group.size:
        raise SecateursError(
            f"group {group.name!r}: {s.param} has {length} entries along dim {s.dim}, "
            f"not a multiple of its {group.size} components"
        )
    return length // group.size


def component_view(group: Group, s: ParamSlice) -> torch.Tensor:
    """The slice's parameter as ``[size, -1]``: one row per component (detached)."""
    t = getattr(s.module, s.param).detach()
    width = slice_width(group, s)
    moved = t.movedim(s.dim, 0)
    return moved.reshape(group.size, width * moved[0].numel())


def entry_mask(group: Group, s: ParamSlice, keep: torch.Tensor) -> torch.Tensor:
    """Bool mask over ``slice.dim`` of the parameter from a per-component ``keep``."""
    return keep.to(torch.bool).repeat_interleave(slice_width(group, s))


def zero_components(group: Group, keep: torch.Tensor) -> None:
    """Set every coupled entry of the components not in ``keep`` (bool ``[size]``) to zero."""
    with torch.no_grad():
        for s in group.slices:
            param = getattr(s.module, s.param)
            mask = entry_mask(group, s, keep.to(param.device))
            shape = [1] * param.dim()
            shape[s.dim] = -1
            param.mul_(mask.view(shape).to(param.dtype))
