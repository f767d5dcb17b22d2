"""Save and load timm and torchvision models as ``model.safetensors`` + ``secateurs_timm.json``.

The JSON records the spec — a ``TimmSpec`` (``timm_model``: timm name, ``create_model``
kwargs, patches, input size) or a ``TorchvisionSpec`` (``torchvision_model``: builder name,
allow-listed kwargs, input size) — and the shape of every state tensor. Loading builds the
model skeleton with its own library on the meta device (no weight initialisation),
resizes it to the recorded shapes (a physically shrunk model has narrower layers than its
name says), syncs the module attributes, checks the file's header (no floating-point
parameter stored as an integer dtype: ``secateurs.weight_checks``) and takes the
safetensors state strictly as the model's tensors (no second copy), warning once about
tensors holding NaN or Inf.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from secateurs.errors import SecateursError
from secateurs.outputs import atomic_file
from secateurs.weight_checks import check_stored_dtypes, nonfinite_tensors, warn_nonfinite
from torch import nn

from secateurs_timm.shapes import resize_to, shapes_of
from secateurs_timm.spec import TimmSpec
from secateurs_timm.tvspec import TorchvisionSpec

Spec = TimmSpec | TorchvisionSpec

WEIGHTS = "model.safetensors"
DESCRIPTION = "secateurs_timm.json"
FORMAT = "secateurs-timm/1"


def is_saved_model(path: Path) -> bool:
    return Path(path).is_dir() and (Path(path) / DESCRIPTION).is_file()


def read_description(path: Path) -> dict:
    """The saved JSON of the model folder ``path``, its format checked."""
    try:
        description = json.loads((Path(path) / DESCRIPTION).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SecateursError(f"{path} is not a saved secateurs-timm model: {exc}") from exc
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        found = description.get("format") if isinstance(description, dict) else None
        raise SecateursError(f"{Path(path) / DESCRIPTION}: unknown format {found!r}; expected {FORMAT!r}")
    return description


def spec_from_json(description: dict) -> Spec:
    """The spec a description records: torchvision when it names ``torchvision_model``, else timm."""
    if "torchvision_model" in description:
        return TorchvisionSpec.from_json(description)
    return TimmSpec.from_json(description)


def save_model(model: nn.Module, spec: Spec, directory: Path) -> list[Path]:
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


def load_model(path: Path, *, device: str = "cpu", dtype: torch.dtype | None = None) -> tuple[nn.Module, Spec]:
    """Rebuild a saved model (eval mode, on ``device``, floating tensors in ``dtype``)."""
    path = Path(path)
    description = read_description(path)
    spec = spec_from_json(description)
    shapes = description.get("shapes", {})
    with torch.device("meta"):
        model = spec.create()
    if any(name not in shapes for name, _ in model.named_buffers()):  # non-persistent buffers need their init
        model = spec.create()
    resize_to(model, shapes)
    weights = path / WEIGHTS
    floats = {name: dtype or p.dtype for name, p in model.named_parameters() if p.is_floating_point()}
    check_stored_dtypes([weights], floats)
    try:
        state = load_file(str(weights))
    except (OSError, RuntimeError, SafetensorError) as exc:
        raise SecateursError(f"cannot read {weights}: {exc}") from exc
    warn_nonfinite(nonfinite_tensors(state.items()), str(path))
    model.load_state_dict(state, strict=True, assign=True)  # the loaded tensors, not copies of them
    model.to(device=device, dtype=dtype)
    return model.eval(), spec
