"""Wanda and magnitude at 50% on the real SmolLM2-135M: perplexity, time and peak memory.

Run:  .venv/bin/python benchmarks/core/smollm2_wanda.py  [--nsamples 32 --seqlen 512 --windows 16]
Writes benchmarks/results/core_smollm2.json (after every configuration). Every configuration runs in its own
process so that its peak RSS is its own:

- ``forward``: one plain forward pass of the model over the calibration batches (the
  cost floor Wanda is compared with);
- ``dense`` / ``magnitude`` / ``wanda``: load, prune (calibrating on shakespeare-train),
  then perplexity on the held-out shakespeare-test plays and nyt-test snippets.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from results_io import peak_rss_mib, write_results  # noqa: E402


def _current_rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _reset_peak() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM) so the next phase's peak is its own."""
    Path("/proc/self/clear_refs").write_text("5")


def _phase_peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _calibration(loaded, args):
    import secateurs

    source = secateurs.get_manager().calibration_sources.create(
        "text", corpus="shakespeare-train", nsamples=args["nsamples"], seqlen=args["seqlen"], seed=0
    )
    return source.batches(loaded)


def _job(config: str, args: dict) -> dict:
    import torch

    import secateurs
    from secateurs.pipeline import PruneSpec, prune_model

    torch.manual_seed(0)
    manager = secateurs.get_manager()
    loaded = secateurs.load("smollm2-135m")
    batches = _calibration(loaded, args)
    out = {"config": config, "rss_loaded_mib": _current_rss_mib(),
           "model_mib": sum(p.numel() * p.element_size() for p in loaded.model.parameters()) / 2**20,
           "hidden": loaded.model.config.hidden_size}
    _reset_peak()
    cpu_start = time.process_time()
    if config == "forward":
        start = time.perf_counter()
        with torch.no_grad():
            for batch in batches:
                loaded.adapter.forward(loaded.model, batch)
        out["seconds"] = time.perf_counter() - start
        out["cpu_seconds"] = time.process_time() - cpu_start
        out["phase_peak_rss_mib"] = _phase_peak_mib()
    else:
        if config != "dense":
            spec = PruneSpec(
                scorer=manager.scorers.create(config),
                allocator=manager.allocators.create("uniform"),
                applier=manager.appliers.create("zero"),
                sparsity=0.5,
                calibration=batches if config == "wanda" else None,
                progress=False,
            )
            result = prune_model(loaded, spec)
            out["cpu_seconds"] = time.process_time() - cpu_start
            out["phase_peak_rss_mib"] = _phase_peak_mib()
            out["seconds"] = result.timings["total"]
            out["timings"] = result.timings
            out["sparsity"] = result.sparsity
        for corpus in ("shakespeare-test", "nyt-test"):
            ppl = manager.evaluators.create("perplexity", corpus=corpus, seqlen=args["seqlen"], max_windows=args["windows"], progress=False)
            out[f"ppl_{corpus}"] = ppl.evaluate(loaded)["perplexity"]
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def run(config: str, args: dict) -> dict:
    """``_job`` in a fresh process (a crash in it raises here instead of hanging)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(_job, config, args).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=512)
    parser.add_argument("--windows", type=int, default=16, help="perplexity windows per corpus")
    parser.add_argument("--configs", default="forward,wanda,magnitude,dense")
    parser.add_argument("--name", default="core_smollm2", help="results file name")
    args = vars(parser.parse_args())
    rows = []
    for config in args["configs"].split(","):
        rows.append({**run(config, args), "load_average_at_start": os.getloadavg()[0]})
        _write(args, rows)  # after every configuration: a stopped run keeps what it measured


def _write(args: dict, rows: list[dict]) -> None:
    by = {r["config"]: r for r in rows}
    summary = {
        "model_mib": rows[0]["model_mib"],
        "one_boundary_activations_mib": args["nsamples"] * args["seqlen"] * rows[0]["hidden"] * 4 / 2**20,
    }
    if {"forward", "wanda"} <= set(by):
        wanda, forward = by["wanda"], by["forward"]
        summary |= {
            "wanda_over_forward_time": wanda["seconds"] / forward["seconds"],
            "wanda_over_forward_cpu_time": wanda["cpu_seconds"] / forward["cpu_seconds"],
            "wanda_peak_over_loaded_mib": wanda["peak_rss_mib"] - wanda["rss_loaded_mib"],
            "forward_peak_over_loaded_mib": forward["peak_rss_mib"] - forward["rss_loaded_mib"],
            "wanda_phase_peak_over_loaded_mib": wanda["phase_peak_rss_mib"] - wanda["rss_loaded_mib"],
            "forward_phase_peak_over_loaded_mib": forward["phase_peak_rss_mib"] - forward["rss_loaded_mib"],
        }
    command = "python benchmarks/core/smollm2_wanda.py " + " ".join(f"--{k} {v}" for k, v in args.items())
    path = write_results(args["name"], {"command": command, "args": args, "runs": rows, "summary": summary})
    print(path.read_text(), flush=True)


if __name__ == "__main__":
    main()
