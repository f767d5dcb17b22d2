"""``secateurs ken-viz``: run KEN on two models and render KEN_viz."""

from __future__ import annotations

from pathlib import Path

import click
import torch
from safetensors.torch import load_file

from secateurs_ken.api import ken_state
from secateurs_ken.viz import ken_viz


def _state(source: str) -> dict[str, torch.Tensor]:
    path = Path(source).expanduser()
    if path.suffix == ".safetensors" and path.is_file():
        return load_file(str(path))
    from secateurs.loading import load

    return {k: v.detach() for k, v in load(source, device="cpu").model.state_dict().items()}


def add_command(cli: click.Group) -> None:
    @cli.command("ken-viz")
    @click.argument("pretrained")
    @click.argument("finetuned")
    @click.option("--matrix", required=True, help="Tensor name suffix, e.g. attention.self.query.weight")
    @click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder")
    @click.option("--k", type=int, default=None, help="Entries kept per row")
    @click.option("--fraction", type=float, default=None, help="Fraction of each row kept")
    @click.option("--reduction", type=float, default=None, help="Target parameter reduction (0-1)")
    @click.option("--layer", type=int, default=0, show_default=True, help="Layer of the single-matrix views")
    @click.option("--max-pixels", type=int, default=256, show_default=True, help="Downsample above this size")
    def ken_viz_command(pretrained, finetuned, matrix, out_dir, k, fraction, reduction, layer, max_pixels):
        """Run KEN on PRETRAINED and FINETUNED (model folders, packaged model names or
        .safetensors state files) and render KEN_viz for one matrix across all layers."""
        ft = _state(finetuned)
        _, masks = ken_state(_state(pretrained), ft, k=k, fraction=fraction, reduction=reduction,
                             targets=("*" + matrix,))
        paths = ken_viz(masks, matrix, out_dir, values=ft, layer=layer, max_pixels=max_pixels)
        click.echo(f"wrote {paths['html']}")
