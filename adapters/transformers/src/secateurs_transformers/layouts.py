"""Architecture knowledge of transformers decoder families, as data: one ``DecoderLayout``
record per ``model_type``.

A record names modules by path: inside a decoder layer (``attention``, ``attention_out``,
``mlp``, ``mlp_out``, ``router``, ``norms``, ``expert_params``) or from the model's root
(``embeddings``, ``final_norm``). The ``decoder`` adapter takes from it::

    stages    attention inputs → attention output → MLP inputs (router, experts) → MLP output
              (true-sequential pruning, SparseGPT)
    heads     one component per key/value head with its query heads: rows of the attention
              inputs (a fused projection splits into query, key and value rows), columns of
              ``attention_out`` (``secateurs_transformers.groups``)
    neurons   rows of the MLP inputs (a fused ``gate_up`` splits in two halves), columns of
              ``mlp_out``
    hidden    every reader of the residual stream (attention and MLP inputs, the router:
              their input columns), every writer (``attention_out``, ``mlp_out``: output rows
              and bias), every norm over the width (``norms``, ``final_norm``), the embeddings
              and fused expert tensors (``expert_params``: path and hidden dimension)
              (``secateurs_transformers.width``)

and how the width enters the computation:

    norm_offset      the norms apply ``(1 + weight)`` (Gemma), not ``weight``
    embedding_scale  embeddings are multiplied by ``sqrt(config.hidden_size)``, a constant the
                     model computes from the config (Gemma): after narrowing, the stored
                     embeddings carry the ratio so the model keeps the constant it was
                     trained with

``heads`` / ``hidden`` hold why a family's heads or width cannot be pruned (``None``: they can).

A new family is one entry of ``LAYOUTS`` (``docs/adapters.md``, "The layout record of a
family"). Families without a record fall back to name heuristics (``groups``: known MLP and
attention module names; ``width.derived_layout``: readers and writers from those stages,
norms found by probing their behaviour), refused where they cannot tell.
"""

from __future__ import annotations

import attrs

DERIVED_HEAD_WIDTH = (
    "its head width is hidden_size / num_attention_heads (no head_dim in its config), so a model with "
    "fewer heads or a narrower stream cannot be saved"
)
QK_NORM_OVER_HEADS = "its q_norm/k_norm normalise all heads together"
FUSED_EXPERTS = "its MLP experts are fused 3-D parameters, whose neurons are not declared"


@attrs.frozen
class DecoderLayout:
    """One decoder family's layout (module docstring). Paths inside a decoder layer, except
    ``embeddings`` and ``final_norm``. One ``attention`` path is a fused query/key/value
    projection; ``mlp_fused``: the one ``mlp`` path holds gate rows then up rows."""

    attention: tuple[str, ...]
    attention_out: str
    mlp: tuple[str, ...]
    mlp_out: str | None
    norms: tuple[str, ...]
    embeddings: tuple[str, ...] = ("model.embed_tokens",)
    final_norm: str = "model.norm"
    mlp_fused: bool = False
    router: str | None = None
    expert_params: tuple[tuple[str, int], ...] = ()
    norm_offset: bool = False
    embedding_scale: bool = False
    heads: str | None = None
    hidden: str | None = None

    @property
    def readers(self) -> tuple[str, ...]:
        """Projections reading the residual stream (after its norm)."""
        return (*self.attention, *self.mlp, *((self.router,) if self.router else ()))

    @property
    def writers(self) -> tuple[str, ...]:
        """Projections whose output is added to the residual stream."""
        return (self.attention_out, *((self.mlp_out,) if self.mlp_out else ()))

    @property
    def neurons(self) -> str | None:
        """Why the MLP's neurons are not declared (``None``: they are)."""
        return FUSED_EXPERTS if self.mlp_out is None else None

    def stage(self, path: str) -> int | None:
        """The true-sequential stage of the linear at ``path`` in a layer (an expert linear:
        ``<experts path>.<index>.<param>``): 0 attention inputs, 1 attention output, 2 MLP
        inputs, 3 MLP output; ``None`` when the record does not name it."""
        if path in self.attention:
            return 0
        if path == self.attention_out:
            return 1
        if path in self.mlp or path == self.router:
            return 2
        if path == self.mlp_out:
            return 3
        owner, _, param = path.rpartition(".")
        for expert, dim in self.expert_params:
            if f"{owner.rpartition('.')[0]}.{param}" == expert:
                return 2 if dim == 2 else 3
        return None


LLAMA = DecoderLayout(
    attention=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    attention_out="self_attn.o_proj",
    mlp=("mlp.gate_proj", "mlp.up_proj"),
    mlp_out="mlp.down_proj",
    norms=("input_layernorm", "post_attention_layernorm"),
)
"""LLaMA, Mistral, Qwen2/3 (their q/k norms are over one head: not the residual width)."""
GEMMA = attrs.evolve(LLAMA, norm_offset=True, embedding_scale=True)
GEMMA2 = attrs.evolve(
    GEMMA,
    norms=("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"),
)
"""Gemma 2 and 3: a post-norm on each writer's output before it joins the stream."""
OLMO2 = attrs.evolve(LLAMA, norms=("post_attention_layernorm", "post_feedforward_layernorm"), heads=QK_NORM_OVER_HEADS)
"""OLMo-2: no pre-norms (readers see the stream itself); q/k norms span all heads."""
PHI3 = attrs.evolve(LLAMA, attention=("self_attn.qkv_proj",), mlp=("mlp.gate_up_proj",), mlp_fused=True)
MIXTRAL = attrs.evolve(
    LLAMA,
    mlp=(),
    mlp_out=None,
    router="mlp.gate",
    expert_params=(("mlp.experts.gate_up_proj", 2), ("mlp.experts.down_proj", 1)),
)
"""Mixtral: the router reads the stream; fused experts read it (``gate_up_proj[e]``'s
columns) and write it (``down_proj[e]``'s rows)."""
STABLELM = attrs.evolve(LLAMA, heads=DERIVED_HEAD_WIDTH, hidden=DERIVED_HEAD_WIDTH)
OPT = DecoderLayout(
    attention=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    attention_out="self_attn.out_proj",
    mlp=("fc1",),
    mlp_out="fc2",
    norms=("self_attn_layer_norm", "final_layer_norm"),
    embeddings=("model.decoder.embed_tokens", "model.decoder.embed_positions"),
    final_norm="model.decoder.final_layer_norm",
    heads=DERIVED_HEAD_WIDTH,
    hidden=DERIVED_HEAD_WIDTH,
)
GPT2 = DecoderLayout(
    attention=("attn.c_attn",),
    attention_out="attn.c_proj",
    mlp=("mlp.c_fc",),
    mlp_out="mlp.c_proj",
    norms=("ln_1", "ln_2"),
    embeddings=("transformer.wte", "transformer.wpe"),
    final_norm="transformer.ln_f",
    heads=DERIVED_HEAD_WIDTH,
    hidden=DERIVED_HEAD_WIDTH,
)
"""GPT-2: ``Conv1D`` projections (weights stored ``[in, out]``)."""
GPT_NEOX = DecoderLayout(
    attention=("attention.query_key_value",),
    attention_out="attention.dense",
    mlp=("mlp.dense_h_to_4h",),
    mlp_out="mlp.dense_4h_to_h",
    norms=("input_layernorm", "post_attention_layernorm"),
    embeddings=("gpt_neox.embed_in",),
    final_norm="gpt_neox.final_layer_norm",
    heads=DERIVED_HEAD_WIDTH,
    hidden=DERIVED_HEAD_WIDTH,
)
FALCON = attrs.evolve(
    GPT_NEOX,
    attention=("self_attention.query_key_value",),
    attention_out="self_attention.dense",
    norms=(),  # which norms a layer has depends on new_decoder_architecture / parallel_attn
    embeddings=("transformer.word_embeddings",),
    final_norm="transformer.ln_f",
)

LAYOUTS: dict[str, DecoderLayout] = {
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
    "stablelm": STABLELM,
    "opt": OPT,
    "gpt2": GPT2,
    "gpt_neox": GPT_NEOX,
    "falcon": FALCON,
}
"""The declared layouts, by ``config.model_type``."""
