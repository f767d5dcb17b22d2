"""secateurs against llm-compressor on SmolLM2-135M: perplexity, pruning time, memory.

    flock /tmp/heavy.lock .venv/bin/python benchmarks/peers/run.py [--methods wanda-50 ...]

Both tools prune the same float32 SmolLM2-135M folder with the same calibration windows
(``--nsamples`` × ``--seqlen`` tokens of ``shakespeare-train``, seed 0, one window per
batch, in the same order), on ``measure.THREADS`` threads; for every method the two runs
go back to back, each in its own process (``--repeats`` pairs). llm-compressor 0.14 runs
from its own venv (``--peer-venv``, created with uv on first use; never a dependency of
the project). Each pruned model is saved, and one evaluator, in its own process, reads
both folders: perplexity over ``--eval-windows`` × ``--eval-seqlen`` tokens of
``shakespeare-test``, sparsity counted from the weights of every Linear in the decoder
layers, and the agreement of the two zero masks. Results: benchmarks/results/peers.json
(after every method), a Markdown table on stdout (``--table`` reprints it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE), str(ROOT / "benchmarks")]
from measure import THREADS, measured, pin_threads  # noqa: E402
from results_io import results_path, write_results  # noqa: E402

NAME = "peers"
PEER_REQUIREMENT = "llmcompressor==0.14.0.1"
METHODS = ("wanda-50", "sparsegpt-50", "sparsegpt-2:4", "owl-wanda-70")
LAYER_PREFIX = "model.layers."


def spec_for(method: str) -> dict[str, Any]:
    """The secateurs parts of a method: scorer, allocator, applier (with parameters), sparsity."""
    sparsegpt = method.startswith("sparsegpt")
    return {
        "scorer": {"name": "wanda"},  # SparseGPT chooses its own mask; the scorer is unused there
        "allocator": {"name": "owl", "m": 5.0, "lam": 0.08} if method.startswith("owl") else {"name": "uniform"},
        "applier": {"name": "sparsegpt" if sparsegpt else "zero", **({"pattern": "2:4"} if method.endswith("2:4") else {})},
        "sparsity": 0.7 if method.endswith("70") else 0.5,
    }


# -- children ---------------------------------------------------------------------------


def ours(config: dict[str, Any]) -> dict[str, Any]:
    """Prune with secateurs (its pipeline alone is measured) and save the model to ``out``."""
    pin_threads()
    import torch

    from secateurs.loading import load
    from secateurs.pipeline import PruneSpec, prune_model
    from secateurs.plugins import get_manager

    manager = get_manager()
    parts = spec_for(config["method"])

    def create(registry, part: dict[str, Any]):
        return registry.create(part["name"], **{k: v for k, v in part.items() if k != "name"})

    loaded = load(config["model"], dtype="float32")
    tokens = torch.load(config["calibration"])
    spec = PruneSpec(
        scorer=create(manager.scorers, parts["scorer"]),
        allocator=create(manager.allocators, parts["allocator"]),
        applier=create(manager.appliers, parts["applier"]),
        sparsity=parts["sparsity"],
        calibration=[{"input_ids": window} for window in tokens.split(1)],
        progress=False,
    )
    out: dict[str, Any] = {}
    with measured(out):
        result = prune_model(loaded, spec)
    out["timings"] = result.timings
    loaded.adapter.save(loaded, Path(config["out"]))
    from importlib.metadata import version

    out["versions"] = {"secateurs": version("secateurs"), "torch": torch.__version__}
    return out


def linear_weights(folder: str) -> dict[str, Any]:
    """The 2-D ``weight`` tensors of the decoder layers in a saved folder, by name."""
    from safetensors.torch import load_file

    tensors: dict[str, Any] = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        tensors |= {k: v for k, v in load_file(file).items() if k.startswith(LAYER_PREFIX) and k.endswith(".weight") and v.dim() == 2}
    return tensors


def evaluate(config: dict[str, Any]) -> dict[str, Any]:
    """Perplexity and sparsity of every folder in ``config["folders"]`` (one evaluator for
    all), and, for two folders, the fraction of decoder-Linear entries whose zero/non-zero
    state agrees."""
    pin_threads()
    from secateurs.builtins.text import Perplexity
    from secateurs.loading import load

    evaluator = Perplexity(corpus="shakespeare-test", seqlen=config["eval_seqlen"], max_windows=config["eval_windows"], progress=False)
    out: dict[str, Any] = {"folders": []}
    masks = []
    for folder in config["folders"]:
        weights = linear_weights(folder)
        zeros = sum(int((w == 0).sum()) for w in weights.values())
        total = sum(w.numel() for w in weights.values())
        masks.append({k: w != 0 for k, w in weights.items()})
        ppl = evaluator.evaluate(load(folder, dtype="float32"))["perplexity"]
        out["folders"].append({"perplexity": ppl, "sparsity": zeros / total, "linears": len(weights)})
    if len(masks) == 2 and masks[0].keys() == masks[1].keys():
        same = sum(int((masks[0][k] == masks[1][k]).sum()) for k in masks[0])
        out["mask_agreement"] = same / sum(m.numel() for m in masks[0].values())
    return out


# -- the driver -------------------------------------------------------------------------


def peer_python(venv: Path) -> Path:
    """The peer venv's Python, creating the venv and installing llm-compressor first if it
    cannot import it (uv when on PATH, else venv + pip)."""
    python = venv / "bin" / "python"
    if python.exists() and subprocess.run([python, "-c", "import llmcompressor"], capture_output=True).returncode == 0:
        return python
    uv = shutil.which("uv")
    print(f"installing {PEER_REQUIREMENT} into {venv} ...", flush=True)
    if uv:
        subprocess.run([uv, "venv", "-q", "-p", sys.executable, str(venv)], check=True)
        subprocess.run([uv, "pip", "install", "-q", PEER_REQUIREMENT], check=True, env={**os.environ, "VIRTUAL_ENV": str(venv)})
    else:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", PEER_REQUIREMENT], check=True)
    return python


def _child(python: Path, script: Path, args: list[str]) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([str(python), str(script), *args], capture_output=True, text=True, cwd=script.parent, env=env)
    if proc.returncode:
        raise RuntimeError(f"{script.name} {args[:1]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def calibration_file(model: Path, work: Path, nsamples: int, seqlen: int, seed: int) -> Path:
    """The calibration windows both tools get, as one LongTensor ``[nsamples, seqlen]``."""
    import torch

    from secateurs.builtins.text import TextCalibration
    from secateurs.loading import load

    path = work / f"calibration-{nsamples}x{seqlen}-seed{seed}.pt"
    batches = TextCalibration(corpus="shakespeare-train", nsamples=nsamples, seqlen=seqlen, seed=seed).batches(load(model))
    torch.save(torch.cat([b["input_ids"] for b in batches]), path)
    return path


def run_method(method: str, args: argparse.Namespace, model: Path, calibration: Path, peer: Path, work: Path) -> dict[str, Any]:
    """``args.repeats`` back-to-back (secateurs, llm-compressor) pairs, then one evaluation
    of the last pair's models."""
    folders = {tool: work / f"{tool}-{method.replace(':', '_')}" for tool in ("secateurs", "llm-compressor")}
    runs: dict[str, list[dict[str, Any]]] = {tool: [] for tool in folders}
    for _ in range(args.repeats):
        for tool, python, script in (("secateurs", Path(sys.executable), Path(__file__)), ("llm-compressor", peer, HERE / "peer.py")):
            shutil.rmtree(folders[tool], ignore_errors=True)
            config = {"model": str(model), "calibration": str(calibration), "method": method, "out": str(folders[tool])}
            child_args = ["--child", "ours", json.dumps(config)] if tool == "secateurs" else [json.dumps(config)]
            runs[tool].append({"started": time.strftime("%H:%M:%S"), **_child(python, script, child_args)})
    evaluation = _child(Path(sys.executable), Path(__file__), ["--child", "eval", json.dumps(_eval_config(args, list(folders.values())))])
    out: dict[str, Any] = {"method": method, "spec": spec_for(method)}
    for (tool, tool_runs), measures in zip(runs.items(), evaluation["folders"], strict=True):
        out[tool] = {**measures, "runs": tool_runs}
    out["mask_agreement"] = evaluation.get("mask_agreement")
    return summarize(out)


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with each tool's best (lowest) wall and CPU seconds over its runs, its
    highest peak RSS, and secateurs' time ratios to llm-compressor. The best of several
    runs is the time least disturbed by other work on the machine."""
    for tool in ("secateurs", "llm-compressor"):
        runs = result[tool]["runs"]
        result[tool] |= {"wall_s_best": min(r["wall_s"] for r in runs), "cpu_s_best": min(r["cpu_s"] for r in runs)}
        result[tool]["peak_rss_mib_max"] = max(r["peak_rss_mib"] for r in runs)
    for key in ("wall_s", "cpu_s"):
        result[f"ratio_{key}"] = result["secateurs"][f"{key}_best"] / result["llm-compressor"][f"{key}_best"]
    return result


def _eval_config(args: argparse.Namespace, folders: list[Path]) -> dict[str, Any]:
    return {"folders": [str(f) for f in folders], "eval_windows": args.eval_windows, "eval_seqlen": args.eval_seqlen}


def table(data: dict[str, Any]) -> str:
    """The Markdown table of a results file."""
    lines = [
        f"Dense perplexity {data['dense_perplexity']:.2f}. Times: best of {data['settings']['repeats']} back-to-back pair(s); peak RSS: the highest.",
        "",
        "| method | secateurs ppl / wall s / CPU s / peak RSS MiB / sparsity | llm-compressor ppl / wall s / CPU s / peak RSS MiB / sparsity | time ratio (wall, CPU) | mask agreement |",
        "|---|---|---|---|---|",
    ]
    for r in map(summarize, data["methods"]):
        cells = [
            f"{t['perplexity']:.2f} / {t['wall_s_best']:.1f} / {t['cpu_s_best']:.1f} / {t['peak_rss_mib_max']:.0f} / {t['sparsity']:.4f}"
            for t in (r["secateurs"], r["llm-compressor"])
        ]
        agreement = f"{r['mask_agreement']:.2%}" if r.get("mask_agreement") is not None else "-"
        lines.append(f"| {r['method']} | {cells[0]} | {cells[1]} | {r['ratio_wall_s']:.2f}×, {r['ratio_cpu_s']:.2f}× | {agreement} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    parser.add_argument("--nsamples", type=int, default=16)
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0, help="calibration windows' seed")
    parser.add_argument("--eval-windows", type=int, default=16)
    parser.add_argument("--eval-seqlen", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=1, help="back-to-back pairs per method (times: median)")
    parser.add_argument("--peer-venv", type=Path, default=HERE / ".venv")
    parser.add_argument("--work", type=Path, default=HERE / ".work", help="calibration file and pruned models")
    parser.add_argument("--name", default=NAME, help="results file name")
    parser.add_argument("--table", action="store_true", help="print the table of the saved results (rewritten with this version's summaries) and exit")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, config = args.child
        print(json.dumps({"ours": ours, "eval": evaluate}[kind](json.loads(config))))
        return
    if args.table:
        data = json.loads(results_path(args.name).read_text())
        data["methods"] = [summarize(r) for r in data["methods"]]
        print(table(data))
        return

    from secateurs_transformers.packaged import smollm2_path

    peer = peer_python(args.peer_venv.resolve())
    args.work.mkdir(parents=True, exist_ok=True)
    model = smollm2_path()
    calibration = calibration_file(model, args.work, args.nsamples, args.seqlen, args.seed)
    data: dict[str, Any] = {
        "command": " ".join([".venv/bin/python", "benchmarks/peers/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "model": "smollm2-135m (SmolLM2-135M-Instruct, float32)",
        "settings": {k: getattr(args, k) for k in ("nsamples", "seqlen", "seed", "eval_windows", "eval_seqlen", "repeats")} | {"threads": THREADS},
        "dense_perplexity": _child(Path(sys.executable), Path(__file__), ["--child", "eval", json.dumps(_eval_config(args, [model]))])["folders"][0]["perplexity"],
        "methods": [],
    }
    earlier = json.loads(results_path(args.name).read_text()) if results_path(args.name).is_file() else {}
    if earlier.get("settings") == data["settings"]:  # keep the other methods' rows of the same settings
        data["methods"] = [r for r in earlier["methods"] if r["method"] not in args.methods]
    for method in args.methods:
        data["methods"].append(run_method(method, args, model, calibration, peer, args.work))
        write_results(args.name, data)
        print(table(data).splitlines()[-1], flush=True)
    print(table(data))


if __name__ == "__main__":
    main()
