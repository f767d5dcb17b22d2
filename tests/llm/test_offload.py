"""Offloaded in-memory models (accelerate device_map, blocks on disk) prune exactly like resident
ones; recipes with a budget (streamed loading and saving): ``test_streaming``."""

from __future__ import annotations

import pytest
import torch

from llm_helpers import tiny_llama, wanda_spec
from lm_models import token_batches
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


def test_a_budget_smaller_than_one_block_offloads_every_block_on_its_own(tmp_path):
    """accelerate alone would put the whole model in one disk entry; every block is its own."""
    resident, offloaded = tiny_llama(LAYERS), tiny_llama(LAYERS)
    device_map = dispatch(offloaded, max_memory=1000, offload_folder=tmp_path)
    assert all(device_map[f"model.layers.{i}"] == "disk" for i in range(LAYERS))
    assert offloaded.model.model.embed_tokens.weight.device.type == "meta"
    prune_model(resident, wanda_spec())
    prune_model(offloaded, wanda_spec())
    assert torch.equal(_logits(offloaded.model), _logits(resident.model))
