"""SparseGPT: OBS weight update, exact quotas, N:M, true-sequential order, Hessian errors."""

from __future__ import annotations

import pytest
import torch

from llm_helpers import tiny_llama, wanda_spec
from lm_models import tiny_causal_lm, token_batches
from secateurs.builtins.sparsegpt import SparseGPTApplier, inverse_hessian_factor, sparsegpt_prune
from secateurs.errors import SecateursError
from secateurs.pipeline import prune_model
from secateurs.plugins import get_manager
from secateurs.protocols import BlockContext, LoadedModel
from secateurs.types import Block, InputStats, Unit, UnitAllocation
from secateurs_transformers.llama import LlamaFamilyAdapter

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def _layer_inputs(module_path: str, nsamples: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and calibration inputs ``[tokens, in]`` of one linear of a tiny Llama."""
    model = tiny_causal_lm("llama")
    module = model.get_submodule(module_path)
    seen = []
    handle = module.register_forward_hook(lambda m, args, out: seen.append(args[0].reshape(-1, args[0].shape[-1])))
    with torch.no_grad():
        for batch in token_batches(nsamples, 32):
            model(**batch, use_cache=False)
    handle.remove()
    return module.weight.detach().clone(), torch.cat(seen)


def _hessian(x: torch.Tensor, nsamples: int) -> torch.Tensor:
    return (2.0 / nsamples) * x.T @ x


@pytest.mark.parametrize("module_path", ["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"])
@pytest.mark.parametrize("sparsity,pattern", [(0.5, None), (0.7, None), (0.5, "2:4")])
def test_weight_update_lowers_the_reconstruction_error_of_the_same_mask(module_path, sparsity, pattern):
    weight, x = _layer_inputs(module_path)
    nm = (2, 4) if pattern else None
    pruned, keep = sparsegpt_prune(weight, _hessian(x, 8), UnitAllocation(sparsity), nm=nm, blocksize=32)
    dense_out = x @ weight.T
    update_err = torch.linalg.norm(dense_out - x @ pruned.T)
    mask_only_err = torch.linalg.norm(dense_out - x @ (weight * keep).T)
    assert update_err < mask_only_err
    assert torch.equal(pruned[~keep], torch.zeros(int((~keep).sum())))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape,sparsity", [((24, 200), 0.5), ((7, 130), 0.3), ((16, 64), 0.73)])
def test_unstructured_quota_is_exact_per_unit(device, shape, sparsity):
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(shape, generator=gen).to(device)
    x = torch.randn(300, shape[1], generator=gen).to(device)
    pruned, keep = sparsegpt_prune(w, _hessian(x, 1), UnitAllocation(sparsity), blocksize=128)
    assert pruned.device.type == device and keep.device.type == device
    assert int((~keep).sum()) == int(w.numel() * sparsity + 1e-9)
    assert int((pruned == 0).sum()) == int((~keep).sum())


def test_per_row_ratios_are_exact_row_by_row():
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(6, 150, generator=gen)
    x = torch.randn(400, 150, generator=gen)
    ratios = torch.tensor([0.1, 0.2, 0.5, 0.5, 0.8, 0.9])
    _, keep = sparsegpt_prune(w, _hessian(x, 1), UnitAllocation(0.5, rows=ratios), blocksize=64)
    assert (~keep).sum(1).tolist() == [int(150 * r + 1e-9) for r in ratios.tolist()]


@pytest.mark.parametrize("pattern,n,m", [("2:4", 2, 4), ("4:8", 4, 8), ("1:4", 1, 4)])
def test_nm_keeps_exactly_n_of_every_m(pattern, n, m):
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(12, 256, generator=gen)
    x = torch.randn(500, 256, generator=gen)
    pruned, keep = sparsegpt_prune(w, _hessian(x, 1), UnitAllocation(0.0), nm=(n, m))
    assert (keep.reshape(12, -1, m).sum(-1) == n).all()
    assert (pruned[~keep] == 0).all()


def test_zero_sparsity_leaves_the_weight_unchanged():
    w, x = _layer_inputs("model.layers.0.mlp.up_proj")
    pruned, keep = sparsegpt_prune(w, _hessian(x, 8), UnitAllocation(0.0))
    assert keep.all()
    assert torch.allclose(pruned, w, atol=1e-6)


def _bad_context(unit: Unit, hessian: torch.Tensor) -> BlockContext:
    return BlockContext(
        block=Block("b", 0, unit.module, (unit,)),
        stats={unit.name: InputStats(torch.ones(hessian.shape[0]), 1, 1, hessian)},
        comparison="row",
        generator=torch.Generator(),
        recollect=lambda units: {},
    )


@pytest.mark.parametrize("bad,message", [("indefinite", "not positive definite"), ("nan", "inf/NaN")])
def test_a_bad_hessian_is_reported_with_the_layer_name(bad, message):
    linear = torch.nn.Linear(8, 4)
    unit = Unit("model.layers.3.mlp.down_proj", linear, "weight", role="down_proj")
    if bad == "indefinite":  # eigenvalues 3 and -1 on every 2x2 block: dampening cannot fix it
        hessian = torch.block_diag(*[torch.tensor([[1.0, 2.0], [2.0, 1.0]])] * 4)
    else:
        hessian = torch.eye(8)
        hessian[2, 2] = float("nan")
    before = linear.weight.detach().clone()
    ctx = _bad_context(unit, hessian)
    with pytest.raises(SecateursError, match=rf"model\.layers\.3\.mlp\.down_proj.*{message}"):
        SparseGPTApplier().apply(ctx.block, {}, {unit.name: UnitAllocation(0.5)}, ctx)
    assert torch.equal(linear.weight, before)  # nothing written on failure


def test_float64_fallback_rescues_an_ill_conditioned_hessian():
    gen = torch.Generator().manual_seed(4)
    basis = torch.linalg.qr(torch.randn(64, 64, generator=gen, dtype=torch.float64))[0]
    eig = torch.logspace(0, -14, 64, dtype=torch.float64)  # float32 cannot factor this undamped
    hessian = (basis * eig) @ basis.T
    assert int(torch.linalg.cholesky_ex(hessian.float())[1]) > 0  # float32 fails on it
    upper = inverse_hessian_factor(hessian, 1e-9, "layer")
    assert torch.isfinite(upper).all() and torch.equal(upper, upper.triu())


def _run(loaded: LoadedModel, applier, scorer: str = "wanda", sparsity: float = 0.5):
    return prune_model(loaded, wanda_spec(applier=applier, scorer=scorer, sparsity=sparsity))


def test_true_sequential_prunes_groups_in_order_and_recollects_the_later_ones():
    block = LlamaFamilyAdapter().blocks(tiny_causal_lm("llama", layers=1))[0]
    groups = SparseGPTApplier(true_sequential=True).groups(block, block.units)
    assert [[u.role for u in g] for g in groups] == [
        ["q_proj", "k_proj", "v_proj"],
        ["o_proj"],
        ["gate_proj", "up_proj"],
        ["down_proj"],
    ]
    plain, sequential = tiny_llama(), tiny_llama()
    _run(plain, SparseGPTApplier())
    _run(sequential, SparseGPTApplier(true_sequential=True))
    weights = {n: p for n, p in plain.model.named_parameters()}
    for name, p in sequential.model.named_parameters():
        first_group = any(r in name for r in ("q_proj", "k_proj", "v_proj"))
        later_group = any(r in name for r in ("o_proj", "up_proj", "down_proj"))
        if "layers.0" in name and first_group:  # same inputs in both modes
            assert torch.allclose(p, weights[name], atol=1e-6), name
        if later_group:  # inputs re-collected after the earlier groups were pruned
            assert not torch.allclose(p, weights[name], atol=1e-4), name


def test_the_scorer_does_not_change_sparsegpt_masks():
    with_wanda, with_magnitude = tiny_llama(), tiny_llama()
    r1 = _run(with_wanda, SparseGPTApplier(), "wanda")
    r2 = _run(with_magnitude, SparseGPTApplier(), "magnitude")
    assert r1.sparsity == r2.sparsity == pytest.approx(0.5)
    for (n, p), (_, q) in zip(with_wanda.model.named_parameters(), with_magnitude.model.named_parameters()):
        assert torch.allclose(p, q, atol=1e-5), n


def test_pipeline_sparsegpt_beats_wanda_on_block_outputs():
    """End to end on a tiny model: SparseGPT's logits stay closer to the dense ones than Wanda's."""
    manager = get_manager()
    dense, wanda, sgpt = tiny_llama(), tiny_llama(), tiny_llama()
    _run(wanda, manager.appliers.create("zero"), sparsity=0.6)
    _run(sgpt, SparseGPTApplier(), sparsity=0.6)
    batch = token_batches(4, 32, seed=1)[0]
    with torch.no_grad():
        ref = dense.model(**batch).logits
        err_wanda = torch.linalg.norm(wanda.model(**batch).logits - ref)
        err_sgpt = torch.linalg.norm(sgpt.model(**batch).logits - ref)
    assert err_sgpt < err_wanda


def test_bad_parameters_are_refused():
    manager = get_manager()
    cases = [
        ({"blocksize": 0}, "blocksize"),
        ({"percdamp": 0}, "percdamp"),
        ({"pattern": "2:3"}, "blocksize"),
        ({"pattern": "x"}, "N:M"),
    ]
    for params, key in cases:
        with pytest.raises(SecateursError, match=key):
            manager.appliers.create("sparsegpt", **params)


def test_structured_granularity_is_refused():
    unit = Unit("l", torch.nn.Linear(4, 4), "weight")
    ctx = _bad_context(unit, torch.eye(4))
    with pytest.raises(SecateursError, match="zero"):
        SparseGPTApplier().check([ctx.block], "heads")


def _column_walk(w: torch.Tensor, hessian: torch.Tensor, sparsity: float, nm, blocksize: int):
    """The reference walk: one rank-1 update of the tile per column (Frantar & Alistarh)."""
    w = w.clone()
    rows, cols = w.shape
    hinv = inverse_hessian_factor(hessian, 0.01, "ref")
    keep = torch.ones_like(w, dtype=torch.bool)
    done = 0
    for start in range(0, cols, blocksize):
        end = min(start + blocksize, cols)
        w1, hinv1 = w[:, start:end].clone(), hinv[start:end, start:end]
        d = torch.diagonal(hinv1)
        err1 = torch.zeros_like(w1)
        p1 = torch.zeros_like(w1, dtype=torch.bool)
        if nm is None:
            quota = int(rows * end * sparsity + 1e-9) - done
            done += quota
            loss = (w1.pow(2) / d.pow(2)).reshape(-1)
            p1.view(-1)[torch.topk(loss, quota, largest=False).indices] = True
        for i in range(end - start):
            if nm is not None and i % nm[1] == 0:
                group = w1[:, i : i + nm[1]].pow(2) / d[i : i + nm[1]].pow(2)
                p1[:, i : i + nm[1]].scatter_(1, torch.topk(group, nm[1] - nm[0], dim=1, largest=False).indices, True)
            err1[:, i] = w1[:, i] * p1[:, i] / d[i]
            w1[:, i:] -= err1[:, i : i + 1] * hinv1[i : i + 1, i:]
        w[:, start:end] = w1.masked_fill(p1, 0.0)
        w[:, end:] -= err1 @ hinv[start:end, end:]
        keep[:, start:end] = ~p1
    return w, keep


@pytest.mark.parametrize("pattern", [None, (2, 4)])
def test_the_sub_blocked_walk_equals_the_column_by_column_reference(pattern):
    weight, x = _layer_inputs("model.layers.1.mlp.down_proj")
    hessian = _hessian(x, 8)
    pruned, keep = sparsegpt_prune(weight, hessian, UnitAllocation(0.5), nm=pattern, blocksize=48)
    ref, ref_keep = _column_walk(weight, hessian, 0.5, pattern, 48)
    assert torch.equal(keep, ref_keep)
    torch.testing.assert_close(pruned, ref, atol=1e-5, rtol=1e-4)
