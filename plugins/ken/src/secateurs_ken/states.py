"""State-dict helpers shared by the API, the delta format and the viz: matching checks,
float-tensor selection and a stable checksum."""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from secateurs.errors import SecateursError

State = Mapping[str, torch.Tensor]


def state_of(model_or_state: nn.Module | State) -> dict[str, torch.Tensor]:
    """The state dict of a module, or the mapping itself (tensors are not copied)."""
    if isinstance(model_or_state, nn.Module):
        return dict(model_or_state.state_dict())
    return dict(model_or_state)


def check_matching(pretrained: State, finetuned: State) -> None:
    """Raise naming the first tensor whose name or shape differs between the two states."""
    for name in sorted(set(pretrained) | set(finetuned)):
        if name not in pretrained:
            raise SecateursError(f"tensor {name!r} is in the fine-tuned model but not in the pre-trained one")
        if name not in finetuned:
            raise SecateursError(f"tensor {name!r} is in the pre-trained model but not in the fine-tuned one")
        a, b = pretrained[name], finetuned[name]
        if a.shape != b.shape:
            raise SecateursError(
                f"tensor {name!r} has shape {tuple(a.shape)} in the pre-trained model and "
                f"{tuple(b.shape)} in the fine-tuned one; KEN needs models of the same architecture"
            )


def selected_names(state: State, targets: Sequence[str] = ("*",), exclude: Sequence[str] = ()) -> list[str]:
    """Floating-point tensors whose names match ``targets`` and none of ``exclude``."""
    names = [
        n for n, t in state.items()
        if t.is_floating_point()
        and any(fnmatch.fnmatchcase(n, p) for p in targets)
        and not any(fnmatch.fnmatchcase(n, p) for p in exclude)
    ]
    if not names:
        raise SecateursError(f"no floating-point tensor matches targets {list(targets)} (exclude {list(exclude)})")
    return names


def as_rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` viewed as ``[rows, width]`` (1-D and 0-D tensors are one row)."""
    return t.reshape(1, -1) if t.dim() <= 1 else t.reshape(t.shape[0], -1)


def checksum(state: State) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in sorted name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()
