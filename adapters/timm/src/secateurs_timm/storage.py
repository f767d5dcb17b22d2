"""Save and load timm models as ``model.safetensors`` + ``secateurs_timm.json``.

The JSON records the ``TimmSpec`` (timm name, ``create_model`` kwargs, patches, input
size) and the shape of every state tensor. Loading creates the model with timm, resizes
it to the recorded shapes (a physically shrunk model has narrower layers than its name
says), syncs the module attributes and loads the state strictly.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from secateurs.errors import SecateursError
from secateurs.outputs import atomic_file
from secateurs_timm.shapes import resize_to, shapes_of
from secateurs_timm.spec import TimmSpec

WEIGHTS = "model.safetensors"
DESCRIPTION = "secateurs_timm.json"
FORMAT = "secateurs-timm/1"


def is_saved_model(path: Path) -> bool:
    return Path(path).is_dir() and (Path(path) / DESCRIPTION).is_file()


def save_model(model: nn.Module, spec: TimmSpec, directory: Path) -> list[Path]:
    """Write the weights and description into ``directory`` (each file atomically)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    description = {"format": FORMAT, **spec.to_json(), "shapes": shapes_of(model)}
    weights = directory / WEIGHTS
    with atomic_file(weights) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
    meta = directory / DESCRIPTION
    with atomic_file(meta) as tmp:
        tmp.write_text(json.dumps(description, indent=2) + "\n")
    return [weights, meta]


def load_model(path: Path, *, device: str = "cpu", dtype: torch.dtype | None = None) -> tuple[nn.Module, TimmSpec]:
    """Rebuild a saved model (eval mode, on ``device``, floating tensors in ``dtype``)."""
    path = Path(path)
    try:
        description = json.loads((path / DESCRIPTION).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SecateursError(f"{path} is not a saved secateurs-timm model: {exc}") from exc
    if description.get("format") != FORMAT:
        raise SecateursError(f"{path / DESCRIPTION}: unknown format {description.get('format')!r}; expected {FORMAT!r}")
    spec = TimmSpec.from_json(description)
    model = spec.create()
    resize_to(model, description.get("shapes", {}))
    try:
        state = load_file(str(path / WEIGHTS))
    except (OSError, RuntimeError) as exc:
        raise SecateursError(f"cannot read {path / WEIGHTS}: {exc}") from exc
    model.load_state_dict(state, strict=True)
    model.to(device)
    if dtype is not None:
        model.to(dtype)
    return model.eval(), spec
