"""The ``compressed-tensors`` exporter: a Wanda 50 % or 2:4 model is written in
compressed-tensors' sparse formats (smaller than the dense file), ``config.json`` names
the ``sparsity_config``, and ``load_compressed`` gives back the pruned model's logits;
formats it cannot write are refused before anything is written."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from safetensors import safe_open
from torch import nn

import secateurs
from secateurs.errors import SecateursError
from secateurs.pipeline import prune_model
from secateurs.types import PruneResult, UnitReport
from secateurs_transformers.compressed import load_compressed
from tf_models import batches, loaded_tiny, manager, outputs, spec

CALIBRATION = batches("llama", n=4, seqlen=16)
RUNS = {
    "wanda-50": ({"scorer": "wanda"}, "sparse-bitmask"),
    "2:4": ({"scorer": "magnitude", "applier_params": {"pattern": "2:4"}}, "sparse-24-bitmask"),
}


def pruned(run: str, dtype: torch.dtype = torch.float32):
    loaded = loaded_tiny("llama")
    loaded.model.to(dtype)
    options, _ = RUNS[run]
    result = prune_model(loaded, spec("zero", calibration=CALIBRATION, **options))
    return loaded, result


def export(loaded, result, directory, **params) -> None:
    manager().exporters.create("compressed-tensors", **params).export(loaded, result, directory)


def tensor_names(directory) -> set[str]:
    with safe_open(directory / "model.safetensors", framework="pt") as f:
        return set(f.keys())


@pytest.mark.parametrize("run", RUNS)
def test_the_reloaded_folder_gives_the_pruned_logits(run, tmp_path):
    loaded, result = pruned(run)
    export(loaded, result, tmp_path)

    sparsity = json.loads((tmp_path / "config.json").read_text())["quantization_config"]["sparsity_config"]
    assert sparsity["format"] == RUNS[run][1]
    assert sparsity["global_sparsity"] == pytest.approx(0.5)
    names = tensor_names(tmp_path)
    assert {"model.layers.0.mlp.down_proj.bitmask", "model.layers.0.mlp.down_proj.compressed"} <= names
    assert "model.layers.0.mlp.down_proj.weight" not in names
    assert "model.embed_tokens.weight" in names  # embeddings stay dense

    reloaded = load_compressed(tmp_path)
    for batch in batches("llama"):
        assert torch.equal(reloaded(**batch).logits, outputs(loaded, batch))


@pytest.mark.parametrize("run", RUNS)
def test_bfloat16_weights_come_back_bit_for_bit_from_a_smaller_file(run, tmp_path):
    loaded, result = pruned(run, torch.bfloat16)
    export(loaded, result, tmp_path / "compressed")
    manager().exporters.create("safetensors").export(loaded, result, tmp_path / "dense")

    reloaded = load_compressed(tmp_path / "compressed").state_dict()
    for name, tensor in loaded.model.state_dict().items():
        assert reloaded[name].dtype == torch.bfloat16 and torch.equal(reloaded[name], tensor), name
    size = {kind: (tmp_path / kind / "model.safetensors").stat().st_size for kind in ("compressed", "dense")}
    assert size["compressed"] < 0.8 * size["dense"]


def test_a_recipe_exports_compressed_with_the_tokenizer_and_report(tiny_lm_dir, text_file, tmp_path):
    out = tmp_path / "out"
    secateurs.prune({
        "model": str(tiny_lm_dir), "output": str(out), "sparsity": 0.5, "scorer": "magnitude",
        "exporters": [{"name": "compressed-tensors", "format": "sparse-bitmask"}, "report"],
        "calibration": {"name": "text", "corpus": str(text_file), "nsamples": 2, "seqlen": 16},
    }, manager=manager(), progress=False)
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "report.json"} <= files
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"]["sparsity_config"]["format"] == "sparse-bitmask"
    assert load_compressed(out).config.architectures == ["LlamaForCausalLM"]


def _refused(loaded, result, directory, match: str, **params) -> None:
    with pytest.raises(SecateursError, match=match) as info:
        export(loaded, result, directory, **params)
    assert "\n" not in str(info.value)
    assert list(directory.iterdir()) == []


def test_2_4_asked_for_an_unstructured_model_names_a_weight(tmp_path):
    loaded, result = pruned("wanda-50")
    _refused(loaded, result, tmp_path, r"'sparse-24-bitmask' needs 2:4 weights; model\.layers\.\d\.\S+ is not 2:4",
             format="sparse-24-bitmask")


def test_an_unknown_format_is_refused():
    with pytest.raises(SecateursError, match="format must be one of auto, sparse-bitmask, sparse-24-bitmask"):
        manager().exporters.create("compressed-tensors", format="csr")


def test_a_model_without_pruned_linear_weights_is_refused(tmp_path):
    loaded = loaded_tiny("llama")
    result = prune_model(loaded, spec("remove", "heads"))
    _refused(loaded, result, tmp_path, "found no pruned nn.Linear weight .*use the safetensors exporter")


def test_layers_of_different_sizes_are_refused(tmp_path):
    loaded, result = pruned("wanda-50")
    loaded.model.config.secateurs_layer_sizes = [{"intermediate_size": 64}, {"intermediate_size": 32}]
    _refused(loaded, result, tmp_path, "whose layers differ in size")


def test_a_dtype_the_compressors_do_not_store_is_refused(tmp_path):
    loaded, result = pruned("wanda-50")
    loaded.model.to(torch.float64)
    _refused(loaded, result, tmp_path, r"cannot store model\.layers\.0\.\S+ \(torch\.float64\)")


def test_a_model_that_is_not_a_transformers_model_is_refused(tmp_path):
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.warns(UserWarning, match="generic 'module' adapter"):
        loaded = secateurs.loading.wrap(model)
    result = PruneResult(units=[UnitReport("0", (8, 8), 64, 32, 0.5)])
    _refused(loaded, result, tmp_path, "writes transformers models; Sequential is not one")


def test_a_compressed_tensors_without_sparse_compressors_is_refused(tmp_path, monkeypatch):
    """compressed-tensors 0.15 removed the sparse compressors."""
    from compressed_tensors.compressors import BaseCompressor

    loaded, result = pruned("wanda-50")
    monkeypatch.setattr(BaseCompressor, "registered_names", classmethod(lambda cls: ["dense"]))
    _refused(loaded, result, tmp_path, r"cannot write sparse formats \(0\.15 removed .*secateurs-transformers\[compressed\]")


def test_a_missing_compressed_tensors_is_refused(tmp_path, monkeypatch):
    loaded, result = pruned("wanda-50")
    monkeypatch.setitem(sys.modules, "compressed_tensors", None)
    _refused(loaded, result, tmp_path, r"needs compressed-tensors: pip install 'secateurs-transformers\[compressed\]'")


def test_a_folder_without_a_sparsity_config_is_refused(tiny_lm_dir):
    with pytest.raises(SecateursError, match="has no compressed-tensors sparsity_config"):
        load_compressed(tiny_lm_dir)
