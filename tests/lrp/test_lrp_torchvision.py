"""LRP on torchvision VGG, ResNet (BasicBlock, Bottleneck) and ViT: the canonizers keep
outputs and revert exactly, ε-LRP conserves relevance, the scorers score every group and
prune through the pipeline; models LRP cannot score are refused with a clear error."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from secateurs.errors import SecateursError
from secateurs.loading import wrap
from secateurs.pipeline import PruneSpec, prune_model
from secateurs.plugins import get_manager
from secateurs.protocols import LoadedModel
from secateurs_lrp.canonizers import canonized
from secateurs_lrp.composites import CompositeSpec, depth_groups
from secateurs_lrp.relevance import conservation
from secateurs_lrp.scorers import LrpScorer
from secateurs_lrp.zoos import canonizers_for
from lrp_tiny import CLASSES, KINDS, calibration, images, tiny, tv_family  # noqa: F401 (fixtures)

@pytest.mark.parametrize("relevance", [True, False])
def test_canonizers_preserve_outputs_and_revert(tv_family, relevance):
    model = tiny(tv_family).model
    x = images(tv_family, 3)
    state, modules = {k: v.clone() for k, v in model.state_dict().items()}, [n for n, _ in model.named_modules()]
    with torch.no_grad():
        dense = model(x)
        with canonized(model, canonizers_for(model, relevance=relevance)):
            torch.testing.assert_close(model(x), dense, rtol=1e-4, atol=1e-5)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert [n for n, _ in model.named_modules()] == modules
    assert all("forward" not in vars(m) for m in model.modules())


def test_a_plain_pytorch_attention_is_canonized_too():
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(16, 4, 2, 4, 32, 64, num_classes=CLASSES).eval()
    nn.init.normal_(model.heads.head.weight)
    x = images("tv_vit", 3)
    with torch.no_grad():
        dense = model(x)
        with CompositeSpec().build(model).context(model):
            torch.testing.assert_close(model(x), dense, rtol=1e-4, atol=1e-5)
    assert "encoder.layers.encoder_layer_0.self_attention.lrp_in_proj" in depth_groups(model)


def test_epsilon_conserves_relevance(tv_family):
    """ε small against the tiny random logits (~1e-2), so the rules absorb next to nothing;
    the residual sums' stabiliser may absorb a few percent on a sample whose summands
    nearly cancel (deep, narrow random ResNet-50)."""
    model = tiny(tv_family, biases=False).model
    entry = model.encoder.layers[0] if tv_family == "tv_vit" else None
    rule = {"rule": "epsilon", "epsilon": 1e-9}
    spec = CompositeSpec(low=rule, mid=rule, high=rule, fc=rule, softmax="cp" if tv_family == "tv_vit" else "attnlrp")
    x, labels = images(tv_family, 6, seed=1), torch.arange(6) % CLASSES
    ratio = conservation(model, x, labels, spec.build(model).context, entry)
    assert ratio.median().item() == pytest.approx(1.0, abs=0.01), ratio
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=0.06), ratio


def test_lrp_removes_through_the_pipeline(tv_family):
    manager = get_manager()
    for kind in KINDS[tv_family]:
        loaded = tiny(tv_family)
        before = sum(p.numel() for p in loaded.model.parameters())
        spec = PruneSpec(
            scorer=LrpScorer(samples_per_class=2, composite="gamma"),
            allocator=manager.allocators.create("uniform"),
            applier=manager.appliers.create("remove"),
            sparsity=0.5,
            granularity=kind,
            calibration=calibration(tv_family),
            progress=False,
        )
        prune_model(loaded, spec)
        assert sum(p.numel() for p in loaded.model.parameters()) < before
        with torch.no_grad():
            assert torch.isfinite(loaded.model(images(tv_family, 2))).all()


def test_no_adapter_is_a_clear_error():
    loaded = LoadedModel(nn.Sequential(nn.Linear(4, 3)), None, "custom")
    with pytest.raises(SecateursError, match="no adapter knows Sequential"):
        LrpScorer().prepare(loaded, calibration("tv_vit"))


def test_an_adapter_without_groups_is_a_clear_error():
    with pytest.warns(UserWarning):
        loaded = wrap(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)))
    batches = [(torch.randn(6, 4), torch.arange(6) % 3)]
    with pytest.raises(SecateursError, match="defines none for Sequential"):
        LrpScorer(samples_per_class=1).prepare(loaded, batches)
