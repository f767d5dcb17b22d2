"""Block enumeration, units, groups and their coupling for the timm adapters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from secateurs.errors import SecateursError
from secateurs.protocols import Adapter
from secateurs_timm.adapters import ADAPTERS

from timm_models import images, tiny

EXPECTED_BLOCKS = {
    "vit": ["blocks.0", "blocks.1"],
    "vgg": ["features.0", "features.4", "features.8", "features.11", "features.15", "features.18",
            "features.22", "features.25", "head"],
    "vgg_nobn": ["features.0", "features.3", "features.6", "features.8", "features.11", "features.13",
                 "features.16", "features.18", "head"],
    "resnet": ["stem"] + [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)] + ["head"],
    "bottleneck": ["stem"] + [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)] + ["head"],
}


def test_adapters_satisfy_protocol():
    for cls in ADAPTERS.values():
        assert isinstance(cls(), Adapter)


def test_block_enumeration(family):
    loaded = tiny(family)
    blocks = loaded.adapter.blocks(loaded.model)
    assert [b.name for b in blocks] == EXPECTED_BLOCKS[family]
    assert [b.index for b in blocks] == list(range(len(blocks)))
    # the same block modules on every call (the pipeline hooks them)
    again = loaded.adapter.blocks(loaded.model)
    assert all(a.module is b.module for a, b in zip(blocks, again))


def test_adapter_forward_is_model_forward(family):
    loaded = tiny(family)
    x = images(family)
    with torch.no_grad():
        torch.testing.assert_close(loaded.adapter.forward(loaded.model, (x, None)), loaded.model(x))


def test_blocks_chain_reproduces_the_model(family):
    """Block 0's captured input run through every block, output to input, gives the model's
    output at the last block."""
    loaded = tiny(family)
    blocks = loaded.adapter.blocks(loaded.model)
    seen = {}
    hooks = [blocks[0].module.register_forward_pre_hook(lambda m, a: seen.setdefault("in", a[0])),
             blocks[-1].module.register_forward_hook(lambda m, a, o: seen.setdefault("out", o))]
    with torch.no_grad():
        loaded.adapter.forward(loaded.model, images(family))
        for h in hooks:
            h.remove()
        x = seen["in"]
        for block in blocks:
            x = loaded.adapter.block_output(block.module(x))
    torch.testing.assert_close(x, seen["out"])


def test_units_cover_every_prunable_layer(family):
    loaded = tiny(family)
    blocks = loaded.adapter.blocks(loaded.model)
    names = [u.qualified_name for b in blocks for u in b.units]
    assert len(names) == len(set(names))
    prunable = {f"{n}.weight" for n, m in loaded.model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    if family == "vit":  # patch embedding and classifier head stay outside the blocks
        prunable = {n for n in prunable if n.startswith("blocks.")}
    assert set(names) == prunable
    for block in blocks:
        for unit in block.units:
            assert unit.weight is dict(loaded.model.named_parameters())[unit.qualified_name]


def test_vit_units_and_groups():
    loaded = tiny("vit")
    block = loaded.adapter.blocks(loaded.model)[1]
    assert [(u.name, u.role) for u in block.units] == [
        ("blocks.1.attn.qkv", "qkv"), ("blocks.1.attn.proj", "proj"),
        ("blocks.1.mlp.fc1", "fc1"), ("blocks.1.mlp.fc2", "fc2")]
    heads, neurons = block.groups
    assert (heads.kind, heads.size, heads.meta["head_dim"]) == ("heads", 4, 8)
    qkv = [s for s in heads.slices if s.module is block.module.attn.qkv]
    assert sorted((s.param, s.start, s.length) for s in qkv) == [
        ("bias", 0, 32), ("bias", 32, 32), ("bias", 64, 32),
        ("weight", 0, 32), ("weight", 32, 32), ("weight", 64, 32)]
    assert [(s.module, s.dim) for s in heads.slices if s.module is block.module.attn.proj] == [
        (block.module.attn.proj, 1)]
    assert (neurons.kind, neurons.size) == ("neurons", 64)
    assert [(s.module, s.param, s.dim) for s in neurons.slices] == [
        (block.module.mlp.fc1, "weight", 0), (block.module.mlp.fc1, "bias", 0), (block.module.mlp.fc2, "weight", 1)]


@pytest.mark.parametrize("family", ["vgg", "vgg_nobn"])
def test_vgg_channels_couple_norm_and_next_conv(family):
    loaded = tiny(family)
    features = loaded.model.features
    blocks = loaded.adapter.blocks(loaded.model)
    convs = [m for m in features if isinstance(m, nn.Conv2d)]
    for i, block in enumerate(blocks[:-1]):
        (group,) = block.groups
        assert group.kind == "channels" and group.size == convs[i].out_channels
        consumer = convs[i + 1] if i + 1 < len(convs) else loaded.model.pre_logits.fc1
        modules = {(type(s.module).__name__, s.param, s.dim) for s in group.slices}
        expected = {("Conv2d", "weight", 0), ("Conv2d", "bias", 0)}
        if family == "vgg":
            expected |= {("BatchNorm2d", p, 0) for p in ("weight", "bias")}
        assert modules == expected | {("Conv2d", "weight", 1)}
        assert [s.module for s in group.slices if s.dim == 1] == [consumer]
    head = blocks[-1]
    assert [g.name for g in head.groups] == ["pre_logits.fc1.channels", "pre_logits.fc2.channels"]
    assert head.groups[1].slices[-1].module is loaded.model.head.fc


@pytest.mark.parametrize("family", ["resnet", "bottleneck"])
def test_resnet_only_inner_channels_are_free(family):
    loaded = tiny(family)
    blocks = loaded.adapter.blocks(loaded.model)
    assert blocks[0].groups == () and blocks[-1].groups == ()
    for block in blocks[1:-1]:
        res = block.module
        producers = [g.meta["producer"] for g in block.groups]
        inner = ["conv1", "conv2"] if family == "bottleneck" else ["conv1"]
        assert producers == [f"{block.name}.{c}" for c in inner]
        # residual width: the last conv's output, the downsample and the stem are in no group
        touched = {id(s.module) for g in block.groups for s in g.slices}
        last = res.conv3 if family == "bottleneck" else res.conv2
        assert all(s.dim == 1 for g in block.groups for s in g.slices if s.module is last)
        if res.downsample is not None:
            assert not touched & {id(m) for m in res.downsample.modules()}


def test_unsupported_model_is_refused():
    model = nn.Sequential(nn.Linear(4, 4))
    for cls in ADAPTERS.values():
        adapter = cls()
        assert not adapter.supports(model)
        with pytest.raises(SecateursError, match="does not support Sequential"):
            adapter.blocks(model)


def test_bad_batch_is_refused():
    loaded = tiny("resnet")
    with pytest.raises(SecateursError, match=r"\[B, C, H, W\]"):
        loaded.adapter.forward(loaded.model, "not an image")
    with pytest.raises(SecateursError, match=r"\[B, C, H, W\]"):
        loaded.adapter.forward(loaded.model, torch.zeros(3, 16, 16))
