"""Every supported family, tried as a new user would: tiny random configs through
inspect, Wanda 50 %, SparseGPT 50 % (true-sequential), structured removal (zero and remove
give the same outputs), save → reload with the model library's own loader (same logits),
and the propagation invariant.

Run:  .venv/bin/python benchmarks/families/matrix.py
Writes benchmarks/results/families.json and prints the markdown table of
benchmarks/README.md. A cell is ✔ (works and checked), ✘ (fails: the error is in the
JSON) or – (refused with a clear message, quoted in the JSON: e.g. structured heads of a
family whose head coupling is not declared).
"""

from __future__ import annotations

import copy
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "tests" / "transformers"))
sys.path.insert(0, str(ROOT.parent / "tests" / "timm"))
from results_io import write_results  # noqa: E402

from secateurs.errors import SecateursError  # noqa: E402
from secateurs.inspection import describe  # noqa: E402
from secateurs.loading import wrap  # noqa: E402
from secateurs.pipeline import PruneSpec, prune_model  # noqa: E402
from secateurs.protocols import LoadedModel  # noqa: E402
from secateurs.testing import propagation_error, quiet_spec  # noqa: E402

from families import DECODERS, ENCODERS, WINDOW, tiny_model  # noqa: E402
from timm_models import SPECS as TIMM, images, tiny  # noqa: E402
from tv_models import KINDS as TV_KINDS, SPECS as TV, tv_images, tv_tiny  # noqa: E402

SEQLEN = 3 * WINDOW
COLUMNS = ("adapter", "inspect", "wanda", "sparsegpt", "heads", "neurons", "reload", "invariant")
VISION_COLUMNS = ("adapter", "inspect", "magnitude", "wanda", "structured", "reload", "invariant")
TIMM_KINDS = {"vit": ["heads", "neurons"]}


def _batches(n: int = 2, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(0, 128, (1, SEQLEN), generator=gen)} for _ in range(n)]


def _spec(scorer: str, applier: str, sparsity: float, granularity: str = "unstructured", **applier_params) -> PruneSpec:
    return quiet_spec(applier, granularity, scorer=scorer, sparsity=sparsity, calibration=_batches(),
                      applier_params=applier_params)


def _outputs(loaded: LoadedModel) -> torch.Tensor:
    with torch.no_grad():
        out = loaded.adapter.forward(loaded.model, _batches(1, seed=7)[0])
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _copy(loaded: LoadedModel) -> LoadedModel:
    return LoadedModel(copy.deepcopy(loaded.model), loaded.adapter, loaded.source)


def _block_sparsity(loaded: LoadedModel) -> float:
    units = [u for b in loaded.adapter.blocks(loaded.model) for u in b.units]
    return sum(int((u.weight == 0).sum()) for u in units) / sum(u.weight.numel() for u in units)


def _unstructured(loaded: LoadedModel, spec: PruneSpec) -> str:
    pruned = _copy(loaded)
    prune_model(pruned, spec)
    sparsity = _block_sparsity(pruned)
    assert abs(sparsity - 0.5) < 0.01, f"block sparsity {sparsity:.3f}"
    return "✔"


def _structured(loaded: LoadedModel, kind: str) -> str:
    zeroed, removed = _copy(loaded), _copy(loaded)
    prune_model(zeroed, _spec("magnitude", "zero", 0.5, kind))
    prune_model(removed, _spec("magnitude", "remove", 0.5, kind))
    torch.testing.assert_close(_outputs(removed), _outputs(zeroed), rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in removed.model.parameters()) < sum(p.numel() for p in loaded.model.parameters())
    return "✔"


def _reload(loaded: LoadedModel, family: str) -> str:
    import transformers

    pruned = _copy(loaded)
    prune_model(pruned, _spec("wanda", "zero", 0.5))
    auto = transformers.AutoModel if family in ENCODERS else transformers.AutoModelForCausalLM
    if family == "bert-cls":
        auto = transformers.AutoModelForSequenceClassification
    with tempfile.TemporaryDirectory() as tmp:
        pruned.adapter.save(pruned, Path(tmp))
        again = auto.from_pretrained(tmp).eval()
    torch.testing.assert_close(_outputs(LoadedModel(again, pruned.adapter, "reloaded")), _outputs(pruned))
    return "✔"


def _invariant(loaded: LoadedModel) -> str:
    error = propagation_error(loaded, _batches())
    assert error < 1e-5, f"relative error {error:.2e}"
    return "✔"


def _cell(check: Callable[[], str], details: dict, column: str) -> str:
    try:
        return check()
    except SecateursError as exc:
        details[column] = f"refused: {exc}"
        return "–"
    except Exception as exc:  # a failure: keep what it said
        details[column] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
        return "✘"


def check_family(family: str) -> tuple[dict[str, str], dict[str, str]]:
    details: dict[str, str] = {}
    loaded = wrap(tiny_model(family))
    row = {"adapter": loaded.adapter.name}
    row["inspect"] = _cell(lambda: describe(loaded) and "✔", details, "inspect")
    row["wanda"] = _cell(lambda: _unstructured(loaded, _spec("wanda", "zero", 0.5)), details, "wanda")
    row["sparsegpt"] = _cell(
        lambda: _unstructured(loaded, _spec("wanda", "sparsegpt", 0.5, true_sequential=True)), details, "sparsegpt"
    )
    for kind in ("heads", "neurons"):
        row[kind] = _cell(lambda kind=kind: _structured(loaded, kind), details, kind)
    row["reload"] = _cell(lambda: _reload(loaded, family), details, "reload")
    row["invariant"] = _cell(lambda: _invariant(loaded), details, "invariant")
    return row, details


def _vision(family: str) -> tuple[LoadedModel, list[torch.Tensor], list[str]]:
    if family in TV:
        return tv_tiny(family), [tv_images(family, 2, seed=s) for s in (0, 1)], TV_KINDS[family]
    return tiny(family), [images(family, 2, seed=s) for s in (0, 1)], TIMM_KINDS.get(family, ["channels"])


def _vision_outputs(loaded: LoadedModel, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return loaded.adapter.forward(loaded.model, x)


def _vision_spec(scorer: str, applier: str, granularity: str, batches: list[torch.Tensor]) -> PruneSpec:
    spec = _spec(scorer, applier, 0.5, granularity)
    spec.calibration = batches
    return spec


def _vision_structured(loaded: LoadedModel, kinds: list[str], batches: list[torch.Tensor]) -> str:
    for kind in kinds:
        zeroed, removed = _copy(loaded), _copy(loaded)
        prune_model(zeroed, _vision_spec("magnitude", "zero", kind, batches))
        prune_model(removed, _vision_spec("magnitude", "remove", kind, batches))
        torch.testing.assert_close(_vision_outputs(removed, batches[0]), _vision_outputs(zeroed, batches[0]),
                                   rtol=1e-4, atol=1e-5)
    return "✔ " + ", ".join(kinds)


def _vision_reload(loaded: LoadedModel, kind: str, batches: list[torch.Tensor]) -> str:
    from secateurs.loading import load

    removed = _copy(loaded)
    removed.extra = dict(loaded.extra)
    prune_model(removed, _vision_spec("magnitude", "remove", kind, batches))
    with tempfile.TemporaryDirectory() as tmp:
        removed.adapter.save(removed, Path(tmp))
        again = load(tmp)
    assert type(again.model) is type(loaded.model), type(again.model)
    torch.testing.assert_close(_vision_outputs(again, batches[0]), _vision_outputs(removed, batches[0]))
    return "✔"


def check_vision(family: str) -> tuple[dict[str, str], dict[str, str]]:
    details: dict[str, str] = {}
    loaded, batches, kinds = _vision(family)
    row = {"adapter": loaded.adapter.name}
    row["inspect"] = _cell(lambda: describe(loaded) and "✔", details, "inspect")
    for scorer in ("magnitude", "wanda"):
        row[scorer] = _cell(
            lambda scorer=scorer: prune_model(_copy(loaded), _vision_spec(scorer, "zero", "unstructured", batches))
            and "✔",
            details,
            scorer,
        )
    row["structured"] = _cell(lambda: _vision_structured(loaded, kinds, batches), details, "structured")
    row["reload"] = _cell(lambda: _vision_reload(loaded, kinds[0], batches), details, "reload")
    row["invariant"] = _cell(
        lambda: "✔" if propagation_error(loaded, batches) < 1e-5 else "✘", details, "invariant"
    )
    return row, details


def table(rows: dict[str, dict[str, str]], columns: tuple[str, ...] = COLUMNS) -> str:
    lines = ["| family | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {family} | " + " | ".join(row[c] for c in columns) + " |" for family, row in rows.items()]
    return "\n".join(lines)


def main() -> None:
    torch.set_num_threads(1)
    rows, details, seconds = {}, {}, {}
    for family in DECODERS + ENCODERS:
        start = time.perf_counter()
        rows[family], details[family] = check_family(family)
        seconds[family] = round(time.perf_counter() - start, 2)
        print(f"{family}: {rows[family]}", flush=True)
    vision = {}
    for family in [*TIMM, *TV]:
        start = time.perf_counter()
        vision[family], details[family] = check_vision(family)
        seconds[family] = round(time.perf_counter() - start, 2)
        print(f"{family}: {vision[family]}", flush=True)
    path = write_results(
        "families", {"rows": rows, "vision": vision, "details": details, "seconds": seconds, "seqlen": SEQLEN}
    )
    print(table(rows))
    print()
    print(table(vision, VISION_COLUMNS))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
