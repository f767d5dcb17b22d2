"""Peak RSS of loading a model: ``secateurs.loading.load`` against the library's own
``from_pretrained`` on the same folder and dtype (goal: secateurs ≤ transformers + 5 %).

Run:  flock /tmp/heavy.lock .venv/bin/python benchmarks/core/load_memory.py  [--repeats 2] [--before REF]
Writes benchmarks/results/load_memory.json. ``--before REF`` measures ``load`` of a git
revision too, in the same run (its ``*/src`` folders, checked out into a temporary
worktree, first on ``PYTHONPATH``). Models: the packaged SmolLM2-135M (float32 on
disk; loaded as it is, as float32 and cast to bfloat16), the packaged MiniLM (BERT) and
a random LLaMA of ~1 GB in float32 with tied embeddings, written to a temp folder. Each
measurement is one fresh process; its peak RSS is its own ``VmHWM``, read just before it
exits (``CHILD``). ``imports``: the same process without the load (interpreter,
libraries, plugins), so that ``load`` minus ``imports`` is what loading itself adds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from results_io import write_results

TRANSFORMERS = """
import torch, transformers
if load:
    getattr(transformers, auto).from_pretrained(path, dtype=dtype if dtype == "auto" else getattr(torch, dtype))
"""
TOKENIZER = """
import os
if load and os.path.isfile(os.path.join(path, "tokenizer.json")):
    transformers.AutoTokenizer.from_pretrained(path)
"""
SECATEURS = """
import secateurs.loading
if load:
    secateurs.loading.load(path, dtype=dtype)
"""
LOADERS = {"transformers": TRANSFORMERS, "transformers+tokenizer": TRANSFORMERS + TOKENIZER, "secateurs": SECATEURS}
"""What each process runs: plain ``from_pretrained`` (the goal's baseline), the same plus
the tokenizer (what ``load`` returns besides the model), and ``secateurs.loading.load``."""
CHILD = """
import os, sys
path, auto, dtype, load = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
{body}
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")), flush=True)
os._exit(0)
"""
"""One measurement: the child prints its own peak RSS (``VmHWM``, KiB: its address space's
high-water mark; ``ru_maxrss`` would carry the parent's from the fork) and exits without
the interpreter's teardown, which allocates ~130 MiB of its own and is not loading."""


def random_llama(folder: Path) -> Path:
    """A random LLaMA of ~1 GB in float32 (~257M parameters, tied embeddings)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=65536, hidden_size=1024, intermediate_size=2816, num_hidden_layers=17,
        num_attention_heads=16, num_key_value_heads=4, tie_word_embeddings=True, dtype="float32",
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return folder


ROOT = Path(__file__).resolve().parents[2]


def peak_rss(loader: str, path: Path, auto: str, dtype: str, load: bool, env: dict | None = None) -> tuple[float, float]:
    """(peak RSS MiB, seconds) of one fresh process running ``loader`` (in ``env``)."""
    started = time.perf_counter()
    code = CHILD.format(body=LOADERS[loader])
    done = subprocess.run([sys.executable, "-c", code, str(path), auto, dtype, "1" if load else "0"], check=False,
                          stdout=subprocess.PIPE, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{loader} failed on {path} ({dtype})")
    return int(done.stdout.split()[-1]) / 1024, time.perf_counter() - started


def measure(name: str, path: Path, auto: str, dtype: str, repeats: int, before: dict | None) -> dict:
    """The row of one model and dtype: each loader's lowest peak over ``repeats`` runs
    (``secateurs_before``: ``load`` of the ``--before`` revision, in the ``before`` env)."""
    row: dict = {"model": name, "dtype": dtype, "weights_mib": round(weights_mib(path), 1)}
    runs = [(loader, loader, None) for loader in LOADERS] + ([("secateurs_before", "secateurs", before)] if before else [])
    for label, loader, env in runs:
        loads = [peak_rss(loader, path, auto, dtype, True, env) for _ in range(repeats)]
        row[f"{label}_imports_mib"] = round(peak_rss(loader, path, auto, dtype, False, env)[0], 1)
        row[f"{label}_load_mib"] = round(min(peak for peak, _ in loads), 1)
        row[f"{label}_seconds"] = round(min(seconds for _, seconds in loads), 1)
    row["ratio"] = round(row["secateurs_load_mib"] / row["transformers_load_mib"], 3)
    row["ratio_with_tokenizer"] = round(row["secateurs_load_mib"] / row["transformers+tokenizer_load_mib"], 3)
    row["added_by_load"] = {label: round(row[f"{label}_load_mib"] - row[f"{label}_imports_mib"], 1) for label, _, _ in runs}
    print(row, flush=True)
    return row


def before_env(ref: str, tmp: Path) -> dict:
    """An environment importing secateurs from revision ``ref`` (a worktree under ``tmp``)."""
    tree = tmp / "before"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), ref], check=True, capture_output=True)
    sources = sorted(str(p) for p in tree.glob("*/src")) + sorted(str(p) for p in tree.glob("*/*/src"))
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sources)}


def weights_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.glob("*.safetensors")) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--before", metavar="REF", help="also measure load of this git revision")
    args = parser.parse_args()
    from secateurs.loading import resolve_source

    smollm2, minilm = resolve_source("smollm2-135m"), resolve_source("minilm-l6")
    with tempfile.TemporaryDirectory(prefix="secateurs-load-memory-") as tmp:
        before = before_env(args.before, Path(tmp)) if args.before else None
        llama = random_llama(Path(tmp) / "random-llama-1gb")
        cases = [
            ("smollm2-135m", smollm2, "AutoModelForCausalLM", "auto"),
            ("smollm2-135m", smollm2, "AutoModelForCausalLM", "float32"),
            ("smollm2-135m", smollm2, "AutoModelForCausalLM", "bfloat16"),
            ("minilm-l6", minilm, "AutoModel", "auto"),
            ("random-llama-1gb", llama, "AutoModelForCausalLM", "auto"),
            ("random-llama-1gb", llama, "AutoModelForCausalLM", "float32"),
            ("random-llama-1gb", llama, "AutoModelForCausalLM", "bfloat16"),
        ]
        try:
            rows = [measure(*case, args.repeats, before) for case in cases]
        finally:
            if before is not None:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(Path(tmp) / "before")],
                               check=False, capture_output=True)
    payload = {
        "goal": "secateurs_load_mib <= 1.05 * transformers_load_mib",
        "method": "peak RSS (VmHWM) of one fresh process per measurement, read before it exits; lowest of the repeats",
        "repeats": args.repeats,
        "before_ref": args.before,
        "rows": rows,
    }
    print(write_results("load_memory", payload))
    for r in rows:
        print(f"{r['model']:<18}{r['dtype']:<10}transformers {r['transformers_load_mib']:>7.0f}  "
              f"+tokenizer {r['transformers+tokenizer_load_mib']:>7.0f}  secateurs {r['secateurs_load_mib']:>7.0f}  "
              f"before {r.get('secateurs_before_load_mib', float('nan')):>7.0f}  ratio {r['ratio']:.3f}")


if __name__ == "__main__":
    main()
