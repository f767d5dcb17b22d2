"""Run by ``test_without_timm.py`` in a fresh interpreter in which timm is not importable:
``sys.modules["timm"] = None`` is what an uninstalled package looks like to
``importlib.util.find_spec`` (``None``) and to ``import timm`` or ``import timm.layers``
(``ModuleNotFoundError``).

``python no_timm.py WORK TIMM_MODEL`` LRP-prunes tiny torchvision ResNet-18 (saved in
WORK, calibrated and evaluated on an image folder, exported and reloaded), VGG-11-BN and
ViT (in memory), tries three ways of asking for a timm model (TIMM_MODEL: a saved one),
and prints a JSON summary on stdout.
"""

from __future__ import annotations

import sys

sys.modules["timm"] = None  # before anything can import it

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from secateurs.errors import SecateursError  # noqa: E402
from secateurs.loading import load  # noqa: E402
from secateurs.plugins import get_manager  # noqa: E402
from secateurs.run import prune  # noqa: E402
from secateurs_timm.base import SPEC_KEY  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from lrp_tiny import CLASSES, TV_SPECS, calibration, tiny  # noqa: E402

LRP = {"name": "lrp", "samples_per_class": 2, "composite": "epsilon"}


def photos(root: Path) -> Path:
    """An ImageFolder of 3 random 40x40 photos for each of the ``CLASSES`` classes."""
    generator = torch.Generator().manual_seed(0)
    for c in range(CLASSES):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(3):
            pixels = torch.randint(0, 256, (40, 40, 3), dtype=torch.uint8, generator=generator)
            Image.fromarray(pixels.numpy()).save(root / f"class{c}" / f"{i}.png")
    return root


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def resnet_from_folders(work: Path) -> dict:
    """The saved ResNet, loaded by name-free detection, pruned by an image-folder recipe."""
    loaded = tiny("tv_resnet18")
    loaded.extra[SPEC_KEY] = TV_SPECS["tv_resnet18"][1]  # 32 x 32 inputs
    loaded.adapter.save(loaded, work / "resnet")
    folder = str(photos(work / "photos"))
    outcome = prune({
        "model": str(work / "resnet"), "output": str(work / "pruned"), "sparsity": 0.25, "granularity": "channels",
        "calibration": {"name": "image-folder", "root": folder}, "scorer": LRP, "applier": "remove",
        "evaluate": {"name": "image-folder-accuracy", "root": folder},
    }, progress=False)
    again = load(work / "pruned")
    return {"adapter": outcome.loaded.adapter.name, "dense": params(loaded.model),
            "pruned": params(outcome.loaded.model), "reloaded": params(again.model),
            "reloaded_adapter": again.adapter.name, "accuracy": outcome.after["accuracy"]}


def in_memory(name: str, granularity: str) -> dict:
    loaded = tiny(name)
    dense = params(loaded.model)
    outcome = prune({"sparsity": 0.5, "granularity": granularity, "scorer": LRP, "applier": "remove"},
                    model=loaded, calibration=calibration(name), progress=False)
    return {"adapter": outcome.loaded.adapter.name, "dense": dense, "pruned": params(outcome.loaded.model)}


def refusal(recipe: dict) -> str:
    try:
        prune({"sparsity": 0.5, "scorer": "magnitude", **recipe}, progress=False)
    except SecateursError as exc:
        return str(exc)
    return "(not refused)"


def main(work: Path, timm_model: Path) -> dict:
    manager = get_manager()
    return {
        "warnings": manager.warnings(),
        "adapters": manager.adapters.names(),
        "runs": {
            "tv_resnet18": resnet_from_folders(work),
            "tv_vgg": in_memory("tv_vgg", "channels"),
            "tv_vit": in_memory("tv_vit", "heads"),
        },
        "refusals": {
            "adapter": refusal({"model": str(work / "resnet"), "adapter": "resnet"}),
            "packaged": refusal({"model": "fashion-mnist-vgg"}),
            "saved": refusal({"model": str(timm_model)}),
        },
        "timm_modules": sorted(m for m, v in sys.modules.items() if m.split(".")[0] == "timm" and v is not None),
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2]))))
