"""Shared fixtures: tiny randomly initialised models and a tokenizer-free text setup."""

from __future__ import annotations

import os

import pytest
import torch

from lm_models import char_tokenizer, tiny_causal_lm

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one torch thread (and CI machines are small)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=["llama", "mistral", "qwen2"])
def causal_family(request) -> str:
    return request.param


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
