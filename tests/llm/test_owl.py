"""OWL: outlier ratios, block sparsities (mean = target, more outliers => lower sparsity),
records, and its only overhead being one dense pass."""

from __future__ import annotations

import pytest
import torch

from llm_helpers import tiny_llama, wanda_spec
from secateurs.builtins.owl import outlier_ratio, owl_sparsities
from secateurs.errors import SecateursError
from secateurs.pipeline import prune_model
from secateurs.plugins import get_manager
from secateurs.protocols import LoadedModel
from secateurs_transformers.llama import LlamaFamilyAdapter


def test_outlier_ratio_counts_scores_above_m_times_the_mean():
    scores = {"a": torch.ones(98), "b": torch.tensor([100.0, 100.0])}  # mean 2.98
    assert outlier_ratio(scores, 5.0) == pytest.approx(2.0)
    assert outlier_ratio({"a": torch.ones(10)}, 5.0) == 0.0


@pytest.mark.parametrize("target", [0.5, 0.6, 0.7])
@pytest.mark.parametrize("lam", [0.02, 0.08])
def test_block_sparsities_keep_the_mean_and_span_two_lambda(target, lam):
    ratios = torch.tensor([3.0, 0.5, 1.2, 7.0, 2.2])
    sparsity = owl_sparsities(ratios, target, lam)
    assert float(sparsity.mean()) == pytest.approx(target, abs=1e-12)
    assert float(sparsity.max() - sparsity.min()) == pytest.approx(2 * lam)
    order = torch.argsort(ratios)
    assert (sparsity[order].diff() < 0).all()  # more outliers => lower sparsity


def test_equal_ratios_give_the_target_everywhere_and_bad_lambda_is_refused():
    assert torch.allclose(owl_sparsities(torch.full((4,), 2.0), 0.6, 0.08), torch.full((4,), 0.6, dtype=torch.float64))
    with pytest.raises(SecateursError, match="smaller lam"):
        owl_sparsities(torch.tensor([0.0, 1.0]), 0.05, 0.08)


@pytest.mark.parametrize("applier", ["zero", "sparsegpt"])
def test_owl_run_keeps_the_target_and_records_every_block(applier):
    loaded = tiny_llama(layers=4)
    result = prune_model(loaded, wanda_spec("owl", applier, sparsity=0.6))
    record = result.records["owl"]
    blocks = [b.name for b in LlamaFamilyAdapter().blocks(loaded.model)]
    assert list(record["outlier_ratio"]) == list(record["sparsity"]) == blocks
    assert sum(record["sparsity"].values()) / len(blocks) == pytest.approx(0.6)
    assert result.sparsity == pytest.approx(0.6, abs=1 / 64)  # per-row floors of 64-wide rows
    for report in result.units:
        block = report.name.rsplit(".", 2)[0]
        assert report.target_sparsity == pytest.approx(record["sparsity"][block])
        assert abs(report.sparsity - report.target_sparsity) < 1.5 / report.shape[1]


def test_a_block_with_planted_outliers_gets_the_lowest_sparsity():
    loaded = tiny_llama(layers=4)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for linear in (loaded.model.model.layers[2].mlp.up_proj, loaded.model.model.layers[2].self_attn.q_proj):
            idx = torch.randint(0, linear.weight.numel(), (500,), generator=gen)
            linear.weight.view(-1)[idx] *= 30.0
    result = prune_model(loaded, wanda_spec("owl", lam=0.05))
    ratios, sparsity = result.records["owl"]["outlier_ratio"], result.records["owl"]["sparsity"]
    assert max(ratios, key=ratios.get) == "model.layers.2"
    assert min(sparsity, key=sparsity.get) == "model.layers.2"


def _count_block_calls(loaded: LoadedModel) -> list[int]:
    calls = [0]
    for layer in loaded.model.model.layers:
        layer.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_owl_overhead_is_exactly_one_dense_pass():
    base, owl = tiny_llama(layers=4), tiny_llama(layers=4)
    base_calls, owl_calls = _count_block_calls(base), _count_block_calls(owl)
    prune_model(base, wanda_spec("uniform"))
    prune_model(owl, wanda_spec("owl"))
    samples, layers = 4, 4
    # uniform: capture (the first sample through every block, checking each block's own
    # arguments; block 0 only for the others), then collect + propagate per block (the last
    # block is not propagated)
    capture = layers + samples - 1
    assert base_calls[0] == capture + samples * (2 * layers - 1)
    # OWL: one more (dense) pass over every block
    assert owl_calls[0] == base_calls[0] + samples * layers


def test_owl_parameters_are_validated():
    with pytest.raises(SecateursError, match="lam"):
        get_manager().allocators.create("owl", lam=-1)
    with pytest.raises(SecateursError, match="m must"):
        get_manager().allocators.create("owl", m=0)
