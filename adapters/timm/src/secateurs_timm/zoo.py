"""Small timm models trained briefly on Fashion-MNIST, cached as saved secateurs-timm models.

``fashion_mnist_model(name)`` returns the folder of a trained checkpoint (training it the
first time: minutes on 2 CPU cores), loadable by the timm adapters.
"""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import torch

from secateurs.assets import cached
from secateurs.errors import SecateursError
from secateurs.protocols import PackagedModel
from secateurs_timm.adapters import adapter_for
from secateurs_timm.narrow import narrow
from secateurs_timm.spec import TimmSpec
from secateurs_timm.storage import save_model
from secateurs_timm.train import TrainConfig, accuracy, train

INPUT = (1, 32, 32)
VERSION = "v1"


@attrs.frozen
class ZooEntry:
    """``width``: fraction of every channel group kept (VGG has no width argument)."""

    spec: TimmSpec
    config: TrainConfig
    description: str
    width: float = 1.0


ZOO: dict[str, ZooEntry] = {
    "vgg": ZooEntry(
        TimmSpec("vgg11_bn", {"num_classes": 10, "in_chans": 1, "mlp_ratio": 0.0625}, (), INPUT),
        TrainConfig(samples=6000, epochs=3, batch_size=64, lr=2e-3, weight_decay=0.05),
        "timm vgg11_bn at quarter width (convs 16-128, pre-logits 64 and 1024) on 32x32 grey Fashion-MNIST",
        width=0.25,
    ),
    "resnet": ZooEntry(
        TimmSpec("resnet18", {"num_classes": 10, "in_chans": 1, "channels": [16, 32, 64, 128]},
                 ("cifar_stem",), INPUT),
        TrainConfig(samples=6000, epochs=2, batch_size=64, lr=2e-3, weight_decay=0.05),
        "timm resnet18 at quarter width (16-128, stem 64) with a CIFAR 3x3 stem, on 32x32 grey Fashion-MNIST",
    ),
    "vit": ZooEntry(
        TimmSpec("vit_tiny_patch16_224",
                 {"num_classes": 10, "in_chans": 1, "img_size": 28, "patch_size": 7, "depth": 6,
                  "mlp_ratio": 2.0},
                 (), (1, 28, 28)),
        TrainConfig(samples=8000, epochs=4, batch_size=64, lr=1e-3, weight_decay=0.05, warmup=0.15),
        "timm ViT (patch 7, dim 192, depth 6, 3 heads, MLP 384) on 28x28 grey Fashion-MNIST",
    ),
}

METRICS = "training.json"


def zoo_names() -> list[str]:
    return sorted(ZOO)


def entry(name: str) -> ZooEntry:
    try:
        return ZOO[name]
    except KeyError:
        raise SecateursError(f"unknown Fashion-MNIST model {name!r}; available: {', '.join(zoo_names())}") from None


def fashion_mnist_model(name: str) -> Path:
    """The cached folder of the trained ``name`` model (``vgg``, ``resnet`` or ``vit``),
    training and evaluating it first if missing. ``training.json`` in it records the
    training settings, time and test accuracy."""
    zoo = entry(name)
    return cached(f"models/fashion-mnist-{name}-{VERSION}", lambda out: _build(zoo, out))


def packaged_model(name: str) -> PackagedModel:
    """``fashion-mnist-NAME`` as a packaged model (what the plugin registers under that name)."""
    return PackagedModel(
        f"fashion-mnist-{name}",
        entry(name).description + " (trained on first use, then cached)",
        lambda: fashion_mnist_model(name),
    )


def _build(zoo: ZooEntry, out: Path) -> None:
    torch.manual_seed(zoo.config.seed)
    model = zoo.spec.create()
    if zoo.width != 1.0:
        groups = [g for b in adapter_for(model).blocks(model) for g in b.groups if g.kind == "channels"]
        narrow(model, groups, zoo.width)
    metrics = train(model, zoo.spec.input_size, zoo.config)
    metrics["test_accuracy"] = accuracy(model, zoo.spec.input_size)
    metrics["params"] = sum(p.numel() for p in model.parameters())
    save_model(model, zoo.spec, out)
    record = {"description": zoo.description, "config": attrs.asdict(zoo.config), **metrics}
    (out / METRICS).write_text(json.dumps(record, indent=2) + "\n")
