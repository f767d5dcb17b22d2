"""torchvision VGG, ResNet (BasicBlock and Bottleneck) and ViT: the adapter is picked
automatically, blocks chain to the model's forward, every scorer prunes, zero and remove
give the same outputs, and a pruned model saves and reloads as the same torchvision class."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torchvision
from torch import nn

from secateurs.errors import SecateursError
from secateurs.inspection import describe
from secateurs.loading import load
from secateurs.pipeline import PruneSpec, prune_model
from secateurs.testing import propagation_error, quiet_spec
from secateurs_timm.mha import ExplicitMultiheadAttention, make_explicit
from secateurs_timm.storage import DESCRIPTION
from secateurs_timm.tvspec import TorchvisionSpec

from tv_models import ADAPTER, KINDS, SPECS, VIT, tv_images, tv_model, tv_tiny

FAMILIES = sorted(SPECS)
CASES = [(f, k) for f in FAMILIES for k in KINDS[f]]


def _spec(applier: str, sparsity: float, granularity: str = "unstructured", scorer: str = "magnitude",
          calibration=None) -> PruneSpec:
    return quiet_spec(applier, granularity, scorer=scorer, sparsity=sparsity, calibration=calibration)


def _out(loaded, x):
    with torch.no_grad():
        return loaded.model(x)


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_is_found_and_inspect_lists_units_and_groups(family):
    loaded = tv_tiny(family)
    assert loaded.adapter.name == ADAPTER[family]
    report = describe(loaded)
    assert report["adapter"] == ADAPTER[family]
    blocks = loaded.adapter.blocks(loaded.model)
    kinds = {g.kind for b in blocks for g in b.groups}
    assert kinds == set(KINDS[family])
    prunable = {n for n, m in loaded.model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    covered = {u.name for b in blocks for u in b.units}
    if family == "tv_vit":  # patch embedding and classifier head stay outside the blocks
        prunable = {n for n in prunable if n.startswith("encoder.")} | {n.rpartition(".")[0] for n in covered}
        prunable -= {n for n in prunable if n.endswith("self_attention") and n not in covered}
    assert prunable <= covered | {n.rpartition(".")[0] for n in covered}


@pytest.mark.parametrize("family", FAMILIES)
def test_blocks_get_the_models_own_hidden_states(family):
    loaded = tv_tiny(family)
    batches = [tv_images(family, 2, seed=s) for s in range(2)]
    assert propagation_error(loaded, batches) < 1e-5


def test_explicit_attention_matches_pytorch_attention():
    torch.manual_seed(1)
    plain = torchvision.models.VisionTransformer(**VIT, num_classes=5).eval()
    explicit = copy.deepcopy(plain)
    make_explicit(explicit)
    make_explicit(explicit)  # idempotent
    attn = explicit.encoder.layers[0].self_attention
    assert type(attn) is ExplicitMultiheadAttention and isinstance(attn.in_proj, nn.Linear)
    assert attn.in_proj_weight is attn.in_proj.weight
    x = tv_images("tv_vit")
    with torch.no_grad():
        torch.testing.assert_close(explicit(x), plain(x), rtol=1e-5, atol=1e-6)
    renamed = {k.replace("in_proj_", "in_proj."): v for k, v in plain.state_dict().items()}
    assert renamed.keys() == explicit.state_dict().keys()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("scorer", ["magnitude", "random", "wanda"])
def test_every_scorer_prunes_unstructured(family, scorer):
    loaded = tv_tiny(family)
    prune_model(loaded, _spec("zero", 0.5, scorer=scorer, calibration=[tv_images(family, 4)]))
    for unit in (u for b in loaded.adapter.blocks(loaded.model) for u in b.units):
        rows = unit.weight.shape[0]  # row-wise comparison rounds per row
        assert abs(int((unit.weight == 0).sum()) - unit.weight.numel() / 2) <= rows / 2, unit.name


@pytest.mark.parametrize(("family", "kind"), CASES)
@pytest.mark.parametrize("scorer", ["magnitude", "random"])
def test_zero_and_remove_give_the_same_outputs(family, kind, scorer):
    zeroed, removed = tv_tiny(family), tv_tiny(family)
    x, calibration = tv_images(family, seed=1), [tv_images(family, 4)]
    dense = _out(zeroed, x)
    prune_model(zeroed, _spec("zero", 0.5, kind, scorer, calibration))
    prune_model(removed, _spec("remove", 0.5, kind, scorer, calibration))
    assert not torch.allclose(_out(zeroed, x), dense, atol=1e-4)
    torch.testing.assert_close(_out(removed, x), _out(zeroed, x), rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in removed.model.parameters()) < sum(p.numel() for p in zeroed.model.parameters())


@pytest.mark.parametrize(("family", "kind"), CASES)
def test_removed_model_reloads_as_the_same_torchvision_class(family, kind, tmp_path):
    loaded = tv_tiny(family)
    prune_model(loaded, _spec("remove", 0.5, kind, scorer="random"))
    files = loaded.adapter.save(loaded, tmp_path / "saved")
    assert {f.name for f in files} == {"model.safetensors", DESCRIPTION}
    again = load(tmp_path / "saved")
    assert type(again.model) is type(loaded.model) and again.adapter.name == ADAPTER[family]
    assert type(again.model).__module__.startswith("torchvision.models")
    x = tv_images(family, seed=2)
    torch.testing.assert_close(_out(again, x), _out(loaded, x))
    assert again.model.state_dict().keys() == loaded.model.state_dict().keys()


def test_removed_heads_shrink_the_attention():
    loaded = tv_tiny("tv_vit")
    prune_model(loaded, _spec("remove", 0.5, "heads"))
    for block in loaded.model.encoder.layers:
        attn = block.self_attention
        assert (attn.num_heads, attn.head_dim, attn.embed_dim) == (2, 8, 32)
        assert attn.in_proj_weight.shape == (48, 32) and attn.out_proj.in_features == 16


def test_a_description_with_unlisted_keywords_is_refused(tmp_path):
    loaded = tv_tiny("tv_resnet18")
    loaded.adapter.save(loaded, tmp_path)
    data = json.loads((tmp_path / DESCRIPTION).read_text())
    for bad in ({"create_kwargs": {"weights": "IMAGENET1K_V1"}}, {"torchvision_model": "os.system"}):
        (tmp_path / DESCRIPTION).write_text(json.dumps({**data, **bad}))
        with pytest.raises(SecateursError, match="not allowed|unknown torchvision builder"):
            load(tmp_path)


def test_inferred_spec_of_a_user_built_model():
    model = torchvision.models.resnet50(num_classes=3)
    assert tv_tiny("tv_resnet50").adapter.infer_spec(model) == TorchvisionSpec("resnet50", {"num_classes": 3})
    vit = tv_model("tv_vit")
    assert tv_tiny("tv_vit").adapter.infer_spec(vit) == SPECS["tv_vit"][0]
