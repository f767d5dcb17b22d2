"""Offloaded models (accelerate device_map, blocks on disk) prune exactly like resident ones."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import secateurs
from llm_helpers import tiny_llama, wanda_spec
from lm_models import tiny_causal_lm, token_batches
from secateurs.errors import SecateursError
from secateurs.offload import dispatch, materialized
from secateurs.pipeline import prune_model

pytest.importorskip("accelerate")

LAYERS = 4


def _model_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _budget(model: torch.nn.Module) -> int:
    """Room for the embeddings and about two of the four blocks: smaller than the model."""
    block = _model_bytes(model.model.layers[0])
    return _model_bytes(model) - 2 * block


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(**token_batches(2, 32, seed=5)[0], use_cache=False).logits


@pytest.mark.parametrize("applier,allocator", [("zero", "uniform"), ("sparsegpt", "owl")])
def test_offloaded_run_equals_the_resident_run(tmp_path, applier, allocator):
    resident, offloaded = tiny_llama(LAYERS), tiny_llama(LAYERS)
    budget = _budget(offloaded.model)
    assert budget < _model_bytes(offloaded.model)
    device_map = dispatch(offloaded, max_memory=budget, offload_folder=tmp_path)
    on_disk = [name for name, dev in device_map.items() if dev == "disk"]
    assert any("layers" in name for name in on_disk)
    last = offloaded.model.model.layers[LAYERS - 1]
    assert last.mlp.down_proj.weight.device.type == "meta"

    r1 = prune_model(resident, wanda_spec(allocator, applier))
    r2 = prune_model(offloaded, wanda_spec(allocator, applier))
    assert r2.sparsity == pytest.approx(r1.sparsity)
    assert last.mlp.down_proj.weight.device.type == "meta"  # offloaded again after pruning
    assert torch.allclose(_logits(offloaded.model), _logits(resident.model), atol=1e-5)
    dense = _logits(tiny_llama(LAYERS).model)
    assert not torch.allclose(_logits(offloaded.model), dense, atol=1e-3)  # the offloaded blocks were pruned
    with materialized(last):
        assert torch.allclose(last.mlp.down_proj.weight, resident.model.model.layers[LAYERS - 1].mlp.down_proj.weight, atol=1e-6)


def test_recipe_with_a_memory_budget_exports_the_same_model(tiny_lm_dir, text_file, tmp_path):
    model_bytes = _model_bytes(tiny_causal_lm("llama"))
    base = {
        "model": str(tiny_lm_dir),
        "sparsity": 0.5,
        "scorer": "wanda",
        "applier": "sparsegpt",
        "calibration": {"name": "text", "corpus": str(text_file), "nsamples": 4, "seqlen": 32},
    }
    resident = secateurs.prune({**base, "output": str(tmp_path / "resident")}, progress=False)
    offloaded = secateurs.prune(
        {**base, "output": str(tmp_path / "offloaded"), "max_memory": model_bytes // 2, "offload_folder": str(tmp_path / "scratch")},
        progress=False,
    )
    assert "disk" in offloaded.loaded.model.hf_device_map.values()
    assert offloaded.result.sparsity == pytest.approx(resident.result.sparsity)
    a = load_file(tmp_path / "resident" / "model.safetensors")
    b = load_file(tmp_path / "offloaded" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_materialized_is_a_no_op_without_hooks_and_refuses_parent_offload(tmp_path):
    loaded = tiny_llama(LAYERS)
    block = loaded.model.model.layers[0]
    before = block.mlp.up_proj.weight
    with materialized(block):
        assert block.mlp.up_proj.weight is before
    from accelerate.hooks import AlignDevicesHook, add_hook_to_module

    add_hook_to_module(loaded.model.model, AlignDevicesHook("cpu", offload=True, place_submodules=True))
    assert loaded.model.model.layers[1].mlp.up_proj.weight.device.type == "meta"
    with pytest.raises(SecateursError, match="whole blocks"):
        with materialized(loaded.model.model.layers[1]):
            pass


def test_a_budget_too_small_for_the_embeddings_is_refused(tmp_path):
    with pytest.raises(SecateursError, match="too small"):
        dispatch(tiny_llama(LAYERS), max_memory=1000, offload_folder=tmp_path)
