"""Peak RSS of `secateurs prune` (Wanda, 50%) on a bf16 SmolLM2-135M: the model's own dtype
(the default, ``dtype = "auto"``) against ``dtype = "float32"`` (the old default, which
upcast the model and saved it as float32).

Run:  .venv/bin/python benchmarks/core/bf16_rss.py  [--nsamples 32 --seqlen 512]
Writes benchmarks/results/core_bf16_rss.json. Each configuration is one `secateurs prune`
process; its peak RSS is the kernel's ``ru_maxrss`` of that child (``os.wait4``).
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
from results_io import write_results  # noqa: E402

RECIPE = """model = "{model}"
output = "{output}"
sparsity = 0.5
dtype = "{dtype}"
scorer = "wanda"
[calibration]
name = "text"
corpus = "shakespeare-train"
nsamples = {nsamples}
seqlen = {seqlen}
"""


def bf16_copy(folder: Path) -> Path:
    """The packaged SmolLM2-135M (float32) saved again in bfloat16."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from secateurs_transformers.packaged import smollm2_path

    source = smollm2_path()
    AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).to(torch.bfloat16).save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return folder


def run(model: Path, work: Path, dtype: str, args) -> dict:
    output = work / f"out-{dtype}"
    recipe = work / f"{dtype}.toml"
    recipe.write_text(RECIPE.format(model=model, output=output, dtype=dtype, nsamples=args.nsamples, seqlen=args.seqlen))
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", "from secateurs.cli import main; main()", "prune", str(recipe), "-q"])
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"prune with dtype={dtype} failed")
    weights = output / "model.safetensors"
    return {
        "dtype": dtype,
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "saved_mib": round(weights.stat().st_size / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsamples", type=int, default=32)
    parser.add_argument("--seqlen", type=int, default=512)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="secateurs-bf16-") as tmp:
        work = Path(tmp)
        model = bf16_copy(work / "smollm2-bf16")
        runs = [run(model, work, dtype, args) for dtype in ("float32", "auto")]
    payload = {"model": "smollm2-135m saved as bfloat16", "scorer": "wanda", "sparsity": 0.5,
               "calibration": {"corpus": "shakespeare-train", "nsamples": args.nsamples, "seqlen": args.seqlen},
               "runs": runs}
    print(write_results("core_bf16_rss", payload))
    for r in runs:
        print(f"dtype={r['dtype']:<8} peak RSS {r['peak_rss_mib']:.0f} MiB, saved {r['saved_mib']:.0f} MiB, {r['seconds']:.0f} s")


if __name__ == "__main__":
    main()
