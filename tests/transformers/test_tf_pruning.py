"""Pruning tiny transformers through the pipeline: unstructured, structured (zero and
remove give the same outputs), and save → reload → same outputs."""

from __future__ import annotations

import pytest
import torch

from secateurs.errors import SecateursError
from secateurs.loading import load
from secateurs.pipeline import prune_model
from secateurs.protocols import LoadedModel
from secateurs_transformers.secateurs_resized import stock_class
from tf_models import ADAPTER, batches, loaded_tiny, manager, outputs, spec

KINDS = ("heads", "neurons")


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("scorer", ["magnitude", "wanda"])
def test_unstructured_pruning_hits_the_target(family, scorer):
    loaded = loaded_tiny(family)
    before = outputs(loaded, batches(family)[0])
    result = prune_model(loaded, spec("zero", scorer=scorer, calibration=batches(family)))
    assert result.sparsity == pytest.approx(0.5)
    for block in loaded.adapter.blocks(loaded.model):
        for unit in block.units:
            assert (unit.weight == 0).float().mean().item() == pytest.approx(0.5)
    assert not torch.allclose(outputs(loaded, batches(family)[0]), before)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("allocator", ["uniform", "global"])
def test_zero_and_remove_give_the_same_outputs(family, kind, allocator):
    zeroed, removed = loaded_tiny(family), loaded_tiny(family)
    dense = outputs(zeroed, batches(family)[0])
    prune_model(zeroed, spec("zero", kind, allocator=allocator))
    total = n_params(removed.model)
    result = prune_model(removed, spec("remove", kind, allocator=allocator))
    assert n_params(removed.model) == total - result.params_pruned < total
    for batch in batches(family):
        torch.testing.assert_close(outputs(removed, batch), outputs(zeroed, batch), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(outputs(removed, batches(family)[0]), dense)


def test_gqa_ratio_is_kept_when_heads_are_removed():
    loaded = loaded_tiny("llama")
    prune_model(loaded, spec("remove", "heads"))
    config = loaded.model.config
    assert (config.num_attention_heads, config.num_key_value_heads) == (2, 1)
    for block in loaded.adapter.blocks(loaded.model):
        attn = block.module.self_attn
        assert attn.q_proj.out_features == 2 * attn.k_proj.out_features == 2 * attn.head_dim


def uneven(loaded: LoadedModel) -> None:
    """Remove heads and neurons with per-layer different counts (global allocator)."""
    for kind in KINDS:
        prune_model(loaded, spec("remove", kind, scorer="random", allocator="global", sparsity=0.4))


@pytest.mark.parametrize("layout", ["uniform", "per-layer"])
def test_save_reload_gives_the_same_outputs(family, layout, tmp_path):
    loaded = loaded_tiny(family)
    if layout == "uniform":
        prune_model(loaded, spec("remove", "neurons"))
        if ADAPTER[family] == "llama":
            prune_model(loaded, spec("remove", "heads"))
    else:
        uneven(loaded)
    expected = [outputs(loaded, b) for b in batches(family)]
    loaded.adapter.save(loaded, tmp_path)
    config = loaded.model.config
    per_layer = hasattr(config, "secateurs_layer_sizes")
    assert per_layer == (layout == "per-layer")
    assert (tmp_path / "secateurs_resized.py").is_file() == per_layer  # see test_tf_reload
    reloaded = load(tmp_path, manager=manager())
    assert stock_class(type(reloaded.model)) is type(loaded.model)
    assert n_params(reloaded.model) == n_params(loaded.model)
    for batch, want in zip(batches(family), expected, strict=True):
        torch.testing.assert_close(outputs(reloaded, batch), want)
    if not per_layer:  # the library's own loader needs nothing from secateurs
        plain = type(loaded.model).from_pretrained(tmp_path)
        torch.testing.assert_close(outputs(LoadedModel(plain, loaded.adapter, ""), batches(family)[0]), expected[0])


def test_per_layer_sizes_are_recorded_in_the_config(tmp_path):
    loaded = loaded_tiny("qwen2")
    uneven(loaded)
    sizes = loaded.model.config.secateurs_layer_sizes
    for size, block in zip(sizes, loaded.adapter.blocks(loaded.model), strict=True):
        mlp, attn = block.module.mlp, block.module.self_attn
        assert size["intermediate_size"] == mlp.gate_proj.out_features == mlp.down_proj.in_features
        assert size["num_key_value_heads"] * attn.head_dim == attn.k_proj.out_features
    assert len({s["intermediate_size"] for s in sizes}) > 1


def test_bert_heads_reload_with_head_counts_restored(tmp_path):
    loaded = loaded_tiny("bert-cls")
    prune_model(loaded, spec("remove", "heads"))
    loaded.adapter.save(loaded, tmp_path)
    reloaded = load(tmp_path, manager=manager())
    for layer in reloaded.model.bert.encoder.layer:
        assert layer.attention.self.num_attention_heads == 2
        assert layer.attention.self.all_head_size == layer.attention.self.query.out_features == 16


def test_remove_refuses_unstructured_runs():
    with pytest.raises(SecateursError, match="granularity"):
        prune_model(loaded_tiny("llama"), spec("remove"))


def test_a_remove_recipe_runs_end_to_end_and_its_output_reloads(tmp_path):
    from secateurs.run import prune
    from tf_models import tiny_bert

    tiny_bert(head=True).save_pretrained(tmp_path / "in")
    recipe = {"model": str(tmp_path / "in"), "output": str(tmp_path / "out"), "scorer": "magnitude",
              "sparsity": 0.25, "granularity": "heads", "applier": "remove"}
    outcome = prune(recipe, progress=False, manager=manager())
    assert outcome.result.params_kept == n_params(outcome.loaded.model)
    assert (tmp_path / "out" / "report.json").is_file()
    reloaded = load(tmp_path / "out", manager=manager())
    batch = batches("bert-cls")[0]
    torch.testing.assert_close(outputs(reloaded, batch), outputs(outcome.loaded, batch))
    assert reloaded.model.bert.encoder.layer[0].attention.self.num_attention_heads == 3
