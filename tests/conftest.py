"""Shared fixtures: tiny randomly initialised models and a tokenizer-free text setup."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


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


@pytest.fixture(params=["llama", "mistral", "qwen2"])
def causal_family(request) -> str:
    return request.param


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


@pytest.fixture
def tiny_lm_dir(tmp_path):
    """A tiny Llama with a character tokenizer saved as a transformers folder."""
    folder = tmp_path / "tiny-llama"
    tiny_causal_lm("llama").save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture
def text_file(tmp_path):
    """A small English text file for calibration and perplexity."""
    path = tmp_path / "text.txt"
    words = "the quick brown fox jumps over the lazy dog while a small bird sings".split()
    gen = torch.Generator().manual_seed(0)
    picks = torch.randint(0, len(words), (6000,), generator=gen).tolist()
    path.write_text(" ".join(words[i] for i in picks))
    return path
