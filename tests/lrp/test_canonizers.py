"""Canonizers leave outputs unchanged, revert exactly, and make ε-LRP conserve relevance."""

from __future__ import annotations

import pytest
import torch
import zennit.torchvision

from secateurs_lrp.canonizers import canonized
from secateurs_lrp.zoos import canonizers_for
from secateurs_lrp.composites import CompositeSpec
from secateurs_lrp.relevance import conservation
from lrp_tiny import CLASSES, family, images, tiny  # noqa: F401 (fixtures)


def _snapshot(model: torch.nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("softmax", ["attnlrp", "cp", "gradient"])
def test_canonizers_preserve_outputs_and_revert(family, softmax):
    model = tiny(family).model
    x = images(family, 3)
    before_state, before_modules = _snapshot(model), [n for n, _ in model.named_modules()]
    with torch.no_grad():
        dense = model(x)
    relevance = softmax != "gradient"
    chosen = canonizers_for(model, "attnlrp" if softmax == "gradient" else softmax, relevance=relevance)
    assert chosen or not relevance
    with canonized(model, chosen), torch.no_grad():
        inside = model(x)
        if family == "vit":
            assert all(hasattr(b.attn, "lrp_probe") for b in model.blocks)
    torch.testing.assert_close(inside, dense, rtol=1e-4, atol=1e-5)
    after = _snapshot(model)
    assert after.keys() == before_state.keys()
    assert all(torch.equal(after[k], before_state[k]) for k in after)
    assert [n for n, _ in model.named_modules()] == before_modules
    assert all("forward" not in vars(m) for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(x), dense)


def _conservation(family: str, spec: CompositeSpec) -> torch.Tensor:
    model = tiny(family, biases=False).model
    return conservation(model, images(family, 6, seed=1), torch.arange(6) % CLASSES, spec.build(model).context)


def test_epsilon_conserves_relevance(family):
    softmax = "cp" if family == "vit" else "attnlrp"  # AttnLRP's softmax rule is not conservative by design
    ratio = _conservation(family, CompositeSpec(softmax=softmax))
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=0.02), ratio


def test_attnlrp_softmax_keeps_most_relevance():
    ratio = _conservation("vit", CompositeSpec(softmax="attnlrp"))
    assert ratio.mean().item() == pytest.approx(1.0, abs=0.2), ratio


@pytest.mark.parametrize("family", ["resnet", "bottleneck"])
def test_zennit_torchvision_resnet_canonizer_breaks_conservation_on_timm(family):
    """The pitfall the timm canonizer fixes: zennit's torchvision canonizer merges the
    BatchNorms but leaves timm's residual addition alone, so relevance is not conserved."""
    model = tiny(family, biases=False).model
    x, labels = images(family, 6, seed=1), torch.arange(6) % CLASSES
    spec = CompositeSpec()
    ours = spec.build(model)
    theirs = spec.build(model)
    theirs.canonizers = [zennit.torchvision.ResNetCanonizer()]
    good = conservation(model, x, labels, ours.context)
    bad = conservation(model, x, labels, theirs.context)
    assert torch.allclose(good, torch.ones_like(good), atol=0.02)
    assert (bad - 1).abs().max() > 0.1
