"""NeuroAL's cost against Wanda's at a calibration where Wanda itself is minutes of work.

    .venv/bin/python benchmarks/neuroal/ratio.py [--only NAME ...] [--list]

SmolLM2-135M, 70 % sparsity, Wanda scores, calibration 64 × 1024 tokens of
``shakespeare-train`` (seed 0) for every configuration; perplexity over 16 × 512 tokens of
``shakespeare-test``. Rows: Wanda alone (uniform), NeuroAL's published search (its
defaults: 14 + 14 λ, 8 search samples at full length) and NeuroAL's fast search (the
coarse grids of ``smollm2.py``, 6 + 5 λ, on the first 128 tokens of the 8 search
samples: the configuration within 1.5× of Wanda). The results file also holds a
variant measured on 2026-12-02 and then removed from the code (``wanda/neuroal/0.7``:
candidates compared with the dense model's own activations, 2 search samples of 512
tokens; see benchmarks/README.md). Each configuration runs in its own process on two torch threads;
prune CPU seconds (``time.process_time``, both threads) are the measure of work.
Results: ``benchmarks/results/neuroal_ratio.json`` (resumable, as ``smollm2.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from smollm2 import COARSE, MODEL, config, run_all  # noqa: E402

NAME = "neuroal_ratio"
CALIBRATION = {"name": "text", "corpus": "shakespeare-train", "nsamples": 64, "seqlen": 1024}
EVALUATION = {"corpus": "shakespeare-test", "seqlen": 512, "max_windows": 16}
THREADS = 2


def configurations() -> list[dict]:
    rows = [
        config("wanda/uniform/0.7", "wanda", {"name": "uniform"}, 0.7),
        config("wanda/neuroal[published]/0.7", "wanda", {"name": "neuroal"}, 0.7),  # the defaults
        config("wanda/neuroal[coarse,8x128]/0.7", "wanda", {"name": "neuroal", **COARSE, "search_seqlen": 128}, 0.7),
    ]
    return [{**row, "calibration": CALIBRATION, "evaluation": EVALUATION, "threads": THREADS} for row in rows]


if __name__ == "__main__":
    setup = {"model": MODEL, "calibration": CALIBRATION, "evaluation": EVALUATION, "threads": THREADS}
    run_all(NAME, configurations(), setup, __doc__)
