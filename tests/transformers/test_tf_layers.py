"""Depth pruning (``granularity = "layers"``) of every decoder family (``families.py``, built
with 4 layers): skipping the chosen layers in the dense model gives the pruned model's
logits; the saved folder reloads with plain ``from_pretrained``, gives the same logits and
greedy ``generate()`` tokens, and counts the report's parameters; the config's per-layer
lists follow the kept layers. The layer scorers equal their direct computation, and every
run that cannot remove layers is one line before any work."""

from __future__ import annotations

import copy
import functools
import json

import pytest
import secateurs
import torch
import transformers
from cli_run import run_cli
from families import DECODERS, _configs, tiny_model, token_batches
from secateurs.errors import SecateursError
from secateurs.pipeline import prune_model
from secateurs.protocols import LoadedModel
from secateurs.types import PruneResult
from secateurs_transformers.decoder import decoder_layers
from tf_models import decoder_loaded as loaded
from tf_models import logits, manager, reloads_plainly, spec, text_recipe
from torch import nn

LAYERS = 4
SEQLEN = 20
"""Longer than the sliding window of the sliding families (8)."""


def deep_model(family: str) -> nn.Module:
    """``family``'s tiny model with ``LAYERS`` layers (per-layer lists repeat their pattern)."""
    config = _configs()[family]()
    config.num_hidden_layers = LAYERS
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i % 2] for i in range(LAYERS)]
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config).float().eval()



def layers_spec(scorer: str = "block-influence", sparsity: float = 0.5, calibration=None):
    return spec("zero", "layers", scorer=scorer, sparsity=sparsity,
                calibration=token_batches(SEQLEN) if calibration is None else calibration)


@functools.cache
def pruned(family: str) -> tuple[nn.Module, LoadedModel, PruneResult]:
    """The dense model, the same model with half its layers removed, and the result."""
    dense = deep_model(family)
    lm = loaded(copy.deepcopy(dense), family)
    return dense, lm, prune_model(lm, layers_spec())



def skip_hook(module: nn.Module, args: tuple, kwargs: dict, output):
    """A decoder layer as the identity: its input hidden state in its output's place."""
    hidden = args[0] if args else kwargs["hidden_states"]
    return hidden if isinstance(output, torch.Tensor) else (hidden, *output[1:])


def removed_indices(result: PruneResult) -> list[int]:
    return [int(name.rpartition(".")[2]) for name in result.records["layers"]["removed"]]


@pytest.mark.parametrize("family", DECODERS)
def test_skipping_the_chosen_layers_equals_removing_them(family):
    dense, lm, result = pruned(family)
    layers = decoder_layers(dense)[0]
    removed = removed_indices(result)
    assert len(removed) == LAYERS // 2 and len(decoder_layers(lm.model)[0]) == LAYERS - len(removed)
    handles = [layers[i].register_forward_hook(skip_hook, with_kwargs=True) for i in removed]
    try:
        for batch in token_batches(SEQLEN, seed=1):
            torch.testing.assert_close(logits(lm.model, batch["input_ids"]), logits(dense, batch["input_ids"]))
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("family", DECODERS)
def test_the_smaller_model_reloads_plainly_generates_and_counts_the_report(family, tmp_path):
    dense, lm, result = pruned(family)
    reloaded = reloads_plainly(dense, lm, result, tmp_path, token_batches(SEQLEN, seed=2)[0]["input_ids"])

    config = json.loads((tmp_path / "config.json").read_text())
    dense_config = dense.config.to_dict()
    kept = [i for i in range(LAYERS) if i not in removed_indices(result)]
    assert reloaded.config.num_hidden_layers == len(kept) == LAYERS // 2
    if "layer_types" in dense_config:
        assert config["layer_types"] == [dense_config["layer_types"][i] for i in kept]
    report = json.loads((tmp_path / "report.json").read_text())
    layers = report["records"]["layers"]
    assert layers["removed"] == result.records["layers"]["removed"]
    assert sorted(layers["scores"]) == sorted(b.name for b in manager().adapters.create("decoder").blocks(dense))
    assert report["params_pruned"] == layers["params_before"] - layers["params_after"] > 0


def test_the_lowest_scored_layers_are_removed():
    _, _, result = pruned("llama")
    scores = result.records["layers"]["scores"]
    kept = set(scores) - set(result.records["layers"]["removed"])
    assert max(scores[n] for n in result.records["layers"]["removed"]) <= min(scores[n] for n in kept)
    assert [u.pruned > 0 for u in result.units] == [u.name not in kept for u in result.units]


def test_max_window_layers_keeps_each_layer_on_its_side():
    model = deep_model("qwen2-sliding")  # max_window_layers = 1: layers 1, 2, 3 slide
    lm = loaded(model)
    lm.adapter.remove_layers(model, [0, 2])
    assert model.config.max_window_layers == 1 and model.config.num_hidden_layers == 2
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1]


def test_block_influence_is_one_minus_the_cosine_of_each_layers_input_and_output():
    model = deep_model("llama")
    batches = token_batches(SEQLEN)
    result = prune_model(loaded(copy.deepcopy(model)), layers_spec(calibration=batches))
    outputs = []  # the last layer's output: hidden_states[-1] is after the final norm
    hook = model.model.layers[-1].register_forward_hook(lambda m, a, out: outputs.append(out))
    with torch.no_grad():
        states = [model(**b, output_hidden_states=True, use_cache=False).hidden_states for b in batches]
    hook.remove()
    want = []
    for i in range(LAYERS):
        ins = torch.cat([s[i] for s in states])
        outs = torch.cat([s[i + 1] for s in states]) if i < LAYERS - 1 else torch.cat(outputs)
        want.append(float((1 - torch.cosine_similarity(ins, outs, dim=-1)).mean()))
    got = list(result.records["layers"]["scores"].values())
    assert got == pytest.approx(want, rel=1e-5)


def test_skip_loss_is_the_loss_increase_with_the_layer_left_out():
    model = deep_model("gemma2")
    batches = token_batches(SEQLEN)
    result = prune_model(loaded(copy.deepcopy(model)), layers_spec("skip-loss", calibration=batches))

    def loss(m: nn.Module) -> float:
        with torch.no_grad():
            return sum(float(m(**b, labels=b["input_ids"], use_cache=False).loss) for b in batches) / len(batches)

    dense = loss(model)
    want = []
    for layer in model.model.layers:
        handle = layer.register_forward_hook(skip_hook, with_kwargs=True)
        want.append(loss(model) - dense)
        handle.remove()
    got = list(result.records["layers"]["scores"].values())
    assert got == pytest.approx(want, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"sparsity": 0.1}, r"nothing to remove: sparsity 0.1 of .*4 layers rounds to 0 layers"),
        ({"sparsity": 0.9}, r"sparsity 0.9 of .*4 layers removes every layer"),
        ({"scorer": "wanda"}, r"this scorer cannot score whole layers"),
        ({"granularity": "unstructured"}, r"this scorer scores whole layers, not unstructured"),
        ({"allocator": "owl"}, r"leave out the recipe's allocator"),
        ({"calibration": None}, r"needs calibration data"),
    ],
)
def test_runs_that_cannot_remove_layers_are_refused_before_loading(change, needle, tmp_path, monkeypatch):
    deep_model("llama").save_pretrained(tmp_path / "model")
    recipe = {
        "model": str(tmp_path / "model"), "granularity": "layers", "sparsity": 0.5, "scorer": "block-influence",
        "calibration": {"name": "text", "corpus": "shakespeare-train", "nsamples": 2, "seqlen": 16},
        **change,
    }
    monkeypatch.setattr("secateurs.run.load_for", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(SecateursError, match=needle):
        secateurs.prune({k: v for k, v in recipe.items() if v is not None}, manager=manager(), progress=False)


def test_the_cli_removes_layers_and_says_how_many(tiny_lm_dir, text_file, tmp_path, capsys):
    recipe = text_recipe(tmp_path / "recipe.toml", tiny_lm_dir, text_file, tmp_path / "out", sparsity=0.5, granularity="layers", scorer="skip-loss")
    code, out, err = run_cli(["prune", str(recipe), "-q"], capsys)
    assert code == 0, err
    assert out.startswith("removed 1 of 2 layers (")
    assert transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").config.num_hidden_layers == 1


def test_a_pruning_curve_of_layers_is_refused_before_loading():
    from secateurs.curve import curve_setup

    with pytest.raises(SecateursError, match=r'\(granularity = "layers"\) is not drawn as a curve'):
        curve_setup({"model": "nowhere", "granularity": "layers", "sparsity": 0.5, "scorer": "block-influence"})


def test_models_whose_layers_compute_with_their_index_are_refused():
    model = deep_model("gpt2")
    model.config.scale_attn_by_inverse_layer_idx = True
    with pytest.raises(SecateursError, match="scale_attn_by_inverse_layer_idx: each layer computes with its own index"):
        prune_model(loaded(model), layers_spec())


def test_adapters_that_cannot_remove_layers_are_refused():
    bert = LoadedModel(tiny_model("bert"), manager().adapters.create("bert"), "tiny-bert")
    with pytest.raises(SecateursError, match="the 'bert' adapter cannot remove whole layers"):
        prune_model(bert, layers_spec())
