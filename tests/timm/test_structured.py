"""Structured and unstructured pruning of the tiny timm models through the pipeline:
zero vs remove give the same outputs; removed models save, reload and run."""

from __future__ import annotations

import pytest
import torch

from secateurs.pipeline import PruneSpec, prune_model
from secateurs.testing import quiet_spec

from timm_models import FAMILY, images, tiny

KINDS = [("vit", "heads"), ("vit", "neurons"), ("vgg", "channels"), ("vgg_nobn", "channels"),
         ("resnet", "channels"), ("bottleneck", "channels")]


def _spec(applier: str, sparsity: float, granularity: str = "unstructured", scorer: str = "magnitude") -> PruneSpec:
    return quiet_spec(applier, granularity, scorer=scorer, sparsity=sparsity)


def _outputs(loaded, x):
    with torch.no_grad():
        return loaded.adapter.forward(loaded.model, x)


@pytest.mark.parametrize("family", sorted(FAMILY))
def test_unstructured_magnitude_through_pipeline(family):
    loaded = tiny(family)
    result = prune_model(loaded, _spec("zero", 0.5))
    units = [u for b in loaded.adapter.blocks(loaded.model) for u in b.units]
    assert {r.name for r in result.units} == {u.name for u in units}
    for u in units:
        zeros = int((u.weight == 0).sum())
        assert zeros == u.weight.numel() // 2, u.name


@pytest.mark.parametrize(("family", "kind"), KINDS)
def test_zero_and_remove_give_the_same_outputs(family, kind):
    zeroed, removed = tiny(family), tiny(family)
    x = images(family, seed=1)
    dense = _outputs(zeroed, x)
    prune_model(zeroed, _spec("zero", 0.5, kind))
    prune_model(removed, _spec("remove", 0.5, kind))
    out_zero, out_removed = _outputs(zeroed, x), _outputs(removed, x)
    assert not torch.allclose(out_zero, dense, atol=1e-4)  # something was really pruned
    torch.testing.assert_close(out_removed, out_zero, rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in removed.model.parameters()) < sum(p.numel() for p in zeroed.model.parameters())


def test_removed_heads_update_attention():
    loaded = tiny("vit")
    prune_model(loaded, _spec("remove", 0.5, "heads"))
    for block in loaded.model.blocks:
        attn = block.attn
        assert (attn.num_heads, attn.head_dim, attn.attn_dim) == (2, 8, 16)
        assert attn.qkv.weight.shape == (48, 32) and attn.proj.in_features == 16
    groups = [g for b in loaded.adapter.blocks(loaded.model) for g in b.groups if g.kind == "heads"]
    assert [g.size for g in groups] == [2, 2]


def test_removed_neurons_and_channels_update_modules():
    vit = tiny("vit")
    prune_model(vit, _spec("remove", 0.25, "neurons"))
    assert all(b.mlp.fc1.out_features == 48 == b.mlp.fc2.in_features for b in vit.model.blocks)
    vgg = tiny("vgg")
    prune_model(vgg, _spec("remove", 0.5, "channels"))
    features = vgg.model.features
    assert (features[0].out_channels, features[1].num_features, features[4].in_channels) == (2, 2, 2)
    assert vgg.model.head.fc.in_features == vgg.model.head.num_features == 128


@pytest.mark.parametrize(("family", "kind"), [("vit", "heads"), ("vgg", "channels"), ("bottleneck", "channels")])
def test_removed_model_saves_and_reloads(family, kind, tmp_path):
    loaded = tiny(family)
    prune_model(loaded, _spec("remove", 0.5, kind, scorer="random"))
    files = loaded.adapter.save(loaded, tmp_path / "saved")
    assert {f.name for f in files} == {"model.safetensors", "secateurs_timm.json"}
    again = type(loaded.adapter)().load(tmp_path / "saved", device="cpu", dtype=None)
    assert again is not None
    x = images(family, seed=2)
    torch.testing.assert_close(_outputs(again, x), _outputs(loaded, x))
    assert again.model.state_dict().keys() == loaded.model.state_dict().keys()
