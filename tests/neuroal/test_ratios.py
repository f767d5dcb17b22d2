"""NeuroAL's ratio arithmetic: ramps, per-row ratios, exact counts, alignment, λ choice."""

from __future__ import annotations

import pytest
import torch

from secateurs_neuroal.allocator import best
from secateurs_neuroal.ratios import (
    BLOCK_GRID,
    alignment,
    block_grid,
    block_ramp,
    count_bounds,
    row_counts,
    row_ratios,
    unit_total,
)


@pytest.mark.parametrize("target,lam", [(0.6, 0.1), (0.7, 0.25), (0.8, 0.2), (0.05, 0.1), (0.95, 0.1)])
def test_block_ramp_is_linear_clipped_and_centred(target, lam):
    ramp = block_ramp(target, lam, 30)
    raw = target - lam + 2 * lam * torch.arange(30, dtype=torch.float64) / 29
    assert ramp.min() >= 0.01 and ramp.max() <= 0.99
    assert float(ramp.mean()) == pytest.approx(target, abs=1e-9)
    if (raw.min() >= 0.01) and (raw.max() <= 0.99):
        assert torch.allclose(ramp, raw)  # the published ramp exactly
    else:  # shifted, still a clipped linear ramp
        assert bool((ramp.diff() >= -1e-12).all())


def test_block_grid_drops_quarter_at_high_sparsity():
    assert block_grid(0.7) == BLOCK_GRID
    assert 0.25 not in block_grid(0.8)
    assert block_grid(0.8, [0.1, 0.3]) == (0.1, 0.3)


@pytest.mark.parametrize("lam", [0.01, 0.1, 0.25])
@pytest.mark.parametrize("target", [0.05, 0.6, 0.95])
def test_row_ratios_keep_mean_within_clip_and_favour_lossy_rows(lam, target):
    v = torch.randn(300, generator=torch.Generator().manual_seed(1))
    ratios = row_ratios(v, target, lam)
    assert ratios.min() >= 0.01 - 1e-12 and ratios.max() <= 0.99 + 1e-12
    assert float(ratios.mean()) == pytest.approx(target, abs=1e-9)
    # rows whose outputs lost more (larger v) are pruned less
    order = torch.argsort(v)
    assert bool((ratios[order].diff() <= 1e-12).all())


def test_row_ratios_uninformative_vectors_give_uniform_rows():
    assert row_ratios(torch.zeros(8), 0.6, 0.1) is None
    assert row_ratios(torch.randn(8), 0.6, 0.0) is None


@pytest.mark.parametrize("width,target", [(64, 0.6), (576, 0.7), (100, 0.011), (100, 0.989)])
def test_row_counts_are_exact_and_bounded(width, target):
    rows = 50
    ratios = row_ratios(torch.linspace(-1, 3, rows) ** 3, target, 0.25)
    total = unit_total(rows, width, target)
    counts = row_counts(ratios, width, total)
    least, most = count_bounds(width)
    assert int(counts.sum()) == total == rows * int(width * target + 1e-9)
    assert int(counts.min()) >= least and int(counts.max()) <= most
    if 0.05 < target < 0.95:  # away from the clip, counts follow the ratios
        floor_gap = target * width - total / rows  # what uniform rows lose to floor()
        assert (counts.double() - ratios * width).abs().max() <= 1 + floor_gap + 1e-9


def test_alignment_score():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert alignment(a, a) == 0.0
    assert alignment(a, 2 * a) == pytest.approx(0.0, abs=1e-12)  # scale-free
    b = torch.tensor([4.0, 3.0, 2.0, 1.0])
    expected = float(torch.linalg.vector_norm(a / 10 - b / 10)) / 4
    assert alignment(a, b) == pytest.approx(expected)
    assert alignment(torch.zeros(3), a[:3]) > 0


def test_best_is_argmin_with_ties_to_smallest_lambda():
    grid = [0.01, 0.02, 0.05, 0.1]
    assert best(grid, [3.0, 1.0, 2.0, 1.5]) == 1
    assert best(grid, [2.0, 1.0, 1.0, 1.0]) == 1
    assert best([0.1, 0.05, 0.01], [1.0, 1.0, 1.0]) == 2
