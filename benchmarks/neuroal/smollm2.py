"""NeuroAL vs uniform vs OWL on the shipped SmolLM2-135M, and NeuroAL's cost.

    .venv/bin/python benchmarks/neuroal/smollm2.py [--only NAME ...] [--list]

Every configuration runs in its own subprocess (one torch thread: the machine's two cores
are shared) and is measured for pruning wall time (the pipeline's ``total``), process wall
time and peak RSS, and pruning CPU time (one thread, so CPU seconds measure work even
when other jobs share the cores); perplexity on shakespeare-test after pruning. Calibration:
shakespeare-train, ``CALIBRATION`` below. Results are appended after every configuration
to ``benchmarks/results/neuroal_smollm2.json`` (atomic rewrite), so an interrupted run
keeps what it finished; a rerun skips configurations already in the file.

Configurations run in priority order (``--list``): dense; Wanda at 70% alone, with OWL,
with NeuroAL (cheap search, then the published defaults); then the quality grid (Wanda
80%, magnitude 70 and 80%, both 60%) with the cheap search; SparseGPT (block step only);
more search options; the published defaults on Wanda at 60% and 80%.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from results_io import peak_rss_mib, results_path, write_results  # noqa: E402

NAME = "neuroal_smollm2"
MODEL = "smollm2-135m"
CALIBRATION = {"name": "text", "corpus": "shakespeare-train", "nsamples": 16, "seqlen": 64}
EVALUATION = {"corpus": "shakespeare-test", "seqlen": 256, "max_windows": 6}
THREADS = 1

SCORERS = {
    "wanda": ({"name": "wanda"}, "zero"),
    "magnitude": ({"name": "magnitude", "comparison": "row"}, "zero"),
    "sparsegpt": ({"name": "wanda"}, "sparsegpt"),  # the scorer only feeds OWL's outlier ratios
}
COARSE = {"block_grid": [0.02, 0.05, 0.1, 0.15, 0.2, 0.25], "row_grid": [0.0, 0.02, 0.05, 0.1, 0.15, 0.25]}
CHEAP = {**COARSE, "search_samples": 2, "search_seqlen": 32}
"""The NeuroAL variant of the quality grid (the full published search does not fit the
time budget on this machine for every configuration; see the README)."""


def config(name: str, base: str, allocator: dict, sparsity: float) -> dict:
    scorer, applier = SCORERS[base]
    return {"name": name, "base": base, "scorer": scorer, "applier": applier, "allocator": allocator, "sparsity": sparsity}


def configurations() -> list[dict]:
    """All configurations, most important first (the run can be cut short and resumed)."""
    out = [{"name": "dense", "dense": True}]
    w70 = lambda label, params: config(f"wanda/neuroal[{label}]/0.7", "wanda", {"name": "neuroal", **params}, 0.7)  # noqa: E731
    out += [
        config("wanda/uniform/0.7", "wanda", {"name": "uniform"}, 0.7),
        w70("cheap", CHEAP),
        config("wanda/owl/0.7", "wanda", {"name": "owl"}, 0.7),
        config("wanda/neuroal/0.7", "wanda", {"name": "neuroal"}, 0.7),  # the published defaults
    ]
    for sparsity, base in [(0.8, "wanda"), (0.7, "magnitude"), (0.8, "magnitude"), (0.6, "wanda"), (0.6, "magnitude")]:
        out.append(config(f"{base}/uniform/{sparsity}", base, {"name": "uniform"}, sparsity))
        out.append(config(f"{base}/owl/{sparsity}", base, {"name": "owl"}, sparsity))
        out.append(config(f"{base}/neuroal[cheap]/{sparsity}", base, {"name": "neuroal", **CHEAP}, sparsity))
    out += [
        w70("samples2-seqlen32", {"search_samples": 2, "search_seqlen": 32}),
        config("sparsegpt/uniform/0.7", "sparsegpt", {"name": "uniform"}, 0.7),
        config("sparsegpt/owl/0.7", "sparsegpt", {"name": "owl"}, 0.7),
        config("sparsegpt/neuroal[cheap]/0.7", "sparsegpt", {"name": "neuroal", **CHEAP}, 0.7),
        w70("seqlen32", {"search_seqlen": 32}),
        w70("samples2", {"search_samples": 2}),
        w70("coarse", COARSE),
        config("wanda/neuroal/0.6", "wanda", {"name": "neuroal"}, 0.6),  # the published defaults
        config("wanda/neuroal/0.8", "wanda", {"name": "neuroal"}, 0.8),
    ]
    assert len({c["name"] for c in out}) == len(out), "configuration names must be unique"
    return out


def run_one(cfg: dict) -> dict:
    """Inside the subprocess: prune (or not) and measure perplexity (``cfg`` may override
    ``calibration``, ``evaluation`` and ``threads``)."""
    import torch

    torch.set_num_threads(cfg.get("threads", THREADS))
    from secateurs.loading import load
    from secateurs.plugins import get_manager
    from secateurs.run import prune

    evaluator = get_manager().evaluators.create("perplexity", progress=False, **cfg.get("evaluation", EVALUATION))
    if cfg.get("dense"):
        loaded = load(MODEL)
        return {"perplexity": evaluator.evaluate(loaded)["perplexity"], "sparsity": 0.0}
    recipe = {
        "model": MODEL,
        "sparsity": cfg["sparsity"],
        "scorer": cfg["scorer"],
        "allocator": cfg["allocator"],
        "applier": cfg["applier"],
        "calibration": cfg.get("calibration", CALIBRATION),
    }
    cpu = time.process_time()
    outcome = prune(recipe, progress=False)
    prune_cpu = time.process_time() - cpu
    result = outcome.result
    started = time.perf_counter()
    metrics = evaluator.evaluate(outcome.loaded)
    row = {
        "perplexity": metrics["perplexity"],
        "sparsity": result.sparsity,
        "prune_seconds": result.timings["total"],
        "prune_cpu_seconds": prune_cpu,
        "timings": result.timings,
        "eval_seconds": time.perf_counter() - started,
    }
    record = result.records.get("neuroal")
    if record is not None:
        row["neuroal"] = {
            "block_lambda": record["block_step"]["lambda"],
            "row_lambda": record["row_step"].get("lambda"),
            "row_step": "skipped" if "skipped" in record["row_step"] else "run",
            "search": record["search"],
            "block_scores": record["block_step"]["scores"],
            "row_scores": record["row_step"].get("scores"),
            "block_sparsity": record["block_sparsity"],
        }
    if "owl" in result.records:
        row["owl_sparsity"] = list(result.records["owl"]["sparsity"].values())
    return row


def measure(cfg: dict) -> dict:
    """Run ``cfg`` in a subprocess; add its wall time and peak RSS."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--config", json.dumps(cfg)],
        capture_output=True, text=True, env=_child_env(cfg.get("threads", THREADS)), check=False,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        return {"name": cfg["name"], "error": proc.stderr.strip().splitlines()[-5:], "wall_seconds": wall}
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"name": cfg["name"], **{k: v for k, v in cfg.items() if k != "name"}, **row, "wall_seconds": wall}


def _child_env(threads: int) -> dict[str, str]:
    """``threads`` threads; byte-code cached in a private prefix (imports compile once, not per run)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cache = Path(tempfile.gettempdir()) / "secateurs-neuroal-bench-pycache"
    return {**env, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false", "PYTHONPYCACHEPREFIX": str(cache)}


def main() -> None:
    setup = {"model": MODEL, "calibration": CALIBRATION, "evaluation": EVALUATION, "threads": THREADS}
    run_all(NAME, configurations(), setup, __doc__)


def run_all(name: str, configs: list[dict], setup: dict, doc: str | None) -> None:
    """The command line of a grid: run every configuration of ``configs`` not yet in
    ``benchmarks/results/<name>.json`` (``--only``, ``--list``), each in its own process,
    saving after each with ``setup`` (what every row shares)."""
    results = results_path(name)
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--only", nargs="*", help="run only these configuration names")
    parser.add_argument("--list", action="store_true", help="list the configurations and exit")
    args = parser.parse_args()
    if args.config:
        row = run_one(json.loads(args.config))
        row["peak_rss_mb"] = peak_rss_mib()
        print(json.dumps(row))
        return
    if args.list:
        print("\n".join(c["name"] for c in configs))
        return
    rows = json.loads(results.read_text())["rows"] if results.exists() else []
    done = {r["name"] for r in rows if "error" not in r}
    rows = [r for r in rows if r["name"] in done]
    for cfg in configs:
        if cfg["name"] in done or (args.only and cfg["name"] not in args.only):
            continue
        row = measure(cfg)
        rows.append(row)
        write_results(name, {**setup, "rows": rows})
        keys = ("perplexity", "sparsity", "prune_seconds", "prune_cpu_seconds", "wall_seconds", "peak_rss_mb", "error")
        summary = {k: row.get(k) for k in keys}
        print(cfg["name"], json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
