"""Width pruning of the residual stream (``granularity = "hidden"``) of every decoder family
(``families.py``).

Invariants, per family: zeroing the chosen hidden channels (every embedding column, reader
column, writer row, norm entry of them; each RMS norm's epsilon seen over the kept width)
gives the logits of the physically narrower model, Gemma's embedding scale and tied
embeddings included; the narrower model's saved folder reloads with plain
``from_pretrained``, gives the same logits and greedy tokens, and counts the report's
parameters. The layout derived for a family without a record equals the declared record.
Families whose head width derives from the hidden size are refused, with the reason.
"""

from __future__ import annotations

import copy
import functools

import pytest
import secateurs
import torch
import transformers
from cli_run import run_cli
from families import DECODERS, tiny_model, token_batches
from secateurs.errors import SecateursError
from secateurs.pipeline import prune_model
from secateurs.protocols import LoadedModel
from secateurs.structured import zero_components
from secateurs.types import PruneResult
from secateurs.width import residual_stats
from secateurs_transformers import width
from secateurs_transformers.layouts import LAYOUTS
from tf_models import decoder_loaded as loaded
from tf_models import logits, reloads_plainly, spec, text_recipe
from torch import nn

NARROWED = [f for f in DECODERS if LAYOUTS[tiny_model(f).config.model_type].hidden is None]
REFUSED = [f for f in DECODERS if f not in NARROWED]
SEQLEN = 20
EPSILONS = ("variance_epsilon", "eps")
"""Where transformers' RMS norms keep their epsilon."""



def hidden_spec(scorer: str = "magnitude", sparsity: float = 0.25, calibration=None):
    return spec("zero", "hidden", scorer=scorer, sparsity=sparsity, calibration=calibration)



@functools.cache
def narrowed(family: str) -> tuple[nn.Module, LoadedModel, PruneResult]:
    """The dense model, the same model with a quarter of its hidden channels removed, and the result."""
    dense = tiny_model(family)
    lm = loaded(copy.deepcopy(dense), family)
    return dense, lm, prune_model(lm, hidden_spec())


def zeroed(dense: nn.Module, keep: torch.Tensor) -> nn.Module:
    """``dense`` with every entry of the channels not in ``keep`` zeroed, and its width's RMS
    norms' epsilon scaled to the kept width (what a norm over fewer channels computes)."""
    model = copy.deepcopy(dense)
    zero_components(width.hidden_group(model), keep)
    residual = width.resolve(model, width.layout_of(model))
    for norm in residual.norms:
        for name in EPSILONS:
            if isinstance(getattr(norm, name, None), float):
                setattr(norm, name, getattr(norm, name) * int(keep.sum()) / keep.numel())
    return model


@pytest.mark.parametrize("family", NARROWED)
def test_zeroing_the_chosen_channels_equals_removing_them(family):
    dense, lm, result = narrowed(family)
    removed = result.records["hidden"]["removed"]
    keep = torch.ones(dense.config.hidden_size, dtype=torch.bool)
    keep[removed] = False
    assert lm.model.config.hidden_size == 24 == int(keep.sum()) and len(removed) == 8
    reference = zeroed(dense, keep)
    for batch in token_batches(SEQLEN, seed=1):
        ids = batch["input_ids"]
        torch.testing.assert_close(logits(lm.model, ids), logits(reference, ids), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(logits(lm.model, ids), logits(dense, ids), atol=1e-3)  # something was removed


@pytest.mark.parametrize("family", NARROWED)
def test_the_narrower_model_reloads_plainly_generates_and_counts_the_report(family, tmp_path):
    dense, lm, result = narrowed(family)
    reloaded = reloads_plainly(dense, lm, result, tmp_path, token_batches(SEQLEN, seed=2)[0]["input_ids"])
    assert reloaded.config.hidden_size == 24
    tied = dense.get_output_embeddings().weight is dense.get_input_embeddings().weight
    assert (reloaded.get_output_embeddings().weight is reloaded.get_input_embeddings().weight) == tied


@pytest.mark.parametrize("family", REFUSED)
def test_families_whose_head_width_follows_the_hidden_size_are_refused(family):
    model = tiny_model(family)
    with pytest.raises(SecateursError, match="head width is hidden_size / num_attention_heads"):
        prune_model(loaded(model, family), hidden_spec())


@pytest.mark.parametrize("family", [f for f in NARROWED if f != "mixtral"])
def test_the_derived_layout_equals_the_declared_record(family):
    model = tiny_model(family)
    derived, record = width.derived_layout(model), LAYOUTS[model.config.model_type]
    residual = ("readers", "writers", "norms", "embeddings", "final_norm", "expert_params", "norm_offset",
                "embedding_scale")
    assert {k: getattr(derived, k) for k in residual} == {k: getattr(record, k) for k in residual}


def test_fused_experts_need_a_record():
    assert "fused 3-D expert tensors" in width.derived_layout(tiny_model("mixtral"))


def test_the_norm_probe_tells_rms_offset_rms_and_layer_norms_apart():
    assert width.norm_kind(tiny_model("llama").model.norm, 32) == "rms"
    assert width.norm_kind(tiny_model("gemma").model.norm, 32) == "rms_offset"
    assert width.norm_kind(nn.LayerNorm(32), 32) is None
    norm = tiny_model("gemma").model.norm
    before = norm.weight.clone()
    width.norm_kind(norm, 32)
    assert torch.equal(norm.weight, before)  # the probe restores the weight


def test_the_residual_statistics_are_each_readers_per_token_mean_square():
    model = tiny_model("llama")
    batches = token_batches(SEQLEN)
    seen: dict[str, list[torch.Tensor]] = {"attention": [], "mlp": []}
    hooks = []
    for layer in model.model.layers:
        hooks.append(layer.self_attn.q_proj.register_forward_hook(lambda m, a, o: seen["attention"].append(a[0])))
        hooks.append(layer.mlp.gate_proj.register_forward_hook(lambda m, a, o: seen["mlp"].append(a[0])))
    with torch.no_grad():
        for b in batches:
            model(**b, use_cache=False)
    for h in hooks:
        h.remove()
    layers = len(model.model.layers)
    want = sum(
        torch.cat([x.reshape(-1, 32) for x in xs[i::layers]]).pow(2).mean(0) for xs in seen.values() for i in range(layers)
    )
    lm = loaded(model)
    stats = residual_stats(lm, hidden_spec(calibration=batches), width.hidden_group(model), lm.adapter.blocks(model))
    torch.testing.assert_close(stats.sq_norm, want, rtol=1e-5, atol=1e-7)


def test_the_lowest_scored_channels_are_removed():
    model = tiny_model("qwen3")
    scores = secateurs.plugins.get_manager().scorers.create("magnitude").score_group(width.hidden_group(model), None)
    result = prune_model(loaded(copy.deepcopy(model)), hidden_spec())
    assert sorted(result.records["hidden"]["removed"]) == sorted(torch.argsort(scores)[:8].tolist())


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"sparsity": 0.02}, r"nothing to remove: sparsity 0.02 of .*32 hidden channels rounds to 0"),
        ({"scorer": "wanda"}, r"this scorer cannot score hidden channels"),
        ({"scorer": "skip-loss"}, r"this scorer scores whole layers, not hidden"),
        ({"allocator": "global"}, r"leave out the recipe's allocator"),
    ],
)
def test_runs_that_cannot_narrow_are_refused_before_any_work(change, needle):
    model = tiny_model("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run = {"scorer": "magnitude", "sparsity": 0.25, "allocator": "uniform", **change}
    with pytest.raises(SecateursError, match=needle):
        prune_model(loaded(model), spec("zero", "hidden", calibration=token_batches(SEQLEN), **run))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_a_width_the_config_cannot_save_is_refused_before_any_work_with_the_nearest_it_accepts():
    config = transformers.LlamaConfig(**{**tiny_model("llama").config.to_dict(), "num_attention_heads": 3,
                                         "num_key_value_heads": 1, "hidden_size": 36, "head_dim": 8})
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(SecateursError, match=r"to 28 channels: LlamaConfig refuses hidden_size = 28 \(.*not a multiple "
                                             r"of the number of attention heads \(3\)\.\); the nearest widths it accepts: 27 or 30"):
        prune_model(loaded(model), hidden_spec(sparsity=8 / 36))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert prune_model(loaded(model), hidden_spec(sparsity=9 / 36)).records["hidden"]["size_after"] == 27


def test_the_cli_narrows_the_hidden_width_and_says_so(tiny_lm_dir, text_file, tmp_path, capsys):
    recipe = text_recipe(tmp_path / "recipe.toml", tiny_lm_dir, text_file, tmp_path / "out", sparsity=0.25, granularity="hidden", scorer="activation")
    code, out, err = run_cli(["prune", str(recipe), "-q"], capsys)
    assert code == 0, err
    assert out.startswith("narrowed the hidden width from 64 to 48 (")
    assert transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").config.hidden_size == 48


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_with_calibration_each_norm_gain_follows_the_removed_share_of_its_input_energy(family):
    dense = tiny_model(family)
    batches = token_batches(SEQLEN)
    residual = width.resolve(dense, width.layout_of(dense))
    energy = {id(n): torch.zeros(32, dtype=torch.float64) for n in residual.norms}

    def measure(module: nn.Module, args: tuple) -> None:
        energy[id(module)].add_(args[0].double().reshape(-1, 32).pow(2).sum(0))

    hooks = [n.register_forward_pre_hook(measure) for n in residual.norms]
    with torch.no_grad():
        for b in batches:
            dense(**b, use_cache=False)
    for h in hooks:
        h.remove()
    lm = loaded(copy.deepcopy(dense), family)
    result = prune_model(lm, hidden_spec("activation", calibration=batches))
    assert result.records["hidden"]["calibrated"]
    keep = torch.ones(32, dtype=torch.bool)
    keep[result.records["hidden"]["removed"]] = False
    narrow = width.resolve(lm.model, width.layout_of(lm.model))
    offset = residual.layout.norm_offset
    tied_final = residual.layout.embedding_scale and residual.lm_head is None
    for i, (before, after) in enumerate(zip(residual.norms, narrow.norms, strict=True)):
        e = energy[id(before)]
        gain = ((1 - float(e[~keep].sum() / e.sum())) * 32 / 24) ** 0.5
        if tied_final and i == len(residual.norms) - 1:
            gain /= (32 / 24) ** 0.5  # Gemma's embedding scale, divided out for the tied head
        want = (1 + before.weight[keep]) * gain - 1 if offset else before.weight[keep] * gain
        torch.testing.assert_close(after.weight, want.float(), rtol=1e-5, atol=1e-6)
