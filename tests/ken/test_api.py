"""One-call API, allocator, restore semantics, baselines and bad input."""

import pytest
import torch

from secateurs.errors import SecateursError
from secateurs_ken.api import ken, ken_state
from secateurs_ken.parts import solve_k
from secateurs_ken.states import as_rows


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_ken_exact_k_restore_and_inputs_untouched(pair):
    pre, ft = pair
    before_pre, before_ft = _snapshot(pre), _snapshot(ft)
    out = ken(pre, ft, k=7)
    for name, t in before_pre.items():
        assert torch.equal(pre.state_dict()[name], t) and torch.equal(ft.state_dict()[name], before_ft[name])
    new = out.state_dict()
    for name, w in new.items():
        if not w.is_floating_point():
            continue
        kept = new[name] == before_ft[name]
        restored = new[name] == before_pre[name]
        assert (kept | restored).all(), name
        rows = as_rows(kept & ~restored)
        assert (rows.sum(1) <= min(7, rows.shape[1])).all()
    _, masks = ken_state(pre.state_dict(), ft.state_dict(), k=7)
    assert set(masks) == {n for n, t in ft.state_dict().items() if t.is_floating_point()}  # last key included
    for name, m in masks.items():
        assert (as_rows(m).sum(1) == min(7, as_rows(m).shape[1])).all(), name
        assert torch.equal(new[name], torch.where(m, before_ft[name], before_pre[name]))


def test_state_dict_input_and_targets(pair):
    pre, ft = pair
    state = ken(pre.state_dict(), ft.state_dict(), fraction=0.5, targets=["*attention*weight"])
    assert isinstance(state, dict)
    untouched = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(state[untouched], ft.state_dict()[untouched])
    q = "bert.encoder.layer.0.attention.self.query.weight"
    assert ((state[q] == ft.state_dict()[q]).sum(1) >= 12).all()


def test_reduction_solved_for_one_k(pair):
    pre, ft = pair
    _, masks = ken_state(pre.state_dict(), ft.state_dict(), reduction=0.3)
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    assert 1 - kept / total >= 0.3
    k = solve_k([tuple(as_rows(m).shape) for m in masks.values()], 0.3)
    _, masks_k1 = ken_state(pre.state_dict(), ft.state_dict(), k=k + 1)
    assert 1 - sum(int(m.sum()) for m in masks_k1.values()) / total < 0.3


@pytest.mark.parametrize("method", ["ft-magnitude", "delta-magnitude", "random", "dare"])
def test_baselines_same_k(pair, method):
    pre, ft = pair
    state, masks = ken_state(pre.state_dict(), ft.state_dict(), k=5, method=method, seed=3)
    q = "bert.encoder.layer.1.attention.self.query.weight"
    assert (masks[q].sum(1) == 5).all()
    d_ft = ft.state_dict()[q] - pre.state_dict()[q]
    if method == "delta-magnitude":
        assert torch.equal(masks[q], torch.zeros_like(masks[q]).scatter_(1, d_ft.abs().topk(5, 1).indices, True))
    if method == "dare":  # kept deltas rescaled by width / k
        got = (state[q] - pre.state_dict()[q])[masks[q]]
        assert torch.allclose(got, d_ft[masks[q]] * 24 / 5, atol=1e-6)
    again, _ = ken_state(pre.state_dict(), ft.state_dict(), k=5, method=method, seed=3)
    assert torch.equal(again[q], state[q])


def test_mismatching_models_name_first_tensor(pair):
    pre, ft = pair
    sd = dict(ft.state_dict())
    sd["bert.encoder.layer.0.attention.self.key.weight"] = torch.zeros(3, 3)
    with pytest.raises(SecateursError, match="attention.self.key.weight.*shape"):
        ken(pre.state_dict(), sd, k=3)
    del sd["bert.encoder.layer.0.attention.self.key.weight"]
    with pytest.raises(SecateursError, match="attention.self.key.weight"):
        ken(pre.state_dict(), sd, k=3)


@pytest.mark.parametrize(
    "opts, msg",
    [({"k": 0}, "positive"), ({"k": -2}, "positive"), ({"reduction": 0.0}, r"\(0, 1\)"),
     ({"reduction": 1.0}, r"\(0, 1\)"), ({"reduction": -0.5}, r"\(0, 1\)"), ({}, "exactly one"),
     ({"k": 3, "method": "nope"}, "unknown method")],
)
def test_bad_options(pair, opts, msg):
    pre, ft = pair
    with pytest.raises(SecateursError, match=msg):
        ken(pre, ft, **opts)
