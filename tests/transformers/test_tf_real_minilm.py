"""The shipped MiniLM (all-MiniLM-L6-v2, BERT): 30% of heads and neurons removed by
magnitude, saved, reloaded (secateurs.load and AutoModel with
trust_remote_code), same outputs."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers

from secateurs.loading import load
from secateurs.pipeline import prune_model
from secateurs.protocols import LoadedModel
from tf_models import manager, spec

SENTENCES = [
    "A gripping, beautifully acted film that stays with you.",
    "The plot was dull and the jokes fell flat.",
    "Pruning removes the least useful weights of a network.",
]


def embed(loaded, batch) -> torch.Tensor:
    """Mean-pooled, normalised sentence embeddings (the sentence-transformers recipe)."""
    with torch.no_grad():
        hidden = loaded.adapter.forward(loaded.model, batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


@pytest.mark.real
def test_minilm_pruned_by_removal_reloads_with_the_same_outputs(tmp_path):
    loaded = load("minilm-l6", manager=manager())
    assert loaded.adapter.name == "bert" and loaded.tokenizer is not None
    batch = dict(loaded.tokenizer(SENTENCES, padding=True, return_tensors="pt"))
    dense = embed(loaded, batch)
    dense_params = sum(p.numel() for p in loaded.model.parameters())
    zeroed = copy.deepcopy(loaded)
    for kind in ("heads", "neurons"):
        prune_model(loaded, spec("remove", kind, sparsity=0.3))
        prune_model(zeroed, spec("zero", kind, sparsity=0.3))
    pruned = embed(loaded, batch)
    torch.testing.assert_close(pruned, embed(zeroed, batch), rtol=1e-4, atol=1e-5)

    for layer in loaded.model.encoder.layer:  # 12 - floor(3.6) heads (width 32), 1536 - floor(460.8) neurons
        assert layer.attention.self.num_attention_heads == 9
        assert layer.intermediate.dense.out_features == 1076
    params = sum(p.numel() for p in loaded.model.parameters())
    assert params == dense_params - 6 * (3 * (3 * 32 * 385 + 32 * 384) + 460 * (384 + 1 + 384))
    # still a sentence encoder: each sentence stays closest to its own dense embedding
    assert torch.equal((pruned @ dense.T).argmax(1), torch.arange(len(SENTENCES)))

    loaded.adapter.save(loaded, tmp_path)
    reloaded = load(tmp_path, manager=manager())
    assert reloaded.model.config.secateurs_layer_sizes[0] == {"intermediate_size": 1076, "num_attention_heads": 9}
    torch.testing.assert_close(embed(reloaded, batch), pruned)
    # the stock loader too, with the saved secateurs_resized.py
    stock = transformers.AutoModel.from_pretrained(tmp_path, trust_remote_code=True)
    torch.testing.assert_close(embed(LoadedModel(stock, loaded.adapter, ""), batch), pruned)
