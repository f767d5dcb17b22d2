"""KEN quality and storage on MiniLM fine-tuned on the movie-review sentences.

Dense fine-tuned vs KEN and the baselines (|W_ft| per row, |W_ft - W_pre| per row, random,
DARE) at the same per-row k, over every floating tensor (embeddings, LayerNorms, biases
included); accuracy on the held-out sentences, parameter reduction, delta file size vs the
full fine-tuned checkpoint, exact round trip of the delta.
Run: .venv/bin/python benchmarks/ken/quality.py   → benchmarks/results/ken_quality.json
(trains and caches the fine-tuned model first if needed: see minilm_sst.py).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import minilm_sst as data  # noqa: E402

from secateurs_ken.api import ken_state  # noqa: E402
from secateurs_ken.delta import load_ken_delta, save_ken_delta  # noqa: E402

KS = (32, 96, 192, 288)
METHODS = ("ken", "ft-magnitude", "delta-magnitude", "random", "dare")
OUT = Path(__file__).resolve().parents[1] / "results" / "ken_quality.json"


def main() -> None:
    torch.set_num_threads(2)
    pre, ft = data.load_states()
    _, test = data.split()
    t0 = time.perf_counter()
    rows = [{"method": "dense fine-tuned", "k": None, "reduction": 0.0, "accuracy": data.accuracy(ft, test)},
            {"method": "pre-trained (fresh head)", "k": None, "reduction": 1.0, "accuracy": data.accuracy(pre, test)}]
    print(rows, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        full = Path(tmp) / "full.safetensors"
        save_file({k: v.contiguous() for k, v in ft.items()}, str(full))
        full_bytes = full.stat().st_size
        for k in KS:
            for method in METHODS:
                start = time.perf_counter()
                state, masks = ken_state(pre, ft, k=k, method=method, seed=0)
                seconds = time.perf_counter() - start
                total = sum(m.numel() for m in masks.values())
                row = {"method": method, "k": k, "seconds": seconds,
                       "reduction": 1 - sum(int(m.sum()) for m in masks.values()) / total,
                       "accuracy": data.accuracy(state, test)}
                if method == "ken":
                    delta, _ = save_ken_delta(pre, state, Path(tmp) / f"ken{k}.safetensors", base_name=data.CACHE_NAME)
                    rebuilt = load_ken_delta(pre, delta)
                    row.update(delta_bytes=delta.stat().st_size, full_bytes=full_bytes,
                               round_trip_exact=all(torch.equal(rebuilt[n].view(torch.uint8), t.view(torch.uint8))
                                                    for n, t in state.items() if t.is_floating_point()))
                rows.append(row)
                print(row, flush=True)
    result = {"date": time.strftime("%Y-%m-%d"), "load_average": os.getloadavg()[0],
              "train": json.loads((data.checkpoint() / "train.json").read_text()), "test_sentences": len(test),
              "rows": rows, "seconds": time.perf_counter() - t0}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = OUT.with_suffix(".tmp")
    tmp_out.write_text(json.dumps(result, indent=2))
    os.replace(tmp_out, OUT)


if __name__ == "__main__":
    main()
