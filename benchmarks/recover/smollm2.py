"""Recovery by distillation on SmolLM2-135M pruned by Wanda at 50 %: held-out perplexity
after ``--tokens`` training tokens, against the dense model and the un-recovered one.

    flock /tmp/heavy.lock timeout 590 .venv/bin/python benchmarks/recover/smollm2.py --tokens 50000
    flock /tmp/heavy.lock timeout 590 .venv/bin/python benchmarks/recover/smollm2.py --tokens 50000 --resume

Runs in chunks: the pruned folder and the dense/pruned perplexities are made once (cached
under ``benchmarks/results/cache/recover/`` and in the results file); recovery writes a
checkpoint every ``--checkpoint-every`` steps, so a run killed by ``timeout`` continues
with ``--resume``. Each finished budget is one entry of ``benchmarks/results/recover_smollm2.json``
(perplexity, training seconds, CPU seconds, tokens/s), the entries of other budgets kept.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from results_io import results_path, write_results  # noqa: E402

from secateurs.builtins.text import Perplexity  # noqa: E402
from secateurs.loading import load  # noqa: E402
from secateurs.recipe import load_recipe  # noqa: E402
from secateurs.recover_run import RecoverJob, recover_model  # noqa: E402
from secateurs.run import prune  # noqa: E402

NAME = "recover_smollm2"
CACHE = ROOT / "benchmarks" / "results" / "cache" / "recover"
PRUNED = CACHE / "smollm2-wanda-50"


def perplexity(model: str, windows: int) -> float:
    evaluator = Perplexity(corpus="shakespeare-test", seqlen=512, max_windows=windows, progress=False)
    return evaluator.evaluate(load(model))["perplexity"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=50_000, help="training tokens of this budget")
    parser.add_argument("--resume", action="store_true", help="continue this budget from its checkpoint")
    parser.add_argument("--windows", type=int, default=32, help="held-out perplexity windows of 512 tokens")
    parser.add_argument("--checkpoint-every", type=int, default=5, help="steps between checkpoints")
    args = parser.parse_args()

    path = results_path(NAME)
    results = json.loads(path.read_text()) if path.exists() else {"budgets": {}}
    if not PRUNED.exists():
        recipe = load_recipe(ROOT / "recipes" / "smollm2-wanda-50.toml")
        prune(recipe.with_overrides({"output": str(PRUNED), "evaluate": None}), progress=False)
    for key, model in (("dense", "smollm2-135m"), ("wanda_50", str(PRUNED))):
        if results.get(key, {}).get("windows") != args.windows:
            results[key] = {"perplexity": perplexity(model, args.windows), "windows": args.windows}
            write_results(NAME, results)

    recovered = CACHE / f"smollm2-wanda-50-recovered-{args.tokens}"
    table = {"tokens": args.tokens, "seqlen": 256, "batch_size": 4, "lr": 1e-4, "corpus": "shakespeare-train",
             "checkpoint_every": args.checkpoint_every, "eval": False}
    job = RecoverJob(student=str(PRUNED), teacher="smollm2-135m", output=str(recovered), recover=table)
    cpu = time.process_time()
    done = recover_model(job, resume=args.resume, overwrite=True, progress=True)
    record = done.record
    results["budgets"][str(args.tokens)] = {
        "perplexity": perplexity(str(recovered), args.windows),
        "windows": args.windows,
        "steps": record["steps"],
        "tokens": record["tokens"],
        "train_seconds": record["seconds"],
        "tokens_per_second": record["tokens_per_second"],
        "cpu_seconds_last_chunk": time.process_time() - cpu,
        "resumed_from_step": record["resumed_from_step"],
        "loss_first": record["loss"]["first"],
        "loss_last": record["loss"]["last"],
        "recover": record["recover"],
    }
    write_results(NAME, results)
    entry = results["budgets"][str(args.tokens)]
    print(f"dense {results['dense']['perplexity']:.2f}, Wanda 50 % {results['wanda_50']['perplexity']:.2f}, "
          f"after {args.tokens:,} tokens {entry['perplexity']:.2f} ({entry['tokens_per_second']:.0f} tokens/s)")


if __name__ == "__main__":
    main()
