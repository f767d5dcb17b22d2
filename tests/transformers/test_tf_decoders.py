"""The generic ``decoder`` adapter on a tiny random model of every causal-LM family
(``families.py``): inspect, Wanda and SparseGPT at 50 %, save → plain ``from_pretrained`` →
same logits, GPT-2's ``Conv1D`` pruned along its input dimension, true-sequential stages,
structured removal where declared and a clear refusal where not."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from click.testing import CliRunner
from torch import nn
from transformers.pytorch_utils import Conv1D

from families import DECODERS, METHODS, tiny_model, token_batches
from secateurs.cli import cli
from secateurs.errors import SecateursError
from secateurs.loading import load
from secateurs.pipeline import prune_model
from secateurs.plugins import LOAD_PLUGINS_ENV, reset_manager
from secateurs.protocols import LoadedModel
from secateurs.structured import remove_components, zero_components
from secateurs_transformers.decoder import ATTENTION_INPUTS, MLP_OUTPUTS
from tf_models import manager, spec

SEQLEN = 20
"""Longer than the sliding window of the sliding families (8)."""
NO_HEADS = {"olmo2", "stablelm", "opt", "gpt2", "gpt_neox", "falcon"}
NO_NEURONS = {"mixtral"}  # transformers 5 fuses its experts into 3-D parameters (no neuron groups)
DECLARED = [(f, k) for f in DECODERS for k in ("heads", "neurons") if f not in (NO_HEADS if k == "heads" else NO_NEURONS)]
REFUSED = [(f, k) for f in DECODERS for k in ("heads", "neurons") if (f, k) not in DECLARED]


def batches(n: int = 2, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    return token_batches(SEQLEN, n, seed)


def loaded(family: str) -> LoadedModel:
    return LoadedModel(tiny_model(family), manager().adapters.create("decoder"), f"tiny-{family}")


def logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], use_cache=False).logits


def block_linears(lm: LoadedModel) -> list[tuple[str, torch.Tensor]]:
    """Every ``nn.Linear`` / ``Conv1D`` weight and fused 3-D expert parameter inside the
    decoder layers (none is a router in these families)."""
    layers = {b.module for b in lm.adapter.blocks(lm.model)}
    return [
        (f"{name}.weight", module.weight)
        for layer in layers
        for name, module in layer.named_modules()
        if isinstance(module, nn.Linear | Conv1D)
    ] + [(name, p) for layer in layers for name, p in layer.named_parameters() if p.dim() == 3]


def assert_reloads(lm: LoadedModel, directory) -> None:
    """Saved by the adapter, reloaded by plain ``AutoModelForCausalLM.from_pretrained``:
    the same logits."""
    lm.adapter.save(lm, directory)
    plain = transformers.AutoModelForCausalLM.from_pretrained(directory)
    assert type(plain) is type(lm.model)
    for batch in batches():
        torch.testing.assert_close(logits(plain, batch), logits(lm.model, batch))


@pytest.mark.parametrize("family", DECODERS)
def test_inspect_shows_every_block_linear(family, tmp_path, monkeypatch):
    tiny_model(family).save_pretrained(tmp_path)
    monkeypatch.setenv(LOAD_PLUGINS_ENV, "transformers")
    reset_manager()
    try:
        run = CliRunner().invoke(cli, ["inspect", str(tmp_path), "--json"], catch_exceptions=False)
    finally:
        reset_manager()
    assert run.exit_code == 0, run.output
    report = json.loads(run.output[run.output.index("{") :])
    lm = loaded(family)
    assert report["adapter"] == "decoder" and len(report["blocks"]) == lm.model.config.num_hidden_layers
    assert report["unit_params"] == sum(w.numel() for _, w in block_linears(lm))
    inside = sum(b["other_params"] + sum(u["params"] for u in b["units"]) for b in report["blocks"])
    assert inside + sum(o["params"] for o in report["not_pruned"]) == report["params"]  # Conv1D counted once


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", DECODERS)
def test_half_of_the_block_linears_are_pruned_and_the_output_reloads(family, method, tmp_path):
    lm = loaded(family)
    dense = logits(lm.model, batches()[0])
    result = prune_model(lm, spec(calibration=batches(), **METHODS[method]))
    assert result.sparsity == pytest.approx(0.5)
    weights = block_linears(lm)
    zeros = sum(int((w == 0).sum()) for _, w in weights)
    assert zeros / sum(w.numel() for _, w in weights) == pytest.approx(0.5, abs=1e-3)
    assert not torch.allclose(logits(lm.model, batches()[0]), dense)
    assert_reloads(lm, tmp_path)


@pytest.mark.parametrize("family", DECODERS)
def test_true_sequential_stages_follow_the_data_flow(family):
    lm = loaded(family)
    for block in lm.adapter.blocks(lm.model):
        names = [n for stage in block.stages for n in stage]
        assert sorted(names) == sorted(u.name for u in block.units)  # every unit in one stage
        last = {n.rpartition(".")[2] for n in block.stages[-1]}
        assert {n.rpartition(".")[2] for n in block.stages[0]} <= ATTENTION_INPUTS
        assert last <= MLP_OUTPUTS
        assert len(block.stages) == 4


def _inputs_sq_norm(module: nn.Module, model: nn.Module) -> torch.Tensor:
    """Sum over every calibration token of ``x_j ** 2`` of ``module``'s input."""
    seen = []
    handle = module.register_forward_hook(lambda _m, args, _o: seen.append(args[0].reshape(-1, args[0].shape[-1])))
    for batch in batches():
        logits(model, batch)
    handle.remove()
    return torch.cat(seen).pow(2).sum(0)


def test_gpt2_conv1d_is_pruned_along_its_input_dimension():
    """Wanda's score of output ``o``, input ``i`` is ``|W[i, o]| · ‖x_i‖`` for a Conv1D
    ``W [in, out]``: every output keeps the half of its inputs with the highest scores."""
    lm = loaded("gpt2")
    c_fc = lm.model.transformer.h[0].mlp.c_fc
    dense = c_fc.weight.detach().clone()
    norm = _inputs_sq_norm(c_fc, lm.model).sqrt()  # block 0 sees the dense model's inputs
    prune_model(lm, spec(calibration=batches(), scorer="wanda", applier="zero"))
    kept = c_fc.weight != 0
    scores = dense.abs() * norm[:, None]
    expected = scores >= scores.kthvalue(dense.shape[0] // 2 + 1, dim=0).values
    assert torch.equal(kept, expected)
    assert (kept.sum(0) == dense.shape[0] // 2).all()  # per output (column), not per stored row


def test_sparsegpt_updates_conv1d_weights_in_place():
    lm = loaded("gpt2")
    c_attn = lm.model.transformer.h[1].attn.c_attn
    weight, dense = c_attn.weight, c_attn.weight.detach().clone()
    prune_model(lm, spec(calibration=batches(), applier="sparsegpt"))
    assert c_attn.weight is weight  # the same parameter, edited through the transposed view
    kept = weight != 0
    assert kept.float().mean() == pytest.approx(0.5)
    assert not torch.allclose(weight[kept], dense[kept])  # kept weights were updated


@pytest.mark.parametrize(("family", "kind"), DECLARED)
def test_zero_and_remove_give_the_same_outputs_and_reload(family, kind, tmp_path):
    zeroed, removed = loaded(family), loaded(family)
    prune_model(zeroed, spec("zero", kind))
    total = sum(p.numel() for p in removed.model.parameters())
    result = prune_model(removed, spec("remove", kind))
    assert sum(p.numel() for p in removed.model.parameters()) == total - result.params_pruned < total
    for batch in batches():
        torch.testing.assert_close(logits(removed.model, batch), logits(zeroed.model, batch), rtol=1e-4, atol=1e-5)
    assert_reloads(removed, tmp_path)


@pytest.mark.parametrize(("family", "kind"), DECLARED)
def test_a_model_runs_right_after_one_block_was_shrunk(family, kind):
    """Mid-run state: block 0 shrunk (and ``resized``), block 1 not yet; the model must
    give what zeroing the same components gives (the next block's calibration inputs)."""
    zeroed, removed = loaded(family), loaded(family)
    for lm, remove in ((zeroed, False), (removed, True)):
        block = lm.adapter.blocks(lm.model)[0]
        group = next(g for g in block.groups if g.kind == kind)
        keep = torch.arange(group.size) % 2 == 0
        if remove:
            remove_components([(group, keep)])
            lm.adapter.resized(lm.model, block, group, keep)
        else:
            zero_components(group, keep)
    for batch in batches():
        torch.testing.assert_close(logits(removed.model, batch), logits(zeroed.model, batch), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("family", "kind"), REFUSED)
def test_undeclared_structure_is_refused_with_the_reason(family, kind):
    lm = loaded(family)
    reason = lm.adapter.structured_refusal(lm.model, kind)
    assert reason and (family in reason or "MLP" in reason)
    with pytest.raises(SecateursError, match=f"no '{kind}' groups"):
        prune_model(lm, spec("zero", kind))


@pytest.mark.parametrize("family", ["qwen3", "gemma3"])
def test_per_layer_sizes_reload_with_the_resized_classes(family, tmp_path):
    lm = loaded(family)
    for kind in ("heads", "neurons"):
        prune_model(lm, spec("remove", kind, scorer="random", allocator="global", sparsity=0.4))
    assert lm.model.config.secateurs_layer_sizes
    lm.adapter.save(lm, tmp_path)
    reloaded = load(tmp_path, manager=manager())
    for batch in batches():
        torch.testing.assert_close(logits(reloaded.model, batch), logits(lm.model, batch))


def test_per_layer_sizes_outside_the_llama_layout_are_refused_at_save(tmp_path):
    lm = loaded("gpt2")
    prune_model(lm, spec("remove", "neurons", scorer="random", allocator="global", sparsity=0.4))
    with pytest.raises(SecateursError, match="the 'uniform' allocator"):
        lm.adapter.save(lm, tmp_path)


@pytest.mark.parametrize("allocator", ["owl", "neuroal"])
@pytest.mark.parametrize("family", ["gpt2", "phi3", "mixtral", "falcon"])
def test_searching_allocators_run_on_other_families(family, allocator):
    params = {"block_grid": [0.02, 0.1], "row_grid": [0.0, 0.1], "search_samples": 2} if allocator == "neuroal" else {}
    lm = loaded(family)
    run = spec(scorer="wanda", applier="zero", allocator=allocator, calibration=batches(), sparsity=0.5,
               plugins="transformers,neuroal", allocator_params=params)
    result = prune_model(lm, run)
    assert result.sparsity == pytest.approx(0.5, abs=0.02)
