"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist``, and image preprocessing.

The package's idx files are used where the package is installed; otherwise the ``.deb``
is fetched with ``apt-get download`` (no root install), unpacked with ``dpkg -x`` and
cached under ``$SECATEURS_CACHE/fashion-mnist``.
"""

from __future__ import annotations

import functools
import gzip
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from secateurs.assets import cached
from secateurs.errors import SecateursError

PACKAGE = "dataset-fashion-mnist"
INSTALLED = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MEAN, STD = 0.2860, 0.3530


def data_dir() -> Path:
    """The folder holding the four idx ``.gz`` files (fetched and cached on first use)."""
    names = [n for pair in FILES.values() for n in pair]
    if all((INSTALLED / n).is_file() for n in names):
        return INSTALLED
    return cached("fashion-mnist", _fetch)


def _fetch(out: Path) -> None:
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise SecateursError(
            f"Fashion-MNIST comes from the Debian package {PACKAGE!r}, but apt-get/dpkg are not "
            f"available here; install that package some other way so its files are in {INSTALLED}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        deb = _apt_download(Path(tmp))
        unpacked = Path(tmp) / "root"
        _run(["dpkg", "-x", str(deb), str(unpacked)], "unpack")
        source = unpacked / INSTALLED.relative_to("/")
        out.mkdir(parents=True)
        for pair in FILES.values():
            for name in pair:
                shutil.copyfile(source / name, out / name)


def _apt_download(folder: Path) -> Path:
    cmd = ["apt-get", "download", PACKAGE]
    if subprocess.run(cmd, cwd=folder, capture_output=True, text=True).returncode != 0:
        _run(["apt-get", "update"], "refresh the package lists (apt-get update)")
        _run(cmd, f"download {PACKAGE}", cwd=folder)
    debs = sorted(folder.glob(f"{PACKAGE}_*.deb"))
    if not debs:
        raise SecateursError(f"apt-get download {PACKAGE} produced no .deb file")
    return debs[0]


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SecateursError(
            f"could not {what} for Fashion-MNIST ({' '.join(cmd)} exited {proc.returncode}): "
            f"{proc.stderr.strip()[-600:]}"
        )


def _idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        return np.frombuffer(fh.read(), dtype=np.uint8, offset=offset)


@functools.lru_cache(maxsize=2)
def load_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images uint8 [N, 28, 28], labels int64 [N])`` of ``"train"`` (60k) or ``"test"`` (10k)."""
    if split not in FILES:
        raise SecateursError(f"unknown Fashion-MNIST split {split!r}; use 'train' or 'test'")
    folder = data_dir()
    images_name, labels_name = FILES[split]
    images = _idx(folder / images_name, 16).reshape(-1, 28, 28)
    labels = _idx(folder / labels_name, 8).astype(np.int64)
    if len(images) != len(labels):
        raise SecateursError(f"Fashion-MNIST {split}: {len(images)} images but {len(labels)} labels")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels)


def subset(split: str, count: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` samples of ``split`` drawn without replacement with ``seed`` (all if None)."""
    images, labels = load_split(split)
    if count is None or count >= len(images):
        return images, labels
    if count <= 0:
        raise SecateursError(f"sample count must be positive, got {count}")
    idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:count]
    return images[idx], labels[idx]


def preprocess(images: torch.Tensor, input_size: tuple[int, int, int]) -> torch.Tensor:
    """uint8 ``[N, H0, W0]`` images → normalised float ``[N, C, H, W]`` for ``input_size``
    ``(C, H, W)``: bilinear resize, grey replicated over ``C`` channels."""
    channels, height, width = input_size
    x = (images.float().div(255.0) - MEAN) / STD
    x = x.unsqueeze(1)
    if tuple(x.shape[-2:]) != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return x.expand(-1, channels, -1, -1).contiguous()
