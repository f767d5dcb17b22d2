"""Mixtral's fused 3-D experts pruned as per-expert linears by the ``decoder`` adapter:
the wrapped forward is the stock one, every expert's rows are pruned through Wanda and
SparseGPT, the save reloads with plain ``from_pretrained``, a never-routed expert is refused."""

from __future__ import annotations

import pytest
import torch
import transformers
from safetensors.torch import load_file
from torch import nn

from families import METHODS, tiny_model, token_batches
from secateurs.errors import SecateursError
from secateurs.pipeline import prune_model
from secateurs.protocols import LoadedModel
from secateurs_transformers.decoder import EXPERT_LINEARS
from tf_models import manager, spec

SEQLEN = 24


def batches(n: int = 2, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    return token_batches(SEQLEN, n, seed)


def loaded() -> LoadedModel:
    return LoadedModel(tiny_model("mixtral"), manager().adapters.create("decoder"), "tiny-mixtral")


def logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], use_cache=False).logits


def experts(model: nn.Module) -> list[nn.Module]:
    return [layer.mlp.experts for layer in model.model.layers]


def test_every_expert_projection_is_a_unit_in_its_stage_and_the_router_is_not():
    lm = loaded()
    keys = sorted(lm.model.state_dict())
    first, again = lm.adapter.blocks(lm.model), lm.adapter.blocks(lm.model)
    n = lm.model.config.num_local_experts
    for block, block_again in zip(first, again, strict=True):
        names = [u.name for u in block.units]
        assert names == [u.name for u in block_again.units]  # idempotent: the same units
        expert_units = [u for u in block.units if ".experts." in u.name]
        assert [u.name for u in expert_units] == [
            f"{block.name}.mlp.experts.{e}.{p}" for e in range(n) for p in ("gate_up_proj", "down_proj")
        ]
        assert {u.role for u in expert_units} == {"gate_up_proj", "down_proj"}
        assert not any(name.endswith(".mlp.gate") for name in names)  # the router
        assert set(block.stages[2]) == {u.name for u in expert_units if u.role == "gate_up_proj"}
        assert set(block.stages[3]) == {u.name for u in expert_units if u.role == "down_proj"}
    for module in experts(lm.model):
        assert len(getattr(module, EXPERT_LINEARS)) == 2 * n  # not wrapped twice
        assert "forward" in vars(module)
    assert sorted(lm.model.state_dict()) == keys


def test_expert_units_are_views_of_the_fused_parameters():
    lm = loaded()
    unit = next(u for u in lm.adapter.blocks(lm.model)[1].units if u.name.endswith("experts.2.down_proj"))
    fused = lm.model.model.layers[1].mlp.experts.down_proj
    assert unit.weight.shape == fused.shape[1:]
    with torch.no_grad():
        unit.weight[0, :3] = 7.0
    assert torch.equal(fused[2, 0, :3], torch.full((3,), 7.0))


def test_wrapped_experts_give_bit_identical_outputs():
    lm = loaded()
    before = [logits(lm.model, b) for b in batches()]
    lm.adapter.blocks(lm.model)
    lm.adapter.blocks(lm.model)
    for batch, dense in zip(batches(), before, strict=True):
        assert torch.equal(logits(lm.model, batch), dense)


@pytest.mark.parametrize("method", METHODS)
def test_every_expert_is_pruned_to_half_and_the_save_reloads(method, tmp_path):
    lm = loaded()
    dense = [(m.gate_up_proj.detach().clone(), m.down_proj.detach().clone()) for m in experts(lm.model)]
    prune_model(lm, spec(calibration=batches(), **METHODS[method]))
    for module, originals in zip(experts(lm.model), dense, strict=True):
        for fused, original in zip((module.gate_up_proj, module.down_proj), originals, strict=True):
            zeros = fused == 0
            if method == "wanda":  # per output row
                assert (zeros.sum(-1) == fused.shape[-1] // 2).all()
            else:
                assert zeros.flatten(1).float().mean(1).tolist() == pytest.approx([0.5] * fused.shape[0], abs=1e-3)
                assert not torch.allclose(fused[~zeros], original[~zeros])  # kept weights updated
    lm.adapter.save(lm, tmp_path / "pruned")
    plain = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "pruned")
    assert type(plain) is type(lm.model)
    for batch in batches():
        assert torch.equal(logits(plain, batch), logits(lm.model, batch))
    tiny_model("mixtral").save_pretrained(tmp_path / "dense")
    saved = [load_file(tmp_path / d / "model.safetensors") for d in ("pruned", "dense")]
    assert sorted(saved[0]) == sorted(saved[1])


def test_an_expert_no_token_is_routed_to_is_refused():
    lm = loaded()
    for module in experts(lm.model):  # route expert 3's tokens to expert 0
        module.register_forward_pre_hook(lambda _m, args: (args[0], args[1].masked_fill(args[1] == 3, 0), args[2]))
    with pytest.raises(SecateursError, match=r"layers\.0\.mlp\.experts\.3\.gate_up_proj saw no input"):
        prune_model(lm, spec(calibration=batches(), scorer="wanda", applier="zero"))
