"""Masks are exact per comparison group, honour per-row ratios and N:M, and fail clearly."""

import pytest
import torch

from secateurs.errors import SecateursError
from secateurs.masks import build_mask, keep_counts, nm_mask, pruned_count
from secateurs.types import UnitAllocation


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.29, 0.3, 0.5, 0.7, 0.99])
@pytest.mark.parametrize("width", [7, 10, 64, 100])
def test_row_masks_prune_exactly_floor_of_width_times_sparsity(sparsity, width):
    scores = torch.randn(5, width)
    mask = build_mask(scores, UnitAllocation(sparsity), "row")
    pruned = (~mask).sum(1)
    expected = int(pruned_count(width, sparsity))
    assert torch.all(pruned == expected)
    assert abs(expected - width * sparsity) <= 1  # within one entry of the exact share


def test_row_mask_keeps_the_highest_scores_of_each_row():
    scores = torch.tensor([[1.0, 5.0, 3.0, 2.0], [9.0, 0.0, 8.0, 7.0]])
    mask = build_mask(scores, UnitAllocation(0.5), "row")
    assert mask.tolist() == [[False, True, True, False], [True, False, True, False]]


def test_matrix_mask_ranks_the_whole_tensor():
    scores = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    mask = build_mask(scores, UnitAllocation(0.5), "matrix")
    assert mask.tolist() == [[False, False], [False, True], [True, True]]


def test_per_row_ratios_are_honoured_row_by_row():
    rows = torch.tensor([0.0, 0.25, 0.5, 0.75])
    mask = build_mask(torch.randn(4, 8), UnitAllocation(0.375, rows=rows), "row")
    assert (~mask).sum(1).tolist() == [0, 2, 4, 6]
    assert keep_counts(UnitAllocation(0.375, rows=rows), 4, 8).tolist() == [8, 6, 4, 2]


def test_ties_are_broken_deterministically_and_exactly():
    mask = build_mask(torch.zeros(3, 10), UnitAllocation(0.4), "row")
    assert torch.all((~mask).sum(1) == 4)
    assert torch.equal(mask, build_mask(torch.zeros(3, 10), UnitAllocation(0.4), "row"))


@pytest.mark.parametrize("pattern,n,m", [("2:4", 2, 4), ("4:8", 4, 8)])
def test_nm_masks_keep_n_of_every_m(pattern, n, m):
    scores = torch.randn(6, 32)
    mask = build_mask(scores, UnitAllocation(0.5), "row", pattern)
    assert torch.all(mask.view(6, -1, m).sum(-1) == n)
    top = scores.view(6, -1, m).topk(n, dim=-1).values.min(-1).values
    kept_min = torch.where(mask, scores, torch.inf).view(6, -1, m).min(-1).values
    assert torch.equal(top, kept_min)


def test_nm_pattern_that_does_not_divide_the_row_is_refused():
    with pytest.raises(SecateursError, match="does not divide"):
        nm_mask(torch.randn(2, 10), 2, 4)


@pytest.mark.parametrize("pattern", ["2-4", "4:2", "0:4", "a:b"])
def test_bad_nm_patterns_are_refused(pattern):
    with pytest.raises(SecateursError):
        build_mask(torch.randn(2, 8), UnitAllocation(0.5), "row", pattern)


def test_one_dimensional_tensors_are_one_row():
    mask = build_mask(torch.arange(10.0), UnitAllocation(0.3), "row")
    assert mask.tolist() == [False] * 3 + [True] * 7


def test_per_row_ratios_need_row_comparison():
    with pytest.raises(SecateursError, match="row"):
        build_mask(torch.randn(2, 4), UnitAllocation(0.5, rows=torch.tensor([0.5, 0.5])), "matrix")


def test_zero_applier_refuses_an_nm_pattern_on_structured_groups():
    from secateurs.builtins.appliers import ZeroApplier
    from secateurs.types import Block

    block = Block("b", 0, torch.nn.Identity(), ())
    with pytest.raises(SecateursError, match="N:M pattern"):
        ZeroApplier(pattern="2:4").check([block], "neurons")


@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.7])
def test_row_masks_equal_a_stable_sort_with_ties_in_some_rows(sparsity):
    """The selection path (one keep count) keeps what a stable descending sort keeps:
    rows without ties, rows tied at the threshold, all-equal rows."""
    gen = torch.Generator().manual_seed(3)
    scores = torch.randn(6, 40, generator=gen)
    scores[1, ::3] = scores[1, 0]  # many ties in one row
    scores[2] = 0.5  # a constant row
    scores[4, 10:20] = scores[4].median()  # ties straddling the threshold
    mask = build_mask(scores, UnitAllocation(sparsity), "row")
    keep = 40 - int(pruned_count(40, sparsity))
    order = torch.argsort(scores, dim=1, descending=True, stable=True)[:, :keep]
    expected = torch.zeros_like(mask).scatter_(1, order, True)
    assert torch.equal(mask, expected)
