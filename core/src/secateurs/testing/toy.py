"""A tiny model with its own adapter, calibration source and evaluator: enough to run a
scorer, allocator or applier through the real pipeline in a unit test, in milliseconds.

``TinyMLP`` is a stack of residual MLP blocks (``x + down(relu(up(x)))``) and a head; the
adapter gives each block its two linears as units (stages ``up`` then ``down``) and its
hidden neurons as one ``"neurons"`` group (a row of ``up``, its bias and a column of
``down``), so unstructured and structured runs both work.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from secateurs.hookspecs import hookimpl
from secateurs.protocols import LoadedModel
from secateurs.types import Block, Group, ParamSlice, Unit
from secateurs.validators import positive_int

CONFIG = "tiny-mlp.json"
WEIGHTS = "model.safetensors"


class TinyBlock(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.up = nn.Linear(width, hidden)
        self.down = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(torch.relu(self.up(x)))


class TinyMLP(nn.Module):
    """``depth`` residual blocks of ``width`` → ``hidden`` → ``width``, then a head of
    ``classes`` outputs. Input: ``[batch, width]`` (or ``[batch, tokens, width]``)."""

    def __init__(self, width: int = 16, hidden: int = 32, depth: int = 3, classes: int = 4) -> None:
        super().__init__()
        self.config = {"width": width, "hidden": hidden, "depth": depth, "classes": classes}
        self.blocks = nn.ModuleList(TinyBlock(width, hidden) for _ in range(depth))
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


@attrs.frozen
class TinyMLPAdapter:
    """The adapter of ``TinyMLP`` (every member of the ``Adapter`` protocol). Batches are
    ``{"x": tensor}``; the model saves as ``tiny-mlp.json`` + ``model.safetensors``."""

    name: str = "tiny-mlp"

    def supports(self, model: nn.Module) -> bool:
        return isinstance(model, TinyMLP)

    def blocks(self, model: nn.Module) -> list[Block]:
        out = []
        for i, block in enumerate(model.blocks):
            prefix = f"blocks.{i}"
            up = Unit(f"{prefix}.up", block.up, role="up")
            down = Unit(f"{prefix}.down", block.down, role="down")
            neurons = Group(
                f"{prefix}.neurons",
                "neurons",
                block.up.out_features,
                (
                    ParamSlice(block.up, "weight", 0),
                    ParamSlice(block.up, "bias", 0),
                    ParamSlice(block.down, "weight", 1),
                ),
            )
            out.append(Block(prefix, i, block, (up, down), (neurons,), stages=((up.name,), (down.name,))))
        return out

    def forward(self, model: nn.Module, batch: Any) -> Any:
        return model(batch["x"])

    def block_output(self, output: Any) -> torch.Tensor:
        return output

    def load(self, path: Path, *, device: str, dtype: torch.dtype | None) -> LoadedModel | None:
        config = Path(path) / CONFIG
        if not config.is_file():
            return None
        model = TinyMLP(**json.loads(config.read_text()))
        model.load_state_dict(load_file(str(Path(path) / WEIGHTS)))
        return LoadedModel(model.to(device=device, dtype=dtype).eval(), self, str(path))

    def save(self, loaded: LoadedModel, directory: Path) -> list[Path]:
        config, weights = Path(directory) / CONFIG, Path(directory) / WEIGHTS
        config.write_text(json.dumps(loaded.model.config))
        save_file({k: v.contiguous() for k, v in loaded.model.state_dict().items()}, str(weights))
        return [config, weights]


def tiny_model(seed: int = 0, **config: int) -> LoadedModel:
    """A randomly initialised ``TinyMLP`` (seeded; ``config`` as its arguments) with its adapter."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = TinyMLP(**config).eval()
    return LoadedModel(model, TinyMLPAdapter(), "tiny-mlp")


@attrs.frozen
class GaussianBatches:
    """A calibration source of standard normal inputs of the model's width:
    ``nsamples`` rows in batches of ``batch_size``, reproducible from ``seed``."""

    nsamples: int = attrs.field(default=16, validator=positive_int)
    batch_size: int = attrs.field(default=4, validator=positive_int)
    seed: int = 0

    def batches(self, loaded: LoadedModel) -> list[Any]:
        width = loaded.model.config["width"]
        x = torch.randn(self.nsamples, width, generator=torch.Generator().manual_seed(self.seed))
        return [{"x": chunk} for chunk in x.split(self.batch_size)]


@attrs.frozen
class OutputAgreement:
    """An evaluator: the fraction of ``samples`` fixed random inputs on which the model
    predicts the class its dense version predicted (1.0 before pruning). The dense
    predictions are taken the first time it evaluates a model."""

    samples: int = attrs.field(default=64, validator=positive_int)
    _dense: dict[str, torch.Tensor] = attrs.field(factory=dict, init=False, eq=False)

    def evaluate(self, loaded: LoadedModel) -> dict[str, float]:
        width = loaded.model.config["width"]
        x = torch.randn(self.samples, width, generator=torch.Generator().manual_seed(12345))
        with torch.no_grad():
            predicted = loaded.model(x).argmax(-1)
        dense = self._dense.setdefault("predicted", predicted)
        return {"agreement": float((predicted == dense).float().mean())}


class TinyPlugin:
    """A plugin object registering the tiny model's parts by name: the ``tiny-mlp``
    adapter, the ``gaussian`` calibration source and the ``output-agreement`` evaluator,
    so recipes (and the CLI) can run on a saved ``TinyMLP``. Register it at run time:
    ``get_manager().register(TinyPlugin(), "tiny")``."""

    @hookimpl
    def secateurs_register_adapters(self, register) -> None:
        register("tiny-mlp", TinyMLPAdapter)

    @hookimpl
    def secateurs_register_calibration_sources(self, register) -> None:
        register("gaussian", GaussianBatches)

    @hookimpl
    def secateurs_register_evaluators(self, register) -> None:
        register("output-agreement", OutputAgreement)
