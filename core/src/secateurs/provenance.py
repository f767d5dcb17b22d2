"""Where a run's output came from: what ``report.json`` records under ``provenance``.

``gather(source, device, reference)`` returns a JSON-ready dict:

- ``versions``: distribution versions (``importlib.metadata``) of ``secateurs``, ``torch``
  and, when installed, ``transformers`` (never imported for this), and Python's;
- ``plugins``: every plugin another distribution provides that the run loads, ``{name:
  {"distribution", "version"}}`` (the built-ins are ``secateurs``'s version);
- ``device`` (as the run named it, with the accelerator's name where there is one) and
  ``torch_threads``;
- ``date``: now, UTC, ISO 8601;
- ``command``: the command line (``sys.argv``) when a ``secateurs`` command runs (a click
  command is active), else ``"python API"``;
- ``model``: the input model's identity (``model_identity``), and ``reference_model``
  the same for the recipe's reference model, when it names one.

Bounded cost: no weight data is ever read; only ``config.json``, the safetensors index and
safetensors headers (a few KiB to MiB) are hashed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import struct
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HASHED_FILES = ("config.json", "model.safetensors.index.json")
"""Files of a model folder whose sha256 identifies it (weights are never hashed)."""
SAFETENSORS_HEADER_LIMIT = 100 * 2**20
"""The largest header safetensors accepts; a larger one is not hashed."""


def gather(source: str, device: str, reference: str | None = None) -> dict[str, Any]:
    """The provenance of a run on the model loaded from ``source`` (``LoadedModel.source``)
    on ``device``, with the reference model ``reference`` (the recipe's
    ``reference_model``); see the module docstring for the keys."""
    import torch

    found = {
        "versions": versions(),
        "plugins": plugin_versions(),
        "device": device_info(device),
        "torch_threads": torch.get_num_threads(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command_line(),
        "model": model_identity(source),
    }
    if reference is not None:
        found["reference_model"] = model_identity(str(reference))
    return found


def versions() -> dict[str, str]:
    """Installed versions of secateurs, torch, transformers (when installed) and Python."""
    found = {"python": platform.python_version()}
    for distribution in ("secateurs", "torch", "transformers"):
        try:
            found[distribution] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def plugin_versions() -> dict[str, dict[str, str]]:
    """The plugins the run loads from other distributions (``plugins.selected_plugins``:
    metadata only, so recording them has no side effect on the plugin manager)."""
    from secateurs.plugins import selected_plugins

    return {p.name: {"distribution": p.distribution, "version": p.version} for p in selected_plugins()}


def device_info(device: str) -> dict[str, str]:
    """``device`` with the name of the hardware behind it (the CUDA device's name, or the
    CPU's architecture)."""
    import torch

    kind = torch.device(device).type
    if kind == "cuda" and torch.cuda.is_available():
        name = torch.cuda.get_device_name(torch.device(device))
    else:
        name = platform.machine() if kind == "cpu" else kind
    return {"name": device, "hardware": name}


def command_line() -> list[str] | str:
    """``sys.argv`` when a ``secateurs`` command (any click command) is running, else
    ``"python API"``."""
    import click

    return list(sys.argv) if click.get_current_context(silent=True) is not None else "python API"


def model_identity(source: str) -> dict[str, Any]:
    """The input model: ``{"source": as given}`` plus, for a local path, ``"path"`` (resolved)
    and ``"sha256"`` (``hashed_files``); for a packaged model, ``"packaged"`` (its name) and
    the cached folder's path and hashes; for a factory ``"file.py:name"``, the resolved
    ``"path"`` of the file and its sha256. An in-memory model has only its ``source``."""
    from secateurs.loading import FACTORY

    identity: dict[str, Any] = {"source": source}
    path = Path(source).expanduser()
    factory = FACTORY.fullmatch(source)
    if factory and not path.exists():
        path = Path(factory["file"]).expanduser()
    elif not path.exists():
        path = _packaged(source)
        if path is None:
            return identity
        identity["packaged"] = source
    if path.exists():
        identity["path"] = str(path.resolve())
        identity["sha256"] = hashed_files(path)
    return identity


def _packaged(name: str) -> Path | None:
    """The cached folder of the packaged model ``name`` (fetched already by the run that
    loaded it), or ``None`` when no packaged model has that name."""
    from secateurs.plugins import get_manager

    models = get_manager().models
    return models.create(name).fetch() if name in models else None


def hashed_files(path: Path) -> dict[str, str]:
    """sha256 by file name: for a folder, its ``config.json`` and safetensors index when
    present, else (no index) the header of every ``*.safetensors`` file in it; for a file,
    the file itself when it is small source (``.py``, ``.json``), else its safetensors
    header. Keys name what was hashed (``"model.safetensors (header)"``)."""
    if path.is_file():
        if path.suffix in {".py", ".json"}:
            return {path.name: _sha256(path.read_bytes())}
        header = _safetensors_header(path)
        return {} if header is None else {f"{path.name} (header)": _sha256(header)}
    hashes = {name: _sha256((path / name).read_bytes()) for name in HASHED_FILES if (path / name).is_file()}
    if "model.safetensors.index.json" not in hashes:
        for file in sorted(path.glob("*.safetensors")):
            header = _safetensors_header(file)
            if header is not None:
                hashes[f"{file.name} (header)"] = _sha256(header)
    return hashes


def _safetensors_header(file: Path) -> bytes | None:
    """The 8-byte length and JSON header of a safetensors file (names, dtypes, shapes and
    offsets of every tensor, no data), or ``None`` when ``file`` is not one."""
    with open(file, "rb") as f:
        prefix = f.read(8)
        if len(prefix) != 8:
            return None
        (size,) = struct.unpack("<Q", prefix)
        if size > SAFETENSORS_HEADER_LIMIT:
            return None
        header = f.read(size)
    return prefix + header if len(header) == size and header.startswith(b"{") else None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
