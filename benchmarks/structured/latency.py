"""CPU latency and parameter count of the shipped MiniLM (BERT) before and after the
``remove`` applier takes out 25% and 50% of every layer's MLP neurons (magnitude).

Run:  .venv/bin/python benchmarks/structured/latency.py  [--seqlen 128 --reps 30]
Writes benchmarks/results/structured_latency.json.

Inputs are real movie-review sentences padded/truncated to ``seqlen`` tokens, batch 1
and batch 32. The three models are timed round-robin (dense, 25%, 50%, dense, ...) so
that load from other processes affects them alike; the median of ``reps`` forward passes
is reported, as wall time and as the process's CPU time (``time.process_time``: with one
thread, the compute itself, barely affected by other processes competing for the cores;
with more threads it also counts their spin-waits). ``expected_speedup`` is the
proportional estimate: the dense encoder's matmul FLOPs over the pruned one's
(embeddings, norms, softmax and GELU are not counted, so it is an upper bound).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from secateurs.corpora import movie_reviews
from secateurs.loading import load
from secateurs.pipeline import PruneSpec, prune_model
from secateurs.plugins import get_manager

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from results_io import write_results  # noqa: E402

FRACTIONS = (0.25, 0.5)
BATCHES = (1, 32)


def remove_neurons(fraction: float):
    loaded = load("minilm-l6")
    m = get_manager()
    spec = PruneSpec(m.scorers.create("magnitude"), m.allocators.create("uniform"), m.appliers.create("remove"),
                     fraction, "neurons", progress=False)
    prune_model(loaded, spec)
    return loaded


def encoder_flops(model, seqlen: int) -> int:
    """Multiply-accumulates ×2 of the encoder's matmuls for one sequence."""
    total = 0
    for layer in model.encoder.layer:
        linears = [m for m in layer.modules() if isinstance(m, torch.nn.Linear)]
        total += sum(2 * m.in_features * m.out_features * seqlen for m in linears)
        width = layer.attention.self.all_head_size
        total += 2 * 2 * seqlen * seqlen * width  # QK^T and attention x V
    return total


def batch_of(tokenizer, sentences: list[str], size: int, seqlen: int) -> dict[str, torch.Tensor]:
    return dict(tokenizer(sentences[:size], padding="max_length", truncation=True, max_length=seqlen,
                          return_tensors="pt"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seqlen", type=int, default=128)
    parser.add_argument("--reps", type=int, default=30, help="timed passes per model at batch 1 (batch 32: reps // 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dense = load("minilm-l6")
    models = {"dense": dense, **{f"remove {int(f * 100)}% neurons": remove_neurons(f) for f in FRACTIONS}}
    sentences = [s for s, _ in movie_reviews()][:64]
    rows = []
    for size in BATCHES:
        batch = batch_of(dense.tokenizer, sentences, size, args.seqlen)
        reps = args.reps if size == 1 else max(3, args.reps // 3)
        times: dict[str, list[float]] = {name: [] for name in models}
        cpu: dict[str, list[float]] = {name: [] for name in models}
        with torch.inference_mode():
            for loaded in models.values():  # warm-up
                loaded.model(**batch)
            for _ in range(reps):
                for name, loaded in models.items():
                    start, start_cpu = time.perf_counter(), time.process_time()
                    loaded.model(**batch)
                    times[name].append(time.perf_counter() - start)
                    cpu[name].append(time.process_time() - start_cpu)
        base = statistics.median(times["dense"])
        base_cpu = statistics.median(cpu["dense"])
        base_flops = encoder_flops(dense.model, args.seqlen)
        for name, loaded in models.items():
            model = loaded.model
            median, median_cpu = statistics.median(times[name]), statistics.median(cpu[name])
            q1, _, q3 = statistics.quantiles(times[name], n=4)
            flops = encoder_flops(model, args.seqlen)
            rows.append({
                "model": name,
                "batch": size,
                "seqlen": args.seqlen,
                "params": sum(p.numel() for p in model.parameters()),
                "encoder_params": sum(p.numel() for p in model.encoder.parameters()),
                "intermediate_size": model.encoder.layer[0].intermediate.dense.out_features,
                "latency_ms": 1000 * median,
                "latency_iqr_ms": 1000 * (q3 - q1),
                "speedup": base / median,
                "cpu_ms": 1000 * median_cpu,
                "cpu_speedup": base_cpu / median_cpu,
                "encoder_flops_fraction": flops / base_flops,
                "expected_speedup": base_flops / flops,
                "reps": reps,
            })
            r = rows[-1]
            print(f"batch {size:>2}  {name:<22} {r['params']:>11,} params  wall {r['latency_ms']:8.1f} ms "
                  f"x{r['speedup']:.2f}  cpu {r['cpu_ms']:8.1f} ms x{r['cpu_speedup']:.2f}  "
                  f"(proportional x{r['expected_speedup']:.2f})")
    path = write_results("structured_latency", {
        "benchmark": "structured/latency",
        "model": "minilm-l6 (all-MiniLM-L6-v2, BertModel)",
        "rows": rows,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
