"""Sized runs on tiny decoders (``secateurs.shapes``): stated sizes land exactly, step by
step (layers → hidden → heads → neurons); the saved folder is an ordinary smaller model that
plain ``from_pretrained`` reloads with the same logits and the report's parameter count;
``target_params`` searches a grid within tolerance, prints and records it; checks that need
the model's config refuse right after loading, before calibration."""

from __future__ import annotations

import copy
import functools
import json

import pytest
import torch
import transformers

import secateurs
from families import token_batches
from secateurs.errors import SecateursError
from secateurs.masks import pruned_count
from secateurs.preflight import layers_to_remove
from secateurs.recipe import SIZE_STEPS
from secateurs.shapes import TOLERANCE, param_count, sized_steps
from secateurs_transformers.decoder import DecoderAdapter
from test_tf_layers import SEQLEN, deep_model, logits
from tf_models import manager

HIDDEN = "hidden" in DecoderAdapter.group_kinds
needs_hidden = pytest.mark.skipif(not HIDDEN, reason="granularity 'hidden' is not available yet")
FAMILIES = ("llama", "qwen3", "gemma")
SIZES = {"num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 40}
SCORERS = {"layers": "block-influence", "hidden": "magnitude", "heads": "magnitude", "neurons": "magnitude"}


def scorers(keys) -> dict[str, str]:
    """``SCORERS`` of the steps the run has (unused ones are refused)."""
    steps = {SIZE_STEPS[k] for k in keys["sizes"]} if "sizes" in keys else {"layers", "hidden", "neurons"}
    return {g: name for g, name in SCORERS.items() if g in steps}


def run(model, tmp_path, progress: bool = False, **keys):
    recipe = {"output": str(tmp_path / "out"), "scorers": scorers(keys), **keys}
    return secateurs.prune(recipe, model=model, calibration=token_batches(SEQLEN), manager=manager(), progress=progress)


@functools.cache
def dense(family: str):
    return deep_model(family)


def test_each_step_sparsity_lands_on_the_stated_size():
    """The group rounding (``floor(n * s + eps)`` pruned) and the layer rounding (halves
    up) of every step's sparsity give exactly the size asked for, for every size up to 300."""
    for n in range(2, 300):
        model = {"num_hidden_layers": n, "hidden_size": n, "intermediate_size": n, "num_attention_heads": n,
                 "num_key_value_heads": n}
        for want in range(1, n):
            for key in ("intermediate_size", "num_key_value_heads"):
                (step,) = sized_steps(model, {key: want}, "m")
                assert n - int(pruned_count(n, step.sparsity)) == want
            (step,) = sized_steps(model, {"num_hidden_layers": want}, "m")
            assert n - layers_to_remove(step.sparsity, n) == want
            (step,) = sized_steps(model | {"num_attention_heads": 1, "num_key_value_heads": 1}, {"hidden_size": want}, "m")
            assert n - int(pruned_count(n, step.sparsity)) == want


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("hidden", [pytest.param(24, marks=needs_hidden), None], ids=["with-hidden", "no-hidden"])
def test_stated_sizes_land_and_the_folder_reloads_plainly(family, hidden, tmp_path):
    sizes = SIZES | ({"hidden_size": hidden} if hidden else {})
    outcome = run(copy.deepcopy(dense(family)), tmp_path, sizes=sizes)
    model, result = outcome.loaded.model, outcome.result
    assert {k: getattr(model.config, k) for k in sizes} == sizes
    assert model.config.num_key_value_heads == 1
    steps = result.records["steps"]
    assert [s["granularity"] for s in steps] == ["layers", *(["hidden"] if hidden else []), "heads", "neurons"]
    assert steps[-1]["params_after"] == result.params_kept == sum(p.numel() for p in model.parameters())
    assert result.params_total == sum(p.numel() for p in dense(family).parameters())
    assert [s["scorer"] for s in steps] == [SCORERS[s["granularity"]] for s in steps]

    reloaded = transformers.AutoModelForCausalLM.from_pretrained(outcome.output).eval()
    assert type(reloaded) is type(model) and not (outcome.output / "secateurs_resized.py").exists()
    ids = token_batches(SEQLEN, seed=2)[0]["input_ids"]
    torch.testing.assert_close(logits(reloaded, ids), logits(model, ids))
    assert sum(p.numel() for p in reloaded.parameters()) == result.params_kept
    report = json.loads((outcome.output / "report.json").read_text())
    assert report["records"]["steps"] == steps and report["params_kept"] == result.params_kept


@pytest.mark.parametrize("family", ["llama", "mistral", "gemma"])
def test_param_count_is_the_models_own(family, tmp_path):
    model = dense(family)
    config = model.config.to_dict()
    assert param_count(config) == sum(p.numel() for p in model.parameters())
    sizes = SIZES | ({"hidden_size": 24} if HIDDEN else {})
    outcome = run(copy.deepcopy(model), tmp_path, sizes=sizes)
    assert param_count(config, sizes | {"num_key_value_heads": 1}) == outcome.result.params_kept


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_target_params_picks_the_lowest_loss_candidate_within_tolerance(family, tmp_path, capsys):
    total = sum(p.numel() for p in dense(family).parameters())
    target = int(total * 0.7)
    outcome = run(copy.deepcopy(dense(family)), tmp_path, progress=True, target_params=target)
    search = outcome.result.records["search"]
    rows = search["candidates"]
    assert 2 <= len(rows) <= 6 and search["target_params"] == target
    assert all(abs(r["params"] - target) <= TOLERANCE * target for r in rows)
    chosen = min(rows, key=lambda r: r["loss"])
    assert search["chosen"] == chosen["name"] and outcome.result.params_kept == chosen["params"]
    assert outcome.result.timings["total"] > outcome.result.timings["search"] > 0
    assert {k: getattr(outcome.loaded.model.config, k) for k in chosen["sizes"]} == chosen["sizes"]
    assert any(r["sizes"]["num_hidden_layers"] < 4 for r in rows) and any(r["name"] == "width" for r in rows)
    err = capsys.readouterr().err
    assert f"target_params {target:,}" in err and all(r["name"] in err for r in rows)
    report = json.loads((outcome.output / "report.json").read_text())
    assert report["records"]["search"]["chosen"] == chosen["name"]
    assert transformers.AutoModelForCausalLM.from_pretrained(outcome.output).num_parameters() == chosen["params"]


@pytest.fixture
def no_calibration(monkeypatch):
    """Fail the test if the run makes its calibration batches."""
    monkeypatch.setattr("secateurs.run._calibration", lambda *a, **k: pytest.fail("calibration was made"))


@pytest.mark.parametrize(
    "keys,needle",
    [
        ({"sizes": {"hidden_size": 33}}, "[sizes] hidden_size = 33 is larger than tiny-llama's 32"),
        ({"sizes": {"num_attention_heads": 3}}, "not a multiple of the model's 2 query heads per key/value head"),
        ({"sizes": {"num_attention_heads": 4, "num_key_value_heads": 1}}, "set num_attention_heads = 2"),
        ({"sizes": {"num_hidden_layers": 4, "intermediate_size": 64}},
         "nothing to remove: tiny-llama already has num_hidden_layers = 4, intermediate_size = 64"),
        ({"target_params": 10**6}, "is not below the model's"),
    ],
    ids=["larger", "query heads", "groups", "same sizes", "target too large"],
)
def test_checks_of_the_models_config_refuse_before_calibration(keys, needle, no_calibration):
    from secateurs.protocols import LoadedModel

    loaded = LoadedModel(copy.deepcopy(dense("llama")), manager().adapters.create("decoder"), "tiny-llama")
    with pytest.raises(SecateursError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        secateurs.prune({"scorers": scorers(keys), **keys}, model=loaded, calibration=token_batches(SEQLEN),
                        manager=manager(), progress=False)


def test_a_model_without_the_config_fields_is_refused():
    from families import tiny_model

    with pytest.raises(SecateursError, match="has no config field 'intermediate_size'.*need a transformers decoder's config"):
        secateurs.prune({"sizes": {"intermediate_size": 8}, "scorers": scorers({"sizes": {"intermediate_size": 8}})},
                        model=tiny_model("gpt2"), calibration=token_batches(SEQLEN), manager=manager(), progress=False)


def test_target_params_refuses_a_model_its_count_does_not_fit():
    """Mixtral's MLP is experts: the LLaMA-layout count misses it."""
    from families import tiny_model

    with pytest.raises(SecateursError, match=r"misses this model's \(mixtral\)"):
        secateurs.prune({"target_params": 1000, "scorers": scorers({})}, model=tiny_model("mixtral"),
                        calibration=token_batches(SEQLEN), manager=manager(), progress=False)


def test_the_search_scores_each_layer_once(tmp_path, monkeypatch):
    """Every candidate's layers step starts from the dense model: the scores are reused."""
    from secateurs.builtins.layers import BlockInfluence

    calls = []
    score = BlockInfluence.score_layer
    monkeypatch.setattr(BlockInfluence, "score_layer", lambda self, block, ctx: calls.append(block.name) or score(self, block, ctx))
    total = sum(p.numel() for p in dense("llama").parameters())
    outcome = run(copy.deepcopy(dense("llama")), tmp_path, target_params=int(total * 0.7))
    assert sum(r["sizes"]["num_hidden_layers"] < 4 for r in outcome.result.records["search"]["candidates"]) >= 1
    assert sorted(calls) == sorted(set(calls)) and len(calls) == 4


def test_the_cli_prunes_to_the_stated_sizes_and_says_so(tiny_lm_dir, text_file, tmp_path, capsys):
    from cli_run import run_cli

    recipe = tmp_path / "sized.toml"
    recipe.write_text("\n".join([
        f'model = "{tiny_lm_dir}"', f'output = "{tmp_path / "out"}"',
        "[sizes]", "num_hidden_layers = 1", "intermediate_size = 100",
        "[scorers]", 'neurons = "magnitude"',
        "[calibration]", 'name = "text"', f'corpus = "{text_file}"', "nsamples = 2", "seqlen = 16",
    ]) + "\n")
    code, out, err = run_cli(["prune", str(recipe), "-q"], capsys)
    assert code == 0, err
    assert "pruned to num_hidden_layers = 1, intermediate_size = 100" in out
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert (reloaded.config.num_hidden_layers, reloaded.config.intermediate_size) == (1, 100)
