"""KEN's pair of models under ``max_memory``: the fine-tuned model streamed, the pre-trained
one read tensor by tensor from its shards, the delta written tensor by tensor; every output
identical, bit for bit, to the unbudgeted run."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from secateurs.offload import Budget, LazyState
from secateurs.recipe import Recipe
from secateurs.run import prune, reference_state
from secateurs_ken.delta import load_ken_delta

pytest.importorskip("accelerate")

DELTA = ("ken-delta.safetensors", "ken-delta.json")


def _recipe(pre: Path, ft: Path, output: Path, **extra) -> dict:
    return {
        "model": str(ft), "reference_model": str(pre), "output": str(output),
        "sparsity": 0.0, "scorer": "ken", "allocator": {"name": "ken-k", "k": 6}, "applier": "restore",
        "exporters": ["safetensors", "ken-delta"], **extra,
    }


def _digest(*folders: Path) -> dict[str, str]:
    files = (p for folder in folders for p in sorted(folder.iterdir()) if p.is_file())
    return {f"{p.parent.name}/{p.name}": hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(folder.glob("model*.safetensors")):
        out.update(load_file(shard))
    return out


@pytest.mark.parametrize(
    "family,dtype", [("bert", torch.float32), ("llama", torch.float32), ("llama", torch.bfloat16), ("bert", torch.float16)]
)
def test_a_ken_pair_under_a_budget_below_one_block_gives_the_same_files_bit_for_bit(tmp_path, saved_pair, family, dtype):
    pre, ft, pre_model = saved_pair(family, dtype)
    inputs = _digest(pre, ft)
    layers = pre_model.config.num_hidden_layers
    budget = sum(p.numel() * p.element_size() for p in pre_model.parameters()) // layers // 2
    plain = prune(_recipe(pre, ft, tmp_path / "plain"), progress=False)
    streamed = prune(
        _recipe(pre, ft, tmp_path / "streamed", max_memory=budget, offload_folder=str(tmp_path / "scratch")),
        progress=False,
    )
    assert set(streamed.loaded.model.hf_device_map.values()) == {"disk"}
    plain_files, streamed_files = _digest(tmp_path / "plain"), _digest(tmp_path / "streamed")
    assert all(plain_files[f"plain/{name}"] == streamed_files[f"streamed/{name}"] for name in DELTA)  # byte for byte
    a, b = _tensors(tmp_path / "plain"), _tensors(tmp_path / "streamed")
    assert a.keys() == b.keys() and all(a[k].dtype == b[k].dtype == dtype and torch.equal(a[k], b[k]) for k in a)
    expected = plain.loaded.model.state_dict()
    reloaded = type(plain.loaded.model).from_pretrained(tmp_path / "streamed").state_dict()
    rebuilt = load_ken_delta(pre_model.state_dict(), tmp_path / "streamed" / DELTA[0])
    assert reloaded.keys() == expected.keys()
    assert all(torch.equal(reloaded[n], t) and torch.equal(rebuilt[n], t) for n, t in expected.items())
    assert any(not torch.equal(rebuilt[n], t) for n, t in pre_model.state_dict().items())  # KEN changed something
    assert _digest(pre, ft) == inputs  # both models only read


def test_the_reference_under_a_budget_is_read_tensor_by_tensor_from_its_shards(tmp_path, saved_pair):
    pre, ft, _ = saved_pair("llama", torch.float32)
    scratch = tmp_path / "scratch"
    recipe = Recipe.from_dict(_recipe(pre, ft, tmp_path / "out", max_memory="1MiB", offload_folder=str(scratch)))
    state = reference_state(recipe)
    assert isinstance(state, LazyState) and Budget("1MiB").disk_only() == Budget({"cpu": 0})
    assert all(p.device.type == "meta" for p in state.model.parameters())  # nothing resident
    name = "model.layers.1.mlp.up_proj.weight"
    assert name in state and torch.equal(state[name], load_file(pre / "model.safetensors")[name])
    (folder,) = scratch.iterdir()
    assert not any(folder.iterdir())  # same dtype: read from the model's own shards, nothing copied


def test_the_delta_computed_in_row_chunks_is_the_same_file(tmp_path, pair, monkeypatch):
    from secateurs_ken import delta
    from secateurs_ken.api import ken_state

    pre, ft = pair
    state, _ = ken_state(pre.state_dict(), ft.state_dict(), k=6)
    whole = delta.save_ken_delta(pre, state, tmp_path / "whole.safetensors")[0]
    monkeypatch.setattr(delta, "CHUNK", 50)  # a few rows per chunk, several chunks per tensor
    chunked = delta.save_ken_delta(pre, state, tmp_path / "chunked.safetensors")[0]
    assert whole.read_bytes() == chunked.read_bytes()
    rebuilt = load_ken_delta(pre.state_dict(), chunked)
    assert all(torch.equal(rebuilt[n], t) for n, t in state.items())
