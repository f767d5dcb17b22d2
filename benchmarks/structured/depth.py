"""Depth pruning of the real SmolLM2-135M: quality, size and CPU speed against the dense model.

    .venv/bin/python benchmarks/structured/depth.py [--nsamples 16] [--seqlen 256] ...

Whole decoder layers are removed (``granularity = "layers"``) so that the model has about
110M, 90M and 70M parameters (7, 13 and 18 of its 30 layers removed), chosen by two
criteria: ``block-influence`` (ShortGPT: 1 − cosine of a layer's input and output hidden
states) and ``skip-loss`` (the increase of calibration loss when the layer alone is
skipped). Calibration: ``nsamples`` windows of ``seqlen`` tokens of shakespeare-train;
perplexity: ``eval-windows`` windows of 512 tokens of shakespeare-test. Each pruned model
is saved (plain transformers folder) and its ``model.safetensors`` size recorded.

Speed: every saved model (and the dense one) reloaded with plain
``AutoModelForCausalLM.from_pretrained`` in one process with ``--threads`` torch threads,
timed round-robin: prefill tokens/s (one forward over a ``--prefill`` token prompt) and
decode tokens/s (greedy ``generate`` of ``--decode`` new tokens with the KV cache, after
a 16-token prompt), median of ``--reps``. Results: benchmarks/results/structured_depth.json
and a Markdown table on stdout. No recovery training: this is the quality lost by
pruning alone.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from results_io import write_results  # noqa: E402

NAME = "structured_depth"
MODEL = "smollm2-135m"
LAYERS = 30
REMOVED = (7, 13, 18)
"""Layers removed for ~110M, ~90M and ~70M parameters (each layer holds 3.54M)."""
CRITERIA = ("block-influence", "skip-loss")


def recipe(args: argparse.Namespace, output: Path, scorer: str, removed: int) -> dict[str, Any]:
    return {
        "model": MODEL,
        "output": str(output),
        "dtype": "float32",
        "granularity": "layers",
        "sparsity": removed / LAYERS,
        "scorer": scorer,
        "applier": "remove",
        "calibration": {"name": "text", "corpus": "shakespeare-train", "nsamples": args.nsamples, "seqlen": args.seqlen},
    }


def perplexity(args: argparse.Namespace, model: str) -> float:
    """Perplexity of the model at ``model`` (a saved folder or the packaged name), as loaded."""
    import secateurs

    metrics = secateurs.evaluate(
        model, "perplexity", dtype="float32", corpus="shakespeare-test", seqlen=512, max_windows=args.eval_windows
    )
    return metrics["perplexity"]


def prune_all(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """Every criterion at every depth, plus the dense perplexity; each model saved in ``work``."""
    import secateurs
    from secateurs.loading import resolve_source

    dense = resolve_source(MODEL)
    rows = [{"model": "dense", "criterion": "-", "removed": 0, "folder": str(dense)}]
    rows[0]["perplexity"] = perplexity(args, MODEL)
    for scorer in CRITERIA:
        for removed in REMOVED:
            folder = work / f"{scorer}-{removed}"
            started = time.perf_counter()
            outcome = secateurs.prune(recipe(args, folder, scorer, removed), progress=False)
            result = outcome.result
            rows.append({
                "model": f"{scorer} -{removed}",
                "criterion": scorer,
                "removed": removed,
                "removed_layers": result.records.get("layers", {}).get("removed"),
                "params": result.params_kept,
                "prune_s": time.perf_counter() - started,
                "perplexity": perplexity(args, str(folder)),  # of the saved folder, reloaded
                "folder": str(folder),
            })
            print(f"{rows[-1]['model']}: {result.params_kept:,} params, ppl {rows[-1]['perplexity']:.2f}", flush=True)
    return rows


def _seconds(fn) -> float:
    """Wall seconds of one call of ``fn``."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def time_all(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    """Reload every folder with plain transformers and time prefill and decode, round-robin."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    models = {row["model"]: AutoModelForCausalLM.from_pretrained(row["folder"], dtype=torch.float32).eval()
              for row in rows}
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, 49152, (1, args.prefill), generator=gen)
    short = prompt[:, :16]
    for row in rows:
        model = models[row["model"]]
        row["params_reloaded"] = sum(p.numel() for p in model.parameters())
        files = list(Path(row["folder"]).glob("*.safetensors"))
        row["file_mb"] = sum(f.stat().st_size for f in files) / 1e6
        row.update(prefill=[], decode=[])
    with torch.inference_mode():
        for _ in range(args.reps):
            for row in rows:
                model = models[row["model"]]
                row["prefill"].append(_seconds(lambda m=model: m(prompt)))
                row["decode"].append(_seconds(
                    lambda m=model: m.generate(short, max_new_tokens=args.decode, min_new_tokens=args.decode,
                                               do_sample=False, pad_token_id=0)))
    for row in rows:
        row["prefill_tok_s"] = args.prefill / statistics.median(row.pop("prefill"))
        row["decode_tok_s"] = args.decode / statistics.median(row.pop("decode"))


def table(rows: list[dict[str, Any]], shape: str = "layers",
          shape_of: Callable[[dict[str, Any]], str] = lambda row: str(LAYERS - row["removed"])) -> str:
    """The Markdown table of timed ``rows`` (the dense model first); the ``shape`` column
    holds ``shape_of(row)``."""
    dense = rows[0]
    lines = [
        f"| model | {shape} | params | file MB | perplexity | prefill tok/s | decode tok/s | prefill × | decode × |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {shape_of(row)} | {row['params_reloaded'] / 1e6:.1f}M | {row['file_mb']:.0f} | "
            f"{row['perplexity']:.2f} | {row['prefill_tok_s']:.0f} | {row['decode_tok_s']:.1f} | "
            f"{row['prefill_tok_s'] / dense['prefill_tok_s']:.2f} | {row['decode_tok_s'] / dense['decode_tok_s']:.2f} |"
        )
    return "\n".join(lines)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Calibration, evaluation and timing options shared by the structured benchmarks."""
    parser.add_argument("--nsamples", type=int, default=16)
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--eval-windows", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prefill", type=int, default=512)
    parser.add_argument("--decode", type=int, default=32)
    parser.add_argument("--reps", type=int, default=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_run_options(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="secateurs-depth-") as work:
        rows = prune_all(args, Path(work))
        time_all(args, rows)
    for row in rows:
        row.pop("folder")
    path = write_results(NAME, {"settings": vars(args), "rows": rows})
    print(table(rows))
    print(f"written {path}")


if __name__ == "__main__":
    main()
