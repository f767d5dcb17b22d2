"""KEN_viz: which entries KEN kept, for one matrix name across all layers.

Views (PNG each, plus one self-contained HTML with the PNGs base64-embedded):
``matrix``: the kept fine-tuned values of one layer's matrix, blank where restored;
``neighbours``: for each kept entry, how many of its 4 neighbours are kept (0-4), blank
where restored; ``layers``: the matrix view for every layer; ``kept``: a bar chart of the
fraction kept per layer. Matrices larger than ``max_pixels`` on a side are shown in
``f x f`` blocks (the titles state ``f``): the matrix view then shows the fraction kept per
block and the neighbour view the mean neighbour count of the kept entries in the block.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from secateurs.errors import SecateursError  # noqa: E402
from secateurs.outputs import atomic_file  # noqa: E402
from secateurs_ken.states import as_rows  # noqa: E402

VIEWS = ("matrix", "neighbours", "layers", "kept")


def neighbour_counts(mask: torch.Tensor) -> torch.Tensor:
    """For a 2-D keep-mask: number of kept 4-neighbours of every entry (0-4; borders have
    fewer neighbours), as int64 of the mask's shape (any shape, not only square)."""
    m = F.pad(mask.to(torch.int64), (1, 1, 1, 1))
    return m[:-2, 1:-1] + m[2:, 1:-1] + m[1:-1, :-2] + m[1:-1, 2:]


def layer_names(names: list[str], matrix: str) -> list[str]:
    """Names ending with ``matrix`` (e.g. ``attention.self.query.weight``), in layer order."""
    hits = [n for n in names if n == matrix or n.endswith("." + matrix)]
    if not hits:
        raise SecateursError(f"no tensor named like {matrix!r}; examples: {', '.join(sorted(names)[:5])}")
    return sorted(hits, key=lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)])


def _factor(shape: tuple[int, int], max_pixels: int) -> int:
    return max(1, math.ceil(max(shape) / max_pixels))


def _pool(t: torch.Tensor, f: int) -> torch.Tensor:
    """Mean over ``f x f`` blocks (partial blocks at the edges averaged over what exists)."""
    if f == 1:
        return t
    x = t.to(torch.float64)[None, None]
    ones = torch.ones_like(x)
    total = F.avg_pool2d(x, f, ceil_mode=True, divisor_override=1)
    count = F.avg_pool2d(ones, f, ceil_mode=True, divisor_override=1)
    return (total / count)[0, 0]


def matrix_image(mask: torch.Tensor, values: torch.Tensor | None, max_pixels: int) -> tuple[torch.Tensor, int]:
    """What the matrix view draws (NaN = blank) and the block factor."""
    mask2 = as_rows(mask).cpu()
    f = _factor(tuple(mask2.shape), max_pixels)
    if f > 1:
        frac = _pool(mask2, f)
        return frac.masked_fill(frac == 0, math.nan), f
    vals = mask2.to(torch.float64) if values is None else as_rows(values).detach().cpu().to(torch.float64)
    return vals.masked_fill(~mask2, math.nan), 1


def neighbour_image(mask: torch.Tensor, max_pixels: int) -> tuple[torch.Tensor, int]:
    mask2 = as_rows(mask).cpu()
    counts = neighbour_counts(mask2).to(torch.float64)
    f = _factor(tuple(mask2.shape), max_pixels)
    if f > 1:
        kept = _pool(mask2, f)
        mean = _pool(counts * mask2, f) / kept.clamp(min=1e-12)
        return mean.masked_fill(kept == 0, math.nan), f
    return counts.masked_fill(~mask2, math.nan), 1


def _scale_note(f: int) -> str:
    return "full resolution" if f == 1 else f"downsampled: 1 pixel = {f}x{f} entries"


def _save(fig, path: Path) -> None:
    try:
        with atomic_file(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)


def ken_viz(
    masks: Mapping[str, torch.Tensor],
    matrix: str,
    out_dir: str | Path,
    *,
    values: Mapping[str, torch.Tensor] | None = None,
    layer: int = 0,
    max_pixels: int = 256,
) -> dict[str, Path]:
    """Render the four views for ``matrix`` (a name suffix, matched in every layer) from
    keep ``masks`` (name → bool tensor) and optional kept ``values`` (the fine-tuned
    tensors). ``layer`` picks the layer of the single-matrix views. Returns view → path,
    plus ``"html"``."""
    names = layer_names(list(masks), matrix)
    if not 0 <= layer < len(names):
        raise SecateursError(f"layer {layer} out of range: {matrix!r} exists in {len(names)} layers")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {v: out / f"ken_viz_{v}.png" for v in VIEWS}
    chosen = names[layer]
    val = None if values is None else values.get(chosen)

    img, f = matrix_image(masks[chosen], val, max_pixels)
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(img.numpy(), cmap="coolwarm" if f == 1 and val is not None else "viridis", aspect="auto", interpolation="nearest")
    fig.colorbar(im, ax=ax, label="kept fine-tuned value" if f == 1 and val is not None else "fraction kept")
    ax.set_title(f"{chosen}\nkept entries (blank = restored), {_scale_note(f)}", fontsize=9)
    _save(fig, paths["matrix"])

    img, f = neighbour_image(masks[chosen], max_pixels)
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(img.numpy(), cmap="magma", vmin=0, vmax=4, aspect="auto", interpolation="nearest")
    fig.colorbar(im, ax=ax, label="kept 4-neighbours of a kept entry")
    ax.set_title(f"{chosen}\nneighbour count (0-4), {_scale_note(f)}", fontsize=9)
    _save(fig, paths["neighbours"])

    cols = math.ceil(math.sqrt(len(names)))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, name in zip(axes.flat, names, strict=False):
        img, f = matrix_image(masks[name], None, max_pixels)
        ax.imshow(img.numpy(), cmap="viridis", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        ax.set_title(f"{name}\n{_scale_note(f)}", fontsize=6)
    fig.suptitle(f"{matrix}: kept entries in every layer", fontsize=10)
    fig.tight_layout()
    _save(fig, paths["layers"])

    fractions = [float(masks[n].to(torch.float64).mean()) for n in names]
    fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(names) + 2), 4))
    ax.bar(range(len(names)), fractions, color="tab:blue")
    ax.set_xticks(range(len(names)), [str(i) for i in range(len(names))])
    ax.set_xlabel("layer")
    ax.set_ylabel("fraction of entries kept")
    ax.set_ylim(0, 1)
    ax.set_title(f"{matrix}: fraction kept per layer", fontsize=10)
    fig.tight_layout()
    _save(fig, paths["kept"])

    paths["html"] = _write_html(out / "ken_viz.html", matrix, {v: paths[v] for v in VIEWS})
    return paths


def _write_html(path: Path, matrix: str, images: Mapping[str, Path]) -> Path:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>KEN_viz {html.escape(matrix)}</title></head><body>",
             f"<h1>KEN_viz: {html.escape(matrix)}</h1>"]
    for view, png in images.items():
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        parts.append(f"<h2>{view}</h2><img alt='{view}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    with atomic_file(path) as tmp:
        tmp.write_text("\n".join(parts))
    return path
