"""KEN quality and storage on MiniLM fine-tuned on the movie-review sentences.

Dense fine-tuned vs KEN and the baselines (|W_ft| per row, |W_ft - W_pre| per row, random,
DARE) at the same per-row k, over every floating tensor (embeddings, LayerNorms, biases
included); accuracy on the held-out sentences, parameter reduction, delta file size vs the
full fine-tuned checkpoint, exact round trip of the delta.
Variant rows (``head kept``) exclude the classification head (``classifier.*``), which is
freshly initialised before fine-tuning, so restoring it means restoring random weights.
Run: .venv/bin/python benchmarks/ken/quality.py   → benchmarks/results/ken_quality.json
(trains and caches the fine-tuned model first if needed: see minilm_sst.py). Resumable:
rows already in the results file are kept and skipped.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import minilm_sst as data  # noqa: E402
import results_io  # noqa: E402

from secateurs_ken.api import ken_state  # noqa: E402
from secateurs_ken.delta import load_ken_delta, save_ken_delta  # noqa: E402

KS = (32, 96, 192, 288)
METHODS = ("ken", "ft-magnitude", "delta-magnitude", "random", "dare")
HEAD_KEPT_METHODS = ("ken", "random")
NAME = "ken_quality"
OUT = results_io.results_path(NAME)


def configurations() -> list[tuple[str, int, bool]]:
    """``(method, k, head_kept)`` for every row after the two references."""
    base = [(m, k, False) for k in KS for m in METHODS]
    return base + [(m, k, True) for k in KS for m in HEAD_KEPT_METHODS]


def evaluate(pre, ft, test, method: str, k: int, head_kept: bool, tmp: Path, full_bytes: int) -> dict:
    exclude = ("classifier.*",) if head_kept else ()
    state, masks = ken_state(pre, ft, k=k, method=method, seed=0, exclude=exclude)
    total = sum(t.numel() for t in ft.values() if t.is_floating_point())
    restored = sum(m.numel() - int(m.sum()) for m in masks.values())
    row = {"method": method, "k": k, "head_kept": head_kept, "reduction": restored / total,
           "accuracy": data.accuracy(state, test)}
    if method == "ken" and not head_kept:
        delta, _ = save_ken_delta(pre, state, tmp / f"ken{k}.safetensors", base_name=data.CACHE_NAME)
        rebuilt = load_ken_delta(pre, delta)
        row.update(delta_bytes=delta.stat().st_size, full_bytes=full_bytes,
                   round_trip_exact=all(torch.equal(rebuilt[n].view(torch.uint8), t.view(torch.uint8))
                                        for n, t in state.items() if t.is_floating_point()))
    return row


def main() -> None:
    torch.set_num_threads(2)
    pre, ft = data.load_states()
    _, test = data.split()
    result = json.loads(OUT.read_text()) if OUT.exists() else {}
    rows = result.get("rows") or [
        {"method": "dense fine-tuned", "k": None, "reduction": 0.0, "accuracy": data.accuracy(ft, test)},
        {"method": "pre-trained (fresh head)", "k": None, "reduction": 1.0, "accuracy": data.accuracy(pre, test)},
    ]
    done = {(r["method"], r["k"], r.get("head_kept", False)) for r in rows}
    with tempfile.TemporaryDirectory() as tmp:
        full = Path(tmp) / "full.safetensors"
        save_file({k: v.contiguous() for k, v in ft.items()}, str(full))
        for method, k, head_kept in configurations():
            if (method, k, head_kept) in done:
                continue
            rows.append(evaluate(pre, ft, test, method, k, head_kept, Path(tmp), full.stat().st_size))
            print(rows[-1], flush=True)
            results_io.write_results(NAME, {"train": json.loads((data.checkpoint() / "train.json").read_text()),
                                            "test_sentences": len(test), "rows": rows})


if __name__ == "__main__":
    main()
