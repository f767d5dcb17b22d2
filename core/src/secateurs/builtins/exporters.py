"""Built-in exporters: ``safetensors`` (the whole model, in the adapter's native layout —
HF ``save_pretrained`` for transformers models) and ``report`` (JSON)."""

from __future__ import annotations

import json
from pathlib import Path

import attrs

from secateurs.protocols import LoadedModel
from secateurs.provenance import gather
from secateurs.types import PruneResult


@attrs.frozen
class SafetensorsExporter:
    """The pruned model, written by the adapter's ``save`` (``Adapter`` protocol)."""

    def export(self, loaded: LoadedModel, result: PruneResult, directory: Path) -> list[Path]:
        return loaded.adapter.save(loaded, directory)


@attrs.frozen
class ReportExporter:
    """``report.json``: per-unit sparsity, parameters kept, timings, records, the recipe,
    and under ``provenance`` where it came from (``secateurs.provenance.gather``)."""

    filename: str = "report.json"

    def export(self, loaded: LoadedModel, result: PruneResult, directory: Path) -> list[Path]:
        path = directory / self.filename
        recipe = result.recipe
        provenance = gather(loaded.source, recipe.get("device", "cpu"), recipe.get("reference_model"))
        report = result.to_dict() | {"provenance": provenance}
        path.write_text(json.dumps(report, indent=2, default=str))
        return [path]
