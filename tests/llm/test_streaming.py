"""A recipe with ``max_memory`` streams the model: loaded lazily from its safetensors shards,
offloaded block by block through accelerate, pruned, evaluated and saved shard by shard,
with outputs identical bit for bit to the unbudgeted run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import secateurs
from lm_models import char_tokenizer, tiny_causal_lm
from secateurs.errors import SecateursError
from secateurs.offload import Budget

pytest.importorskip("accelerate")

LAYERS = 4


def _folder(tmp_path: Path, dtype: torch.dtype, *, tied: bool = False) -> Path:
    folder = tmp_path / f"tiny-{dtype}-{'tied' if tied else 'untied'}"
    model = tiny_causal_lm("llama", layers=LAYERS)
    if tied:
        model.config.tie_word_embeddings = True
        model.tie_weights()
    model.to(dtype).save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return folder


def _block_bytes(folder: Path) -> int:
    """One block's share of the weights (the model's size over its layers)."""
    total = sum(t.numel() * t.element_size() for t in _tensors(folder).values())
    return total // LAYERS


def _loaded_block(model: torch.nn.Module) -> int:
    """One block's bytes in float32 (the tiny models' dtype)."""
    return sum(p.numel() * 4 for p in model.model.layers[0].parameters())


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(folder.glob("*.safetensors")):
        out.update(load_file(shard))
    return out


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _recipe(folder: Path, text_file: Path, output: Path, applier: str = "zero", **extra) -> dict:
    return {
        "model": str(folder),
        "output": str(output),
        "sparsity": 0.5,
        "scorer": "wanda",
        "applier": applier,
        "calibration": {"name": "text", "corpus": str(text_file), "nsamples": 4, "seqlen": 32},
        "evaluate": {"name": "perplexity", "corpus": str(text_file), "seqlen": 32, "max_windows": 2},
        **extra,
    }


@pytest.mark.parametrize(
    "dtype,tied,applier",
    [
        (torch.float32, False, "zero"),
        (torch.bfloat16, False, "sparsegpt"),
        (torch.float16, False, "zero"),
        (torch.float32, True, "sparsegpt"),
    ],
)
def test_a_budget_below_one_block_gives_the_same_files_bit_for_bit(tmp_path, text_file, dtype, tied, applier):
    folder = _folder(tmp_path, dtype, tied=tied)
    before = _digest(folder)
    budget = _block_bytes(folder) // 2
    plain = secateurs.prune(_recipe(folder, text_file, tmp_path / "plain", applier), progress=False)
    streamed = secateurs.prune(
        _recipe(folder, text_file, tmp_path / "streamed", applier, max_memory=budget, offload_folder=str(tmp_path / "scratch")),
        progress=False,
    )
    device_map = streamed.loaded.model.hf_device_map
    assert all(device_map[f"model.layers.{i}"] == "disk" for i in range(LAYERS))  # one entry per block
    assert streamed.before == plain.before and streamed.after == plain.after  # evaluation through the hooks
    a, b = _tensors(tmp_path / "plain"), _tensors(tmp_path / "streamed")
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype == dtype and torch.equal(a[key], b[key]), key
    index = json.loads((tmp_path / "streamed" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(b) and len(set(index["weight_map"].values())) > 1  # shard by shard
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "streamed")
    assert torch.equal(reloaded.model.layers[0].mlp.up_proj.weight, a["model.layers.0.mlp.up_proj.weight"])
    assert _digest(folder) == before  # the user's model folder is only read


def test_loading_within_a_budget_reads_weights_lazily_and_keeps_the_rest_within_it(tmp_path):
    folder = _folder(tmp_path, torch.float32)
    budget = 5 * _block_bytes(folder)
    loaded = secateurs.load(folder, budget=Budget(budget, tmp_path / "scratch"))
    model = loaded.model
    resident = sum(p.numel() * p.element_size() for p in model.parameters() if p.device.type != "meta")
    assert 0 < resident <= budget - 3 * _loaded_block(model)  # room for one loaded block and the work on it
    assert model.hf_device_map[f"model.layers.{LAYERS - 1}"] == "disk"
    (scratch,) = (tmp_path / "scratch").iterdir()
    assert not any(scratch.iterdir())  # same dtype: offloaded weights stay in the model's own shards
    converted = secateurs.load(folder, dtype="bfloat16", budget=Budget(budget, tmp_path / "scratch"))
    assert converted.model.model.layers[LAYERS - 1].mlp.up_proj.weight.dtype == torch.bfloat16


def test_a_partly_resident_model_prunes_the_same(tmp_path, text_file):
    folder = _folder(tmp_path, torch.float32)
    secateurs.prune(_recipe(folder, text_file, tmp_path / "plain"), progress=False)
    streamed = secateurs.prune(
        _recipe(folder, text_file, tmp_path / "streamed", max_memory=5 * _block_bytes(folder)), progress=False
    )
    assert set(streamed.loaded.model.hf_device_map.values()) == {"cpu", "disk"}
    a, b = _tensors(tmp_path / "plain"), _tensors(tmp_path / "streamed")
    assert all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()


def test_what_cannot_stay_within_a_budget_is_refused_in_one_line(tmp_path, text_file, tiny_lm_dir):
    factory = tmp_path / "factory.py"
    factory.write_text("import torch\ndef build():\n    return torch.nn.Sequential(torch.nn.Linear(4, 4))\n")
    recipe = _recipe(tiny_lm_dir, text_file, tmp_path / "a", model=f"{factory}:build", max_memory="1MiB")
    with pytest.raises(SecateursError, match="model factory builds the whole model") as info:
        secateurs.prune(recipe, progress=False)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "a").exists()


def test_a_gpu_budget_places_blocks_on_the_gpu_then_the_cpu_then_disk_without_a_gpu_here():
    """The map for ``max_memory = {"cuda:0" = ..., "cpu" = ...}`` (computed on the meta
    device; accelerate only warns that the GPU is absent)."""
    from transformers import AutoModelForCausalLM

    from secateurs.offload import block_device_map

    config = tiny_causal_lm("llama", layers=LAYERS).config
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(config)
    block = _loaded_block(meta)
    budget = Budget({"cuda:0": 5 * block, "cpu": 3 * block})
    device_map = block_device_map(meta, list(meta.model.layers), budget, device="cuda:0")
    placed = [device_map[f"model.layers.{i}"] for i in range(LAYERS)]
    # the GPU keeps room for one loaded block and the work on it, the CPU for one loaded block
    assert placed == [0, "cpu", "cpu", "disk"]


def test_structured_removal_within_a_budget_saves_the_same_smaller_model(tmp_path, text_file):
    folder = _folder(tmp_path, torch.float32)
    removal = {"scorer": "magnitude", "applier": "remove", "granularity": "neurons"}
    recipe = {**_recipe(folder, text_file, tmp_path / "plain"), **removal}
    del recipe["calibration"], recipe["evaluate"]
    secateurs.prune(recipe, progress=False)
    secateurs.prune({**recipe, "output": str(tmp_path / "streamed"), "max_memory": _block_bytes(folder) // 2}, progress=False)
    a, b = _tensors(tmp_path / "plain"), _tensors(tmp_path / "streamed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert b["model.layers.0.mlp.up_proj.weight"].shape[0] < tiny_causal_lm("llama").config.intermediate_size
