"""Tiny randomly initialised LLaMA-family models, token batches and an offline tokenizer
for tests (imported by name; fixtures live in conftest.py)."""

from __future__ import annotations

import torch


def tiny_causal_lm(family: str = "llama", *, layers: int = 2, hidden: int = 64, seed: int = 0):
    """A tiny random decoder of the LLaMA family (llama / mistral / qwen2), with GQA."""
    import transformers

    torch.manual_seed(seed)
    common = dict(
        vocab_size=128,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    config_cls = {
        "llama": transformers.LlamaConfig,
        "mistral": transformers.MistralConfig,
        "qwen2": transformers.Qwen2Config,
    }[family]
    model = transformers.AutoModelForCausalLM.from_config(config_cls(**common))
    return model.eval()


def token_batches(n: int = 4, seqlen: int = 16, vocab: int = 128, batch_size: int = 1, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, seqlen), generator=gen)
    return [{"input_ids": chunk} for chunk in ids.split(batch_size)]


def char_tokenizer(vocab: int = 128):
    """A character-level fast tokenizer over the first ``vocab`` code points (offline)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    table = {chr(i): i for i in range(1, vocab)}
    table["<unk>"] = 0
    tok = Tokenizer(models.WordLevel(vocab=table, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")
