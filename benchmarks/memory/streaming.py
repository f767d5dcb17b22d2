"""Pruning a model larger than memory: peak RSS, disk traffic and time of budgeted runs.

Run:  .venv/bin/python benchmarks/memory/streaming.py  [--budget 1GiB --layers 30 --skip-smollm2]
Writes benchmarks/results/memory_streaming.json (after every run). Every run is a whole
recipe (load, calibrate, prune, evaluate where stated, save) in a fresh process, so that
its peak RSS (the kernel's high-water mark, ``VmHWM``) and disk traffic (``/proc/self/io``)
are its own:

- ``smollm2``: the real SmolLM2-135M in float32, Wanda 50 %, 8 × 128 calibration tokens,
  without a budget and with ``max_memory = "150MiB"`` (issue 16's table);
- ``big``: a random-initialised LLaMA-layout model (default 2.6B parameters, bfloat16),
  generated shard by shard as sharded safetensors (never whole in memory, in its own
  process) with SmolLM2's tokenizer, pruned with Wanda 50 % under a budget several times
  smaller than the model (2 × 64 calibration tokens, perplexity on one 64-token window),
  then deleted with the pruned copy. Its page cache is dropped first
  (``posix_fadvise(DONTNEED)``), so the disk reads are real ones;
- ``ken``: KEN's pair under a budget: a random LLaMA-layout 'pre-trained' model (default
  0.25B parameters, bfloat16) and its 'fine-tuned' copy (every matrix moved by noise),
  generated the same way; KEN (``k`` entries kept per row, the others restored to the
  pre-trained values) with the pruned model and the KEN delta written, the reference
  model read tensor by tensor from its shards; no calibration (KEN is data-free), so the
  bound has no activations.

The bound a budgeted run must meet: budget + its largest offloaded device-map entry (one
block, or the embeddings when larger) + one block boundary of calibration activations
(inputs and outputs) + the fixed overhead. A run that writes a KEN delta holds, while it
writes it, the largest tensor of both models and one row chunk's work instead of one
entry (``_delta_bytes``): the bound takes the larger of the two. The fixed overhead is
measured before each budgeted run, in a process of its own (``_overhead_job``): the peak
RSS of loading the same model with every weight on disk (``max_memory`` of one byte: imports, tokenizer, the
model's modules and accelerate's hooks, no weights), and its reference model likewise,
KEN's compiled kernels loaded, and tokenizing the calibration.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from results_io import peak_rss_mib, write_results  # noqa: E402

MIB = 2**20


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _io() -> dict[str, int]:
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return {k: int(fields[k]) for k in ("read_bytes", "write_bytes", "rchar", "wchar")}


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _drop_page_cache(folder: Path) -> None:
    """Evict ``folder``'s files (only them) from the page cache, so reading them hits the disk."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _overhead_job(recipe: dict) -> float:
    """Peak RSS (MiB) of what a run of ``recipe`` holds besides weights and activations: the
    model loaded with every weight on disk, its reference model (KEN's pair) likewise, and
    its calibration batches."""
    import secateurs
    from secateurs.offload import Budget
    from secateurs.recipe import Recipe
    from secateurs.run import create_part, reference_state

    parsed = Recipe.from_dict(recipe)
    budget = Budget(1, recipe["offload_folder"])
    loaded = secateurs.load(parsed.model, dtype=parsed.dtype, budget=budget)
    reference_state(parsed)
    if parsed.scorer.name == "ken":  # KEN's compiled kernels (numba, LLVM) load on first use
        import torch

        from secateurs_ken.select import ken_select

        ken_select(torch.randn(8, 256), 16)
    if parsed.calibration is not None:
        calibration = create_part(secateurs.get_manager().calibration_sources, parsed.calibration, seed=parsed.seed)
        calibration.batches(loaded)
    return peak_rss_mib()


def _prune_job(recipe: dict, boundary_bytes: int, overhead_mib: float | None = None) -> dict:
    """One recipe run in this (fresh) process: its peak RSS, disk traffic, time and bound."""
    import secateurs
    from secateurs.offload import offloaded_shard_size

    io_start = _io()
    start = time.perf_counter()
    outcome = secateurs.prune(recipe, progress=False)
    seconds = time.perf_counter() - start
    io = {k: v - io_start[k] for k, v in _io().items()}
    model = outcome.loaded.model
    out = {
        "peak_rss_mib": peak_rss_mib(),
        "vmhwm_mib": _status_mib("VmHWM"),
        "seconds": seconds,
        "timings": outcome.result.timings,
        "sparsity": outcome.result.sparsity,
        "disk_io_mib": {k: v / MIB for k, v in io.items()},
        "model_mib": sum(p.numel() * p.element_size() for p in model.parameters()) / MIB,
        "output_mib": _folder_bytes(Path(recipe["output"])) / MIB,
        "boundary_activations_mib": boundary_bytes / MIB,
    }
    if outcome.after is not None:
        out["perplexity"] = {"before": outcome.before["perplexity"], "after": outcome.after["perplexity"]}
    if recipe.get("max_memory") is not None:
        from accelerate.utils import convert_file_size_to_int

        budget = convert_file_size_to_int(recipe["max_memory"])
        entry = offloaded_shard_size(model) or 0
        pair = _delta_bytes(model) if "ken-delta" in recipe.get("exporters", ()) else 0
        out |= {
            "fixed_overhead_mib": overhead_mib,
            "budget_mib": budget / MIB,
            "largest_entry_mib": entry / MIB,
            "ken_delta_pair_mib": pair / MIB,
            "device_map_disk_entries": sum(v == "disk" for v in model.hf_device_map.values()),
            "bound_mib": (budget + max(entry, pair) + boundary_bytes) / MIB + overhead_mib,
        }
        out["meets_bound"] = out["peak_rss_mib"] <= out["bound_mib"]
    return out


def _delta_bytes(model) -> int:
    """What writing a KEN delta holds besides the resident model: the largest tensor read
    from both models, and one row chunk's work (``CHUNK`` entries: values, mask, packing)."""
    from secateurs_ken.delta import CHUNK

    largest = max(t.numel() * t.element_size() for t in model.state_dict().values())
    return 2 * largest + 8 * CHUNK


def _generate_job(folder: str, dims: dict, shard_layers: int, seed: int, tune: float = 0.0) -> dict:
    """A random LLaMA-layout model in bfloat16 written shard by shard (a few layers each)
    with SmolLM2's tokenizer; returns its size. Peak memory: one shard. ``tune`` > 0: the
    model of the same ``seed`` 'fine-tuned', every matrix moved by noise of ``tune`` times
    its spread (KEN's pair)."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, LlamaConfig

    from secateurs_transformers.packaged import smollm2_path

    out = Path(folder)
    out.mkdir(parents=True)
    config = LlamaConfig(**dims, tie_word_embeddings=False, dtype="bfloat16", max_position_embeddings=2048)
    config.architectures = ["LlamaForCausalLM"]
    config.save_pretrained(out)
    AutoTokenizer.from_pretrained(smollm2_path()).save_pretrained(out)
    h, inter, kv = dims["hidden_size"], dims["intermediate_size"], dims["num_key_value_heads"]
    head = h // dims["num_attention_heads"]
    layer = {
        "self_attn.q_proj.weight": (h, h), "self_attn.k_proj.weight": (kv * head, h),
        "self_attn.v_proj.weight": (kv * head, h), "self_attn.o_proj.weight": (h, h),
        "mlp.gate_proj.weight": (inter, h), "mlp.up_proj.weight": (inter, h), "mlp.down_proj.weight": (h, inter),
        "input_layernorm.weight": (h,), "post_attention_layernorm.weight": (h,),
    }
    n = dims["num_hidden_layers"]
    groups = [[("model.embed_tokens.weight", (dims["vocab_size"], h))]]
    groups += [
        [(f"model.layers.{i}.{k}", s) for i in range(first, min(first + shard_layers, n)) for k, s in layer.items()]
        for first in range(0, n, shard_layers)
    ]
    groups += [[("model.norm.weight", (h,)), ("lm_head.weight", (dims["vocab_size"], h))]]
    gen, noise = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    weight_map, total = {}, 0
    for i, group in enumerate(groups, 1):
        name = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        shard = {
            key: torch.ones(shape, dtype=torch.bfloat16) if len(shape) == 1
            else torch.empty(shape, dtype=torch.bfloat16).normal_(0.0, 0.02, generator=gen)
            for key, shape in group
        }
        for tensor in shard.values() if tune else ():
            if tensor.dim() == 2:
                tensor.add_(torch.empty_like(tensor).normal_(0.0, 0.02 * tune, generator=noise))
        save_file(shard, out / name, metadata={"format": "pt"})
        total += sum(t.numel() * t.element_size() for t in shard.values())
        weight_map |= dict.fromkeys(shard, name)
        del shard
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return {"weights_mib": total / MIB, "shards": len(groups), "peak_rss_mib": peak_rss_mib()}


def _in_process(fn, *args) -> dict:
    """``fn(*args)`` in a fresh process (a crash in it raises here instead of hanging)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def _smollm2_runs(work: Path) -> Iterator[dict]:
    """The issue's two SmolLM2 runs, one row each (yielded as soon as measured)."""
    for budget in (None, "150MiB"):
        recipe = {
            "model": "smollm2-135m", "dtype": "float32", "sparsity": 0.5, "scorer": "wanda",
            "calibration": {"name": "text", "corpus": "shakespeare-train", "nsamples": 8, "seqlen": 128},
            "output": str(work / f"smollm2-{budget or 'none'}"),
        }
        if budget:
            recipe |= {"max_memory": budget, "offload_folder": str(work / "scratch")}
        boundary = 2 * 8 * 128 * 576 * 4
        overhead = _in_process(_overhead_job, recipe) if budget else None
        row = {"run": "smollm2", "max_memory": budget, **_in_process(_prune_job, recipe, boundary, overhead)}
        shutil.rmtree(recipe["output"])
        yield row


def _big_run(args: argparse.Namespace, work: Path) -> dict:
    dims = {
        "hidden_size": args.hidden, "intermediate_size": args.intermediate, "num_hidden_layers": args.layers,
        "num_attention_heads": args.hidden // 128, "num_key_value_heads": args.hidden // 128, "vocab_size": 49152,
    }
    folder = work / "random-llama"
    start = time.perf_counter()
    generated = _in_process(_generate_job, str(folder), dims, 2, 0)
    generated["seconds"] = time.perf_counter() - start
    recipe = {
        "model": str(folder), "sparsity": 0.5, "scorer": "wanda",
        "calibration": {"name": "text", "corpus": "shakespeare-train", "nsamples": 2, "seqlen": 64},
        "evaluate": {"name": "perplexity", "corpus": "shakespeare-test", "seqlen": 64, "max_windows": 1},
        "max_memory": args.budget, "offload_folder": str(work / "scratch"), "output": str(work / "random-llama-pruned"),
    }
    boundary = 2 * 2 * 64 * args.hidden * 2
    try:
        overhead = _in_process(_overhead_job, recipe)
        _drop_page_cache(folder)
        row = _in_process(_prune_job, recipe, boundary, overhead)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(recipe["output"], ignore_errors=True)
    params = generated["weights_mib"] * MIB / 2
    return {"run": "big", "max_memory": args.budget, "dims": dims, "params_billions": params / 1e9,
            "generate": generated, **row, "model_over_budget": row["model_mib"] / row["budget_mib"]}


def _ken_run(args: argparse.Namespace, work: Path) -> dict:
    """KEN's pair under a budget: a random 'pre-trained' LLaMA and its 'fine-tuned' copy,
    KEN (k per row, restore) with the delta and the pruned model written; no calibration."""
    dims = {
        "hidden_size": args.ken_hidden, "intermediate_size": args.ken_intermediate, "num_hidden_layers": args.ken_layers,
        "num_attention_heads": args.ken_hidden // 64, "num_key_value_heads": args.ken_hidden // 64, "vocab_size": 49152,
    }
    pre, ft = work / "random-llama-pre", work / "random-llama-ft"
    start = time.perf_counter()
    generated = [_in_process(_generate_job, str(folder), dims, 2, 0, tune) for folder, tune in ((pre, 0.0), (ft, 0.1))]
    generate_seconds = time.perf_counter() - start
    recipe = {
        "model": str(ft), "reference_model": str(pre), "sparsity": 0.0, "scorer": "ken",
        "allocator": {"name": "ken-k", "k": args.ken_k}, "applier": "restore", "exporters": ["safetensors", "ken-delta"],
        "max_memory": args.ken_budget, "offload_folder": str(work / "scratch"), "output": str(work / "random-llama-ken"),
    }
    try:
        overhead = _in_process(_overhead_job, recipe)
        for folder in (pre, ft):
            _drop_page_cache(folder)
        row = _in_process(_prune_job, recipe, 0, overhead)
        row["delta_mib"] = (Path(recipe["output"]) / "ken-delta.safetensors").stat().st_size / MIB
    finally:
        for folder in (pre, ft, Path(recipe["output"])):
            shutil.rmtree(folder, ignore_errors=True)
    params = generated[0]["weights_mib"] * MIB / 2
    return {"run": "ken", "max_memory": args.ken_budget, "dims": dims, "k": args.ken_k, "params_billions": params / 1e9,
            "generate_seconds": generate_seconds, **row,
            "pair_mib": 2 * row["model_mib"], "model_over_budget": row["model_mib"] / row["budget_mib"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="1GiB", help="max_memory of the big run")
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--hidden", type=int, default=2560)
    parser.add_argument("--intermediate", type=int, default=6912)
    parser.add_argument("--work", default=None, help="scratch folder (default: a fresh temp folder, removed)")
    parser.add_argument("--skip-smollm2", action="store_true")
    parser.add_argument("--skip-big", action="store_true")
    parser.add_argument("--skip-ken", action="store_true")
    parser.add_argument("--ken-budget", default="112MiB", help="max_memory of the KEN pair run")
    parser.add_argument("--ken-layers", type=int, default=12)
    parser.add_argument("--ken-hidden", type=int, default=1024)
    parser.add_argument("--ken-intermediate", type=int, default=2816)
    parser.add_argument("--ken-k", type=int, default=32, help="entries KEN keeps per row")
    parser.add_argument("--name", default="memory_streaming", help="results file name")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="secateurs-bench-", dir=args.work))
    command = "python benchmarks/memory/streaming.py " + " ".join(sys.argv[1:])
    rows: list[dict] = []
    try:
        if not args.skip_smollm2:
            for row in _smollm2_runs(work):
                rows.append(row)
                _write(args, command, rows)
        if not args.skip_big:
            rows.append(_big_run(args, work))
            _write(args, command, rows)
        if not args.skip_ken:
            rows.append(_ken_run(args, work))
            _write(args, command, rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _write(args: argparse.Namespace, command: str, rows: list[dict]) -> None:
    path = write_results(args.name, {"command": command, "args": vars(args), "runs": rows})
    print(path.read_text(), flush=True)


if __name__ == "__main__":
    main()
