"""The LLaMA-family adapter (registered as ``llama``): the generic ``decoder`` adapter,
restricted to decoder-only transformers laid out as ``<base>.layers`` with
``self_attn.{q,k,v,o}_proj`` and ``mlp.{gate,up,down}_proj`` (Llama, Mistral, Qwen2,
Qwen3, Gemma... with grouped-query attention).

It prunes, groups and saves exactly as ``decoder`` does on these models (see
``secateurs_transformers.decoder``): the seven linears of every layer; ``heads`` (one
component per key/value head with its ``n_rep`` query heads, so grouped-query attention
keeps its ratio) and ``neurons`` (a row of gate_proj and up_proj, a column of
down_proj). After removal the config records the new sizes: uniform sizes as
``intermediate_size``, ``num_attention_heads``, ``num_key_value_heads`` and ``head_dim``
(plain ``from_pretrained`` reloads them), per-layer sizes as ``secateurs_layer_sizes``
(the saved folder then carries ``secateurs_resized.py`` and an ``auto_map``: it reloads
with ``AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)`` or
``secateurs.load``).
"""

from __future__ import annotations

import attrs
from torch import nn

from secateurs_transformers.decoder import DecoderAdapter, decoder_layers
from secateurs_transformers.groups import llama_layout


@attrs.frozen
class LlamaFamilyAdapter(DecoderAdapter):
    """``decoder`` for LLaMA-layout causal language models only (see module docstring)."""

    name: str = "llama"

    def explain(self, model: nn.Module) -> str | None:
        reason = super().explain(model)
        if reason is not None:
            return reason
        layers, base = decoder_layers(model)
        for i, layer in enumerate(layers):
            reason = llama_layout(layer)
            if reason is not None:
                return f"{reason} (layer {base}.{i})"
        return None
