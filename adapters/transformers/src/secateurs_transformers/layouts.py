"""Architecture knowledge of transformers decoder families, as data: one ``ResidualLayout``
record per ``model_type`` saying where the residual stream is read and written.

A record names modules by path: inside a decoder layer (``readers``, ``writers``, ``norms``,
``expert_params``) or from the model's root (``embeddings``, ``final_norm``). The
``decoder`` adapter builds the ``hidden`` group from it (``secateurs_transformers.width``)::

    readers   every projection whose input is the residual stream (after its norm): its
              input columns are hidden channels (q/k/v, fused qkv, gate/up, an MoE router)
    writers   every projection whose output is added to the residual stream: its output
              rows (and bias) are hidden channels (o_proj, down_proj)
    norms     every norm over the hidden width inside a layer (pre-norms, and the post-norms
              of Gemma 2/3 and OLMo-2, which normalise a writer's output before it is added)
    expert_params  fused 3-D expert tensors and the dimension that is the hidden width

and how the width enters the computation:

    norm_offset      the norms apply ``(1 + weight)`` (Gemma), not ``weight``
    embedding_scale  embeddings are multiplied by ``sqrt(config.hidden_size)``, a constant the
                     model computes from the config (Gemma): after narrowing, the stored
                     embeddings carry the ratio so the model keeps the constant it was
                     trained with

A new family is one entry of ``RESIDUAL_LAYOUTS`` (``docs/adapters.md``, "Layout records").
Families without a record fall back to ``width.derived_layout``: readers and writers from the
layer's stages, norms found by probing their behaviour; refused where that cannot be told.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class ResidualLayout:
    """Where one decoder family reads, writes and normalises its residual stream (module
    docstring). Paths inside a layer, except ``embeddings`` and ``final_norm``."""

    readers: tuple[str, ...]
    writers: tuple[str, ...]
    norms: tuple[str, ...]
    embeddings: tuple[str, ...] = ("model.embed_tokens",)
    final_norm: str = "model.norm"
    expert_params: tuple[tuple[str, int], ...] = ()
    norm_offset: bool = False
    embedding_scale: bool = False


LLAMA = ResidualLayout(
    readers=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj"),
    writers=("self_attn.o_proj", "mlp.down_proj"),
    norms=("input_layernorm", "post_attention_layernorm"),
)
"""LLaMA, Mistral, Qwen2/3 (their q/k norms are over one head: not the residual width)."""
GEMMA = attrs.evolve(LLAMA, norm_offset=True, embedding_scale=True)
GEMMA2 = attrs.evolve(
    GEMMA,
    norms=("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"),
)
"""Gemma 2 and 3: a post-norm on each writer's output before it joins the stream."""
OLMO2 = attrs.evolve(LLAMA, norms=("post_attention_layernorm", "post_feedforward_layernorm"))
"""OLMo-2: no pre-norms (readers see the stream itself); its q/k norms span the heads, not the stream."""
PHI3 = attrs.evolve(LLAMA, readers=("self_attn.qkv_proj", "mlp.gate_up_proj"))
MIXTRAL = attrs.evolve(
    LLAMA,
    readers=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate"),
    writers=("self_attn.o_proj",),
    expert_params=(("mlp.experts.gate_up_proj", 2), ("mlp.experts.down_proj", 1)),
)
"""Mixtral: the router reads the stream; fused experts read (``gate_up_proj[e]``'s columns)
and write it (``down_proj[e]``'s rows)."""

RESIDUAL_LAYOUTS: dict[str, ResidualLayout] = {
    "llama": LLAMA,
    "mistral": LLAMA,
    "qwen2": LLAMA,
    "qwen3": LLAMA,
    "gemma": GEMMA,
    "gemma2": GEMMA2,
    "gemma3_text": GEMMA2,
    "olmo2": OLMO2,
    "phi3": PHI3,
    "mixtral": MIXTRAL,
}
"""The declared layouts, by ``config.model_type``."""

DERIVED_HEAD_WIDTH: dict[str, str] = dict.fromkeys(
    ("gpt2", "gpt_neox", "falcon", "opt", "stablelm"),
    "its head width is hidden_size / num_attention_heads",
)
"""Families whose attention computes its head width from the hidden size and head count (no
``head_dim`` in the config): neither fewer heads nor a narrower stream can be saved as a
config of that family."""
