"""The LLaMA-family adapter: decoder-only transformers laid out as ``model.model.layers``
with ``self_attn.{q,k,v,o}_proj`` and ``mlp.{gate,up,down}_proj`` (Llama, Mistral, Qwen2,
and others of that layout, with grouped-query attention).

Pruned: the seven linears of every decoder layer. Never: embeddings, final norm, lm_head.

Structured groups per layer: ``heads`` (one component per key/value head together with
the query heads that share it: its rows of k/v_proj, its ``n_rep`` query heads' rows of
q_proj, and their columns of o_proj, so grouped-query attention keeps its ratio) and
``neurons`` (a row of gate_proj and up_proj and a column of down_proj). After removal
the config records the new sizes (``resized``): uniform sizes as ``intermediate_size``,
``num_attention_heads``, ``num_key_value_heads`` and ``head_dim`` (plain
``from_pretrained`` reloads them), per-layer sizes as ``secateurs_layer_sizes`` (the saved
folder then carries ``secateurs_resized.py`` and an ``auto_map``: it reloads with
``AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)`` or
``secateurs.load``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from secateurs.protocols import LoadedModel
from secateurs.types import Block, Group, ParamSlice, Unit
from secateurs_transformers.common import (
    find_layers,
    first_output,
    load_folder,
    model_device,
    read_config,
    record_layer_sizes,
    save_folder,
)

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
ROLES = ATTENTION + MLP


def _layer_units(prefix: str, layer: nn.Module) -> tuple[Unit, ...] | None:
    attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
    if attn is None or mlp is None:
        return None
    modules = {r: getattr(attn, r, None) for r in ATTENTION} | {r: getattr(mlp, r, None) for r in MLP}
    if not all(isinstance(m, nn.Linear) for m in modules.values()):
        return None
    sub = {r: "self_attn" if r in ATTENTION else "mlp" for r in ROLES}
    return tuple(Unit(f"{prefix}.{sub[r]}.{r}", modules[r], "weight", role=r) for r in ROLES)


def _layer_groups(prefix: str, layer: nn.Module) -> tuple[Group, ...]:
    attn, mlp = layer.self_attn, layer.mlp
    head_dim = attn.head_dim
    kv_heads = attn.k_proj.out_features // head_dim
    heads = Group(
        f"{prefix}.self_attn.heads",
        "heads",
        kv_heads,
        (
            ParamSlice(attn.q_proj, "weight", 0),
            ParamSlice(attn.k_proj, "weight", 0),
            ParamSlice(attn.v_proj, "weight", 0),
            ParamSlice(attn.o_proj, "weight", 1),
        ),
        {"head_dim": head_dim, "query_heads_per_component": attn.num_key_value_groups},
    )
    neurons = Group(
        f"{prefix}.mlp.neurons",
        "neurons",
        mlp.gate_proj.out_features,
        (
            ParamSlice(mlp.gate_proj, "weight", 0),
            ParamSlice(mlp.up_proj, "weight", 0),
            ParamSlice(mlp.down_proj, "weight", 1),
        ),
    )
    return heads, neurons


def layer_sizes(layer: nn.Module) -> dict[str, int]:
    """The sizes a decoder layer's shapes imply (config field names)."""
    attn = layer.self_attn
    return {
        "intermediate_size": layer.mlp.gate_proj.out_features,
        "num_attention_heads": attn.q_proj.out_features // attn.head_dim,
        "num_key_value_heads": attn.k_proj.out_features // attn.head_dim,
        "head_dim": attn.head_dim,
    }


@attrs.frozen
class LlamaFamilyAdapter:
    """Adapter for LLaMA-layout causal language models (see module docstring)."""

    name: str = "llama"

    def supports(self, model: nn.Module) -> bool:
        found = find_layers(model)
        return found is not None and all(_layer_units("", layer) is not None for layer in found[0])

    def blocks(self, model: nn.Module) -> list[Block]:
        layers, base = find_layers(model)
        blocks = []
        for i, layer in enumerate(layers):
            prefix = f"{base}.{i}"
            blocks.append(Block(prefix, i, layer, _layer_units(prefix, layer), _layer_groups(prefix, layer)))
        return blocks

    def resized(self, model: nn.Module, block: Block, group: Group, keep: torch.Tensor) -> None:
        """Record the layers' new sizes in ``model.config`` (the modules need no update:
        attention infers its head count from the projections)."""
        sizes = [layer_sizes(layer) for layer in find_layers(model)[0]]
        record_layer_sizes(model.config, sizes, set(sizes[0]))

    def forward(self, model: nn.Module, batch: Any) -> Any:
        input_ids = batch["input_ids"].to(model_device(model))
        return model(input_ids=input_ids, use_cache=False)

    def block_output(self, output: Any) -> torch.Tensor:
        return first_output(output)

    def load(self, path: Path, *, device: str, dtype: torch.dtype | None) -> LoadedModel | None:
        config = read_config(path)
        if config is None or not any(a.endswith("ForCausalLM") for a in config.get("architectures") or []):
            return None
        from transformers import AutoModelForCausalLM

        loaded = load_folder(self, path, config, AutoModelForCausalLM, device=device, dtype=dtype)
        return loaded if self.supports(loaded.model) else None

    def save(self, loaded: LoadedModel, directory: Path) -> list[Path]:
        return save_folder(loaded, directory)
