"""Saving, loading, adapter lookup and calibration through the timm adapters."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from secateurs.errors import SecateursError
from secateurs.loading import find_adapter, load
from secateurs.pipeline import PruneSpec, prune_model
from secateurs.plugins import get_manager
from secateurs_timm.adapters import ADAPTERS
from secateurs_timm.storage import DESCRIPTION

from timm_models import FAMILY, SPECS, images, tiny


@pytest.mark.parametrize("family", sorted(FAMILY))
def test_save_then_load_gives_the_same_outputs(family, tmp_path):
    loaded = tiny(family)
    loaded.adapter.save(loaded, tmp_path)
    description = json.loads((tmp_path / DESCRIPTION).read_text())
    assert description["timm_model"] == SPECS[family][0].name
    classifier = {"vit": "head.weight", "vgg": "head.fc.weight", "resnet": "fc.weight"}[FAMILY[family]]
    assert description["shapes"][classifier][0] == 5
    again = load(tmp_path)  # through the registry: the right adapter claims the folder
    assert again.adapter.name == FAMILY[family]
    x = images(family)
    with torch.no_grad():
        torch.testing.assert_close(again.model(x), loaded.model(x))


def test_other_adapters_do_not_claim_a_saved_model(tmp_path):
    loaded = tiny("vit")
    loaded.adapter.save(loaded, tmp_path)
    assert ADAPTERS["vgg"]().load(tmp_path) is None
    assert ADAPTERS["resnet"]().load(tmp_path) is None
    assert ADAPTERS["vit"]().load(tmp_path / "missing") is None


def test_corrupt_description_is_reported(tmp_path):
    loaded = tiny("resnet")
    loaded.adapter.save(loaded, tmp_path)
    data = json.loads((tmp_path / DESCRIPTION).read_text())
    data["shapes"]["fc.weight"] = [7, 3]
    data["shapes"].pop("fc.bias")
    (tmp_path / DESCRIPTION).write_text(json.dumps(data))
    with pytest.raises(SecateursError, match="missing in the rebuilt model"):
        ADAPTERS["resnet"]().load(tmp_path)


def test_unknown_model_is_left_to_the_generic_adapter():
    """No timm or torchvision adapter claims a model of another architecture."""
    adapter = find_adapter(nn.Sequential(nn.Conv2d(1, 2, 3)))
    assert adapter.name not in ADAPTERS and getattr(adapter, "generic", False)


@pytest.mark.parametrize("family", ["vgg", "resnet", "vit"])
def test_calibrated_scorer_captures_through_the_blocks(family):
    """Wanda needs block inputs: block 0 is captured from the adapter's forward (VGG and
    ResNet blocks are views over the model's modules) and statistics reach every unit."""
    loaded = tiny(family)
    manager = get_manager()
    batches = [(images(family, n=4, seed=s), None) for s in range(2)]
    spec = PruneSpec(manager.scorers.create("wanda"), manager.allocators.create("uniform"),
                     manager.appliers.create("zero"), 0.5, calibration=batches, progress=False)
    result = prune_model(loaded, spec)
    # wanda compares within rows: each row prunes floor(width / 2) of its entries
    rows = {u.name: u for b in loaded.adapter.blocks(loaded.model) for u in b.units}
    assert result.units and all(
        u.pruned == rows[u.name].rows * (rows[u.name].row_width // 2) for u in result.units)


def test_model_built_outside_secateurs_saves_with_an_inferred_spec(tmp_path):
    import timm

    from secateurs.protocols import LoadedModel
    from secateurs_timm.timm_adapters import ViTAdapter

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=16, patch_size=4, depth=2, embed_dim=32,
                              num_heads=4, num_classes=3, in_chans=1).eval()
    adapter = ViTAdapter()
    adapter.save(LoadedModel(model, adapter, "python"), tmp_path)
    again = adapter.load(tmp_path)
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(again.model(x), model(x))


def test_a_changed_kernel_is_refused(tmp_path):
    loaded = tiny("resnet")
    loaded.extra.clear()  # the CIFAR stem patch is then unknown: the 3x3 stem does not fit resnet18's 7x7
    loaded.adapter.save(loaded, tmp_path)
    with pytest.raises(SecateursError, match="kernels differ"):
        ADAPTERS["resnet"]().load(tmp_path)
