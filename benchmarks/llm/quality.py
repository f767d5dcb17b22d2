"""Perplexity, wall time and peak memory of the base LLM pruning methods on SmolLM2-135M.

    .venv/bin/python benchmarks/llm/quality.py [--nsamples 32] [--seqlen 256] ...

Methods: dense, magnitude (per matrix), Wanda, SparseGPT, OWL+Wanda, OWL+SparseGPT, each
at 50 / 60 / 70 % unstructured and 2:4 (OWL has no 2:4 variant: the pattern fixes every
block at 50 %). Calibration: ``nsamples`` windows of ``seqlen`` tokens from
shakespeare-train (seed 0); perplexity: the first ``eval-windows`` windows of
``eval-seqlen`` tokens of shakespeare-test (disjoint plays). Every configuration runs in
its own subprocess, so its peak RSS is its own. Results: benchmarks/results/llm_quality.json
(rewritten atomically after every configuration; a rerun skips finished ones unless
``--fresh``), and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from results_io import peak_rss_mib, results_path, write_results  # noqa: E402

NAME = "llm_quality"
RESULTS = results_path(NAME)
MODEL = "smollm2-135m"
LEVELS = ("0.5", "0.7", "2:4", "0.6")
WANDA = {"name": "wanda"}
METHODS: dict[str, dict[str, Any]] = {
    "magnitude": {"scorer": {"name": "magnitude", "comparison": "matrix"}, "allocator": "uniform", "applier": "zero"},
    "wanda": {"scorer": WANDA, "allocator": "uniform", "applier": "zero"},
    "sparsegpt": {"scorer": WANDA, "allocator": "uniform", "applier": "sparsegpt"},
    "owl+wanda": {"scorer": WANDA, "allocator": "owl", "applier": "zero"},
    "owl+sparsegpt": {"scorer": WANDA, "allocator": "owl", "applier": "sparsegpt"},
}


def configurations() -> list[dict[str, str]]:
    out = [{"method": "dense", "level": "-"}]
    for level in LEVELS:
        out += [{"method": m, "level": level} for m in METHODS if not (level == "2:4" and m.startswith("owl"))]
    return out


def child(config: dict[str, Any]) -> dict[str, Any]:
    """One configuration, in this process: load, (calibrate, prune), evaluate."""
    from secateurs.builtins.text import Perplexity, TextCalibration
    from secateurs.loading import load
    from secateurs.pipeline import PruneSpec, prune_model
    from secateurs.plugins import get_manager

    loaded = load(MODEL, device="cpu", dtype="float32")
    out: dict[str, Any] = dict(config)
    if config["method"] != "dense":
        recipe = METHODS[config["method"]]
        level = config["level"]
        nm = level == "2:4"
        manager = get_manager()
        calibration = TextCalibration(
            corpus="shakespeare-train", nsamples=config["nsamples"], seqlen=config["seqlen"], seed=0,
            batch_size=config["batch_size"],
        ).batches(loaded)
        spec = PruneSpec(
            scorer=manager.scorers.create(**recipe["scorer"]),
            allocator=manager.allocators.create(recipe["allocator"]),
            applier=manager.appliers.create(recipe["applier"], **({"pattern": "2:4"} if nm else {})),
            sparsity=0.5 if nm else float(level),
            calibration=calibration,
            progress=False,
        )
        cpu0, wall0 = time.process_time(), time.perf_counter()
        result = prune_model(loaded, spec)
        out.update(
            prune_wall_s=time.perf_counter() - wall0,
            prune_cpu_s=time.process_time() - cpu0,
            sparsity=result.sparsity,
            timings=result.timings,
            owl=result.records.get("owl"),
        )
    out["peak_rss_prune_mib"] = peak_rss_mib()
    evaluator = Perplexity(
        corpus="shakespeare-test", seqlen=config["eval_seqlen"], max_windows=config["eval_windows"], progress=False
    )
    wall0 = time.perf_counter()
    out["perplexity"] = evaluator.evaluate(loaded)["perplexity"]
    out["eval_wall_s"] = time.perf_counter() - wall0
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def _key(config: dict[str, Any]) -> str:
    return f"{config['method']}@{config['level']}"


def table(runs: list[dict[str, Any]]) -> str:
    """Markdown: perplexity per method and level, then time and memory per run."""
    by = {_key(r): r for r in runs if "perplexity" in r}
    levels = [lv for lv in LEVELS if any(r["level"] == lv for r in runs)]
    head = "| method | " + " | ".join(f"{lv} ppl" if lv == "2:4" else f"{float(lv):.0%} ppl" for lv in levels) + " |"
    lines = [head, "|" + "---|" * (len(levels) + 1)]
    dense = by.get("dense@-")
    if dense:
        lines.append(f"| dense | {dense['perplexity']:.2f} (all levels) |" + " |" * (len(levels) - 1))
    for method in METHODS:
        cells = [f"{by[f'{method}@{lv}']['perplexity']:.2f}" if f"{method}@{lv}" in by else "n/a" for lv in levels]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "| run | prune wall s | prune CPU s | sparsity | peak RSS MiB (prune / with eval) |", "|---|---|---|---|---|"]
    for r in runs:
        if "perplexity" not in r:
            continue
        prune = f"{r['prune_wall_s']:.0f} | {r['prune_cpu_s']:.0f} | {r['sparsity']:.4f}" if "prune_wall_s" in r else "- | - | 0"
        lines.append(f"| {_key(r)} | {prune} | {r['peak_rss_prune_mib']:.0f} / {r['peak_rss_mib']:.0f} |")
    return "\n".join(lines)


def ratios(runs: list[dict[str, Any]]) -> dict[str, float]:
    """SparseGPT / Wanda and OWL / base pruning-time ratios (wall and CPU), per level."""
    by = {_key(r): r for r in runs if "prune_wall_s" in r}
    out = {}
    pairs = [("sparsegpt", "wanda"), ("owl+wanda", "wanda"), ("owl+sparsegpt", "sparsegpt")]
    for lv in LEVELS:
        for num, den in pairs:
            a, b = by.get(f"{num}@{lv}"), by.get(f"{den}@{lv}")
            if a and b:
                out[f"{num}/{den}@{lv} wall"] = a["prune_wall_s"] / b["prune_wall_s"]
                out[f"{num}/{den}@{lv} cpu"] = a["prune_cpu_s"] / b["prune_cpu_s"]
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eval-windows", type=int, default=16)
    parser.add_argument("--eval-seqlen", type=int, default=512)
    parser.add_argument("--only", nargs="*", help="method@level keys to run (default: all)")
    parser.add_argument("--fresh", action="store_true", help="discard earlier results")
    parser.add_argument("--table", action="store_true", help="print the table of the saved results and exit")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.table:
        data = json.loads(RESULTS.read_text())
        print(table(data["runs"]))
        print(json.dumps(data.get("ratios", {}), indent=2))
        return

    settings = {
        "nsamples": args.nsamples, "seqlen": args.seqlen, "batch_size": args.batch_size,
        "eval_windows": args.eval_windows, "eval_seqlen": args.eval_seqlen,
    }
    data: dict[str, Any] = {"runs": []}
    if RESULTS.is_file() and not args.fresh:
        data = json.loads(RESULTS.read_text())
        if data.get("settings") != settings:
            data = {"runs": []}
    data.update(
        settings=settings,
        model=MODEL,
        command=" ".join([".venv/bin/python", "benchmarks/llm/quality.py", *(argv if argv is not None else sys.argv[1:])]),
    )
    done = {_key(r) for r in data["runs"] if "perplexity" in r}
    for config in configurations():
        key = _key(config)
        if key in done or (args.only and key not in args.only):
            continue
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        proc = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps({**config, **settings})],
            capture_output=True, text=True, cwd=ROOT,
        )
        run = {**config, "started": started}
        if proc.returncode == 0:
            run.update(json.loads(proc.stdout.strip().splitlines()[-1]))
        else:
            run["error"] = proc.stderr.strip().splitlines()[-1:] or ["exit code %d" % proc.returncode]
        data["runs"] = [r for r in data["runs"] if _key(r) != key] + [run]
        data["ratios"] = ratios(data["runs"])
        write_results(NAME, data)
        print(f"{key}: {run.get('perplexity', run.get('error'))} ({run.get('prune_wall_s', 0):.0f} s)", flush=True)
    print(table(data["runs"]))
    print(json.dumps(data.get("ratios", {}), indent=2))


if __name__ == "__main__":
    main()
