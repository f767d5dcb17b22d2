"""What NeuroAL's search costs relative to Wanda, from measured unit costs on SmolLM2-135M.

    .venv/bin/python benchmarks/neuroal/cost_model.py

Measures, in CPU seconds on one thread (robust to other jobs sharing the cores): one
sample-block forward of a real SmolLM2 decoder block at several sequence lengths (with
statistics hooks, as calibration runs it), and one block's mask computation with uniform
rows (block step) and with per-row counts (row step). Then predicts pruning CPU time:

    Wanda      = L_blocks · (2 · N · f(seq) + mask_uniform)
    NeuroAL    = Wanda + L_blocks · Σ_candidates (2 · S · f(search_seq) + mask)
                 − (candidates − 1) · S · f(search_seq)      (block 0's dense pass is shared)

for the calibration sizes of the paper (128 × 2048) and of this machine's benchmark, and
for the search options. Writes ``benchmarks/results/neuroal_cost_model.json``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from results_io import write_results  # noqa: E402

SEQLENS = (32, 64, 128, 256, 1024, 2048)
BLOCK_GRID, ROW_GRID = 14, 14  # published grids (row grid without λ = 0, which is reused)
COARSE = 6, 5


def _cpu(fn, repeat: int = 3) -> float:
    fn()
    start = time.process_time()
    for _ in range(repeat):
        fn()
    return (time.process_time() - start) / repeat


def measure() -> dict:
    from secateurs.loading import load
    from secateurs.masks import rows_topk
    from secateurs.pipeline import capture
    from secateurs.stats import collect_stats

    loaded = load("smollm2-135m")
    blocks = loaded.adapter.blocks(loaded.model)
    block = blocks[1]
    forward = {}
    for seq in SEQLENS:
        ids = torch.randint(0, 1000, (1, seq))
        (args, kwargs), = capture(loaded, blocks, [{"input_ids": ids}])

        def run(args=args, kwargs=kwargs):
            with torch.no_grad(), collect_stats(list(block.units)):
                block.module(*args, **kwargs)

        forward[seq] = _cpu(run, repeat=3 if seq <= 256 else 1)
    scores = [torch.rand(u.weight.shape) for u in block.units]
    gen = torch.Generator().manual_seed(0)

    def masks(variable: bool) -> None:
        for s in scores:
            keep = torch.full((s.shape[0],), int(s.shape[1] * 0.3))
            if variable:
                keep = keep + torch.randint(-40, 40, keep.shape, generator=gen)
            rows_topk(s, keep)

    return {
        "blocks": len(blocks),
        "forward_cpu_seconds": forward,
        "mask_uniform_cpu_seconds": _cpu(lambda: masks(False)),
        "mask_rows_cpu_seconds": _cpu(lambda: masks(True)),
    }


def predict(m: dict, n: int, seq: int, samples: int, search_seq: int, grids: tuple[int, int] = (BLOCK_GRID, ROW_GRID)) -> dict:
    f = {int(k): v for k, v in m["forward_cpu_seconds"].items()}
    blocks, (cb, cr) = m["blocks"], grids
    wanda = blocks * (2 * n * f[seq] + m["mask_uniform_cpu_seconds"])
    forwards = blocks * (cb + cr) * 2 * samples * f[search_seq] - (cb + cr - 1) * samples * f[search_seq]
    masks = blocks * (cb * m["mask_uniform_cpu_seconds"] + cr * m["mask_rows_cpu_seconds"])
    return {
        "wanda": wanda,
        "search_forwards": forwards,
        "search_masks": masks,
        "ratio": (wanda + forwards + masks) / wanda,
        "ratio_forwards_only": (wanda + forwards) / wanda,
    }


def main() -> None:
    torch.set_num_threads(1)
    m = measure()
    scenarios = {
        "paper: 128x2048, search 8x2048": (128, 2048, 8, 2048),
        "paper: 128x2048, search 8x1024": (128, 2048, 8, 1024),
        "paper: 128x2048, search 8x256": (128, 2048, 8, 256),
        "paper: 128x2048, search 2x2048": (128, 2048, 2, 2048),
        "ratio.py: 64x1024, search 8x1024": (64, 1024, 8, 1024),
        "ratio.py: 64x1024, search 8x128": (64, 1024, 8, 128),
        "bench: 16x64, search 8x64": (16, 64, 8, 64),
        "bench: 16x64, search 2x32": (16, 64, 2, 32),
    }
    out = {"measured": m, "predicted": {}}
    for name, (n, seq, s, ss) in scenarios.items():
        out["predicted"][name] = predict(m, n, seq, s, ss)
        out["predicted"][name + ", coarse grids 6+5"] = predict(m, n, seq, s, ss, COARSE)
    write_results("neuroal_cost_model", out)
    print(json.dumps(m, indent=2))
    print("| scenario | Wanda CPU s | + search forwards | + search masks | NeuroAL / Wanda | forwards only |")
    print("|---|---|---|---|---|---|")
    for name, p in out["predicted"].items():
        print(
            f"| {name} | {p['wanda']:.0f} | {p['search_forwards']:.0f} | {p['search_masks']:.0f} | "
            f"{p['ratio']:.2f}× | {p['ratio_forwards_only']:.2f}× |"
        )


if __name__ == "__main__":
    main()
