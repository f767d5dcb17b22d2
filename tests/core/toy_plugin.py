"""A complete third-party plugin for a toy architecture, implementing every hook.

It is the worked example of docs/plugins.md: a stack of Linear+ReLU layers, its adapter,
a packaged model, a calibration source, an evaluator, and one part of every other kind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import attrs
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from secateurs.hookspecs import hookimpl
from secateurs.masks import build_mask
from secateurs.protocols import STAT_SQ_NORM, LoadedModel, PackagedModel
from secateurs.types import Block, Unit, UnitAllocation


class MLPStack(nn.Module):
    def __init__(self, width: int = 16, depth: int = 3) -> None:
        super().__init__()
        self.width, self.depth = width, depth
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(width, width), nn.ReLU()) for _ in range(depth))
        self.head = nn.Linear(width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


@attrs.frozen
class MLPStackAdapter:
    name: str = "mlp-stack"

    def supports(self, model: nn.Module) -> bool:
        return isinstance(model, MLPStack)

    def blocks(self, model: MLPStack) -> list[Block]:
        return [
            Block(f"layers.{i}", i, layer, (Unit(f"layers.{i}.0", layer[0], role="linear"),))
            for i, layer in enumerate(model.layers)
        ]

    def forward(self, model: nn.Module, batch: Any) -> Any:
        return model(batch["x"])

    def block_output(self, output: Any) -> torch.Tensor:
        return output

    def load(self, path: Path, *, device: str, dtype: torch.dtype | None) -> LoadedModel | None:
        meta = Path(path) / "mlp-stack.json"
        if not meta.is_file():
            return None
        model = MLPStack(**json.loads(meta.read_text()))
        model.load_state_dict(load_file(str(Path(path) / "model.safetensors")))
        return LoadedModel(model.to(device).eval(), self, str(path))

    def save(self, loaded: LoadedModel, directory: Path) -> list[Path]:
        meta = directory / "mlp-stack.json"
        meta.write_text(json.dumps({"width": loaded.model.width, "depth": loaded.model.depth}))
        weights = directory / "model.safetensors"
        save_file({k: v.contiguous() for k, v in loaded.model.state_dict().items()}, str(weights))
        return [meta, weights]


@attrs.frozen
class GaussianInputs:
    nsamples: int = 8
    seed: int = 0

    def batches(self, loaded: LoadedModel) -> list[Any]:
        gen = torch.Generator().manual_seed(self.seed)
        x = torch.randn(self.nsamples, loaded.model.width, generator=gen)
        return [{"x": chunk} for chunk in x.split(4)]


@attrs.frozen
class OutputNorm:
    def evaluate(self, loaded: LoadedModel) -> dict[str, float]:
        x = torch.randn(32, loaded.model.width, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            return {"output_norm": float(loaded.model(x).norm())}


@attrs.frozen
class InputWeighted:
    comparison: str = "row"
    requires: ClassVar[frozenset[str]] = frozenset({STAT_SQ_NORM})
    selects: ClassVar[bool] = False

    def score(self, unit: Unit, ctx) -> torch.Tensor:
        return unit.weight.detach().abs() * ctx.stats.sq_norm.view(1, -1)


@attrs.define
class Ramp:
    """Shallow blocks sparser by ``delta``, deep blocks denser; the mean stays the target."""

    delta: float = 0.1
    needs_scores: ClassVar[bool] = False
    records: dict = attrs.field(factory=dict)
    n_blocks: int = attrs.field(default=0, init=False)

    def prepare(self, session, target: float) -> None:
        self.n_blocks = len(session.blocks)
        self.records = {"ramp": {"blocks": self.n_blocks}}

    def allocate(self, block: Block, scores, target: float):
        offset = self.delta * (1 - 2 * block.index / max(self.n_blocks - 1, 1))
        return {u.name: UnitAllocation(target + offset) for u in block.units}


@attrs.frozen
class ZeroAndCount:
    requires: ClassVar[frozenset[str]] = frozenset()
    row_ratios: ClassVar[bool] = True

    def apply(self, block, scores, allocation, ctx) -> dict[str, torch.Tensor]:
        masks = {}
        for unit in block.units:
            mask = build_mask(scores[unit.name], allocation[unit.name], ctx.comparison)
            unit.weight.data.mul_(mask)
            masks[unit.name] = mask
        return masks


@attrs.frozen
class Summary:
    def export(self, loaded, result, directory: Path) -> list[Path]:
        path = directory / "summary.txt"
        path.write_text(f"sparsity {result.sparsity:.4f}\n")
        return [path]


def _packaged_toy(tmp_root: list[Path]) -> PackagedModel:
    def fetch() -> Path:
        folder = tmp_root[0] / "toy-mlp"
        if not folder.exists():
            folder.mkdir(parents=True)
            torch.manual_seed(0)
            MLPStackAdapter().save(LoadedModel(MLPStack(), MLPStackAdapter(), "toy"), folder)
        return folder

    return PackagedModel("toy-mlp", "a 3-layer MLP stack", fetch)


class ToyPlugin:
    """Registered at run time by tests; ``root`` is where its packaged model is written."""

    def __init__(self, root: Path) -> None:
        self.root = [root]

    @hookimpl
    def secateurs_register_adapters(self, register):
        register("mlp-stack", MLPStackAdapter)

    @hookimpl
    def secateurs_register_scorers(self, register):
        register("input-weighted", InputWeighted)

    @hookimpl
    def secateurs_register_allocators(self, register):
        register("ramp", Ramp)

    @hookimpl
    def secateurs_register_appliers(self, register):
        register("zero-and-count", ZeroAndCount)

    @hookimpl
    def secateurs_register_exporters(self, register):
        register("summary", Summary)

    @hookimpl
    def secateurs_register_calibration_sources(self, register):
        register("gaussian", GaussianInputs)

    @hookimpl
    def secateurs_register_evaluators(self, register):
        register("output-norm", OutputNorm)

    @hookimpl
    def secateurs_register_models(self, register):
        register("toy-mlp", lambda: _packaged_toy(self.root))

    @hookimpl
    def secateurs_register_commands(self, cli):
        import click

        @cli.command("toy-hello")
        def toy_hello() -> None:
            """Say hello from the toy plugin."""
            click.echo("hello from toy")
