"""The weight files of a transformers folder, and the checks made on them before they load
(``secateurs.weight_checks``): no floating-point parameter stored as an integer dtype,
and one warning naming the tensors that hold NaN or Inf."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from secateurs.weight_checks import (
    check_stored_dtypes,
    nonfinite_tensors,
    scan_nonfinite,
    warn_nonfinite,
)
from torch import nn


def safetensors_files(path: Path) -> list[Path]:
    """The safetensors files ``from_pretrained`` reads from the folder (it prefers them to
    pickled ``.bin`` files): ``model.safetensors`` or the shards its index names; ``[]``
    when there are none (or the index does not parse: ``from_pretrained`` reports it)."""
    single = Path(path) / "model.safetensors"
    if single.is_file():
        return [single]
    index = Path(path) / "model.safetensors.index.json"
    if not index.is_file():
        return []
    try:
        shards = set(json.loads(index.read_text())["weight_map"].values())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        return []
    return [Path(path) / shard for shard in sorted(shards) if (Path(path) / shard).is_file()]


def pickle_files(path: Path) -> list[Path]:
    """The pickled checkpoint files (``pytorch_model*.bin``) of the folder."""
    return sorted(Path(path).glob("pytorch_model*.bin"))


def float_parameters(model: nn.Module, dtype: torch.dtype | None, config: dict[str, Any]) -> dict[str, torch.dtype]:
    """The floating-point parameters of ``model`` (built on the meta device) by the names a
    checkpoint may use (tied names too, with and without the base-model prefix), each
    with the dtype it loads in: ``dtype``, else the config's, else the parameter's own."""
    loads_in = dtype or _config_dtype(config)
    prefix = getattr(model, "base_model_prefix", "")
    names: dict[str, torch.dtype] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if param.is_floating_point():
            for alias in (name, name.removeprefix(f"{prefix}."), f"{prefix}.{name}") if prefix else (name,):
                names[alias] = loads_in or param.dtype
    return names


def _config_dtype(config: dict[str, Any]) -> torch.dtype | None:
    value = getattr(torch, str(config.get("dtype") or config.get("torch_dtype")), None)
    return value if isinstance(value, torch.dtype) and value.is_floating_point else None


def check_files(path: Path, meta: nn.Module, dtype: torch.dtype | None, config: dict[str, Any]) -> None:
    """Before the folder's weights load into ``meta``'s architecture: refuse a floating-point
    parameter stored as an integer dtype, and warn once about tensors holding NaN or Inf
    (safetensors only; pickled weights are checked once loaded: ``check_loaded``)."""
    files = safetensors_files(path)
    check_stored_dtypes(files, float_parameters(meta, dtype, config))
    warn_nonfinite(scan_nonfinite(files), str(path))


def check_loaded(path: Path, model: nn.Module) -> None:
    """The NaN/Inf warning for a model loaded from pickled ``.bin`` weights (its safetensors,
    when it has them, were scanned before loading by ``check_files``)."""
    if not safetensors_files(path):
        warn_nonfinite(nonfinite_tensors(model.named_parameters()), str(path))
