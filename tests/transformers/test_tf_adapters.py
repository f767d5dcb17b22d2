"""Transformers adapters on tiny random models: blocks, units, groups, loading errors."""

from __future__ import annotations

import pytest
import torch
import transformers

from secateurs.errors import SecateursError
from secateurs.loading import find_adapter, load
from secateurs.structured import component_view
from tf_models import ADAPTER, loaded_tiny, manager, tiny_bert, tiny_model

LLAMA_ROLES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
BERT_ROLES = ["query", "key", "value", "attention_output", "intermediate", "output"]


def test_the_right_adapter_claims_each_family(family):
    assert find_adapter(tiny_model(family), manager=manager()).name == ADAPTER[family]


def test_blocks_units_and_groups(family):
    loaded = loaded_tiny(family)
    blocks = loaded.adapter.blocks(loaded.model)
    config = loaded.model.config
    assert [b.index for b in blocks] == list(range(config.num_hidden_layers))
    params = dict(loaded.model.named_parameters())
    for block in blocks:
        roles = [u.role for u in block.units]
        assert roles == (BERT_ROLES if ADAPTER[family] == "bert" else LLAMA_ROLES)
        for unit in block.units:
            assert params[unit.qualified_name] is unit.weight  # names are the model's own
            assert unit.name.startswith(block.name + ".")
        assert [u.role for stage in block.stages for u in block.units if u.name in stage] == roles
        kinds = {g.kind: g for g in block.groups}
        assert set(kinds) == {"heads", "neurons"}
        assert kinds["neurons"].size == config.intermediate_size
        expected_heads = config.num_attention_heads if ADAPTER[family] == "bert" else config.num_key_value_heads
        assert kinds["heads"].size == expected_heads


def test_embeddings_pooler_and_task_head_are_not_units(family):
    loaded = loaded_tiny(family)
    names = {u.qualified_name for b in loaded.adapter.blocks(loaded.model) for u in b.units}
    assert not any(k in n for n in names for k in ("embed", "pooler", "classifier", "lm_head", "norm"))


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2"])
def test_gqa_heads_couple_a_kv_head_with_its_query_heads(family):
    loaded = loaded_tiny(family)
    block = loaded.adapter.blocks(loaded.model)[0]
    attn = block.module.self_attn
    heads = next(g for g in block.groups if g.kind == "heads")
    n_rep, hd = attn.num_key_value_groups, attn.head_dim
    assert n_rep == 2 and heads.meta["query_heads_per_component"] == n_rep
    q, k, v, o = (component_view(heads, s) for s in heads.slices)
    for c in range(heads.size):  # component c = kv head c + query heads c*n_rep .. (c+1)*n_rep - 1
        torch.testing.assert_close(q[c], attn.q_proj.weight[c * n_rep * hd : (c + 1) * n_rep * hd].reshape(-1))
        torch.testing.assert_close(k[c], attn.k_proj.weight[c * hd : (c + 1) * hd].reshape(-1))
        torch.testing.assert_close(v[c], attn.v_proj.weight[c * hd : (c + 1) * hd].reshape(-1))
        torch.testing.assert_close(o[c], attn.o_proj.weight[:, c * n_rep * hd : (c + 1) * n_rep * hd].T.reshape(-1))


def test_bert_forward_uses_the_attention_mask():
    loaded = loaded_tiny("bert")
    ids = torch.randint(1, 128, (1, 8))
    full = loaded.adapter.forward(loaded.model, {"input_ids": ids}).last_hidden_state
    masked = loaded.adapter.forward(
        loaded.model, {"input_ids": ids, "attention_mask": torch.tensor([[1] * 4 + [0] * 4])}
    ).last_hidden_state
    assert not torch.allclose(full[0, :4], masked[0, :4])


@pytest.mark.parametrize("head", [False, True])
def test_bert_load_picks_the_auto_class_from_the_config(tmp_path, head):
    tiny_bert(head=head).save_pretrained(tmp_path)
    loaded = load(tmp_path, manager=manager())
    assert loaded.adapter.name == "bert"
    expected = transformers.BertForSequenceClassification if head else transformers.BertModel
    assert type(loaded.model) is expected


def tiny_t5():
    config = transformers.T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2)
    return transformers.T5ForConditionalGeneration(config)


def test_unsupported_model_says_why_each_adapter_declined(tmp_path):
    tiny_t5().save_pretrained(tmp_path)
    attempts = {
        "folder": lambda: load(tmp_path, manager=manager()),
        "model": lambda: find_adapter(torch.nn.Sequential(torch.nn.Embedding(4, 4)), manager=manager()),
    }
    why = {
        "folder": {"bert": "model_type 't5' is not one of", "decoder": "names no causal LM architecture"},
        "model": {
            "bert": "has no `encoder.layer` list",
            "decoder": "Sequential is not a transformers causal LM",
            "module": "no nn.Linear or nn.Conv layer",
        },
    }
    for kind, attempt in attempts.items():
        with pytest.raises(SecateursError) as err:
            attempt()
        message = str(err.value)
        for adapter, reason in why[kind].items():
            assert f"\n  {adapter}: " in message and reason in message, message
        assert "llama" in message and '"Writing an architecture adapter"' in message and "docs/" not in message


def test_llama_adapter_explains_a_layout_it_does_not_know():
    import families

    model = families.tiny_model("phi3")
    assert find_adapter(model, manager=manager()).name == "decoder"
    with pytest.raises(SecateursError, match=r"the 'llama' adapter cannot take Phi3ForCausalLM: no nn.Linear `self_attn.q_proj` in Phi3DecoderLayer"):
        find_adapter(model, "llama", manager=manager())
