"""Composites by name: presets, zennit's built-ins, and tuned composites saved as JSON.

Saved composites live in ``$SECATEURS_CONFIG/lrp-composites/NAME.json`` (default config
directory ``$XDG_CONFIG_HOME/secateurs``, i.e. ``~/.config/secateurs``); a recipe names
them like any preset (``composite = "vit-tuned"``) or gives a JSON file's path.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from secateurs.errors import SecateursError
from secateurs.outputs import write_json
from secateurs_lrp.composites import CompositeSpec, zennit_composites

CONFIG_ENV = "SECATEURS_CONFIG"
PRESETS: dict[str, dict[str, Any]] = {
    "epsilon": {},
    "epsilon-cp": {"softmax": "cp"},
    "gamma": {"low": "gamma", "mid": "gamma", "high": "gamma", "fc": "epsilon"},
    "zplus": {"low": "zplus", "mid": "zplus", "high": "zplus", "fc": "epsilon"},
    "alphabeta": {"low": "alphabeta", "mid": "alphabeta", "high": "alphabeta", "fc": "epsilon"},
}
"""Fixed composites: ε everywhere (AttnLRP softmax or CP-LRP), or γ / z+ / α2β1 on every
feature layer with ε on the classifier."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def composites_dir() -> Path:
    root = os.environ.get(CONFIG_ENV) or Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "secateurs"
    return Path(root) / "lrp-composites"


def saved_names() -> list[str]:
    folder = composites_dir()
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def _read(path: Path) -> CompositeSpec:
    try:
        data = json.loads(path.read_text())
    except RecursionError:
        raise SecateursError(f"composite file {path} is nested too deeply to be a composite; write it as in docs") from None
    except (OSError, ValueError) as exc:
        raise SecateursError(f"cannot read composite file {path}: {exc}") from None
    if not isinstance(data, Mapping):
        raise SecateursError(f"composite file {path} must hold a JSON object")
    try:
        return CompositeSpec.from_dict(data.get("composite", data))
    except SecateursError as exc:
        raise SecateursError(f"composite file {path}: {exc}") from None


def resolve_composite(value: str | Mapping[str, Any] | CompositeSpec) -> CompositeSpec:
    """A ``CompositeSpec`` from an inline table, a preset / zennit / saved name, or a JSON path."""
    if isinstance(value, CompositeSpec):
        return value
    if isinstance(value, Mapping):
        return CompositeSpec.from_dict(value)
    if not isinstance(value, str):
        raise SecateursError(f"composite must be a name, a JSON path or a table, got {type(value).__name__}")
    if value in PRESETS:
        return CompositeSpec.from_dict(PRESETS[value])
    if value in zennit_composites():
        return CompositeSpec(zennit=value)
    saved = composites_dir() / f"{value}.json"
    if _NAME.match(value) and saved.is_file():
        return _read(saved)
    path = Path(value).expanduser()
    if path.suffix == ".json" and path.is_file():
        return _read(path)
    zennit_names = sorted(n for n in zennit_composites() if n[0].isupper())
    raise SecateursError(
        f"unknown composite {value!r}. Presets: {', '.join(PRESETS)}; zennit: {', '.join(zennit_names)}; "
        f"saved ({composites_dir()}): {', '.join(saved_names()) or 'none'}; or a path to a .json file"
    )


def save_composite(name: str, spec: CompositeSpec, record: Mapping[str, Any] | None = None) -> Path:
    """Save ``spec`` under ``name`` in the composites directory; returns the file."""
    if not _NAME.match(name) or name in PRESETS or name in zennit_composites():
        raise SecateursError(f"cannot save a composite as {name!r}: use letters, digits, '-', '_' and not a preset name")
    return write_json(composites_dir() / f"{name}.json", {"composite": spec.to_dict(), **(record or {})})
