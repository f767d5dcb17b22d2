"""The ``compressed-tensors`` exporter: a sparse transformers model saved small.

The pruned ``nn.Linear`` weights are written by the compressed-tensors library as
``sparse-bitmask`` (any pattern: the kept values, one bit per entry, row offsets) or
``sparse-24-bitmask`` (2:4: half the values and the bitmask); embeddings, norms, the head
and unpruned layers stay dense. ``config.json`` gains the library's
``quantization_config`` with a ``sparsity_config``, as llm-compressor writes it.

compressed-tensors 0.15 (2026) removed its sparse compressors and transformers 5 requires
0.15 to read any compressed-tensors folder, so this needs the last release that has them
and accepts transformers 5: ``secateurs-transformers[compressed]`` pins 0.13.0. Plain
``from_pretrained`` of transformers 5 cannot read these folders (docs/export.md);
``load_compressed`` here decompresses them to the dense model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from secateurs.errors import SecateursError
from secateurs.offload import offloaded_shard_size
from secateurs.protocols import LoadedModel
from secateurs.types import PruneResult
from secateurs_transformers.secateurs_resized import LAYER_SIZES

BITMASK = "sparse-bitmask"
TWO_FOUR = "sparse-24-bitmask"
FORMATS = ("auto", BITMASK, TWO_FOUR)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
"""The weight dtypes the bitmask compressors store losslessly."""
INSTALL = "pip install 'secateurs-transformers[compressed]' (it pins compressed-tensors 0.13.0)"


def _check_format(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value not in FORMATS:
        raise ValueError(f"{attribute.name} must be one of {', '.join(FORMATS)}, got {value!r}")


@attrs.frozen
class CompressedTensorsExporter:
    """The model's pruned Linear weights in compressed-tensors' sparse formats, the rest
    dense, ``config.json`` with the ``sparsity_config``, and the tokenizer.

    ``format``: ``"auto"`` writes ``sparse-24-bitmask`` when every pruned weight is 2:4
    (at most 2 non-zeros in each 4 consecutive inputs), else ``sparse-bitmask``. Every
    refusal (not a transformers model, per-layer sizes, offloaded, a weight the format
    cannot hold) comes before anything is written.
    """

    format: str = attrs.field(default="auto", validator=_check_format)

    def export(self, loaded: LoadedModel, result: PruneResult, directory: Path) -> list[Path]:
        _library()
        model = _writable_model(loaded)
        targets = pruned_linears(model, result)
        fmt = _resolve_format(self.format, targets)
        compressor = _compressor(fmt, model, targets)
        state = compressor.compress(model, model.state_dict())
        model.save_pretrained(str(directory), state_dict=state, safe_serialization=True)
        compressor.update_config(str(directory))
        if loaded.tokenizer is not None:
            loaded.tokenizer.save_pretrained(str(directory))
        return sorted(p for p in Path(directory).iterdir() if p.is_file())


def _writable_model(loaded: LoadedModel) -> nn.Module:
    """``loaded.model`` if a compressed-tensors folder can hold it, else one line why."""
    import transformers

    model = loaded.model
    if not isinstance(model, transformers.PreTrainedModel):
        raise SecateursError(
            f"the compressed-tensors exporter writes transformers models; {type(model).__name__} "
            "is not one: use the safetensors exporter"
        )
    if getattr(model.config, LAYER_SIZES, None) is not None:
        raise SecateursError(
            "the compressed-tensors exporter cannot write a model whose layers differ in size "
            f"({LAYER_SIZES} in its config; it reloads only with its own module): use the safetensors exporter"
        )
    if offloaded_shard_size(model) is not None:
        raise SecateursError(
            "the compressed-tensors exporter cannot write an offloaded model (max_memory): "
            "use the safetensors exporter, or prune without max_memory"
        )
    return model


def pruned_linears(model: nn.Module, result: PruneResult) -> dict[str, torch.Tensor]:
    """The weights of the run's pruned units that are ``nn.Linear`` modules, by module
    name; refuses when there is none (nothing sparse to compress) or a dtype the
    compressors do not store (``DTYPES``)."""
    modules = dict(model.named_modules())
    weights = {
        u.name: modules[u.name].weight
        for u in result.units
        if u.pruned and isinstance(modules.get(u.name), nn.Linear)
    }
    if not weights:
        raise SecateursError(
            "the compressed-tensors exporter found no pruned nn.Linear weight (structured, depth and "
            "width pruning leave dense weights; GPT-2's Conv1D is not nn.Linear): use the safetensors exporter"
        )
    for name, weight in weights.items():
        if weight.dtype not in DTYPES:
            raise SecateursError(
                f"the compressed-tensors exporter cannot store {name} ({weight.dtype}); "
                "it writes float32, float16 and bfloat16 weights: use the safetensors exporter"
            )
    return weights


def not_two_four(weight: torch.Tensor) -> bool:
    """Whether ``weight`` breaks 2:4 (more than 2 non-zeros among 4 consecutive inputs of
    a row, or a row length that 4 does not divide)."""
    if weight.shape[-1] % 4:
        return True
    return bool((weight.detach().reshape(-1, 4) != 0).sum(dim=1).gt(2).any())


def _resolve_format(fmt: str, targets: dict[str, torch.Tensor]) -> str:
    broken = [name for name, weight in targets.items() if not_two_four(weight)]
    if fmt == "auto":
        return BITMASK if broken else TWO_FOUR
    if fmt == TWO_FOUR and broken:
        raise SecateursError(
            f"format {TWO_FOUR!r} needs 2:4 weights; {broken[0]} is not 2:4 "
            f"({len(broken)} of {len(targets)} weights are not): prune with pattern = \"2:4\" or use format = {BITMASK!r}"
        )
    return fmt


def _library() -> Any:
    """``compressed_tensors``, refusing a missing one or one without sparse compressors."""
    try:
        import compressed_tensors
        from compressed_tensors.compressors import BaseCompressor
    except ImportError as exc:
        raise SecateursError(f"the compressed-tensors exporter needs compressed-tensors: {INSTALL}") from exc
    if BITMASK not in BaseCompressor.registered_names():
        raise SecateursError(
            f"compressed-tensors {compressed_tensors.__version__} cannot write sparse formats "
            f"(0.15 removed its sparse compressors): {INSTALL}"
        )
    return compressed_tensors


def _compressor(fmt: str, model: nn.Module, targets: dict[str, torch.Tensor]) -> Any:
    """The library's ``ModelCompressor`` for ``fmt``, compressing exactly ``targets``."""
    from compressed_tensors import ModelCompressor
    from compressed_tensors.config import SparsityCompressionConfig

    dense = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and name not in targets]
    total = sum(w.numel() for w in targets.values())
    zeros = sum(int((w == 0).sum()) for w in targets.values())
    config = SparsityCompressionConfig.load_from_registry(
        fmt,
        targets=["Linear"],
        ignore=dense,
        global_sparsity=zeros / total,
        sparsity_structure="2:4" if fmt == TWO_FOUR else "unstructured",
    )
    return ModelCompressor(sparsity_config=config)


def load_compressed(folder: str | Path, *, dtype: torch.dtype | None = None) -> nn.Module:
    """The dense model of a folder the exporter wrote (the class its ``config.json``
    names), its weights decompressed by compressed-tensors; ``dtype``: the stored one
    when ``None``. Refuses a folder without a ``sparsity_config``."""
    import transformers

    folder = Path(folder)
    settings = json.loads((folder / "config.json").read_text())
    sparsity = (settings.get("quantization_config") or {}).get("sparsity_config")
    if not sparsity or sparsity.get("format") not in (BITMASK, TWO_FOUR):
        raise SecateursError(
            f"{folder} has no compressed-tensors sparsity_config in {BITMASK!r} or {TWO_FOUR!r} format: "
            "load it with from_pretrained"
        )
    _library()
    from compressed_tensors import ModelCompressor

    compressor = ModelCompressor.from_compression_config({"sparsity_config": sparsity})
    state = dict(compressor.sparsity_compressor.decompress(str(folder)))
    config = transformers.AutoConfig.from_pretrained(folder)
    del config.quantization_config
    cls = getattr(transformers, config.architectures[0])
    stored = dtype or getattr(config, "dtype", None) or torch.float32
    return cls.from_pretrained(None, config=config, state_dict=state, dtype=stored).eval()
