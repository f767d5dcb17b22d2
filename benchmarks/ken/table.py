"""The markdown tables of benchmarks/ken/README.md, from the results files.
Run: .venv/bin/python benchmarks/ken/table.py
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import scipy.stats

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


def _stats(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _pm(values: list[float]) -> str:
    """``mean ± std`` as percentages."""
    mean, std = _stats(values)
    return f"{mean:.1%} ± {std:.1%}"


def _paired(diffs: list[float]) -> str:
    """Mean of per-seed differences (percentage points) with its 95 % Student-t interval."""
    mean, std = _stats(diffs)
    if len(diffs) < 2:
        return f"{mean * 100:+.1f}"
    half = scipy.stats.t.ppf(0.975, len(diffs) - 1) * std / len(diffs) ** 0.5
    return f"{mean * 100:+.1f} [{(mean - half) * 100:+.1f}, {(mean + half) * 100:+.1f}]"


def quality_tables(data: dict) -> str:
    """The fine-tunes, the accuracy table (mean ± sample std over seeds), storage and time."""
    seeds = data["seeds"]
    rows = {(seed, r["method"], r.get("scope"), r.get("target")): r for seed, rec in seeds.items() for r in rec["rows"]}
    dense = {seed: rows[(seed, "dense fine-tuned", None, None)]["accuracy"] for seed in seeds
             if (seed, "dense fine-tuned", None, None) in rows}
    sizes = data["sentences"]
    lines = [f"Sentences: {sizes['train']:,} train, {sizes['val']:,} validation (early stopping), "
             f"{sizes['test']:,} test. Seeds: {', '.join(seeds)}.", "",
             "| seed | epochs run (best) | validation accuracy per epoch | best validation | dense test "
             "| pre-trained test (fresh head) | train wall s | train CPU s |", "|---|---|---|---|---|---|---|---|"]
    for seed, rec in seeds.items():
        t = rec["train"]
        curve = " → ".join(f"{h['val_accuracy']:.1%}" for h in t["history"])
        tests = [f"{rows[(seed, m, None, None)]['accuracy']:.1%}" if (seed, m, None, None) in rows else "–"
                 for m in ("dense fine-tuned", "pre-trained (fresh head)")]
        lines.append(f"| {seed} | {t['epochs_run']} ({t['best_epoch']}) | {curve} | {t['best_val_accuracy']:.1%} | "
                     + " | ".join(tests) + f" | {t['wall_s']:.0f} | {t['cpu_s']:.0f} |")
    methods = ["ken", "random", "ft-magnitude", "delta-magnitude", "dare"]
    dense_mean, dense_std = _stats(list(dense.values()))
    lines += ["", f"Dense fine-tuned: **{_pm(list(dense.values()))}** (mean ± sample std, seeds: {len(dense)}).", "",
              "| target | candidates | k per row | parameter reduction | " + " | ".join(methods)
              + " | KEN − dense, paired, pp [95 % CI] | KEN − random, paired, pp [95 % CI] | KEN ± std overlaps dense ± std |",
              "|" + "---|" * (len(methods) + 7)]
    storage = []
    for scope, label in (("all", "all tensors"), ("encoder", "encoder blocks")):
        for target in data["targets"]:
            done = [s for s in dense if (s, "ken", scope, target) in rows]
            if not done:
                if scope == "encoder" and target > data["encoder_share"]:
                    lines.append(f"| {target:.0%} | {label} | – | not reachable: the encoder blocks hold "
                                 f"{data['encoder_share']:.1%} of the parameters |" + " |" * (len(methods) + 3))
                continue
            ken = [rows[(s, "ken", scope, target)] for s in done]
            cells = [_pm([rows[(s, m, scope, target)]["accuracy"] for s in done])
                     if all((s, m, scope, target) in rows for s in done) else "–" for m in methods]
            ken_acc = [r["accuracy"] for r in ken]
            random_acc = [rows[(s, "random", scope, target)]["accuracy"] for s in done]
            ken_mean, ken_std = _stats(ken_acc)
            overlap = abs(ken_mean - dense_mean) <= ken_std + dense_std
            lines.append(f"| {target:.0%} | {label} | {ken[0]['k']} | {ken[0]['reduction']:.1%} | " + " | ".join(cells)
                         + f" | {_paired([a - dense[s] for a, s in zip(ken_acc, done, strict=True)])} "
                         f"| {_paired([a - b for a, b in zip(ken_acc, random_acc, strict=True)])} "
                         f"| {'yes' if overlap else 'no'} |")
            size = statistics.mean(r["delta_bytes"] for r in ken)
            storage.append(f"| {target:.0%} | {label} | {ken[0]['k']} | {ken[0]['reduction']:.1%} | {size / 1e6:.1f} MB "
                           f"| {data['full_checkpoint_bytes'] / 1e6:.1f} MB | {size / data['full_checkpoint_bytes']:.0%} "
                           f"| {'yes' if all(r['round_trip_exact'] for r in ken) else 'NO'} (seeds: {len(ken)}) |")
    lines += ["", "| target | candidates | k per row | parameter reduction | KEN delta file (mean over seeds) "
              "| full checkpoint | delta / full | exact round trip |", "|---|---|---|---|---|---|---|---|", *storage]
    train = [rec["train"] for rec in seeds.values()]
    evals = list(rows.values())
    lines += ["", "| part | wall s | CPU s |", "|---|---|---|",
              f"| training (seeds: {len(train)}) | {sum(t['wall_s'] for t in train):.0f} | {sum(t['cpu_s'] for t in train):.0f} |",
              f"| evaluation ({len(evals)} rows) | {sum(r['wall_s'] for r in evals):.0f} | {sum(r['cpu_s'] for r in evals):.0f} |"]
    return "\n".join(lines)


def main() -> None:
    for name, render in (("ken_fidelity_speed", fidelity_tables), ("ken_quality", quality_tables)):
        path = results_path(name)
        if path.exists():
            print(f"## {name}\n\n{render(json.loads(path.read_text()))}\n")


if __name__ == "__main__":
    main()
