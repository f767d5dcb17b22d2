"""The structured defaults (depth and width criteria, the norm-gain rescale) checked on a
second decoder family: the real Gemma 3 270M (``gemma3-270m``: 18 layers, hidden 640,
tied embeddings scaled by sqrt(hidden_size)).

    flock /tmp/heavy.lock .venv/bin/python benchmarks/structured/defaults_gemma3.py [--only PART ...]

Parts (``--only``; all by default, each a few minutes on 2 cores so one invocation per
part stays short):

- ``dense``: the model as shipped;
- ``depth``: ``granularity = "layers"``, applier ``remove``, scorers ``skip-loss`` and
  ``block-influence``, 3 and 6 of the 18 layers removed;
- ``width``: ``granularity = "hidden"``, scorers ``activation`` and ``magnitude``, hidden
  640 → 576 and → 512 (``sparsity = 1 - kept / 640``);
- ``rescale-off``: ``activation`` at 576 and 512 again with the norm-gain rescale of
  ``remove_hidden`` switched off in this script only (``norm_gain_off``), to measure what
  the rescale buys.

``--scorer`` and ``--size`` narrow a part to one scorer and one size (layers removed, or
hidden width kept). Calibration: ``nsamples`` windows of ``seqlen``
tokens of shakespeare-train; perplexity: ``eval-windows`` windows of 512 tokens of
shakespeare-test, of the pruned model in memory; float32. Rows of the parts run replace
the same rows of benchmarks/results/structured_defaults_gemma3.json, the others are kept;
a Markdown table of every row is printed. No recovery training.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from results_io import results_path, write_results

NAME = "structured_defaults_gemma3"
MODEL = "gemma3-270m"
LAYERS = 18
HIDDEN = 640
PARTS: dict[str, tuple[str, tuple[str, ...], tuple[int, ...]]] = {
    # part: (granularity, scorers, sizes: layers removed for depth, hidden kept for width)
    "dense": ("-", ("-",), (0,)),
    "depth": ("layers", ("skip-loss", "block-influence"), (3, 6)),
    "width": ("hidden", ("activation", "magnitude"), (576, 512)),
    "rescale-off": ("hidden", ("activation",), (576, 512)),
}


@contextmanager
def norm_gain_off() -> Iterator[None]:
    """``remove_hidden`` without the ``sqrt(d / d')`` gain it gives every norm over the width
    (the calls with a factor above 1). Gemma's embedding-scale compensation is kept: the
    embeddings are still multiplied by ``sqrt(d / d')`` and the final norm by its inverse,
    which cancels that factor in the tied ``lm_head``."""
    from secateurs_transformers import width

    original = width._scale_norm
    width._scale_norm = lambda norm, factor, offset: original(norm, factor, offset) if factor < 1 else None
    try:
        yield
    finally:
        width._scale_norm = original


def recipe(args: argparse.Namespace, granularity: str, scorer: str, size: int) -> dict[str, Any]:
    sparsity = size / LAYERS if granularity == "layers" else 1 - size / HIDDEN
    return {
        "model": MODEL,
        "dtype": "float32",
        "granularity": granularity,
        "sparsity": sparsity,
        "scorer": scorer,
        "applier": "remove",
        "calibration": {"name": "text", "corpus": "shakespeare-train", "nsamples": args.nsamples, "seqlen": args.seqlen},
    }


def perplexity(args: argparse.Namespace, loaded) -> float:
    from secateurs.plugins import get_manager

    evaluator = get_manager().evaluators.create(
        "perplexity", corpus="shakespeare-test", seqlen=512, max_windows=args.eval_windows, progress=False
    )
    return evaluator.evaluate(loaded)["perplexity"]


def run_part(args: argparse.Namespace, part: str) -> list[dict[str, Any]]:
    """The rows of ``part`` (module docstring), each printed as it is measured."""
    import secateurs

    granularity, scorers, sizes = PARTS[part]
    rows = []
    for scorer in scorers:
        if args.scorer and scorer != args.scorer:
            continue
        for size in sizes:
            if args.size and size != args.size:
                continue
            started = time.perf_counter()
            row: dict[str, Any] = {"part": part, "scorer": scorer}
            if part == "dense":
                loaded = secateurs.load(MODEL, dtype="float32")
                params = sum(p.numel() for p in loaded.model.parameters())
                row.update(layers=LAYERS, hidden=HIDDEN)
            else:
                with norm_gain_off() if part == "rescale-off" else nullcontext():
                    outcome = secateurs.prune(recipe(args, granularity, scorer, size), progress=False)
                loaded, params = outcome.loaded, outcome.result.params_kept
                row.update(layers=loaded.model.config.num_hidden_layers, hidden=loaded.model.config.hidden_size)
                if granularity == "layers":
                    row["removed_layers"] = outcome.result.records.get("layers", {}).get("removed")
            row.update(params=params, perplexity=perplexity(args, loaded), seconds=time.perf_counter() - started)
            print(f"{part} {scorer} layers {row['layers']} hidden {row['hidden']}: "
                  f"{params:,} params, ppl {row['perplexity']:.2f} ({row['seconds']:.0f} s)", flush=True)
            rows.append(row)
    return rows


def _key(row: dict[str, Any]) -> tuple:
    return row["part"], row["scorer"], row["layers"], row["hidden"]


def merged(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``old`` with the rows of ``new`` in place of those with the same key, in ``PARTS`` order."""
    rows = {_key(r): r for r in old} | {_key(r): r for r in new}
    order = list(PARTS)
    return sorted(rows.values(), key=lambda r: (order.index(r["part"]), r["scorer"], -r["layers"], -r["hidden"]))


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| part | scorer | layers | hidden | params | perplexity |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['part']} | {r['scorer']} | {r['layers']} | {r['hidden']} | "
                     f"{r['params'] / 1e6:.1f}M | {r['perplexity']:,.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(PARTS), default=list(PARTS))
    parser.add_argument("--scorer", help="run only this scorer's rows of the parts")
    parser.add_argument("--size", type=int, help="run only the rows of this size (layers removed, hidden kept)")
    parser.add_argument("--nsamples", type=int, default=16)
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--eval-windows", type=int, default=16)
    args = parser.parse_args()
    import torch

    torch.manual_seed(0)
    new = [row for part in args.only for row in run_part(args, part)]
    path = results_path(NAME)
    old = json.loads(path.read_text())["rows"] if path.exists() else []
    settings = {k: v for k, v in vars(args).items() if k not in ("only", "scorer", "size")}
    rows = merged(old, new)
    write_results(NAME, {"settings": settings, "model": MODEL, "rows": rows})
    print(table(rows))
    print(f"written {path}")


if __name__ == "__main__":
    main()
