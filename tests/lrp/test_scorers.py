"""The lrp and taylor scorers: one score per component, served through the pipeline;
bad input fails with a clear message."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from secateurs.errors import SecateursError
from secateurs.pipeline import PruneSpec, prune_model
from secateurs.plugins import get_manager
from secateurs.protocols import LoadedModel, ScoreContext
from secateurs_lrp.composites import CompositeSpec, depth_groups
from secateurs_lrp.library import resolve_composite
from secateurs_lrp.relevance import reference_set
from secateurs_lrp.rules import bilinear_matmul, softmax_relevance
from secateurs.testing import Where, check_scorer
from secateurs_lrp.scorers import LrpScorer, TaylorScorer
from lrp_tiny import CLASSES, KINDS, any_family, calibration, family, images, tiny  # noqa: F401 (fixtures)

@pytest.mark.parametrize("scorer", ["lrp", "taylor"])
def test_scores_every_group_once(any_family, scorer):
    loaded = tiny(any_family)
    s = get_manager().scorers.create(scorer, samples_per_class=2, batch_size=5)
    s.prepare(loaded, calibration(any_family))
    groups = [g for b in loaded.adapter.blocks(loaded.model) for g in b.groups]
    assert {g.name for g in groups} == set(s.cache)
    for g in groups:
        scores = s.score_group(g, ScoreContext())
        assert scores.shape == (g.size,)
        assert torch.isfinite(scores).all() and (scores >= 0).all() and scores.sum() > 0


@pytest.mark.parametrize("scorer", ["lrp", "taylor"])
def test_passes_the_plugin_authors_check(any_family, scorer):
    for kind in KINDS[any_family]:
        part = get_manager().scorers.create(scorer, samples_per_class=2)
        check_scorer(part, Where(loaded=tiny(any_family), calibration=calibration(any_family), granularity=kind))


def test_relevance_is_batch_independent():
    loaded = tiny("vit")
    one, many = LrpScorer(samples_per_class=2, batch_size=1), LrpScorer(samples_per_class=2, batch_size=8)
    one.prepare(loaded, calibration("vit"))
    many.prepare(loaded, calibration("vit"))
    for name in one.cache:
        torch.testing.assert_close(one.cache[name], many.cache[name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("allocator", ["global", "uniform"])
def test_prune_through_the_pipeline(family, allocator):
    manager = get_manager()
    for kind in KINDS[family]:
        loaded = tiny(family)
        spec = PruneSpec(
            scorer=LrpScorer(samples_per_class=2, composite="gamma"),
            allocator=manager.allocators.create(allocator),
            applier=manager.appliers.create("zero"),
            sparsity=0.5,
            granularity=kind,
            calibration=calibration(family),
            progress=False,
        )
        result = prune_model(loaded, spec)
        assert result.sparsity == pytest.approx(0.5, abs=0.1)
        assert result.timings["score"] > 0


def test_reference_set_takes_n_per_class():
    batches = calibration("vit", per_class=5, batch=7)
    ref = reference_set(batches, 3, CLASSES, 4)
    labels = torch.cat([b[1] for b in ref])
    assert torch.bincount(labels, minlength=CLASSES).tolist() == [3] * CLASSES
    assert all(len(b[0]) <= 4 for b in ref)


def test_too_few_reference_samples():
    with pytest.raises(SecateursError, match=r"class \d.*10 per class were requested.*nsamples"):
        LrpScorer(samples_per_class=10).prepare(tiny("vit"), calibration("vit", per_class=3))


def test_no_calibration_or_unlabelled():
    with pytest.raises(SecateursError, match="labelled reference set"):
        LrpScorer().prepare(tiny("vit"), None)
    with pytest.raises(SecateursError, match="labelled calibration"):
        LrpScorer(samples_per_class=1).prepare(tiny("vit"), [images("vit", 4)])


def test_unknown_rule_lists_valid_ones():
    with pytest.raises(SecateursError, match="unknown rule 'flat'.*epsilon, gamma, zplus, alphabeta"):
        LrpScorer(composite={"low": "flat"})
    with pytest.raises(SecateursError, match="has no parameter 'gamma'"):
        CompositeSpec.from_dict({"fc": {"rule": "epsilon", "gamma": 0.1}})
    with pytest.raises(SecateursError, match="unknown composite 'nope'.*EpsilonPlus"):
        resolve_composite("nope")


def test_layers_the_composite_cannot_handle_are_named():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, CLASSES)
    )
    model.num_classes = CLASSES
    loaded = LoadedModel(model, SimpleNamespace(forward=lambda m, x: m(x), name="toy"), "toy")
    batches = [(torch.randn(4, 1, 16, 16), torch.arange(4))]
    with pytest.raises(SecateursError, match=r"cannot handle.*1 \(GroupNorm\)"):
        LrpScorer(samples_per_class=1).attribute(loaded, batches, lambda m: {})


def test_zennit_composites_by_name_and_depth_groups():
    model = tiny("vgg").model
    groups = depth_groups(model)
    assert [groups[n] for n in ("features.0", "head.fc")] == ["low", "fc"]
    assert set(groups.values()) == {"low", "mid", "high", "fc"}
    assert groups["pre_logits.fc1"] == "fc"
    for name in ("EpsilonPlus", "EpsilonAlpha2Beta1", "epsilon_plus_flat"):
        assert resolve_composite(name).zennit == name


def test_attnlrp_softmax_rule_matches_formula():
    x = torch.randn(2, 3, 5, requires_grad=True)
    relevance = torch.randn(2, 3, 5)
    (grad,) = torch.autograd.grad(softmax_relevance(x, "attnlrp"), x, relevance)
    s = torch.softmax(x, -1)
    torch.testing.assert_close(grad, x * (relevance - s * relevance.sum(-1, keepdim=True)))
    (stopped,) = torch.autograd.grad(softmax_relevance(x, "cp"), x, relevance)
    assert torch.equal(stopped, torch.zeros_like(x))


def test_bilinear_rule_conserves():
    a = torch.rand(2, 4, 3, requires_grad=True)
    b = torch.rand(2, 3, 5, requires_grad=True)
    out = bilinear_matmul(a, b, scale=0.5)
    torch.testing.assert_close(out, (a @ b) * 0.5)
    relevance = torch.rand_like(out)
    ra, rb = torch.autograd.grad(out, (a, b), relevance)
    torch.testing.assert_close(ra.sum() + rb.sum(), relevance.sum(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ra.sum(), rb.sum(), rtol=1e-4, atol=1e-5)


def test_taylor_differs_from_lrp():
    loaded = tiny("vgg")
    lrp, taylor = LrpScorer(samples_per_class=2), TaylorScorer(samples_per_class=2)
    lrp.prepare(loaded, calibration("vgg"))
    taylor.prepare(loaded, calibration("vgg"))
    name = next(iter(lrp.cache))
    assert not torch.allclose(lrp.cache[name], taylor.cache[name])
