"""``secateurs neuroal-plot REPORT``: NeuroAL's search and sparsities from a report.json, as PNG.

Panels: alignment score of every candidate λ (block step, row step; the chosen λ
marked); sparsity per block; and, per block, the spread of per-row sparsity (min, mean,
max over the rows of every unit the row step changed).

The command is declared in the entry-point group ``secateurs.commands``; this module
imports matplotlib only when it draws.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from secateurs.errors import SecateursError
from secateurs.outputs import PNG_METADATA, atomic_file, check_output


def load_records(report: Path) -> dict[str, Any]:
    """``records["neuroal"]`` of a report.json, with a clear error when it has none."""
    try:
        data = json.loads(Path(report).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SecateursError(f"cannot read report {report}: {exc}") from None
    record = (data.get("records") or {}).get("neuroal")
    if record is None:
        raise SecateursError(f"{report} has no neuroal records (was it pruned with allocator = \"neuroal\"?)")
    return record


def _block_index(unit_name: str, n_blocks: int) -> int | None:
    for part in unit_name.split("."):
        if part.isdigit() and int(part) < n_blocks:
            return int(part)
    return None


def plot(record: dict[str, Any], output: Path) -> Path:
    """Draw ``record`` (``records["neuroal"]``) to ``output`` (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    steps = [("block step", record["block_step"]), ("row step", record.get("row_step", {}))]
    for label, step in steps:
        if "grid" not in step:
            continue
        (line,) = axes[0].plot(step["grid"], step["scores"], marker="o", label=f"{label} (λ*={step['lambda']:g})")
        axes[0].scatter([step["lambda"]], [step["scores"][step["index"]]], s=120, facecolors="none", edgecolors=line.get_color())
    axes[0].set(xlabel="λ", ylabel="NeuroAL alignment score (lower is better)", title="candidates")
    axes[0].legend()

    blocks = record["block_sparsity"]
    axes[1].bar(range(len(blocks)), blocks, color="tab:blue")
    axes[1].axhline(record["target"], color="k", linestyle="--", label=f"target {record['target']:g}")
    axes[1].set(xlabel="block", ylabel="sparsity", title="block sparsity", ylim=(0, 1))
    axes[1].legend()

    rows = record.get("row_sparsity") or {}
    per_block: dict[int, list[float]] = {}
    for name, ratios in rows.items():
        index = _block_index(name, len(blocks))
        if index is not None:
            per_block.setdefault(index, []).extend(ratios)
    if per_block:
        xs = sorted(per_block)
        lows = [min(per_block[i]) for i in xs]
        highs = [max(per_block[i]) for i in xs]
        means = [sum(per_block[i]) / len(per_block[i]) for i in xs]
        axes[2].fill_between(xs, lows, highs, alpha=0.3, label="min–max over rows")
        axes[2].plot(xs, means, marker=".", label="mean")
        axes[2].legend()
    else:
        reason = record.get("row_step", {}).get("skipped", "uniform rows")
        axes[2].text(0.5, 0.5, f"no per-row sparsity\n({reason})", ha="center", va="center", wrap=True, transform=axes[2].transAxes)
    axes[2].set(xlabel="block", ylabel="row sparsity", title="per-row sparsity (changed units)", ylim=(0, 1))
    axes[2].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()

    output = Path(output)
    try:
        with atomic_file(output, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=110, metadata=PNG_METADATA)
    finally:
        plt.close(fig)
    return output


EXAMPLE = """\b
Example:
  secateurs neuroal-plot out/smollm2-neuroal -o neuroal.png
"""


@click.command("neuroal-plot", epilog=EXAMPLE)
@click.argument("report", type=click.Path(exists=True, dir_okay=True))
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="PNG to write (default: neuroal.png next to the report).")
@click.option("--overwrite", is_flag=True, help="Replace a PNG an earlier secateurs run wrote (never any other file).")
def neuroal_plot(report: str, output: str | None, overwrite: bool) -> None:
    """Plot NeuroAL's λ search and sparsities from REPORT (report.json or its directory)."""
    path = Path(report)
    if path.is_dir():
        path = path / "report.json"
    target = check_output(output or path.with_name("neuroal.png"), reads=[("report", path)], overwrite=overwrite,
                          kind="file")
    click.echo(f"wrote {plot(load_records(path), target)}")
