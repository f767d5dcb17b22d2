"""The BERT adapter: encoders laid out as BERT's ``encoder.layer`` (``BertModel`` and the
``BertFor*`` heads; RoBERTa, XLM-RoBERTa, ELECTRA and others of the same layout).

Pruned: per encoder layer, ``attention.self.{query,key,value}``, ``attention.output.dense``,
``intermediate.dense`` and ``output.dense``. Never: embeddings, pooler, task head (they
are outside the blocks; ``secateurs inspect`` reports them).

Structured groups per layer: ``heads`` (a head's rows of query/key/value and columns of
the attention output) and ``neurons`` (a row of ``intermediate.dense`` and a column of
``output.dense``). BERT's config derives the head width from ``hidden_size /
num_attention_heads``, so fewer heads cannot be written as config fields: after head
removal the config records ``secateurs_layer_sizes`` and ``load`` (``secateurs.load``)
rebuilds the layers at those sizes; a uniform ``intermediate_size`` alone reloads with
plain ``from_pretrained``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import attrs
import torch
from torch import nn

from secateurs.offload import Budget
from secateurs.protocols import LoadedModel
from secateurs.types import Block, Group, ModelFacts, ParamSlice, Unit
from secateurs_transformers.common import (
    HEADS,
    find_layers,
    first_output,
    folder_facts,
    load_folder,
    meta_model,
    model_device,
    read_config,
    record_layer_sizes,
    save_folder,
)
from secateurs_transformers.secateurs_resized import apply_layer_sizes

UNITS = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attention_output": "attention.output.dense",
    "intermediate": "intermediate.dense",
    "output": "output.dense",
}
STAGES = (("query", "key", "value"), ("attention_output",), ("intermediate",), ("output",))
"""True-sequential order of the roles (each stage consumes the previous one's outputs)."""
MODEL_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "electra", "camembert", "data2vec-text"})
"""Config ``model_type``s ``load`` claims (``supports`` checks the layout of any model)."""


def _modules(layer: nn.Module) -> dict[str, nn.Module] | None:
    try:
        modules = {role: layer.get_submodule(path) for role, path in UNITS.items()}
    except AttributeError:
        return None
    return modules if all(isinstance(m, nn.Linear) for m in modules.values()) else None


def _self_attention(layer: nn.Module) -> nn.Module:
    return layer.attention.self


def layer_sizes(layer: nn.Module) -> dict[str, int]:
    """The sizes an encoder layer's shapes imply (config field names)."""
    attn = _self_attention(layer)
    return {
        "intermediate_size": layer.intermediate.dense.out_features,
        "num_attention_heads": attn.query.out_features // attn.attention_head_size,
    }


def _groups(prefix: str, layer: nn.Module, m: dict[str, nn.Module]) -> tuple[Group, ...]:
    heads = Group(
        f"{prefix}.attention.heads",
        "heads",
        layer_sizes(layer)["num_attention_heads"],
        (
            ParamSlice(m["query"], "weight", 0),
            ParamSlice(m["key"], "weight", 0),
            ParamSlice(m["value"], "weight", 0),
            ParamSlice(m["attention_output"], "weight", 1),
        ),
        {"head_dim": _self_attention(layer).attention_head_size},
    )
    neurons = Group(
        f"{prefix}.neurons",
        "neurons",
        m["intermediate"].out_features,
        (ParamSlice(m["intermediate"], "weight", 0), ParamSlice(m["output"], "weight", 1)),
    )
    return heads, neurons


def _auto_class(architectures: list[str]) -> Any | None:
    import transformers

    for arch in architectures:
        for suffix in HEADS:
            if arch.endswith(suffix):
                return getattr(transformers, f"AutoModel{suffix}")
        if arch.endswith("Model"):
            return transformers.AutoModel
    return None


def _loads_config(config: dict[str, Any]) -> bool:
    """Whether the adapter loads a folder with this ``config.json``."""
    return config.get("model_type") in MODEL_TYPES and _auto_class(config.get("architectures") or []) is not None


@attrs.frozen
class BertAdapter:
    """Adapter for BERT-layout encoders (see module docstring)."""

    name: str = "bert"
    group_kinds: ClassVar[tuple[str, ...]] = ("heads", "neurons")

    def describe(self, path: Path) -> ModelFacts | None:
        """The facts of a BERT folder from its config (``DescribingAdapter``)."""
        return folder_facts(path, _loads_config)

    def explain(self, model: nn.Module) -> str | None:
        """Why this adapter does not support ``model`` (``None``: it does)."""
        found = find_layers(model)
        if found is None:
            return f"{type(model).__name__} has no `encoder.layer` list"
        for i, layer in enumerate(found[0]):
            if _modules(layer) is None or not hasattr(_self_attention(layer), "attention_head_size"):
                paths = ", ".join(UNITS.values())
                return f"layer {found[1]}.{i} lacks a BERT self-attention or one of the nn.Linear {paths}"
        return None

    def supports(self, model: nn.Module) -> bool:
        return self.explain(model) is None

    def blocks(self, model: nn.Module) -> list[Block]:
        layers, base = find_layers(model)
        blocks = []
        for i, layer in enumerate(layers):
            prefix, modules = f"{base}.{i}", _modules(layer)
            units = tuple(Unit(f"{prefix}.{UNITS[r]}", m, "weight", role=r) for r, m in modules.items())
            stages = tuple(tuple(f"{prefix}.{UNITS[r]}" for r in stage) for stage in STAGES)
            blocks.append(Block(prefix, i, layer, units, _groups(prefix, layer, modules), stages))
        return blocks

    def forward(self, model: nn.Module, batch: Any) -> Any:
        """Run a text batch: ``{"input_ids", "attention_mask"?, "token_type_ids"?}``."""
        device = model_device(model)
        inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        return model(**inputs)

    def block_output(self, output: Any) -> torch.Tensor:
        return first_output(output)

    def resized(self, model: nn.Module, block: Block, group: Group, keep: torch.Tensor) -> None:
        """Set each self-attention's head count from its projections and record the layers'
        new sizes in ``model.config``."""
        sizes = [layer_sizes(layer) for layer in find_layers(model)[0]]
        apply_layer_sizes(model, sizes)
        record_layer_sizes(model.config, sizes, {"intermediate_size"})

    def load(self, path: Path, *, device: str, dtype: torch.dtype | None) -> LoadedModel | None:
        return self.load_within(path, device=device, dtype=dtype, budget=None)

    def load_within(
        self, path: Path, *, device: str, dtype: torch.dtype | None, budget: Budget | None
    ) -> LoadedModel | None:
        """``load``, within ``budget`` when one is given (``BudgetLoader``, ``load_folder``)."""
        config = read_config(path)
        if config is None or not _loads_config(config):
            return None
        auto_class = _auto_class(config.get("architectures") or [])
        return load_folder(self, path, config, auto_class, device=device, dtype=dtype, budget=budget)

    def explain_load(self, path: Path) -> str | None:
        """Why ``load`` declines ``path``."""
        config = read_config(path)
        if config is None:
            return "no readable config.json (not a transformers folder)"
        if config.get("model_type") not in MODEL_TYPES:
            return f"model_type {config.get('model_type')!r} is not one of {', '.join(sorted(MODEL_TYPES))}"
        if _auto_class(config.get("architectures") or []) is None:
            return f"no Auto class loads architectures {config.get('architectures')}"
        model = meta_model(path, _auto_class(config["architectures"]))
        return model if isinstance(model, str) else self.explain(model)

    def save(self, loaded: LoadedModel, directory: Path) -> list[Path]:
        return save_folder(loaded, directory)
