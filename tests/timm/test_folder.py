"""The image-folder calibration source and accuracy evaluator: both layouts give the same
labels, draws are balanced per class, preprocessing follows the model (timm transform, or
explicit size/mean/std), a folder with more classes than the head is refused, and LRP
draws its per-class reference set from it."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from secateurs.errors import SecateursError
from secateurs.pipeline import PruneSpec, prune_model
from secateurs.plugins import get_manager
from secateurs_timm.folder import ImageFolder, ImageFolderAccuracy, ImageFolderCalibration, per_class_order
from secateurs_timm.train import top1

from timm_models import tiny
from tv_models import tv_tiny

CLASSES = ("apple", "banana", "cherry")
PER_CLASS = 4


def _image(c: int, i: int) -> Image.Image:
    g = torch.Generator().manual_seed(10 * c + i)
    pixels = (torch.rand(20 + i, 24, 3, generator=g) * 80 + 60 * c).clamp(0, 255).to(torch.uint8)
    return Image.fromarray(pixels.numpy())


@pytest.fixture
def folders(tmp_path):
    """The same 12 images as ``root/<class>/`` folders and as a flat folder with a CSV and a TSV."""
    by_class, flat = tmp_path / "by_class", tmp_path / "flat"
    flat.mkdir()
    csv_rows, tsv_rows = ["filename,label"], []
    for c, name in enumerate(CLASSES):
        (by_class / name).mkdir(parents=True)
        for i in range(PER_CLASS):
            ext = ".png" if i % 2 else ".jpg"
            _image(c, i).save(by_class / name / f"{i}{ext}")
            _image(c, i).save(flat / f"{name}{i}{ext}")
            csv_rows.append(f"{name}{i}{ext},{name}")
            tsv_rows.append(f"{name}{i}{ext}\t{c}")
    (flat / "labels.csv").write_text("\n".join(csv_rows) + "\n")
    (flat / "labels.tsv").write_text("\n".join(tsv_rows) + "\n")
    return by_class, flat


def test_both_layouts_give_the_same_labels(folders):
    by_class, flat = folders
    _, labels, names = ImageFolder(str(by_class)).samples()
    assert names == list(CLASSES) and labels.tolist() == [c for c in range(3) for _ in range(PER_CLASS)]
    for table in ("labels.csv", "labels.tsv"):
        _, flat_labels, _ = ImageFolder(str(flat), table).samples()
        assert sorted(flat_labels.tolist()) == labels.tolist()


def test_draws_are_balanced_per_class():
    labels = torch.tensor([0] * 5 + [1] * 2 + [2] * 4)
    order = per_class_order(labels, seed=3)
    assert sorted(order.tolist()) == list(range(len(labels)))
    assert sorted(labels[order[:6]].tolist()) == [0, 0, 1, 1, 2, 2]


def test_calibration_uses_explicit_size_for_torchvision(folders):
    loaded = tv_tiny("tv_resnet18")
    source = get_manager().calibration_sources.create("image-folder", root=str(folders[0]), nsamples=6,
                                                      batch_size=4, size=32, mean=[0.5, 0.5, 0.5], std=[0.2, 0.2, 0.2])
    batches = source.batches(loaded)
    assert [tuple(x.shape) for x, _ in batches] == [(4, 3, 32, 32), (2, 3, 32, 32)]
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == [0, 0, 1, 1, 2, 2]


def test_timm_models_get_their_own_transform_at_their_input_size(folders):
    loaded = tiny("vit")  # timm ViT on 1 x 16 x 16 images
    x, y = ImageFolderCalibration(str(folders[0])).batches(loaded)[0]
    assert tuple(x.shape) == (12, 1, 16, 16) and len(y) == 12


def test_more_classes_than_the_head_is_refused(folders, tmp_path):
    for extra in ("date", "elder", "fig"):
        (folders[0] / extra).mkdir()
        _image(0, 0).save(folders[0] / extra / "0.png")
    with pytest.raises(SecateursError, match="6 classes but the model's head predicts 5"):
        ImageFolderCalibration(str(folders[0])).batches(tv_tiny("tv_resnet18"))


def test_bad_folders_are_reported(tmp_path, folders):
    with pytest.raises(SecateursError, match="does not exist"):
        ImageFolder(str(tmp_path / "missing")).samples()
    with pytest.raises(SecateursError, match="no class folders"):
        ImageFolder(str(folders[1])).samples()
    (folders[1] / "bad.csv").write_text("nothere.png,apple\n")
    with pytest.raises(SecateursError, match="row 1: no image"):
        ImageFolder(str(folders[1]), "bad.csv").samples()
    with pytest.raises(ValueError, match="mean"):
        ImageFolderCalibration(str(folders[0]), mean=[1.0, 2.0])


def test_accuracy_is_top1_over_the_folder(folders):
    loaded = tv_tiny("tv_vit")
    evaluator = get_manager().evaluators.create("image-folder-accuracy", root=str(folders[0]), batch_size=5)
    value = evaluator.evaluate(loaded)["accuracy"]
    batches = ImageFolderCalibration(str(folders[0])).batches(loaded)
    assert value == pytest.approx(top1(loaded.model, batches)) and 0.0 <= value <= 1.0
    assert ImageFolderAccuracy(str(folders[1]), "labels.csv").evaluate(loaded)["accuracy"] == pytest.approx(value)


@pytest.mark.parametrize("family", ["tv_resnet18", "tv_vit"])
def test_lrp_prunes_with_a_reference_set_from_the_folder(folders, family):
    manager = get_manager()
    loaded = tv_tiny(family)
    source = manager.calibration_sources.create("image-folder", root=str(folders[0]), nsamples=6,
                                                size=loaded.model.image_size if family == "tv_vit" else 32)
    spec = PruneSpec(
        scorer=manager.scorers.create("lrp", samples_per_class=2),
        allocator=manager.allocators.create("uniform"),
        applier=manager.appliers.create("remove"),
        sparsity=0.5,
        granularity="channels" if family == "tv_resnet18" else "heads",
        calibration=source.batches(loaded),
        progress=False,
    )
    before = sum(p.numel() for p in loaded.model.parameters())
    prune_model(loaded, spec)
    assert sum(p.numel() for p in loaded.model.parameters()) < before


PHOTOS = {"cat": ("chelsea", "cat"), "coffee": ("coffee",), "astronaut": ("astronaut",), "rocket": ("rocket",),
          "tissue": ("immunohistochemistry",)}


@pytest.mark.real
def test_lrp_on_an_imagenet_class_torchvision_resnet_with_skimage_photos(tmp_path):
    """The photos scikit-image ships as a 5-class ImageNet-style folder; a 1000-class
    torchvision ResNet-18 (random weights) is LRP-pruned from it and evaluated on it."""
    data = pytest.importorskip("skimage.data")
    torchvision = pytest.importorskip("torchvision")
    for label, names in PHOTOS.items():
        (tmp_path / label).mkdir()
        for name in names:
            Image.fromarray(getattr(data, name)()).save(tmp_path / label / f"{name}.png")
    from secateurs.loading import wrap

    torch.manual_seed(0)
    loaded = wrap(torchvision.models.resnet18().eval())
    manager = get_manager()
    source = manager.calibration_sources.create("image-folder", root=str(tmp_path), size=96)
    batches = source.batches(loaded)
    assert sum(len(y) for _, y in batches) == 6 and tuple(batches[0][0].shape[1:]) == (3, 96, 96)
    spec = PruneSpec(
        scorer=manager.scorers.create("lrp", samples_per_class=1),
        allocator=manager.allocators.create("uniform"),
        applier=manager.appliers.create("remove"),
        sparsity=0.25,
        granularity="channels",
        calibration=batches,
        progress=False,
    )
    result = prune_model(loaded, spec)
    assert result.params_pruned > 0
    accuracy = manager.evaluators.create("image-folder-accuracy", root=str(tmp_path), size=96).evaluate(loaded)
    assert 0.0 <= accuracy["accuracy"] <= 1.0


def test_the_torchvision_lrp_recipe_builds_its_parts():
    from pathlib import Path

    from secateurs.recipe import load_recipe

    recipe = load_recipe(Path(__file__).parents[2] / "recipes" / "torchvision-resnet18-lrp-folder.toml")
    manager = get_manager()
    assert isinstance(manager.calibration_sources.create(recipe.calibration.name, **recipe.calibration.params),
                      ImageFolderCalibration)
    assert isinstance(manager.evaluators.create(recipe.evaluate.name, **recipe.evaluate.params), ImageFolderAccuracy)
    assert manager.scorers.create(recipe.scorer.name, **recipe.scorer.params).samples_per_class == 4
