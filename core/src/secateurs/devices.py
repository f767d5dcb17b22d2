"""Checking a device string before any work: a clear error listing the available devices."""

from __future__ import annotations

import torch

from secateurs.errors import SecateursError


def available_devices() -> list[str]:
    """``cpu`` plus every CUDA / MPS device this machine can use."""
    found = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found


def check_device(device: str | torch.device) -> str:
    """``device`` if a model can run there (``cuda`` meaning ``cuda:0``); otherwise a
    ``SecateursError`` naming it and the available devices."""
    available = available_devices()
    hint = f"available devices: {', '.join(available)}"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise SecateursError(f"unknown device {str(device)!r}; {hint}") from None
    if parsed.type == "meta":
        raise SecateursError(f"device 'meta' holds no data, so nothing can be pruned there; {hint}")
    name = parsed.type if parsed.type in ("cpu", "mps") else f"{parsed.type}:{parsed.index or 0}"
    if name not in available:
        raise SecateursError(f"device {str(device)!r} is not available on this machine; {hint}")
    return str(device)
