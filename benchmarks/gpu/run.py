"""Wanda and SparseGPT 50 % timed on a randomly initialised LLaMA-layout model built in
place (no checkpoint, no data set), and llm-compressor on the same model and tokens when
it imports; one JSON results file. Run by ``check.sh`` (which also runs the CUDA tests).

    python benchmarks/gpu/run.py --out gpu.json [--device cuda] [--tiny]

``--tiny``: a 2-layer, 64-wide model and 4 × 32 tokens (a dry run for any machine).
``--bootstrap DIR``: write ``*.dist-info`` entry points for the workspace's distributions
into ``DIR`` (for a Python that has their ``src`` folders on ``PYTHONPATH`` but did not
install them) and exit.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MEMBERS = ("core", "adapters/transformers", "adapters/timm", "plugins/ken", "plugins/neuroal", "plugins/lrp")
LLAMA_1B = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4, vocab_size=32000)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=128)


def bootstrap(directory: Path) -> None:
    """One ``<name>-<version>.dist-info`` (METADATA, entry_points.txt) per workspace member."""
    for member in MEMBERS:
        project = tomllib.loads((ROOT / member / "pyproject.toml").read_text())["project"]
        info = directory / f"{project['name'].replace('-', '_')}-{project.get('version', '0')}.dist-info"
        info.mkdir(parents=True, exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project.get('version', '0')}\n")
        groups = project.get("entry-points", {})
        (info / "entry_points.txt").write_text(
            "".join(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()) for group, points in groups.items())
        )


def build(config: dict[str, int], device: str, seed: int = 0):
    """The random LLaMA model (float32 on CPU first, then ``device``; the same for a seed)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(max_position_embeddings=4096, **config))
    return model.eval().to(device)


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(device: str, fn) -> dict[str, float]:
    """Wall and process CPU seconds of ``fn()`` (and the CUDA peak memory, when on CUDA)."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    synchronize(device)
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    synchronize(device)
    out = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
    if device.startswith("cuda"):
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def sparsity_of(model) -> float:
    """Zeros among the Linear weights of the decoder layers."""
    import torch

    weights = [m.weight for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in name]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def ours(model, tokens, applier: str) -> dict[str, Any]:
    from secateurs.builtins.allocators import UniformAllocator
    from secateurs.builtins.appliers import ZeroApplier
    from secateurs.builtins.scorers import WandaScorer
    from secateurs.builtins.sparsegpt import SparseGPTApplier
    from secateurs.pipeline import PruneSpec, prune_model
    from secateurs.protocols import LoadedModel
    from secateurs_transformers.llama import LlamaFamilyAdapter

    loaded = LoadedModel(model, LlamaFamilyAdapter(), "random-llama")
    spec = PruneSpec(
        scorer=WandaScorer(), allocator=UniformAllocator(), applier=SparseGPTApplier() if applier == "sparsegpt" else ZeroApplier(),
        sparsity=0.5, calibration=[{"input_ids": t} for t in tokens.split(1)], progress=False,
    )
    result: dict[str, Any] = {}
    result.update(timed(str(tokens.device), lambda: result.setdefault("timings", prune_model(loaded, spec).timings)))
    return result | {"sparsity": sparsity_of(model)}


def peer(model, tokens, applier: str) -> dict[str, Any]:
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    # a stand-in processor: the dataset is already tokenized, but oneshot wants one
    processor = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")), unk_token="<unk>", pad_token="<unk>")

    folder = tempfile.mkdtemp(prefix="gpu-peer-")  # oneshot resolves the model's name_or_path: a config and tokenizer there
    model.config.save_pretrained(folder)
    processor.save_pretrained(folder)
    model.config._name_or_path = model.name_or_path = folder
    cls = SparseGPTModifier if applier == "sparsegpt" else WandaPruningModifier
    ids = tokens.cpu()
    dataset = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": [[1] * ids.shape[1]] * ids.shape[0]})
    result = timed(str(tokens.device), lambda: oneshot(
        model=model, dataset=dataset, processor=processor, recipe=[cls(sparsity=0.5, targets=[r"re:model.layers.\d+$"])], pipeline="sequential",
        shuffle_calibration_samples=False, num_calibration_samples=ids.shape[0], max_seq_length=ids.shape[1],
    ))
    return result | {"sparsity": sparsity_of(model)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu.json"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=2048)
    parser.add_argument("--pytest-log", type=Path, help="a pytest log whose last line goes into the results")
    parser.add_argument("--bootstrap", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bootstrap:
        bootstrap(args.bootstrap)
        return {}
    import torch
    import transformers

    config = TINY if args.tiny else LLAMA_1B
    nsamples, seqlen = (4, 32) if args.tiny else (args.nsamples, args.seqlen)
    tokens = torch.randint(0, config["vocab_size"], (nsamples, seqlen), generator=torch.Generator().manual_seed(0)).to(args.device)
    results: dict[str, Any] = {
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
        "model": config | {"parameters": None},
        "calibration": {"nsamples": nsamples, "seqlen": seqlen, "tokens": "uniform random, seed 0"},
        "runs": [],
    }
    if args.pytest_log and args.pytest_log.is_file():
        results["cuda_tests"] = (args.pytest_log.read_text().strip().splitlines() or [""])[-1]
    base = build(config, "cpu")
    results["model"]["parameters"] = sum(p.numel() for p in base.parameters())
    try:
        import llmcompressor  # noqa: F401

        tools = {"secateurs": ours, "llm-compressor": peer}
    except ImportError as exc:
        tools = {"secateurs": ours}
        results["llm-compressor"] = f"not run: {exc}"
    for applier in ("wanda", "sparsegpt"):
        for tool, run in tools.items():
            model = copy.deepcopy(base).to(args.device)
            with torch.no_grad():  # warm up the device (kernels, handles) outside the timings
                model(tokens[:1, :8])
            try:
                results["runs"].append({"method": f"{applier}-50", "tool": tool, **run(model, tokens, applier)})
            except Exception as exc:  # one failing tool must not lose the other results
                results["runs"].append({"method": f"{applier}-50", "tool": tool, "error": f"{type(exc).__name__}: {exc}"})
            del model
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
            args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
            print(json.dumps(results["runs"][-1], default=str), flush=True)
    return results


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
