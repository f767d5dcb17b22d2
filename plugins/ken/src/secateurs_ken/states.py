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


def state_of(model_or_state: nn.Module | State) -> State:
    """The state dict of a module, or the mapping itself (kept as it is, so that a lazy one,
    ``secateurs.offload.LazyState``, is read tensor by tensor; tensors are not copied)."""
    if isinstance(model_or_state, nn.Module):
        return model_or_state.state_dict()
    return model_or_state


def check_names(pretrained: State, finetuned: State) -> None:
    """Raise naming the first tensor (in name order) only one of the two states has."""
    for name in sorted(set(pretrained) ^ set(finetuned)):
        side, other = ("fine-tuned", "pre-trained") if name in finetuned else ("pre-trained", "fine-tuned")
        raise SecateursError(f"tensor {name!r} is in the {side} model but not in the {other} one")


def check_shapes(name: str, pretrained: torch.Tensor, finetuned: torch.Tensor) -> None:
    """Raise when tensor ``name`` has different shapes in the two models."""
    if pretrained.shape != finetuned.shape:
        raise SecateursError(
            f"tensor {name!r} has shape {tuple(pretrained.shape)} in the pre-trained model and "
            f"{tuple(finetuned.shape)} in the fine-tuned one; KEN needs models of the same architecture"
        )


def check_matching(pretrained: State, finetuned: State) -> None:
    """Raise naming the first tensor whose name or shape differs between the two states."""
    check_names(pretrained, finetuned)
    for name in sorted(pretrained):
        check_shapes(name, pretrained[name], finetuned[name])


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


class Checksum:
    """sha256 over tensors' names, dtypes, shapes and bytes, fed one tensor at a time
    (``update``) in sorted name order: ``checksum`` of a state."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()

    def update(self, name: str, tensor: torch.Tensor) -> None:
        t = tensor.detach().to("cpu").contiguous()
        self.digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        self.digest.update(t.reshape(-1).view(torch.uint8).numpy().data if t.numel() else b"")

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


def checksum(state: State) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in sorted name order."""
    digest = Checksum()
    for name in sorted(state):
        digest.update(name, state[name])
    return digest.hexdigest()
