"""Tiny random models of every transformers family secateurs supports, one config each.

``tiny_model(family)`` builds one (seeded, eval mode, float32): hidden 32, 2 layers,
vocab 128, 4 query heads and (where the family has grouped-query attention) 2 key/value
heads. ``DECODERS`` are the causal LMs (the ``decoder`` adapter), ``ENCODERS`` the
BERT-layout models; ``FAMILIES`` is both. Sliding-window families (Gemma 2/3,
``qwen2-sliding``) mix sliding and full-attention layers with a window of 8 tokens, so a
sample of 16 or more tokens tells the layer types apart.
"""

from __future__ import annotations

from typing import Any

import torch

VOCAB = 128
WINDOW = 8
_BASE: dict[str, Any] = {
    "vocab_size": VOCAB,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128,
}
_MIXED = ["sliding_attention", "full_attention"]
_SPECIAL = {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}
"""Special tokens inside the tiny vocabulary (some configs default to ids beyond it)."""


def _configs() -> dict[str, Any]:
    import transformers as t

    base = _BASE
    no_gqa = {k: v for k, v in base.items() if k != "num_key_value_heads"}
    return {
        "llama": lambda: t.LlamaConfig(**base),
        "mistral": lambda: t.MistralConfig(**base, sliding_window=None),
        "mixtral": lambda: t.MixtralConfig(**base, num_local_experts=4, num_experts_per_tok=2),
        "qwen2": lambda: t.Qwen2Config(**base),
        "qwen2-sliding": lambda: t.Qwen2Config(
            **base, use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1, layer_types=_MIXED[::-1]
        ),
        "qwen3": lambda: t.Qwen3Config(**base, head_dim=8),
        "gemma": lambda: t.GemmaConfig(**base, head_dim=8),
        "gemma2": lambda: t.Gemma2Config(**base, head_dim=8, sliding_window=WINDOW, layer_types=_MIXED),
        "gemma3": lambda: t.Gemma3TextConfig(**base, head_dim=8, sliding_window=WINDOW, layer_types=_MIXED),
        "phi3": lambda: t.Phi3Config(**base, **_SPECIAL),
        "olmo2": lambda: t.Olmo2Config(**base, **_SPECIAL),
        "stablelm": lambda: t.StableLmConfig(**base),
        "opt": lambda: t.OPTConfig(
            vocab_size=VOCAB, hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
            word_embed_proj_dim=32, max_position_embeddings=128, pad_token_id=1,
        ),
        "gpt2": lambda: t.GPT2Config(
            vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=128, n_inner=64, **_SPECIAL
        ),
        "gpt_neox": lambda: t.GPTNeoXConfig(**no_gqa),
        "falcon": lambda: t.FalconConfig(
            vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_hidden_size=64,
            new_decoder_architecture=False, multi_query=True, parallel_attn=True, bias=False,
        ),
        "bert": lambda: t.BertConfig(**no_gqa),
        "bert-cls": lambda: t.BertConfig(**no_gqa, num_labels=3),
    }


DECODERS = (
    "llama", "mistral", "mixtral", "qwen2", "qwen2-sliding", "qwen3", "gemma", "gemma2", "gemma3",
    "phi3", "olmo2", "stablelm", "opt", "gpt2", "gpt_neox", "falcon",
)
ENCODERS = ("bert", "bert-cls")
FAMILIES = DECODERS + ENCODERS


METHODS = {
    "wanda": {"scorer": "wanda", "applier": "zero"},
    "sparsegpt": {"scorer": "magnitude", "applier": "sparsegpt", "applier_params": {"true_sequential": True}},
}
"""The unstructured methods decoder tests run, as ``tf_models.spec`` keyword arguments."""


def token_batches(seqlen: int, n: int = 2, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``n`` batches of 2 random ``seqlen``-token samples."""
    gen = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(1, VOCAB, (2, seqlen), generator=gen)} for _ in range(n)]


def tiny_model(family: str, *, seed: int = 0) -> torch.nn.Module:
    """A tiny random ``PreTrainedModel`` of ``family`` (``*ForCausalLM`` for decoders,
    ``BertModel`` / ``BertForSequenceClassification`` for ``bert`` / ``bert-cls``)."""
    import transformers

    config = _configs()[family]()
    torch.manual_seed(seed)
    if family == "bert":
        model = transformers.BertModel(config)
    elif family == "bert-cls":
        model = transformers.BertForSequenceClassification(config)
    else:
        model = transformers.AutoModelForCausalLM.from_config(config)
    return model.float().eval()
