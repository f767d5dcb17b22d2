"""The allocator example of docs/plugins.md ("Writing an allocator") runs as written:
registered as a plugin, named in a recipe, checked by ``secateurs.testing``, at every
granularity the tiny model has, and refused before any work when its parameter cannot
be served."""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest

import secateurs
from secateurs.errors import SecateursError
from secateurs.plugins import get_manager
from secateurs.testing import Where, check_allocator

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
EXAMPLE = "# my_pruner/ramp.py"


def _example_code() -> str:
    """The Python code block of docs/plugins.md that starts with ``EXAMPLE``."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    (code,) = [b for b in blocks if b.startswith(EXAMPLE + "\n")]
    return code


@pytest.fixture
def ramp():
    """The example as a module, registered as the plugin ``my-pruner`` for the test."""
    module = types.ModuleType("my_pruner_ramp")
    exec(compile(_example_code(), str(DOC), "exec"), module.__dict__)
    manager = get_manager()
    manager.register(module, "my-pruner")
    yield module
    manager.unregister("my-pruner")


def _recipe(model: Path, **allocator) -> dict:
    return {"model": str(model), "sparsity": 0.5, "scorer": "magnitude", "allocator": {"name": "ramp", **allocator}}


def test_the_example_runs_from_a_recipe(ramp, tiny_lm_dir):
    outcome = secateurs.prune(_recipe(tiny_lm_dir, spread=0.2), progress=False)
    by_layer: dict[str, set[float]] = {}
    for unit in outcome.result.units:
        layer = re.search(r"layers\.(\d+)\.", unit.name)[1]
        by_layer.setdefault(layer, set()).add(round(unit.target_sparsity, 6))
    assert by_layer == {"0": {0.3}, "1": {0.7}}  # 2 blocks: target -/+ spread
    assert outcome.result.records["ramp"]["granularity"] == "unstructured"


@pytest.mark.parametrize("granularity", ["unstructured", "neurons"])
def test_the_example_passes_the_allocator_checks(ramp, granularity):
    result = check_allocator(ramp.RampAllocator(spread=0.1), Where(granularity=granularity), scorer="magnitude")
    assert result.records["ramp"]["granularity"] == granularity


def test_one_instance_serves_several_runs(ramp):
    """``prepare`` resets the state: the same instance at two targets allocates each one's."""
    allocator = ramp.RampAllocator(spread=0.1)
    for sparsity in (0.3, 0.6):
        result = check_allocator(allocator, Where(sparsity=sparsity), scorer="magnitude")
        per_block = list(result.records["ramp"]["sparsity"].values())
        assert (per_block[0], per_block[-1]) == pytest.approx((sparsity - 0.1, sparsity + 0.1))


def test_a_spread_it_cannot_serve_is_refused(ramp, tiny_lm_dir):
    with pytest.raises(SecateursError, match=r"ramp: spread 0\.6 takes a block's sparsity out of \[0, 1\)"):
        secateurs.prune(_recipe(tiny_lm_dir, spread=0.6), progress=False)
