"""Magnitude pruning of 30% of the channels / neurons (1/3 of the heads) of the Fashion-MNIST models.

    .venv/bin/python benchmarks/timm/structured_prune.py

Runs each recipe through ``secateurs.run.prune`` (the same path as ``secateurs prune``):
packaged model → magnitude scores of each component (L2 norm over its coupled tensors) →
30% per group (heads: one of the 3 per block) → ``remove`` applier → export → reload from the export. Top-1 on the
10,000 test images before, after, and after reloading; a random scorer as the baseline.
Writes benchmarks/results/timm_structured_prune.json.
"""

from __future__ import annotations

import os
import tempfile
import time

import torch
from common import write_results

from secateurs.loading import load
from secateurs.plugins import get_manager
from secateurs.run import prune

# (model, granularity, sparsity): 30% of 3 heads per block rounds down to none, so heads
# are pruned at 1/3 (one head per block; ranking heads globally instead emptied block 0).
CASES = [("vgg", "channels", 0.3), ("resnet", "channels", 0.3), ("vit", "heads", 1 / 3), ("vit", "neurons", 0.3)]


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def run_case(name: str, kind: str, sparsity: float, scorer: str, out: str) -> dict:
    recipe = {
        "model": f"fashion-mnist-{name}",
        "output": out,
        "sparsity": sparsity,
        "granularity": kind,
        "scorer": scorer,
        "allocator": "uniform",
        "applier": "remove",
        "evaluate": {"name": "accuracy"},
        "seed": 0,
    }
    dense = params(load(recipe["model"]).model)
    start = time.perf_counter()
    outcome = prune(recipe, progress=False)
    seconds = time.perf_counter() - start
    reloaded = load(out)
    after_reload = get_manager().evaluators.create("accuracy").evaluate(reloaded)["accuracy"]
    return {
        "model": name,
        "granularity": kind,
        "scorer": scorer,
        "sparsity": sparsity,
        "accuracy_before": outcome.before["accuracy"],
        "accuracy_after": outcome.after["accuracy"],
        "accuracy_reloaded": after_reload,
        "params_before": dense,
        "params_after": params(outcome.loaded.model),
        "components_removed": sum(u.pruned for u in outcome.result.units),
        "components_total": sum(u.numel for u in outcome.result.units),
        "seconds": seconds,
    }


def main() -> None:
    torch.set_num_threads(int(os.environ.get("SECATEURS_THREADS", "1")))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, kind, sparsity in CASES:
            for scorer in ("magnitude", "random"):
                row = run_case(name, kind, sparsity, scorer, f"{tmp}/{name}-{kind}-{scorer}")
                rows.append(row)
                print(f"{name:6s} {kind:8s} {scorer:9s} acc {row['accuracy_before']:.2%} -> "
                      f"{row['accuracy_after']:.2%} (reloaded {row['accuracy_reloaded']:.2%}), "
                      f"params {row['params_before']:,} -> {row['params_after']:,}")
    write_results("timm_structured_prune", {"rows": rows})


if __name__ == "__main__":
    main()
