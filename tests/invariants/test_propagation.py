"""Propagation invariant, for every adapter and family: with nothing pruned, the hidden
state the pipeline feeds block ``i`` equals the model's own hidden state entering block
``i``, at a sequence length longer than any sliding window (so sliding and full attention
layers, which get different masks and rotary embeddings, are both exercised)."""

from __future__ import annotations

import pytest
import torch

from secateurs.pipeline import PruneSpec, prune_model
from secateurs.plugins import get_manager
from secateurs.protocols import LoadedModel

SEQLEN = 24
WINDOW = 8  # < SEQLEN


def _decoder(family: str) -> torch.nn.Module:
    import transformers

    common = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    configs = {
        "llama": lambda: transformers.LlamaConfig(**common),
        "mistral": lambda: transformers.MistralConfig(**common, sliding_window=WINDOW),
        "qwen2": lambda: transformers.Qwen2Config(**common),
        "qwen2-sliding": lambda: transformers.Qwen2Config(
            **common, use_sliding_window=True, sliding_window=WINDOW, max_window_layers=2
        ),
        "gemma": lambda: transformers.GemmaConfig(**common, head_dim=8),
        "gemma2": lambda: transformers.Gemma2Config(**common, head_dim=8, sliding_window=WINDOW),
        "gemma3": lambda: transformers.Gemma3TextConfig(
            **common, head_dim=8, sliding_window=WINDOW, sliding_window_pattern=2
        ),
    }
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(configs[family]()).eval()


DECODERS = ["llama", "mistral", "qwen2", "qwen2-sliding", "gemma", "gemma2", "gemma3"]


def _loaded(model: torch.nn.Module) -> LoadedModel:
    manager = get_manager()
    adapter = next(a for a in (manager.adapters.create(n) for n in manager.adapters.names()) if a.supports(model))
    return LoadedModel(model, adapter, "tiny")


def _fed_inputs(loaded: LoadedModel, batches) -> list[list[torch.Tensor]]:
    """Per block, the hidden state of every batch the pipeline feeds it while pruning (its
    last pass over the batches; capture's own calls come before)."""
    m = get_manager()
    blocks = loaded.adapter.blocks(loaded.model)
    fed: list[list[torch.Tensor]] = [[] for _ in blocks]

    def hook(i: int):
        def record(module, args):
            fed[i].append(args[0].detach().clone())

        return record

    handles = [b.module.register_forward_pre_hook(hook(i)) for i, b in enumerate(blocks)]
    spec = PruneSpec(scorer=m.scorers.create("wanda"), allocator=m.allocators.create("uniform"),
                     applier=m.appliers.create("zero"), sparsity=0.0, calibration=batches, progress=False)
    try:
        prune_model(loaded, spec, blocks)
    finally:
        for h in handles:
            h.remove()
    return [calls[-len(batches):] for calls in fed]


def _own_inputs(loaded: LoadedModel, batch) -> list[torch.Tensor]:
    """The hidden state entering every block in the model's own forward (hooks)."""
    blocks = loaded.adapter.blocks(loaded.model)
    seen: list[torch.Tensor] = []

    def record(module, args, kwargs):
        seen.append((args[0] if args else next(iter(kwargs.values()))).detach().clone())

    handles = [b.module.register_forward_pre_hook(record, with_kwargs=True) for b in blocks]
    try:
        with torch.no_grad():
            loaded.adapter.forward(loaded.model, batch)
    finally:
        for h in handles:
            h.remove()
    return seen


@pytest.mark.parametrize("family", DECODERS)
def test_decoder_blocks_get_the_models_own_hidden_states(family):
    loaded = _loaded(_decoder(family))
    gen = torch.Generator().manual_seed(1)
    batches = [{"input_ids": torch.randint(0, 128, (1, SEQLEN), generator=gen)} for _ in range(2)]
    fed = _fed_inputs(loaded, batches)
    for j, batch in enumerate(batches):
        with torch.no_grad():
            own = loaded.model(**batch, output_hidden_states=True, use_cache=False).hidden_states
        for i, per_batch in enumerate(fed):
            torch.testing.assert_close(per_batch[j], own[i], rtol=1e-5, atol=1e-5, msg=f"block {i}")


def _encoders() -> dict[str, callable]:
    from tf_models import batches as tf_batches, tiny_bert
    from timm_models import SPECS, images, tiny

    out = {"bert": (lambda: LoadedModel(tiny_bert(), _loaded(tiny_bert()).adapter, "tiny"),
                    lambda: tf_batches("bert", n=2, seqlen=SEQLEN))}
    for name in SPECS:
        out[f"timm-{name}"] = (lambda name=name: tiny(name), lambda name=name: [images(name, 2, seed=s) for s in (0, 1)])
    return out


@pytest.mark.parametrize("family", ["bert", "timm-vit", "timm-vgg", "timm-vgg_nobn", "timm-resnet", "timm-bottleneck"])
def test_every_other_adapters_blocks_get_the_models_own_hidden_states(family):
    make, make_batches = _encoders()[family]
    loaded, batches = make(), make_batches()
    fed = _fed_inputs(loaded, batches)
    for j, batch in enumerate(batches):
        for i, own in enumerate(_own_inputs(loaded, batch)):
            torch.testing.assert_close(fed[i][j], own, rtol=1e-5, atol=1e-5, msg=f"block {i}")
