"""Width and combined depth + width pruning of the real SmolLM2-135M: quality, size and CPU
speed against the dense model (depth alone: ``depth.py``).

    .venv/bin/python benchmarks/structured/shrink.py --only width      # prune, ≤ 10 min each
    .venv/bin/python benchmarks/structured/shrink.py --only combined --rows 1   # ~7 min a row; repeat
    .venv/bin/python benchmarks/structured/shrink.py --only speed      # time, write the results

Each pruned model targets about 110M, 90M and 70M parameters (dense: 134.5M), by two
criteria per granularity:

* width only (``granularity = "hidden"``: the residual stream, 576 → 468 / 387 / 297
  channels, multiples of the 9 heads as LlamaConfig requires): ``activation`` (Minitron: root of the per-token mean square each channel
  carries into the residual readers) and ``magnitude`` (L2 norm of each channel's weights);
* combined (``[sizes]``: layers, then hidden, then MLP width; 110M: 26 layers, hidden 540,
  MLP 1472; 90M: 24 / 504 / 1280; 70M: 22 / 441 / 1152): ``skip-loss`` + ``activation`` and
  ``block-influence`` + ``magnitude``.

Calibration: ``nsamples`` windows of ``seqlen`` tokens of shakespeare-train; perplexity:
``eval-windows`` windows of 512 tokens of shakespeare-test, of each saved folder reloaded.
Pruned folders are kept in ``--work`` between invocations. ``--only speed`` reloads the dense
model and every pruned folder with plain ``AutoModelForCausalLM.from_pretrained`` in one
process with ``--threads`` torch threads and times them round-robin (prefill tokens/s of a
``--prefill``-token prompt; decode tokens/s of ``--decode`` greedy tokens after 16, KV cache;
median of ``--reps``), then writes benchmarks/results/structured_shrink.json and prints the
table. No recovery training: this is the quality lost by pruning alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "benchmarks" / "structured"))
from depth import add_run_options, perplexity, table, time_all  # noqa: E402
from results_io import write_results  # noqa: E402

NAME = "structured_shrink"
MODEL = "smollm2-135m"
WIDTH = {"110M": 468, "90M": 387, "70M": 297}
"""Hidden channels kept (of 576) for each target, width only: multiples of the 9 attention
heads, as LlamaConfig requires."""
COMBINED = {
    "110M": {"num_hidden_layers": 26, "hidden_size": 540, "intermediate_size": 1472},
    "90M": {"num_hidden_layers": 24, "hidden_size": 504, "intermediate_size": 1280},
    "70M": {"num_hidden_layers": 22, "hidden_size": 441, "intermediate_size": 1152},
}
WIDTH_CRITERIA = ("activation", "magnitude")
COMBINED_CRITERIA = {
    "skip-loss + activation": {"layers": "skip-loss", "hidden": "activation", "neurons": "activation"},
    "block-influence + magnitude": {"layers": "block-influence", "hidden": "magnitude", "neurons": "magnitude"},
}


def _base(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    return {
        "model": MODEL,
        "output": str(folder),
        "dtype": "float32",
        "calibration": {"name": "text", "corpus": "shakespeare-train", "nsamples": args.nsamples, "seqlen": args.seqlen},
    }


def recipes(args: argparse.Namespace, work: Path, only: str) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Row name → (recipe, row fields) for the ``only`` phase."""
    out = {}
    if only == "width":
        for criterion in WIDTH_CRITERIA:
            for target, keep in WIDTH.items():
                name = f"width {criterion} {target}"
                recipe = _base(args, work / name.replace(" ", "-")) | {
                    "granularity": "hidden", "sparsity": 1 - keep / 576, "scorer": criterion,
                }
                out[name] = (recipe, {"kind": "width", "criterion": criterion, "target": target, "hidden": keep})
    else:
        for criterion, scorers in COMBINED_CRITERIA.items():
            for target, sizes in COMBINED.items():
                name = f"combined {criterion} {target}"
                recipe = _base(args, work / name.replace(" ", "-").replace("+", "and")) | {
                    "sizes": sizes, "scorers": scorers,
                }
                out[name] = (recipe, {"kind": "combined", "criterion": criterion, "target": target, **sizes})
    return out


def prune_phase(args: argparse.Namespace, work: Path) -> None:
    """Prune every row of the phase not yet in ``work/rows.json`` into ``work`` and record it
    there (an interrupted phase resumes where it stopped)."""
    import secateurs

    ledger = work / "rows.json"
    rows = json.loads(ledger.read_text()) if ledger.exists() else {}
    todo = [(n, r) for n, r in recipes(args, work, args.only).items() if n not in rows]
    for name, (recipe, fields) in todo[: args.rows]:
        started = time.perf_counter()
        outcome = secateurs.prune(recipe, progress=False, overwrite=True)
        rows[name] = fields | {
            "model": name,
            "params": outcome.result.params_kept,
            "prune_s": time.perf_counter() - started,
            "perplexity": perplexity(args, recipe["output"]),
            "folder": recipe["output"],
        }
        ledger.write_text(json.dumps(rows, indent=2))
        print(f"{name}: {rows[name]['params']:,} params, ppl {rows[name]['perplexity']:.2f}", flush=True)


def shape_of(row: dict[str, Any]) -> str:
    """``layers / hidden / MLP`` of a row (the dense sizes where it changed none)."""
    hidden = row.get("hidden_size", row.get("hidden", 576))
    return f"{row.get('num_hidden_layers', 30)} / {hidden} / {row.get('intermediate_size', 1536)}"


def speed_phase(args: argparse.Namespace, work: Path) -> None:
    """Time the dense model and every pruned folder in one process; write the results."""
    from secateurs.loading import resolve_source

    pruned = json.loads((work / "rows.json").read_text())
    dense = {"model": "dense", "kind": "dense", "folder": str(resolve_source(MODEL)), "perplexity": perplexity(args, MODEL)}
    rows = [dense, *pruned.values()]
    time_all(args, rows)
    for row in rows:
        row.pop("folder")
        row.setdefault("removed", 0)
    path = write_results(NAME, {"settings": {**vars(args), "work": str(args.work)}, "rows": rows})
    print(table(rows, "layers / hidden / MLP", shape_of))
    print(f"written {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("width", "combined", "speed"), required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/secateurs-shrink"))
    parser.add_argument("--rows", type=int, default=None, help="prune at most this many rows (lock-sized runs)")
    add_run_options(parser)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.only == "speed":
        speed_phase(args, args.work)
    else:
        prune_phase(args, args.work)


if __name__ == "__main__":
    main()
