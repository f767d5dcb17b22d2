"""Decoder ``heads`` groups are whole grouped-query groups (a key/value head with every
query head that shares it, and their ``o_proj`` input columns: what shrinking
``num_key_value_heads`` removes), removed from every decoder family whose coupling is declared, on the tiny random models of ``families.py`` (4 query
heads sharing 2 key/value heads, head width 8): zero = remove, the saved folder reloads
with plain ``AutoModelForCausalLM.from_pretrained`` (same logits, the report's parameter
count, generation with the cache), per-layer sizes through ``secateurs_resized``, and a
one-line refusal naming the reason for the families without it."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from torch import nn

from families import DECODERS, tiny_model, token_batches
from secateurs.errors import SecateursError
from secateurs.pipeline import prune_model
from secateurs.protocols import LoadedModel
from tf_models import manager, spec

KIND = "heads"
REFUSED = ("olmo2", "stablelm", "opt", "gpt2", "gpt_neox", "falcon")
DECLARED = tuple(f for f in DECODERS if f not in REFUSED)
SEQLEN = 20
"""Longer than the sliding window of the sliding families (8)."""


def batches() -> list[dict[str, torch.Tensor]]:
    return token_batches(SEQLEN, 2)


def loaded(family: str) -> LoadedModel:
    return LoadedModel(tiny_model(family), manager().adapters.create("decoder"), f"tiny-{family}")


def logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], use_cache=False).logits


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("family", DECLARED)
def test_removed_groups_match_zeroing_and_reload_as_a_plain_smaller_model(family, tmp_path):
    zeroed, removed = loaded(family), loaded(family)
    dense = removed.model.config
    heads, groups, head_dim = dense.num_attention_heads, dense.num_key_value_heads, 8
    prune_model(zeroed, spec("zero", KIND))
    result = prune_model(removed, spec("remove", KIND))
    assert n_params(removed.model) == result.params_total - result.params_pruned < result.params_total
    for batch in batches():
        torch.testing.assert_close(logits(removed.model, batch), logits(zeroed.model, batch), rtol=1e-4, atol=1e-5)

    removed.adapter.save(removed, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert "auto_map" not in config and not (tmp_path / "secateurs_resized.py").exists()
    # one of the 2 groups per layer: its key/value head and both query heads that share it
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (heads // groups, 1)
    assert config["head_dim"] == head_dim != config["hidden_size"] // config["num_attention_heads"]
    plain = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(plain) is type(removed.model)
    assert n_params(plain) == result.params_total - result.params_pruned
    for batch in batches():
        torch.testing.assert_close(logits(plain, batch), logits(removed.model, batch))
    ids = batches()[0]["input_ids"][:, :6]
    settings = {"max_new_tokens": 4, "do_sample": False, "pad_token_id": 0, "use_cache": True}
    with torch.no_grad():
        assert torch.equal(plain.generate(ids, **settings), removed.model.generate(ids, **settings))


@pytest.mark.parametrize("family", ["qwen3", "gemma3"])
def test_layers_of_different_sizes_reload_with_the_resized_classes(family, tmp_path):
    lm = loaded(family)
    prune_model(lm, spec("remove", KIND, scorer="random", allocator="global", sparsity=0.4))
    sizes = [layer["num_key_value_heads"] for layer in lm.model.config.secateurs_layer_sizes]
    assert len(set(sizes)) > 1
    lm.adapter.save(lm, tmp_path)
    resized = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=True)
    for batch in batches():
        torch.testing.assert_close(logits(resized, batch), logits(lm.model, batch))


@pytest.mark.parametrize("family", REFUSED)
def test_families_without_declared_groups_are_refused_with_the_reason(family):
    lm = loaded(family)
    reason = lm.adapter.structured_refusal(lm.model, KIND)
    assert reason and family.split("_")[0] in reason.replace("-", "_")
    with pytest.raises(SecateursError, match=f"no '{KIND}' groups"):
        prune_model(lm, spec("remove", KIND))


def test_a_run_that_removes_no_group_is_refused():
    lm = loaded("llama")
    before = {n: p.clone() for n, p in lm.model.named_parameters()}
    with pytest.raises(SecateursError, match="nothing was pruned: at sparsity 0.1 every heads group"):
        prune_model(lm, spec("remove", KIND, sparsity=0.1))
    assert all(torch.equal(p, before[n]) for n, p in lm.model.named_parameters())
