"""CPU latency and parameter count before and after physically removing 25% and 50% of
the MLP neurons (ViT) or conv channels (VGG, ResNet inner channels).

    .venv/bin/python benchmarks/timm/latency.py

Models: the Fashion-MNIST checkpoints. Removal: magnitude scores, uniform rate per group,
``remove`` applier. Latency: median wall time of a forward pass at batch 1 and 32, the
variants of one model timed in interleaved rounds so machine load affects them alike;
one torch thread by default (SECATEURS_THREADS). Also counts multiply-accumulates
(convolutions, linears and attention matmuls) to separate compute from overhead.
Writes benchmarks/results/timm_latency.json.
"""

from __future__ import annotations

import os
import statistics
import time

import torch
from common import write_results
from torch import nn

from secateurs.loading import load
from secateurs.pipeline import PruneSpec, prune_model
from secateurs.plugins import get_manager
from secateurs_timm.base import spec_of
from timm.layers import Attention

CASES = [("vit", "neurons"), ("vgg", "channels"), ("resnet", "channels")]
RATES = (0.0, 0.25, 0.5)
ROUNDS = {1: 80, 32: 20}


def macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one forward on ``x`` (per batch)."""
    total = 0

    def conv(m, args, out):
        nonlocal total
        total += out.numel() * m.weight[0].numel()

    def linear(m, args, out):
        nonlocal total
        total += out.numel() * m.in_features

    def attention(m, args, out):
        nonlocal total
        b, n, _ = args[0].shape
        total += 2 * b * n * n * m.attn_dim  # q @ k^T and attn @ v

    kinds = ((nn.Conv2d, conv), (nn.Linear, linear), (Attention, attention))
    handles = [m.register_forward_hook(fn) for m in model.modules() for cls, fn in kinds if isinstance(m, cls)]
    with torch.inference_mode():
        model(x)
    for h in handles:
        h.remove()
    return total


CATEGORIES = (("conv", ("convolution",)), ("matmul", ("addmm", "::mm", "bmm", "linear", "matmul")),
              ("attention", ("scaled_dot_product", "softmax")), ("norm", ("batch_norm", "layer_norm")),
              ("pool", ("pool",)))


def breakdown(model: nn.Module, x: torch.Tensor, repeats: int = 5) -> dict[str, float]:
    """Milliseconds per forward spent in convolutions, matmuls, attention, norms, pooling
    and all other ops (elementwise, copies), from the profiler's self CPU times."""
    with torch.inference_mode():
        model(x)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(repeats):
                model(x)
    out = dict.fromkeys([c for c, _ in CATEGORIES] + ["other"], 0.0)
    for event in prof.key_averages():
        category = next((c for c, keys in CATEGORIES if any(k in event.key for k in keys)), "other")
        out[category] += event.self_cpu_time_total / 1e3 / repeats
    return out


def variant(name: str, kind: str, rate: float):
    loaded = load(f"fashion-mnist-{name}")
    if rate:
        manager = get_manager()
        spec = PruneSpec(manager.scorers.create("magnitude"), manager.allocators.create("uniform"),
                         manager.appliers.create("remove"), rate, granularity=kind, progress=False)
        prune_model(loaded, spec)
    return loaded


def time_variants(models: list[nn.Module], x: torch.Tensor, rounds: int) -> list[float]:
    """Median milliseconds per forward of each model, timed round-robin."""
    times: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for m in models:
            for _ in range(3):
                m(x)
        for _ in range(rounds):
            for i, m in enumerate(models):
                start = time.perf_counter()
                m(x)
                times[i].append((time.perf_counter() - start) * 1e3)
    return [statistics.median(t) for t in times]


def main() -> None:
    torch.set_num_threads(int(os.environ.get("SECATEURS_THREADS", "1")))
    rows = []
    for name, kind in CASES:
        variants = [variant(name, kind, r) for r in RATES]
        size = spec_of(variants[0]).input_size
        for batch, rounds in ROUNDS.items():
            x = torch.randn(batch, *size, generator=torch.Generator().manual_seed(0))
            ms = time_variants([v.model for v in variants], x, rounds)
            for rate, v, t in zip(RATES, variants, ms):
                row = {
                    "model": name, "granularity": kind, "rate": rate, "batch": batch,
                    "params": sum(p.numel() for p in v.model.parameters()),
                    "macs": macs(v.model, x), "latency_ms": t,
                    "profile_ms": breakdown(v.model, x),
                }
                rows.append(row)
            base = rows[-len(RATES)]
            for row in rows[-len(RATES):]:
                row["params_ratio"] = row["params"] / base["params"]
                row["macs_ratio"] = row["macs"] / base["macs"]
                row["latency_ratio"] = row["latency_ms"] / base["latency_ms"]
                print(f"{name:6s} {kind:8s} rate {row['rate']:.2f} batch {batch:2d}: "
                      f"{row['latency_ms']:8.2f} ms ({row['latency_ratio']:.2f}x), "
                      f"params {row['params']:,} ({row['params_ratio']:.2f}), MACs {row['macs_ratio']:.2f}; "
                      + ", ".join(f"{k} {v:.2f}" for k, v in row["profile_ms"].items()))
    write_results("timm_latency", {"threads": torch.get_num_threads(), "rows": rows})


if __name__ == "__main__":
    main()
