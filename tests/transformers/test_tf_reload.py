"""Models whose layers differ in size after ``remove`` reload with the stock transformers
Auto classes and ``trust_remote_code=True`` (the saved ``secateurs_resized.py``), give
the pruned model's outputs, and refuse to load (transformers' size-mismatch error)
without it."""

from __future__ import annotations

import ast
import json

import pytest
import torch
import transformers

from secateurs.loading import load
from secateurs.pipeline import prune_model
from secateurs.protocols import LoadedModel
from secateurs_transformers.common import MODULE_FILE
from tf_models import batches, loaded_tiny, manager, outputs, spec

AUTO = {
    "llama": "AutoModelForCausalLM",
    "mistral": "AutoModelForCausalLM",
    "qwen2": "AutoModelForCausalLM",
    "bert": "AutoModel",
    "bert-cls": "AutoModelForSequenceClassification",
}
CASES = [
    *[(family, kind, "per-layer") for family in ("llama", "mistral", "qwen2") for kind in ("heads", "neurons")],
    *[(family, "heads", layout) for family in ("bert", "bert-cls") for layout in ("uniform", "per-layer")],
    *[(family, "neurons", "per-layer") for family in ("bert", "bert-cls")],
]
SIZE = {"heads": "num_attention_heads", "neurons": "intermediate_size"}


def shrink_and_export(family: str, kind: str, layout: str, directory) -> LoadedModel:
    """Remove ``kind`` (the same count per layer, or per-layer counts from the global
    allocator), then save with the ``safetensors`` exporter."""
    loaded = loaded_tiny(family)
    if layout == "uniform":
        result = prune_model(loaded, spec("remove", kind))
    else:
        result = prune_model(loaded, spec("remove", kind, scorer="random", allocator="global", sparsity=0.4))
    sizes = {layer[SIZE[kind]] for layer in loaded.model.config.secateurs_layer_sizes}
    assert (len(sizes) > 1) == (layout == "per-layer")
    manager().exporters.create("safetensors").export(loaded, result, directory)
    return loaded


@pytest.mark.parametrize(("family", "kind", "layout"), CASES)
def test_shrunk_layers_reload_with_trust_remote_code(family, kind, layout, tmp_path):
    loaded = shrink_and_export(family, kind, layout, tmp_path)
    stock = type(loaded.model)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == [stock.__name__]
    assert config["auto_map"][AUTO[family]] == f"secateurs_resized.Resized{stock.__name__}"
    assert (tmp_path / "secateurs_resized.py").read_text() == MODULE_FILE.read_text()

    auto = getattr(transformers, AUTO[family])
    model, info = auto.from_pretrained(tmp_path, trust_remote_code=True, output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched keys
    assert isinstance(model, stock) and type(model).__name__ == f"Resized{stock.__name__}"
    for batch in batches(family):
        torch.testing.assert_close(outputs(LoadedModel(model, loaded.adapter, ""), batch), outputs(loaded, batch))

    # without trust_remote_code transformers builds the stock class and stops at the mismatch
    for plain in (auto, stock):
        with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
            plain.from_pretrained(tmp_path)


def test_the_base_model_and_generate_work_from_a_causal_lm_folder(tmp_path):
    loaded = shrink_and_export("qwen2", "heads", "per-layer", tmp_path)
    base, info = transformers.AutoModel.from_pretrained(tmp_path, trust_remote_code=True, output_loading_info=True)
    assert info["unexpected_keys"] == {"lm_head.weight"} and not info["missing_keys"]
    ids = batches("qwen2")[0]["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(base(ids).last_hidden_state, loaded.model.model(ids).last_hidden_state)
    lm = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=True)
    settings = {"max_new_tokens": 4, "do_sample": False, "pad_token_id": 0}
    assert torch.equal(lm.generate(ids, **settings), loaded.model.generate(ids, **settings))


def test_secateurs_load_uses_the_same_classes_and_saves_again(tmp_path):
    loaded = shrink_and_export("llama", "neurons", "per-layer", tmp_path / "first")
    reloaded = load(tmp_path / "first", manager=manager())
    assert type(reloaded.model).__module__ == "secateurs_transformers.secateurs_resized"
    reloaded.adapter.save(reloaded, tmp_path / "second")
    first, second = (json.loads((tmp_path / d / "config.json").read_text()) for d in ("first", "second"))
    assert second["architectures"] == ["LlamaForCausalLM"] and second["auto_map"] == first["auto_map"]
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "second", trust_remote_code=True)
    batch = batches("llama")[0]
    torch.testing.assert_close(outputs(LoadedModel(model, loaded.adapter, ""), batch), outputs(loaded, batch))


def test_uniform_removal_saves_no_modeling_code(tmp_path):
    loaded = loaded_tiny("llama")
    result = prune_model(loaded, spec("remove", "neurons"))
    manager().exporters.create("safetensors").export(loaded, result, tmp_path)
    assert "auto_map" not in json.loads((tmp_path / "config.json").read_text())
    assert not (tmp_path / "secateurs_resized.py").exists()


def test_the_shipped_module_imports_only_torch_and_transformers():
    tree = ast.parse(MODULE_FILE.read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert names == {"__future__", "typing", "torch", "transformers"}
