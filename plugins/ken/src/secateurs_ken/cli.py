"""``secateurs ken-viz``: run KEN on two models and render KEN_viz."""

from __future__ import annotations

from pathlib import Path

import click
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from secateurs.cli import OVERWRITE_HELP
from secateurs.errors import SecateursError
from secateurs.outputs import atomic_output_dir, check_output
from secateurs_ken.api import ken_state
from secateurs_ken.viz import ken_viz


def _state(source: str) -> dict[str, torch.Tensor]:
    path = Path(source).expanduser()
    if path.suffix == ".safetensors" and path.is_file():
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise SecateursError(f"cannot read {path} ({exc}): it is truncated or corrupt; copy it again") from None
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
    @click.option("--overwrite", is_flag=True, help=OVERWRITE_HELP)
    def ken_viz_command(pretrained, finetuned, matrix, out_dir, k, fraction, reduction, layer, max_pixels, overwrite):
        """Run KEN on PRETRAINED and FINETUNED (model folders, packaged model names or
        .safetensors state files) and render KEN_viz for one matrix across all layers."""
        reads = [(what, p) for what, p in (("pretrained model", pretrained), ("fine-tuned model", finetuned))
                 if Path(p).expanduser().exists()]
        final = check_output(out_dir, reads=reads, overwrite=overwrite)
        ft = _state(finetuned)
        _, masks = ken_state(_state(pretrained), ft, k=k, fraction=fraction, reduction=reduction,
                             targets=("*" + matrix,))
        with atomic_output_dir(final, overwrite=overwrite, reads=reads) as tmp:
            paths = ken_viz(masks, matrix, tmp, values=ft, layer=layer, max_pixels=max_pixels)
        click.echo(f"wrote {final / paths['html'].name}")
