"""The ``activation`` scorer (Minitron's activation importance) on tiny decoders: a neuron
scores the root of the per-token mean of its squared activation at ``down_proj``'s input
(``c_proj`` for GPT-2's transposed ``Conv1D``), a head group the root of the sum of that
mean over its ``o_proj`` input columns (every query head sharing the key/value head); a
``remove`` run keeps the highest-scored neurons; unstructured and data-free runs are refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from families import tiny_model, token_batches
from secateurs.builtins.scorers import ActivationScorer
from secateurs.errors import SecateursError
from secateurs.pipeline import dense_scores, prune_model
from secateurs.protocols import LoadedModel, ScoreContext
from tf_models import manager, spec

SEQLEN = 12


def loaded(family: str) -> LoadedModel:
    return LoadedModel(tiny_model(family), manager().adapters.create("decoder"), f"tiny-{family}")


def mean_sq_inputs(model: nn.Module, name: str, batches) -> list[torch.Tensor]:
    """Per layer, the mean over every calibration token of the squared input features of
    the layer's submodule named ``name``, from hooks on the dense model's own forward."""
    modules = [m for path, m in model.named_modules() if path.endswith(f".{name}")]
    sums = [torch.zeros(()) for _ in modules]
    tokens = [0] * len(modules)

    def hook(i: int):
        def record(module, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            sums[i] = sums[i] + x.pow(2).sum(0)
            tokens[i] += x.shape[0]

        return record

    handles = [m.register_forward_pre_hook(hook(i)) for i, m in enumerate(modules)]
    try:
        with torch.no_grad():
            for batch in batches:
                model(input_ids=batch["input_ids"], use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return [(s / n).float() for s, n in zip(sums, tokens, strict=True)]


def scores(lm: LoadedModel, kind: str, batches) -> list[torch.Tensor]:
    run = spec("zero", kind, scorer="activation", calibration=batches)
    by_name = dense_scores(lm, run)
    return [by_name[g.name] for b in lm.adapter.blocks(lm.model) for g in b.groups if g.kind == kind]


@pytest.mark.parametrize("family,consumer", [("llama", "down_proj"), ("gpt2", "c_proj")])
def test_neuron_scores_are_the_rms_activation_at_the_consumer_input(family, consumer):
    lm, batches = loaded(family), token_batches(SEQLEN)
    expected = mean_sq_inputs(lm.model, f"mlp.{consumer}", batches)
    got = scores(lm, "neurons", batches)
    assert len(got) == len(expected) == 2
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g.cpu(), e.sqrt(), rtol=1e-4, atol=1e-6)


def test_head_scores_sum_o_proj_columns_of_every_query_head_of_a_kv_group():
    lm, batches = loaded("llama"), token_batches(SEQLEN)
    config = lm.model.config
    head_dim = config.hidden_size // config.num_attention_heads
    columns = head_dim * config.num_attention_heads // config.num_key_value_heads  # 2 query heads each
    expected = mean_sq_inputs(lm.model, "self_attn.o_proj", batches)
    got = scores(lm, "heads", batches)
    for g, e in zip(got, expected, strict=True):
        assert g.shape == (config.num_key_value_heads,)
        torch.testing.assert_close(g.cpu(), e.view(-1, columns).sum(1).sqrt(), rtol=1e-4, atol=1e-6)


def test_a_remove_run_keeps_the_highest_activation_neurons():
    lm, batches = loaded("llama"), token_batches(SEQLEN)
    dense_up = [layer.mlp.up_proj.weight.detach().clone() for layer in lm.model.model.layers]
    first = mean_sq_inputs(lm.model, "mlp.down_proj", batches)[0]  # block 0 is scored on dense inputs
    result = prune_model(lm, spec("remove", "neurons", scorer="activation", calibration=batches))
    assert lm.model.config.intermediate_size == 32 and result.params_pruned > 0
    kept = first.topk(32).indices.sort().values
    torch.testing.assert_close(lm.model.model.layers[0].mlp.up_proj.weight, dense_up[0][kept])
    for layer in lm.model.model.layers:
        assert layer.mlp.down_proj.in_features == layer.mlp.up_proj.out_features == 32


def test_unstructured_runs_are_refused():
    lm, batches = loaded("llama"), token_batches(SEQLEN)
    with pytest.raises(SecateursError, match="scores structured components only.*granularity"):
        prune_model(lm, spec("zero", scorer="activation", calibration=batches))


def test_data_free_runs_are_refused_naming_the_group():
    lm = loaded("llama")
    with pytest.raises(SecateursError, match="needs calibration data"):
        prune_model(lm, spec("zero", "neurons", scorer="activation"))
    group = next(g for g in lm.adapter.blocks(lm.model)[0].groups if g.kind == "neurons")
    name = r"model\.layers\.0\.mlp\.neurons"
    with pytest.raises(SecateursError, match=rf"needs calibration data: group '{name}'"):
        ActivationScorer().score_group(group, ScoreContext())
