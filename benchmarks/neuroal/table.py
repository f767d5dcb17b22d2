"""Markdown tables from ``benchmarks/results/neuroal_smollm2.json`` (for the README).

    .venv/bin/python benchmarks/neuroal/table.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from results_io import results_path  # noqa: E402

RESULTS = results_path("neuroal_smollm2")


def _fmt(value, spec: str = ".1f") -> str:
    return "–" if value is None else format(value, spec)


def main() -> None:
    data = json.loads(RESULTS.read_text())
    rows = {r["name"]: r for r in data["rows"] if "error" not in r}
    dense = rows.get("dense", {}).get("perplexity")
    print(f"dense perplexity: {_fmt(dense, '.2f')}\n")
    print("| configuration | sparsity | perplexity | prune CPU s | prune wall s | peak RSS MiB | λ_B | λ_R | search: sample-block forwards / masks |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        if name == "dense":
            continue
        n = r.get("neuroal") or {}
        search = n.get("search") or {}
        work = f"{search['sample_forwards']} / {search['prunes']}" if search else "–"
        row_lambda = n.get("row_lambda") if n.get("row_step") == "run" else ("skipped" if n else None)
        print(
            f"| {name} | {r['sparsity']:.4f} | {r['perplexity']:.2f} | {_fmt(r.get('prune_cpu_seconds'))} | "
            f"{_fmt(r.get('prune_seconds'))} | {_fmt(r.get('peak_rss_mb'), '.0f')} | {_fmt(n.get('block_lambda'), 'g')} | "
            f"{row_lambda if isinstance(row_lambda, str) else _fmt(row_lambda, 'g')} | {work} |"
        )
    print("\nNeuroAL search profile (wall seconds inside the search):\n")
    print("| configuration | search s | dense passes s | prune (score+mask) s | sparse passes s |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        s = (r.get("neuroal") or {}).get("search")
        if s:
            print(
                f"| {name} | {s['seconds']:.1f} | {s['dense_seconds']:.1f} | {s['prune_seconds']:.1f} | {s['sparse_seconds']:.1f} |"
            )


if __name__ == "__main__":
    main()
