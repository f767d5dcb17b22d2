"""secateurs: a pluggable pruning framework for PyTorch models.

One call runs a recipe::

    import secateurs
    outcome = secateurs.prune("recipes/smollm2-wanda-50.toml")

The parts (adapters, scorers, allocators, appliers, exporters) are plugins; see
``secateurs.hookspecs`` for the contract and ``secateurs plugins`` for what is installed.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "PruneSpec": "secateurs.pipeline",
    "Recipe": "secateurs.recipe",
    "RunOutcome": "secateurs.run",
    "SecateursError": "secateurs.errors",
    "evaluate": "secateurs.run",
    "find_adapter": "secateurs.loading",
    "get_manager": "secateurs.plugins",
    "load": "secateurs.loading",
    "load_recipe": "secateurs.recipe",
    "prune": "secateurs.run",
    "prune_model": "secateurs.pipeline",
}
"""Public name → the module defining it, imported on first access (most import torch; the
command line imports ``secateurs.cli`` without them)."""

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
