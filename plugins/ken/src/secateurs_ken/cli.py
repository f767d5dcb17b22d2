"""``secateurs ken-viz``: run KEN on two models and render KEN_viz.

Declared in the entry-point group ``secateurs.commands``; this module imports only click
and light secateurs modules, the work's modules (torch, safetensors, matplotlib) are
imported when the command runs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from secateurs.cli import OVERWRITE_HELP
from secateurs.errors import SecateursError

if TYPE_CHECKING:
    import torch


def _state(source: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(source).expanduser()
    if path.suffix == ".safetensors" and path.is_file():
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise SecateursError(f"cannot read {path} ({exc}): it is truncated or corrupt; copy it again") from None
    from secateurs.loading import load

    return {k: v.detach() for k, v in load(source, device="cpu").model.state_dict().items()}


EXAMPLE = """\b
Example:
  secateurs ken-viz ./bert-base ./bert-finetuned --matrix attention.self.query.weight --k 64 -o viz/
"""


@click.command("ken-viz", epilog=EXAMPLE)
@click.argument("pretrained")
@click.argument("finetuned")
@click.option("--matrix", required=True, help="Tensor name suffix to draw, e.g. attention.self.query.weight.")
@click.option("--output", "-o", "--out", "output", required=True, type=click.Path(file_okay=False),
              help="Folder to write ken_viz.html and the PNG views to (--out is the old spelling).")
@click.option("--k", type=int, default=None, help="Entries kept per row (give one of --k, --fraction, --reduction).")
@click.option("--fraction", type=float, default=None, help="Fraction of each row kept, in (0, 1].")
@click.option("--reduction", type=float, default=None, help="Target parameter reduction over the matched tensors, in (0, 1).")
@click.option("--layer", type=int, default=0, show_default=True, help="Layer of the single-matrix views.")
@click.option("--max-pixels", type=int, default=256, show_default=True,
              help="Matrices larger than this many pixels a side are drawn in blocks.")
@click.option("--overwrite", is_flag=True, help=OVERWRITE_HELP)
def ken_viz_command(pretrained, finetuned, matrix, output, k, fraction, reduction, layer, max_pixels, overwrite):
    """Run KEN on PRETRAINED and FINETUNED (model folders, packaged model names or
    .safetensors state files) and render KEN_viz for one matrix across all layers."""
    from secateurs.outputs import atomic_output_dir, check_output
    from secateurs_ken.api import ken_state
    from secateurs_ken.viz import ken_viz

    reads = [(what, p) for what, p in (("pretrained model", pretrained), ("fine-tuned model", finetuned))
             if Path(p).expanduser().exists()]
    final = check_output(output, reads=reads, overwrite=overwrite)
    ft = _state(finetuned)
    _, masks = ken_state(_state(pretrained), ft, k=k, fraction=fraction, reduction=reduction,
                         targets=("*" + matrix,))
    with atomic_output_dir(final, overwrite=overwrite, reads=reads) as tmp:
        paths = ken_viz(masks, matrix, tmp, values=ft, layer=layer, max_pixels=max_pixels)
    click.echo(f"wrote {final / paths['html'].name}")
