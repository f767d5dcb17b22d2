"""The ``activation`` scorer on torchvision CNNs: a channel scores the root of its mean
squared activation per position at the input of the conv that reads it (the group's
consumer), removing by it gives the outputs of zeroing, and VGG, whose channels are read in
the next block, is refused with the reason."""

from __future__ import annotations

import pytest
import torch

from secateurs.errors import SecateursError
from secateurs.pipeline import dense_scores, prune_model
from secateurs.testing import quiet_spec
from tv_models import tv_images, tv_tiny

RESNETS = ("tv_resnet18", "tv_resnet50")


def _spec(applier: str, family: str):
    return quiet_spec(applier, "channels", scorer="activation", calibration=[tv_images(family, 4)])


@pytest.mark.parametrize("family", RESNETS)
def test_channel_scores_are_the_rms_activation_at_the_consumer_input(family):
    loaded = tv_tiny(family)
    groups = [g for b in loaded.adapter.blocks(loaded.model) for g in b.groups if g.kind == "channels"]
    modules = dict(loaded.model.named_modules())
    seen: dict[str, torch.Tensor] = {}
    handles = [
        modules[g.meta["consumer"]].register_forward_pre_hook(
            lambda m, args, name=g.name: seen.setdefault(name, args[0].detach())
        )
        for g in groups
    ]
    try:
        with torch.no_grad():
            loaded.model(tv_images(family, 4))
    finally:
        for h in handles:
            h.remove()
    scores = dense_scores(loaded, _spec("zero", family))
    for g in groups:
        x = seen[g.name]
        torch.testing.assert_close(scores[g.name], x.pow(2).mean((0, 2, 3)).sqrt(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("family", RESNETS)
def test_removing_by_activation_gives_the_outputs_of_zeroing(family):
    zeroed, removed = tv_tiny(family), tv_tiny(family)
    prune_model(zeroed, _spec("zero", family))
    result = prune_model(removed, _spec("remove", family))
    assert result.params_pruned > 0
    x = tv_images(family, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(removed.model(x), zeroed.model(x), rtol=1e-4, atol=1e-5)


def test_channels_read_in_a_later_block_are_refused_with_the_reason():
    loaded = tv_tiny("tv_vgg")
    reason = "'features.0.channels'.*use another scorer where that layer is in a later block"
    with pytest.raises(SecateursError, match=reason):
        prune_model(loaded, _spec("remove", "tv_vgg"))
