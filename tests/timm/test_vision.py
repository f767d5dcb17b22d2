"""Fashion-MNIST calibration source and accuracy evaluator (real data: fetched from the
Debian package on first use, then cached)."""

from __future__ import annotations

import pytest
import torch

from secateurs.assets import cache_dir
from secateurs.errors import SecateursError
from secateurs.loading import load
from secateurs.plugins import get_manager
from secateurs_timm.data import load_split, preprocess
from secateurs_timm.zoo import VERSION

from timm_models import tiny

pytestmark = pytest.mark.real


def test_fashion_mnist_splits():
    images, labels = load_split("test")
    assert images.shape == (10000, 28, 28) and images.dtype == torch.uint8
    assert torch.bincount(labels).tolist() == [1000] * 10
    with pytest.raises(SecateursError, match="unknown Fashion-MNIST split"):
        load_split("validation")


def test_preprocess_resizes_and_replicates():
    images, _ = load_split("test")
    x = preprocess(images[:5], (3, 32, 32))
    assert x.shape == (5, 3, 32, 32) and torch.equal(x[:, 0], x[:, 2])
    assert abs(float(preprocess(images[:2000], (1, 28, 28)).mean())) < 0.1  # normalised


@pytest.mark.parametrize("family", ["vit", "vgg"])
def test_image_calibration_matches_the_model_input(family):
    loaded = tiny(family)
    source = get_manager().calibration_sources.create("images", nsamples=10, batch_size=4, seed=3)
    batches = source.batches(loaded)
    assert [len(x) for x, _ in batches] == [4, 4, 2]
    spec_size = loaded.extra["timm_spec"].input_size
    assert all(tuple(x.shape[1:]) == spec_size for x, _ in batches)
    again = source.batches(loaded)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))
    with torch.no_grad():
        assert loaded.adapter.forward(loaded.model, batches[0]).shape == (4, 5)


def test_bad_parameters_are_reported():
    manager = get_manager()
    with pytest.raises(SecateursError, match="nsamples must be a positive integer"):
        manager.calibration_sources.create("images", nsamples=0)
    with pytest.raises(SecateursError, match="samples must be a positive integer"):
        manager.evaluators.create("accuracy", samples=-3)
    with pytest.raises(SecateursError, match="scores 10 Fashion-MNIST classes"):
        manager.evaluators.create("accuracy", samples=10).evaluate(tiny("vit"))


@pytest.mark.parametrize("name", ["vgg", "resnet", "vit"])
def test_trained_checkpoint_is_accurate(name):
    """The cached Fashion-MNIST models (built by benchmarks/timm/train_fashion_mnist.py)."""
    if not (cache_dir() / "models" / f"fashion-mnist-{name}-{VERSION}").exists():
        pytest.skip("checkpoint not trained yet: run benchmarks/timm/train_fashion_mnist.py")
    loaded = load(f"fashion-mnist-{name}")
    assert loaded.adapter.name == name
    metrics = get_manager().evaluators.create("accuracy", samples=500).evaluate(loaded)
    assert metrics["accuracy"] > 0.75


def test_wanda_recipe_with_image_calibration_on_the_trained_vit(tmp_path):
    """The whole recipe path on real data: packaged model, `images` calibration, wanda,
    `accuracy` before and after, export, reload."""
    if not (cache_dir() / "models" / f"fashion-mnist-vit-{VERSION}").exists():
        pytest.skip("checkpoint not trained yet: run benchmarks/timm/train_fashion_mnist.py")
    from secateurs.run import prune

    outcome = prune({
        "model": "fashion-mnist-vit", "output": str(tmp_path / "out"), "sparsity": 0.5,
        "scorer": "wanda", "calibration": {"name": "images", "nsamples": 64},
        "evaluate": {"name": "accuracy", "samples": 500},
    }, progress=False)
    assert outcome.before["accuracy"] > 0.75
    assert outcome.after["accuracy"] > 0.6
    assert abs(outcome.result.sparsity - 0.5) < 0.01
    reloaded = load(tmp_path / "out")
    metrics = get_manager().evaluators.create("accuracy", samples=500).evaluate(reloaded)
    assert metrics["accuracy"] == outcome.after["accuracy"]
