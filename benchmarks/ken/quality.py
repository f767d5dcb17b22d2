"""KEN quality and storage on MiniLM fine-tuned on the movie-review sentences, three seeds.

For each seed (see ``minilm_sst.py``: fine-tuned to early stopping, cached), the dense
fine-tuned model, the pre-trained start, and each method at parameter reductions of about
25 %, 35 % and 50 % of the whole model, scored by accuracy on the held-out test sentences:

- scope ``all``: every floating tensor is a candidate (embeddings, LayerNorms, biases, the
  pooler and the head: the paper's "all layers"); KEN and the baselines at the same per-row
  k: random, |W_ft| (``ft-magnitude``), |W_ft - W_pre| (``delta-magnitude``), DARE (random +
  1/(1-p) rescale of the kept deltas);
- scope ``encoder``: only the tensors of the encoder blocks (``bert.encoder.layer.*``, the
  reference's "name contains a digit" rule) are candidates; every other tensor keeps its
  fine-tuned value. KEN and random. The encoder blocks hold 46.9 % of MiniLM's parameters,
  so a 50 % reduction is out of this scope's reach and is skipped.

The per-row k of a (scope, target) is the largest one whose reduction of the whole model
reaches the target; every method of that scope uses it. For KEN the ``ken-delta`` file is
written and its size compared with the full fine-tuned checkpoint; the round trip
(pre-trained + delta) is checked bit for bit.

Run: .venv/bin/python benchmarks/ken/quality.py   → benchmarks/results/ken_quality.json
     (``--smoke``: 200 training sentences, 1 epoch, 1 seed → ken_quality_smoke.json).
Resumable: the rows already in the results file are kept and skipped; fine-tunes are cached.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import minilm_sst as data  # noqa: E402
import results_io  # noqa: E402

from secateurs_ken.api import ken_state  # noqa: E402
from secateurs_ken.delta import load_ken_delta, save_ken_delta  # noqa: E402
from secateurs_ken.parts import solve_k  # noqa: E402
from secateurs_ken.states import as_rows, selected_names  # noqa: E402

SEEDS = (0, 1, 2)
TARGETS = (0.25, 0.35, 0.50)
SCOPES = {"all": ("*",), "encoder": ("bert.encoder.layer.*",)}
METHODS = {"all": ("ken", "random", "ft-magnitude", "delta-magnitude", "dare"), "encoder": ("ken", "random")}
REFERENCES = ("dense fine-tuned", "pre-trained (fresh head)")
SMOKE = {"train": 200, "val": 100, "test": 200, "max_epochs": 1}


def params(state: data.State, names) -> int:
    """How many values the tensors ``names`` of ``state`` hold."""
    return sum(state[n].numel() for n in names)


def per_row_k(state: data.State, scope: str, target: float) -> int | None:
    """The per-row k of ``scope`` that restores at least ``target`` of all floating
    parameters (``None``: the scope's candidates are fewer than that)."""
    names = selected_names(state, SCOPES[scope])
    share = target * params(state, selected_names(state)) / params(state, names)
    return solve_k([tuple(as_rows(state[n]).shape) for n in names], share) if share < 1 else None


def timed(fn):
    """``fn()``'s result and ``{"wall_s", "cpu_s"}`` (CPU: every thread of this process)."""
    wall, cpu = time.time(), time.process_time()
    out = fn()
    return out, {"wall_s": time.time() - wall, "cpu_s": time.process_time() - cpu}


class SeedRun:
    """One seed's fine-tune (trained first if not cached), one model to load states into,
    and the tokenized test sentences."""

    def __init__(self, setup: data.Setup, tmp: Path):
        self.setup, self.tmp = setup, tmp
        self.pre, self.ft = data.load_states(setup)
        self.model = data.fresh_model(setup.seed)
        self.test = data.Evaluation(setup.split()[2], data.tokenizer(), setup.max_len)

    def reference(self, method: str) -> dict:
        """The dense fine-tuned model or the pre-trained start (``REFERENCES``)."""
        state = self.ft if method == REFERENCES[0] else self.pre
        self.model.load_state_dict(state)
        acc, seconds = timed(lambda: self.test.accuracy(self.model))
        return {"method": method, "reduction": 0.0 if state is self.ft else 1.0, "accuracy": acc, **seconds}

    def pruned(self, method: str, scope: str, target: float, k: int) -> dict:
        """``method`` at per-row ``k`` over ``scope``: accuracy, reduction of the whole model
        and of the scope's candidates; for KEN also the delta file size and its round trip."""
        def run() -> dict:
            state, masks = ken_state(self.pre, self.ft, k=k, targets=SCOPES[scope], method=method, seed=self.setup.seed)
            restored = sum(m.numel() - int(m.sum()) for m in masks.values())
            self.model.load_state_dict(state)
            row = {"method": method, "scope": scope, "target": target, "k": k,
                   "reduction": restored / params(self.ft, selected_names(self.ft)),
                   "candidate_reduction": restored / sum(m.numel() for m in masks.values()),
                   "accuracy": self.test.accuracy(self.model)}
            if method == "ken":
                delta, _ = save_ken_delta(self.pre, state, self.tmp / "ken.safetensors", base_name=self.setup.cache_name)
                rebuilt = load_ken_delta(self.pre, delta)
                row.update(delta_bytes=delta.stat().st_size,
                           round_trip_exact=all(torch.equal(rebuilt[n].view(torch.uint8), t.view(torch.uint8))
                                                for n, t in state.items() if t.is_floating_point()))
            return row

        row, seconds = timed(run)
        return {**row, **seconds}


def run_seed(setup: data.Setup, record: dict, write) -> None:
    """Every missing row of one seed into ``record["rows"]``, calling ``write()`` after each."""
    rows = record.setdefault("rows", [])
    done = {(r["method"], r.get("scope"), r.get("target")) for r in rows}
    with tempfile.TemporaryDirectory() as tmp:
        run = SeedRun(setup, Path(tmp))
        record.setdefault("train", data.train_record(setup))
        for method in REFERENCES:
            if (method, None, None) not in done:
                rows.append(run.reference(method))
                print(f"seed {setup.seed}: {rows[-1]}", flush=True)
                write()
        for scope, methods in METHODS.items():
            for target in TARGETS:
                k = per_row_k(run.ft, scope, target)
                for method in methods:
                    if k is not None and (method, scope, target) not in done:
                        rows.append(run.pruned(method, scope, target, k))
                        print(f"seed {setup.seed}: {rows[-1]}", flush=True)
                        write()


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="200 training sentences, 1 epoch, 1 seed (a trial run)")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    name = "ken_quality_smoke" if args.smoke else "ken_quality"
    sizes = SMOKE if args.smoke else {}
    seeds = SEEDS[:1] if args.smoke else SEEDS
    path = results_io.results_path(name)
    result = json.loads(path.read_text()) if path.exists() else {"seeds": {}}
    setup = data.Setup(**sizes)
    train, val, test = setup.split()
    base = data.fresh_model(setup.seed).state_dict()
    with tempfile.TemporaryDirectory() as tmp:
        full = Path(tmp) / "full.safetensors"
        data.save_state(base, full)
        result.update(
            setup={k: v for k, v in dataclasses.asdict(setup).items() if k != "seed"},
            targets=list(TARGETS),
            sentences={"train": len(train), "val": len(val), "test": len(test)},
            parameters=params(base, selected_names(base)),
            encoder_share=params(base, selected_names(base, SCOPES["encoder"])) / params(base, selected_names(base)),
            full_checkpoint_bytes=full.stat().st_size,
            command=" ".join([".venv/bin/python", "benchmarks/ken/quality.py", *(argv or sys.argv[1:])]),
        )
    for seed in seeds:
        run_seed(dataclasses.replace(setup, seed=seed), result["seeds"].setdefault(str(seed), {}),
                 lambda: results_io.write_results(name, result))


if __name__ == "__main__":
    main()
