"""Built-in exporters: ``safetensors`` (the whole model, in the adapter's native layout —
HF ``save_pretrained`` for transformers models) and ``report`` (JSON)."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
from safetensors.torch import save_model

from secateurs.hookspecs import hookimpl
from secateurs.protocols import LoadedModel
from secateurs.types import PruneResult


@attrs.frozen
class SafetensorsExporter:
    """The pruned model: ``adapter.save`` when the adapter has one, else ``model.safetensors``."""

    def export(self, loaded: LoadedModel, result: PruneResult, directory: Path) -> list[Path]:
        save = getattr(loaded.adapter, "save", None)
        if save is not None:
            return save(loaded, directory)
        path = directory / "model.safetensors"
        save_model(loaded.model, str(path))
        return [path]


@attrs.frozen
class ReportExporter:
    """``report.json``: per-unit sparsity, parameters kept, timings, records, the recipe."""

    filename: str = "report.json"

    def export(self, loaded: LoadedModel, result: PruneResult, directory: Path) -> list[Path]:
        path = directory / self.filename
        path.write_text(json.dumps(result.to_dict(), indent=2, default=str))
        return [path]


@hookimpl
def secateurs_register_exporters(register) -> None:
    register("safetensors", SafetensorsExporter)
    register("report", ReportExporter)
