"""The markdown tables of benchmarks/ken/README.md, from the results files.
Run: .venv/bin/python benchmarks/ken/table.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from results_io import results_path  # noqa: E402


def fidelity_tables(data: dict) -> str:
    lines = [("| k (of row width) | rows | kernels | kept positions | identical to reference | reference s "
              "| ken s (wall) | ken CPU s | reference / ken, median (each round) |"), "|---|---|---|---|---|---|---|---|---|"]
    for f in data["fidelity"]:
        for kernels, r in f["kernels"].items():
            rounds = ", ".join(f"{x:.0f}" for x in r["speedup_per_round"])
            lines.append(f"| {f['fraction']:.0%} | {f['rows']} | `{kernels}` | {r['kept_positions']:,} | "
                         f"**{r['identical_positions_pct']:.1f} %** ({r['rows_differing']} rows differ) | "
                         f"{r['reference_seconds']:.1f} | {r['ken_seconds']:.3f} | {r['ken_cpu_seconds']:.3f} | "
                         f"**{r['speedup']:.0f}×** ({rounds}) |")
    lines += ["", "| one-time cost per process | s |", "|---|---|"]
    lines += [f"| {what} | {seconds:.2f} |" for what, seconds in data["one_time_seconds"].items()]
    lines += ["", "| k | kernels | rows per `ken_select` call | ken µs / row | reference µs / row | reference / ken |",
              "|---|---|---|---|---|---|"]
    for s in data["rows_per_call_sweep"]:
        lines.append(f"| {s['fraction']:.0%} | `{s['kernels']}` | {s['rows_per_call']:,} | {s['ken_us_per_row']:.0f} | "
                     f"{s['reference_us_per_row']:.0f} | {s['speedup']:.0f}× |")
    lines += ["", "| whole MiniLM | tensors | parameters | reduction | wall s | CPU s (2 threads) |", "|---|---|---|---|---|---|"]
    for w in data["whole_model"]:
        lines.append(f"| k = {w['fraction']:.0%} of every row | {w['tensors']} | {w['params']:,} | {w['reduction']:.1%} | "
                     f"**{w['seconds']:.1f}** | {w['cpu_seconds']:.1f} |")
    return "\n".join(lines)


def quality_table(data: dict) -> str:
    rows = data["rows"]
    dense = next(r for r in rows if r["method"] == "dense fine-tuned")
    pre = next(r for r in rows if r["method"].startswith("pre-trained"))
    methods = ["ken", "ft-magnitude", "delta-magnitude", "random", "dare"]
    ks = sorted({r["k"] for r in rows if r["k"] is not None})
    acc = {(r["method"], r["k"], r.get("head_kept", False)): r for r in rows}
    head = "| k per row | parameter reduction | " + " | ".join(methods) + " | KEN, head kept | random, head kept | KEN delta file / full checkpoint | exact round trip |"
    lines = [f"Dense fine-tuned: **{dense['accuracy']:.1%}**; the pre-trained start (fresh head): {pre['accuracy']:.1%}.", "",
             head, "|" + "---|" * (len(methods) + 6)]
    for k in ks:
        ken = acc[("ken", k, False)]
        cells = [f"{acc[(m, k, False)]['accuracy']:.1%}" for m in methods]
        kept = [f"{acc[(m, k, True)]['accuracy']:.1%}" if (m, k, True) in acc else "–" for m in ("ken", "random")]
        size = f"{ken['delta_bytes'] / 1e6:.1f} MB / {ken['full_bytes'] / 1e6:.1f} MB ({ken['delta_bytes'] / ken['full_bytes']:.0%})"
        lines.append(f"| {k} | {ken['reduction']:.1%} | " + " | ".join(cells + kept) + f" | {size} | {'yes' if ken['round_trip_exact'] else 'NO'} |")
    return "\n".join(lines)


def main() -> None:
    for name, render in (("ken_fidelity_speed", fidelity_tables), ("ken_quality", quality_table)):
        path = results_path(name)
        if path.exists():
            print(f"## {name}\n\n{render(json.loads(path.read_text()))}\n")


if __name__ == "__main__":
    main()
