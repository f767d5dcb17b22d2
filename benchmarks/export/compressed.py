"""File size, load time and reloaded perplexity of SmolLM2-135M saved dense and saved by
the ``compressed-tensors`` exporter (issue 25).

    .venv/bin/python benchmarks/export/compressed.py [--nsamples 16] [--seqlen 256] [--eval-windows 4]

Models: dense; Wanda 50 % unstructured (calibration: ``nsamples`` windows of ``seqlen``
tokens of shakespeare-train, seed 0); magnitude 2:4. Each is saved in float32 and in
bfloat16 with the ``safetensors`` exporter (dense) and, when pruned, with
``compressed-tensors`` (format ``auto``: ``sparse-bitmask`` or ``sparse-24-bitmask``).
Every folder is loaded back (dense: plain ``from_pretrained``; compressed:
``secateurs_transformers.compressed.load_compressed``, since transformers 5 cannot read
sparse compressed-tensors folders) and its perplexity on the first ``eval-windows``
windows of 512 tokens of shakespeare-test is compared with the in-memory model's.
Results: benchmarks/results/export_compressed.json and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
from results_io import write_results  # noqa: E402

NAME = "export_compressed"
MODEL = "smollm2-135m"
EVAL_SEQLEN = 512


def pruned_models(nsamples: int, seqlen: int) -> dict[str, tuple[Any, Any]]:
    """``{name: (loaded, result)}``: dense (no result), Wanda 50 %, magnitude 2:4; float32."""
    from secateurs.builtins.text import TextCalibration
    from secateurs.loading import load
    from secateurs.pipeline import PruneSpec, prune_model
    from secateurs.plugins import get_manager

    manager = get_manager()
    out: dict[str, tuple[Any, Any]] = {"dense": (load(MODEL, device="cpu", dtype="float32"), None)}
    runs = {
        "wanda 50%": ("wanda", {}, True),
        "magnitude 2:4": ("magnitude", {"pattern": "2:4"}, False),
    }
    for name, (scorer, applier, calibrated) in runs.items():
        loaded = load(MODEL, device="cpu", dtype="float32")
        calibration = (
            TextCalibration(corpus="shakespeare-train", nsamples=nsamples, seqlen=seqlen, seed=0).batches(loaded)
            if calibrated else None
        )
        spec = PruneSpec(
            scorer=manager.scorers.create(scorer), allocator=manager.allocators.create("uniform"),
            applier=manager.appliers.create("zero", **applier), sparsity=0.5, calibration=calibration, progress=False,
        )
        out[name] = (loaded, prune_model(loaded, spec))
    return out


def folder_bytes(folder: Path) -> tuple[int, int]:
    """(bytes of the ``*.safetensors`` files, bytes of every file)."""
    files = [p for p in folder.iterdir() if p.is_file()]
    return sum(p.stat().st_size for p in files if p.suffix == ".safetensors"), sum(p.stat().st_size for p in files)


def reload(folder: Path, compressed: bool, loaded: Any) -> tuple[Any, float]:
    """The folder's model as a ``LoadedModel`` (the in-memory one's adapter and tokenizer)
    and the seconds the load took."""
    import transformers

    from secateurs.protocols import LoadedModel
    from secateurs_transformers.compressed import load_compressed

    start = time.perf_counter()
    if compressed:
        model = load_compressed(folder)
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype="auto").eval()
    seconds = time.perf_counter() - start
    return LoadedModel(model, loaded.adapter, str(folder), loaded.tokenizer), seconds


def measure(nsamples: int, seqlen: int, windows: int) -> list[dict[str, Any]]:
    from secateurs.builtins.text import Perplexity
    from secateurs.plugins import get_manager
    from secateurs.types import PruneResult

    exporters = get_manager().exporters
    perplexity = Perplexity(corpus="shakespeare-test", seqlen=EVAL_SEQLEN, max_windows=windows, progress=False)
    rows = []
    for name, (loaded, result) in pruned_models(nsamples, seqlen).items():
        for dtype in (torch.float32, torch.bfloat16):
            loaded.model.to(dtype)
            in_memory = perplexity.evaluate(loaded)["perplexity"]
            savers = ["safetensors"] + (["compressed-tensors"] if result is not None else [])
            for saver in savers:
                with tempfile.TemporaryDirectory() as tmp:
                    folder = Path(tmp)
                    exporters.create(saver).export(loaded, result or PruneResult(), folder)
                    weights, total = folder_bytes(folder)
                    back, seconds = reload(folder, saver == "compressed-tensors", loaded)
                    fmt = back.model.config.to_dict().get("quantization_config")
                    rows.append({
                        "model": name, "dtype": str(dtype).removeprefix("torch."), "saved": saver,
                        "format": "dense" if saver == "safetensors" else _sparsity_format(folder),
                        "safetensors_bytes": weights, "folder_bytes": total, "load_s": seconds,
                        "perplexity_in_memory": in_memory, "perplexity_reloaded": perplexity.evaluate(back)["perplexity"],
                        "reloaded_config_has_quantization_config": fmt is not None,
                    })
                    print(rows[-1], flush=True)
    return rows


def _sparsity_format(folder: Path) -> str:
    import json

    return json.loads((folder / "config.json").read_text())["quantization_config"]["sparsity_config"]["format"]


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one row per saved folder, size relative to the dense file of its dtype."""
    dense = {r["dtype"]: r["safetensors_bytes"] for r in rows if r["model"] == "dense"}
    lines = [
        "| model | dtype | saved as | weights MB | × dense file | load s | ppl in memory | ppl reloaded |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['dtype']} | {r['format']} | {r['safetensors_bytes'] / 1e6:.1f} | "
            f"{r['safetensors_bytes'] / dense[r['dtype']]:.3f} | {r['load_s']:.2f} | "
            f"{r['perplexity_in_memory']:.3f} | {r['perplexity_reloaded']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsamples", type=int, default=16)
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--eval-windows", type=int, default=4)
    args = parser.parse_args(argv)
    rows = measure(args.nsamples, args.seqlen, args.eval_windows)
    settings = {"nsamples": args.nsamples, "seqlen": args.seqlen, "eval_windows": args.eval_windows,
                "eval_seqlen": EVAL_SEQLEN}
    path = write_results(NAME, {"settings": settings, "rows": rows})
    print(table(rows))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
