"""Tiny random transformers models of each family the transformers adapters support.

Imported by the test modules here (every directory's conftest is named ``conftest``, so
helpers live in a uniquely named module).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
from lm_models import tiny_causal_lm
from secateurs.pipeline import PruneSpec
from secateurs.plugins import LOAD_PLUGINS_ENV, PluginManager
from secateurs.protocols import LoadedModel
from secateurs.testing import quiet_spec


@functools.cache
def manager(plugins: str = "transformers") -> PluginManager:
    """The built-in plugins and ``plugins`` only (default: the transformers plugin): these
    tests need few plugins, and importing them all (timm, zennit...) costs seconds."""
    saved = os.environ.get(LOAD_PLUGINS_ENV)
    os.environ[LOAD_PLUGINS_ENV] = plugins
    try:
        return PluginManager()
    finally:
        if saved is None:
            del os.environ[LOAD_PLUGINS_ENV]
        else:
            os.environ[LOAD_PLUGINS_ENV] = saved


FAMILIES = ("llama", "mistral", "qwen2", "bert", "bert-cls")
ADAPTER = {"llama": "decoder", "mistral": "decoder", "qwen2": "decoder", "bert": "bert", "bert-cls": "bert"}
"""The adapter ``find_adapter`` picks (``decoder`` before ``llama``, which it generalises)."""


def tiny_bert(head: bool = False, *, layers: int = 2, seed: int = 0):
    """A tiny random BERT: ``BertModel``, or ``BertForSequenceClassification`` (3 labels)."""
    import transformers

    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=3,
    )
    cls = transformers.BertForSequenceClassification if head else transformers.BertModel
    return cls(config).eval()


def tiny_model(family: str):
    if family.startswith("bert"):
        return tiny_bert(head=family == "bert-cls")
    return tiny_causal_lm(family)


def batches(family: str, n: int = 2, seqlen: int = 12, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Token batches; BERT batches carry a padding mask (the second row is shorter)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(1, 128, (2, seqlen), generator=gen)
        batch = {"input_ids": ids}
        if family.startswith("bert"):
            mask = torch.ones_like(ids)
            mask[1, seqlen // 2 :] = 0
            batch["attention_mask"] = mask
        out.append(batch)
    return out


def outputs(loaded: LoadedModel, batch) -> torch.Tensor:
    with torch.no_grad():
        out = loaded.adapter.forward(loaded.model, batch)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def loaded_tiny(family: str) -> LoadedModel:
    return LoadedModel(tiny_model(family), manager().adapters.create(ADAPTER[family]), f"tiny-{family}")


def spec(applier: str, granularity: str = "unstructured", *, sparsity: float = 0.5, scorer: str = "magnitude",
         allocator: str = "uniform", calibration=None, plugins: str = "transformers",
         applier_params: dict | None = None, allocator_params: dict | None = None) -> PruneSpec:
    """A quiet pruning run with parts from ``manager(plugins)``."""
    return quiet_spec(applier, granularity, scorer=scorer, sparsity=sparsity, allocator=allocator,
                      calibration=calibration, applier_params=applier_params, allocator_params=allocator_params,
                      manager=manager(plugins))


def text_recipe(path: Path, model: Path, corpus: Path, output: Path, **keys: str | float) -> Path:
    """A recipe file at ``path`` pruning ``model`` into ``output`` with ``keys`` (scorer,
    granularity, sparsity...) and 2 × 32 tokens of ``corpus`` as calibration."""
    lines = [f'model = "{model}"', f'output = "{output}"']
    lines += [f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"' for k, v in keys.items()]
    lines += ["[calibration]", 'name = "text"', f'corpus = "{corpus}"', "nsamples = 2", "seqlen = 32"]
    path.write_text("\n".join(lines) + "\n")
    return path


def decoder_loaded(model: torch.nn.Module, family: str = "tiny") -> LoadedModel:
    """``model`` with the ``decoder`` adapter."""
    return LoadedModel(model, manager().adapters.create("decoder"), f"tiny-{family}")


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """``model``'s logits for ``ids`` (no cache, no grad)."""
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def reloads_plainly(dense: torch.nn.Module, lm: LoadedModel, result, folder: Path, ids: torch.Tensor) -> torch.nn.Module:
    """Export ``lm`` (pruned from ``dense``, ``result``) to ``folder`` and check the folder:
    plain ``AutoModelForCausalLM.from_pretrained`` builds the same class without
    ``secateurs_resized.py``, gives the same logits and greedy tokens for ``ids`` and counts
    the report's parameters. Returns the reloaded model."""
    import transformers

    for name in ("safetensors", "report"):
        manager().exporters.create(name).export(lm, result, folder)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    assert type(reloaded) is type(lm.model) and not (folder / "secateurs_resized.py").exists()
    torch.testing.assert_close(logits(reloaded, ids), logits(lm.model, ids))
    assert sum(p.numel() for p in reloaded.parameters()) == result.params_total - result.params_pruned
    assert result.params_total == sum(p.numel() for p in dense.parameters())
    settings = {"max_new_tokens": 5, "min_new_tokens": 5, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        want = lm.model.generate(ids[:1, :6], **settings)
        got = reloaded.generate(ids[:1, :6], **settings)
    assert torch.equal(got, want) and got.shape[1] == 11
    return reloaded
