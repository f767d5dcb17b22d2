"""The LLaMA-family adapter: decoder-only transformers laid out as ``model.model.layers``
with ``self_attn.{q,k,v,o}_proj`` and ``mlp.{gate,up,down}_proj`` (Llama, Mistral, Qwen2,
and others of that layout, with grouped-query attention).

Pruned: the seven linears of every decoder layer. Never: embeddings, final norm, lm_head.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from secateurs.protocols import LoadedModel
from secateurs.types import Block, Unit
from secateurs_transformers.common import first_output, load_folder, model_device, read_config, save_folder

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
ROLES = ATTENTION + MLP


def _layers(model: nn.Module) -> nn.ModuleList | None:
    base = getattr(model, "model", model)
    layers = getattr(base, "layers", None)
    return layers if isinstance(layers, nn.ModuleList) and len(layers) else None


def _layer_units(prefix: str, layer: nn.Module) -> tuple[Unit, ...] | None:
    attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
    if attn is None or mlp is None:
        return None
    modules = {r: getattr(attn, r, None) for r in ATTENTION} | {r: getattr(mlp, r, None) for r in MLP}
    if not all(isinstance(m, nn.Linear) for m in modules.values()):
        return None
    sub = {r: "self_attn" if r in ATTENTION else "mlp" for r in ROLES}
    return tuple(Unit(f"{prefix}.{sub[r]}.{r}", modules[r], "weight", role=r) for r in ROLES)


@attrs.frozen
class LlamaFamilyAdapter:
    """Adapter for LLaMA-layout causal language models (see module docstring)."""

    name: str = "llama"

    def supports(self, model: nn.Module) -> bool:
        layers = _layers(model)
        return layers is not None and all(_layer_units("", layer) is not None for layer in layers)

    def blocks(self, model: nn.Module) -> list[Block]:
        layers = _layers(model)
        base_prefix = "model.layers" if getattr(model, "model", None) is not None else "layers"
        blocks = []
        for i, layer in enumerate(layers):
            prefix = f"{base_prefix}.{i}"
            blocks.append(Block(prefix, i, layer, _layer_units(prefix, layer)))
        return blocks

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

        loaded = load_folder(self, path, AutoModelForCausalLM, device=device, dtype=dtype)
        return loaded if self.supports(loaded.model) else None

    def save(self, loaded: LoadedModel, directory: Path) -> list[Path]:
        return save_folder(loaded, directory)
