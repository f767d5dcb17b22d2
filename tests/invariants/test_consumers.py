"""Adapters declare which layer consumes which one's outputs (``Block.consumers``, from
their true-sequential stages): NeuroAL's row step reads it, so it needs no architecture's
layer names."""

from __future__ import annotations

import pytest

from secateurs.loading import wrap

from families import tiny_model

LLAMA = {"q_proj": "o_proj", "k_proj": "o_proj", "v_proj": "o_proj", "o_proj": "gate_proj",
         "gate_proj": "down_proj", "up_proj": "down_proj"}  # the published NeuroAL's LLaMA table
EXPECTED = {
    "llama": LLAMA,
    "gemma3": LLAMA,
    "bert": {"query": "attention_output", "key": "attention_output", "value": "attention_output",
             "attention_output": "intermediate", "intermediate": "output"},
    "gpt2": {"c_attn": "attn.c_proj", "attn.c_proj": "c_fc", "c_fc": "mlp.c_proj"},
    "phi3": {"qkv_proj": "o_proj", "o_proj": "gate_up_proj", "gate_up_proj": "down_proj"},
}


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_every_block_declares_its_producer_consumer_links(family):
    loaded = wrap(tiny_model(family))
    for block in loaded.adapter.blocks(loaded.model):
        roles = {u.name: u.role for u in block.units}
        assert {roles[p]: roles[c] for p, c in block.consumers().items()} == EXPECTED[family]
