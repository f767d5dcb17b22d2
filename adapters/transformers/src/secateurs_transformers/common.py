"""What every transformers adapter shares: loading a model folder, saving it, running it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from secateurs.protocols import LoadedModel


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
    """Load a model (with ``auto_class``) and its tokenizer from a local folder, offline."""
    from transformers import AutoTokenizer

    model = auto_class.from_pretrained(str(path), dtype=dtype or "auto", local_files_only=True)
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
