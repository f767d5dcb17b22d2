"""Print the markdown tables of benchmarks/lrp/README.md from the JSON results.

    .venv/bin/python benchmarks/lrp/report.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from results_io import RESULTS  # noqa: E402


def curves() -> None:
    runs = json.loads((RESULTS / "lrp_curves.json").read_text())["runs"]
    labels = ["random", "weight norm", "taylor", "lrp-epsilon"]
    print("| model / components | dense acc. | " + " | ".join(labels) + " | best preset (tuning area) | tuned |")
    print("|---|---|" + "---|" * (len(labels) + 2))
    for key, run in runs.items():
        c = run["curves"]
        preset = next(k for k in c if k.endswith("(best preset)"))
        cells = [f"{c[label]['area']:.4f}" for label in labels]
        dense = c["random"]["values"][0]
        print(f"| {key} | {dense:.3f} | " + " | ".join(cells) + f" | {preset.split(' ')[0]} {c[preset]['area']:.4f} | "
              f"{c['lrp-tuned']['area']:.4f} |")
    print()
    print("| model / components | tuning: presets (area on tuning images) | tuned (tuning area) | tuned composite |")
    print("|---|---|---|---|")
    for key, run in runs.items():
        t = run["tuning"]
        presets = ", ".join(f"{k} {v:.4f}" for k, v in t["presets"].items())
        print(f"| {key} | {presets} | {t['best_area']:.4f} | `{json.dumps(t['best'])}` |")
    print()
    rates = [0.0, 0.2, 0.4, 0.6, 0.8, 0.95]
    print("Accuracy at selected rates (evaluation images):\n")
    print("| model / components | scorer | " + " | ".join(f"{r:.0%}" for r in rates) + " |")
    print("|---|---|" + "---|" * len(rates))
    for key, run in runs.items():
        for label, c in run["curves"].items():
            values = dict(zip(c["rates"], c["values"], strict=True))
            print(f"| {key} | {label} | " + " | ".join(f"{values[r]:.3f}" for r in rates) + " |")


def cost() -> None:
    models = json.loads((RESULTS / "lrp_cost.json").read_text())["models"]
    print("| model | plain fwd+bwd (params) s | plain fwd+bwd (input only) s | lrp s | taylor s | lrp / plain | lrp / plain input-only |")
    print("|---|---|---|---|---|---|---|")
    for name, m in models.items():
        s = m["seconds"]
        print(f"| {name} | {s['plain']:.2f} | {s['plain_input_only']:.2f} | {s['lrp']:.2f} | {s['taylor']:.2f} | "
              f"{m['lrp_over_plain']:.2f}× | {m['lrp_over_plain_input_only']:.2f}× |")
    print()
    print("| model | softmax rule | mean | median | min | max |")
    print("|---|---|---|---|---|---|")
    for name, m in models.items():
        for rule, c in m["conservation"].items():
            print(f"| {name} | {rule if name == 'vit' else '-'} | {c['mean']:.3f} | {c['median']:.3f} | {c['min']:.3f} | {c['max']:.3f} |")


if __name__ == "__main__":
    curves()
    print()
    cost()
