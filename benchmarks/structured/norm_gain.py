"""Width pruning's norm gains on two families: calibrated (the default with calibration
data), exact (``sqrt(d / d')``: zero = remove) and unchanged.

    .venv/bin/python benchmarks/structured/norm_gain.py --model smollm2-135m --keep 450
    .venv/bin/python benchmarks/structured/norm_gain.py --model gemma3-270m --keep 512 --gains calibrated

Each run narrows the model's residual stream to ``--keep`` channels with the ``activation``
scorer (calibration: 16 × 256 tokens of shakespeare-train) and measures perplexity on 16
windows of 512 tokens of shakespeare-test. ``exact`` runs the library's removal without
calibration batches; ``unchanged`` additionally leaves the layer norms' gains as they were
(only Gemma's embedding-scale compensation stays). Rows are merged into
benchmarks/results/structured_norm_gain.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from results_io import RESULTS, write_results  # noqa: E402

NAME = "structured_norm_gain"
GAINS = ("calibrated", "exact", "unchanged")


def narrowed_perplexity(model: str, keep: int, gains: str) -> float:
    """Perplexity of ``model`` narrowed to ``keep`` hidden channels with the ``gains`` policy."""
    from secateurs.pipeline import prune_model
    from secateurs.run import as_recipe, build_parts, load_for, spec_for
    from secateurs_transformers import width

    recipe = as_recipe({
        "model": model, "dtype": "float32", "granularity": "hidden", "sparsity": 0.5, "scorer": "activation",
        "calibration": {"name": "text", "corpus": "shakespeare-train", "nsamples": 16, "seqlen": 256},
        "evaluate": {"name": "perplexity", "corpus": "shakespeare-test", "seqlen": 512, "max_windows": 16},
    })
    parts = build_parts(recipe, progress=False)
    loaded = load_for(recipe)
    spec = spec_for(recipe.with_overrides({"sparsity": 1 - keep / loaded.model.config.hidden_size}), parts, loaded,
                    progress=False)
    remove = width.remove_hidden
    scale = width._scale_norm
    if gains != "calibrated":  # the library's removal without calibration batches
        width.remove_hidden = lambda m, k, *_calibration: remove(m, k)
    if gains == "unchanged":  # no gain above 1: only Gemma's embedding-scale compensation
        width._scale_norm = lambda norm, factor, offset: scale(norm, factor, offset) if factor < 1 else None
    try:
        prune_model(loaded, spec)
    finally:
        width.remove_hidden, width._scale_norm = remove, scale
    return parts.evaluator.evaluate(loaded)["perplexity"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--keep", type=int, required=True)
    parser.add_argument("--gains", nargs="+", choices=GAINS, default=list(GAINS))
    args = parser.parse_args()
    path = RESULTS / f"{NAME}.json"
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    for gains in args.gains:
        row = {"model": args.model, "keep": args.keep, "gains": gains,
               "perplexity": narrowed_perplexity(args.model, args.keep, gains)}
        rows = [r for r in rows if (r["model"], r["keep"], r["gains"]) != (args.model, args.keep, gains)] + [row]
        print(f"{args.model} -> {args.keep} channels, {gains} gains: perplexity {row['perplexity']:.1f}", flush=True)
        write_results(NAME, {"rows": rows})


if __name__ == "__main__":
    main()
