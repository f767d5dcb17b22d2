"""Propagation invariant, for every adapter and family: with nothing pruned, the hidden
state the pipeline feeds block ``i`` equals the model's own hidden state entering block
``i``, at a sequence length longer than any sliding window (so sliding and full attention
layers, which get different masks and rotary embeddings, are both exercised)."""

from __future__ import annotations

import pytest
import torch

from secateurs.loading import wrap
from secateurs.protocols import LoadedModel
from secateurs.testing import pipeline_block_inputs, propagation_error

from families import DECODERS, WINDOW, tiny_model
from tf_models import batches as tf_batches, tiny_bert
from timm_models import SPECS, images, tiny

SEQLEN = 3 * WINDOW


@pytest.mark.parametrize("family", DECODERS)
def test_decoder_blocks_get_the_models_own_hidden_states(family):
    loaded = wrap(tiny_model(family))
    gen = torch.Generator().manual_seed(1)
    batches = [{"input_ids": torch.randint(0, 128, (1, SEQLEN), generator=gen)} for _ in range(2)]
    fed = pipeline_block_inputs(loaded, batches)
    for j, batch in enumerate(batches):
        with torch.no_grad():
            own = loaded.model(**batch, output_hidden_states=True, use_cache=False).hidden_states
        for i, per_batch in enumerate(fed):
            torch.testing.assert_close(per_batch[j], own[i], rtol=1e-5, atol=1e-5, msg=f"block {i}")


def _others() -> dict[str, tuple]:
    out = {"bert": (lambda: wrap(tiny_bert()), lambda: tf_batches("bert", n=2, seqlen=SEQLEN))}
    for name in SPECS:
        out[f"timm-{name}"] = (lambda name=name: tiny(name), lambda name=name: [images(name, 2, seed=s) for s in (0, 1)])
    return out


@pytest.mark.parametrize("family", sorted(_others()))
def test_every_other_adapters_blocks_get_the_models_own_hidden_states(family):
    make, make_batches = _others()[family]
    loaded: LoadedModel = make()
    assert propagation_error(loaded, make_batches()) < 1e-5
