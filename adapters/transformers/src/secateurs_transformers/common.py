"""What every transformers adapter shares: loading a model folder, saving it, running it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from secateurs.errors import SecateursError
from secateurs.protocols import LoadedModel
from secateurs.structured import resize_tensor, sync_sizes


def read_config(path: Path) -> dict[str, Any] | None:
    """The folder's ``config.json`` as a dict, or ``None`` when it is not a transformers folder."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text())
    except json.JSONDecodeError:
        return None


def load_folder(adapter: Any, path: Path, auto_class: Any, *, device: str, dtype: torch.dtype | None) -> LoadedModel:
    """Load a model (with ``auto_class``) and its tokenizer from a local folder, offline.

    A model whose config records per-layer sizes (``LAYER_SIZES``, written by structured
    removal) is built by ``from_pretrained`` at the config's sizes, then its shrunk
    modules are fitted to the checkpoint and the adapter's optional ``sync(model)``
    updates the architecture attributes.
    """
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    shrunk = LAYER_SIZES in (read_config(path) or {})
    verbosity = hf_logging.get_verbosity()
    if shrunk:  # the size-mismatch report is expected here; fit_to_checkpoint resolves it
        hf_logging.set_verbosity_error()
    try:
        model = auto_class.from_pretrained(
            str(path), dtype=dtype or "auto", local_files_only=True, ignore_mismatched_sizes=shrunk
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    if shrunk:
        fit_to_checkpoint(model, path)
        if hasattr(adapter, "sync"):
            adapter.sync(model)
    model.to(device).eval()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError):
        tokenizer = None
    return LoadedModel(model=model, adapter=adapter, source=str(path), tokenizer=tokenizer)


def save_folder(loaded: LoadedModel, directory: Path) -> list[Path]:
    """``save_pretrained`` layout (safetensors) for the model and, if any, its tokenizer."""
    loaded.model.save_pretrained(str(directory), safe_serialization=True)
    if loaded.tokenizer is not None:
        loaded.tokenizer.save_pretrained(str(directory))
    return sorted(p for p in Path(directory).iterdir() if p.is_file())


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def first_output(output: Any) -> torch.Tensor:
    """A block's hidden state: the output itself, or the first element of a tuple."""
    return output[0] if isinstance(output, tuple | list) else output


# -- models whose layers were shrunk by structured removal -----------------------------

LAYER_SIZES = "secateurs_layer_sizes"
"""Config key holding one ``{size name: value}`` per layer when the architecture's own
config cannot express the layers' sizes (they differ between layers, or, as BERT's
heads, the config has no field for them)."""


def record_layer_sizes(config: Any, sizes: list[dict[str, int]], expressible: set[str]) -> None:
    """Write the layers' ``sizes`` into ``config``.

    Every size that is the same in all layers and in ``expressible`` (the config fields
    the architecture builds its modules from) is set on the config, so plain
    ``from_pretrained`` builds the right shapes. If any other size remains, the whole
    per-layer list is stored under ``LAYER_SIZES`` and the model must be loaded with
    ``load_folder`` (which fits the modules to the checkpoint).
    """
    leftover = False
    for key in sizes[0]:
        values = {layer[key] for layer in sizes}
        if len(values) == 1 and key in expressible:
            setattr(config, key, values.pop())
        elif len(values) > 1 or getattr(config, key, None) != sizes[0][key]:
            leftover = True
    if leftover:
        setattr(config, LAYER_SIZES, sizes)
    elif hasattr(config, LAYER_SIZES):
        delattr(config, LAYER_SIZES)


def _checkpoint_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        return sorted({path / f for f in json.loads(index.read_text())["weight_map"].values()})
    single = path / "model.safetensors"
    if not single.is_file():
        raise SecateursError(f"{path} holds no model.safetensors: cannot restore its shrunk layers")
    return [single]


def fit_to_checkpoint(model: nn.Module, path: Path) -> list[nn.Module]:
    """Give every tensor of ``model`` whose checkpoint shape differs the checkpoint's shape
    and values (``from_pretrained`` left those randomly initialised); return the modules
    changed, with their standard size attributes synced."""
    from safetensors import safe_open

    owners = dict(model.named_modules())
    state = model.state_dict(keep_vars=True)
    changed: dict[int, nn.Module] = {}
    for file in _checkpoint_files(Path(path)):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                if key not in state or tuple(f.get_slice(key).get_shape()) == tuple(state[key].shape):
                    continue
                owner_name, _, name = key.rpartition(".")
                owner = owners[owner_name]
                resize_tensor(owner, name, f.get_slice(key).get_shape())
                with torch.no_grad():
                    getattr(owner, name).copy_(f.get_tensor(key))
                changed[id(owner)] = owner
    for module in changed.values():
        sync_sizes(module)
    return list(changed.values())
