"""Images a user has, as a calibration source (``image-folder``) and an accuracy evaluator
(``image-folder-accuracy``).

Two layouts: torchvision's ``ImageFolder`` (``root/<class>/<image>``; classes are the
sorted folder names, indices 0, 1, ...), or a flat folder with a labels file (CSV or TSV
rows ``filename,label``, an optional header; labels are class indices, or class names
then indexed in sorted order). Images are preprocessed as the model expects: timm models
with timm's own eval transform (``resolve_data_config`` / ``create_transform``) at the
model's input size; other models (torchvision: no timm needed) resize the short side to
``size / 0.875``, centre-crop ``size`` (the spec's input size by default) and normalise
with ``mean`` / ``std`` (ImageNet's by default), as torchvision's weights transforms do.
Giving ``size``, ``mean`` or ``std`` uses that recipe for timm models too.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from PIL import Image
from torchvision import transforms

from secateurs.errors import SecateursError
from secateurs.protocols import LoadedModel
from secateurs.validators import optional, positive_int
from secateurs_timm.base import spec_of
from secateurs_timm.optional import require_timm
from secateurs_timm.shapes import head_classes
from secateurs_timm.train import top1

EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP = 0.875


def _triple(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and not (
        isinstance(value, Sequence) and len(value) in (1, 3) and all(isinstance(v, int | float) for v in value)
    ):
        raise ValueError(f"{attribute.name} must be a list of 1 or 3 numbers, got {value!r}")


@attrs.frozen
class ImageFolder:
    """The images under ``root`` with their labels: ``ImageFolder`` layout, or ``labels``
    (a CSV/TSV file, relative to ``root`` or absolute) for a flat folder."""

    root: str
    labels: str | None = None

    def samples(self) -> tuple[list[Path], torch.Tensor, list[str]]:
        """``(paths, labels [N] int64, class names)``; class ``i`` is ``names[i]``."""
        root = Path(self.root).expanduser()
        if not root.is_dir():
            raise SecateursError(f"image folder {root} does not exist or is not a folder")
        paths, labels, names = self._listed(root) if self.labels is not None else self._by_folder(root)
        if not paths:
            raise SecateursError(f"image folder {root} holds no images ({', '.join(sorted(EXTENSIONS))})")
        return paths, torch.tensor(labels, dtype=torch.int64), names

    @staticmethod
    def _by_folder(root: Path) -> tuple[list[Path], list[int], list[str]]:
        folders = sorted(p for p in root.iterdir() if p.is_dir())
        if not folders:
            raise SecateursError(
                f"image folder {root} has no class folders; use one folder per class "
                "(root/<class>/<image>) or give `labels`, a CSV/TSV file of filename,label rows"
            )
        pairs = [(p, i) for i, f in enumerate(folders) for p in sorted(f.rglob("*")) if p.suffix.lower() in EXTENSIONS]
        return [p for p, _ in pairs], [i for _, i in pairs], [f.name for f in folders]

    def _listed(self, root: Path) -> tuple[list[Path], list[int], list[str]]:
        table = Path(self.labels).expanduser()
        table = table if table.is_absolute() else root / table
        try:
            lines = table.read_text().splitlines()
        except OSError as exc:
            raise SecateursError(f"cannot read the labels file {table}: {exc}") from None
        delimiter = "\t" if table.suffix.lower() == ".tsv" or (lines and "\t" in lines[0]) else ","
        rows = [r for r in csv.reader(lines, delimiter=delimiter) if any(c.strip() for c in r)]
        if rows and rows[0][0].strip().lower() in ("filename", "file", "path", "image"):
            rows = rows[1:]
        paths, given = [], []
        for line, row in enumerate(rows, 1):
            if len(row) < 2:
                raise SecateursError(f"{table}, row {line}: expected filename{delimiter}label, got {row!r}")
            path = root / row[0].strip()
            if not path.is_file():
                raise SecateursError(f"{table}, row {line}: no image {path}")
            paths.append(path)
            given.append(row[1].strip())
        if all(g.isdigit() for g in given):  # class indices, kept as given
            labels = [int(g) for g in given]
            return paths, labels, [str(i) for i in range(max(labels, default=-1) + 1)]
        names = sorted(set(given))
        index = {n: i for i, n in enumerate(names)}
        return paths, [index[g] for g in given], names


@attrs.frozen
class Preprocessing:
    """How images become the model's input (see module docstring)."""

    size: int | None = attrs.field(default=None, validator=optional(positive_int))
    mean: tuple[float, ...] | None = attrs.field(default=None, validator=_triple)
    std: tuple[float, ...] | None = attrs.field(default=None, validator=_triple)

    def transform(self, loaded: LoadedModel) -> tuple[Callable[[Image.Image], torch.Tensor], str]:
        """The per-image transform and the PIL mode (``"RGB"`` or ``"L"``) it expects."""
        channels, height, _ = spec_of(loaded).input_size
        mode = "L" if channels == 1 else "RGB"
        explicit = (self.size, self.mean, self.std) != (None, None, None)
        if getattr(loaded.model, "pretrained_cfg", None) and not explicit:
            timmlib = require_timm("timm's eval transform")
            cfg = timmlib.resolve_data_config({}, model=loaded.model)
            cfg["input_size"] = (channels, height, height)
            cfg["mean"], cfg["std"] = _channels(cfg["mean"], channels), _channels(cfg["std"], channels)
            return timmlib.create_transform(**cfg), mode
        size = self.size or height
        mean = _channels(self.mean or IMAGENET_MEAN, channels)
        std = _channels(self.std or IMAGENET_STD, channels)
        return transforms.Compose([
            transforms.Resize(round(size / CROP), antialias=True),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]), mode


def _channels(values: Sequence[float], channels: int) -> tuple[float, ...]:
    """``values`` for ``channels`` channels (a grey model takes the mean of RGB statistics)."""
    values = tuple(float(v) for v in values)
    if len(values) == channels:
        return values
    return (sum(values) / len(values),) * channels


def _read(paths: Sequence[Path], transform: Callable, mode: str) -> torch.Tensor:
    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                images.append(transform(image.convert(mode)))
        except OSError as exc:
            raise SecateursError(f"cannot read image {path}: {exc}") from None
    return torch.stack(images)


def _checked(folder: ImageFolder, loaded: LoadedModel) -> tuple[list[Path], torch.Tensor]:
    """The folder's samples, refused when it has labels the model's head cannot predict."""
    paths, labels, classes = folder.samples()
    head = head_classes(loaded.model)
    if len(classes) > head:
        raise SecateursError(
            f"image folder {folder.root} has {len(classes)} classes but the model's head predicts {head}; "
            f"use a folder of at most {head} classes (or class indices below {head} in the labels file)"
        )
    return paths, labels


def per_class_order(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """Indices of ``labels`` shuffled with ``seed`` within each class, then interleaved
    round-robin over classes: any prefix is as balanced over classes as it can be."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    shuffled = labels[order]
    by_class = torch.argsort(shuffled, stable=True)
    ranked = shuffled[by_class]
    rank = torch.arange(len(labels)) - torch.searchsorted(ranked, ranked)  # position within its class
    interleaved = by_class[torch.argsort(rank * (int(labels.max()) + 1) + ranked, stable=True)]
    return order[interleaved]


def _drawn(folder: ImageFolder, loaded: LoadedModel, count: int | None, seed: int, preprocessing: Preprocessing,
           batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` samples (all when None) drawn per class, read and preprocessed batch by batch."""
    paths, labels = _checked(folder, loaded)
    chosen = per_class_order(labels, seed)[:count]
    transform, mode = preprocessing.transform(loaded)
    for part in chosen.split(batch_size):
        yield _read([paths[i] for i in part.tolist()], transform, mode), labels[part]


@attrs.frozen
class ImageFolderCalibration:
    """``nsamples`` images of an image folder (all when None), drawn per class (seeded,
    round-robin over classes, so an LRP reference set of ``k`` per class is found in the
    first ``k x classes``), in ``(images, labels)`` batches of ``batch_size``."""

    root: str
    labels: str | None = None
    nsamples: int | None = attrs.field(default=None, validator=optional(positive_int))
    batch_size: int = attrs.field(default=32, validator=positive_int)
    seed: int = 0
    size: int | None = attrs.field(default=None, validator=optional(positive_int))
    mean: tuple[float, ...] | None = attrs.field(default=None, validator=_triple)
    std: tuple[float, ...] | None = attrs.field(default=None, validator=_triple)

    def batches(self, loaded: LoadedModel) -> list[tuple[torch.Tensor, torch.Tensor]]:
        preprocessing = Preprocessing(self.size, self.mean, self.std)
        folder = ImageFolder(self.root, self.labels)
        return list(_drawn(folder, loaded, self.nsamples, self.seed, preprocessing, self.batch_size))


@attrs.frozen
class ImageFolderAccuracy:
    """Top-1 accuracy on the images of an image folder (all, or ``samples`` drawn per
    class), read batch by batch."""

    root: str
    labels: str | None = None
    samples: int | None = attrs.field(default=None, validator=optional(positive_int))
    seed: int = 0
    batch_size: int = attrs.field(default=64, validator=positive_int)
    size: int | None = attrs.field(default=None, validator=optional(positive_int))
    mean: tuple[float, ...] | None = attrs.field(default=None, validator=_triple)
    std: tuple[float, ...] | None = attrs.field(default=None, validator=_triple)

    def evaluate(self, loaded: LoadedModel) -> dict[str, float]:
        preprocessing = Preprocessing(self.size, self.mean, self.std)
        folder = ImageFolder(self.root, self.labels)
        batches = _drawn(folder, loaded, self.samples, self.seed, preprocessing, self.batch_size)
        return {"accuracy": top1(loaded.model, batches, loaded.adapter.forward)}
