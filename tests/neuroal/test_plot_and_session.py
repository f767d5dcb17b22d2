"""The ``neuroal-plot`` command, the search subset, and the core additions NeuroAL uses
(``Session.collect_streams``, the selection fast path of ``masks.rows_topk``)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from lm_models import tiny_causal_lm, token_batches
from neuroal_helpers import run_neuroal

from secateurs import masks
from secateurs.cli import cli
from secateurs.errors import SecateursError
from secateurs.pipeline import PruneSpec, Session
from secateurs.plugins import get_manager
from secateurs.protocols import LoadedModel
from secateurs_neuroal.batches import search_batches


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    result, _, _ = run_neuroal(block_grid=[0.02, 0.1], row_grid=[0.0, 0.1])
    path = tmp_path_factory.mktemp("run") / "report.json"
    path.write_text(json.dumps(result.to_dict(), default=str))
    return path


def _cli():
    get_manager().add_commands(cli)
    return cli


def test_plot_command_writes_a_png(report, tmp_path):
    out = tmp_path / "plots" / "neuroal.png"
    res = CliRunner().invoke(_cli(), ["neuroal-plot", str(report), "-o", str(out)])
    assert res.exit_code == 0, res.output
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 10_000
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp file left


def test_plot_command_replaces_its_own_png_only_with_overwrite(report, tmp_path):
    out = tmp_path / "neuroal.png"
    assert CliRunner().invoke(_cli(), ["neuroal-plot", str(report), "-o", str(out)]).exit_code == 0
    again = CliRunner().invoke(_cli(), ["neuroal-plot", str(report), "-o", str(out)])
    assert isinstance(again.exception, SecateursError) and "--overwrite" in str(again.exception)
    res = CliRunner().invoke(_cli(), ["neuroal-plot", str(report), "-o", str(out), "--overwrite"])
    assert res.exit_code == 0, res.output


def test_plot_command_defaults_next_to_the_report(report):
    res = CliRunner().invoke(_cli(), ["neuroal-plot", str(report.parent)])
    assert res.exit_code == 0, res.output
    assert (report.parent / "neuroal.png").is_file()


def test_plot_command_rejects_reports_without_neuroal(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"records": {}}))
    res = CliRunner().invoke(_cli(), ["neuroal-plot", str(path)])
    assert isinstance(res.exception, SecateursError) and "no neuroal records" in str(res.exception)


def test_search_batches_take_the_first_samples_and_cut_them():
    batches = token_batches(6, 16, batch_size=4)
    subset, n = search_batches(batches, 5, 8)
    assert n == 5 and [b["input_ids"].shape for b in subset] == [(4, 8), (1, 8)]
    assert torch.equal(subset[0]["input_ids"], batches[0]["input_ids"][:, :8])
    assert search_batches(batches, 50)[1] == 6
    longer, _ = search_batches(batches, 2, 32)  # at most 32 tokens: shorter samples stay whole
    assert [b["input_ids"].shape for b in longer] == [(2, 16)]
    with pytest.raises(SecateursError, match="tensors"):
        search_batches([["not", "a", "tensor"]], 2)


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2"])
@pytest.mark.parametrize("batch_size", [1, 2])
def test_collect_streams_equals_separate_collects(family, batch_size):
    manager = get_manager()
    model = tiny_causal_lm(family)
    adapter = manager.adapters.create("llama")
    spec = PruneSpec(
        scorer=manager.scorers.create("wanda"),
        allocator=manager.allocators.create("uniform"),
        applier=manager.appliers.create("sparsegpt"),  # asks for Hessians too
        sparsity=0.5,
    )
    session = Session(LoadedModel(model, adapter, "tiny"), spec, adapter.blocks(model))
    first = session.capture(token_batches(4, 12, batch_size=batch_size))
    second = session.run(session.blocks[0], first)
    streams = [first, second, first]
    together = session.collect_streams(session.blocks[1], streams)
    chunked = session.collect_streams(session.blocks[1], streams, max_streams=2)
    for k, stream in enumerate(streams):
        alone = session.collect(session.blocks[1], stream)[0]
        for name, stats in alone.items():
            for got in (together[k][name], chunked[k][name]):
                assert torch.allclose(got.sq_norm, stats.sq_norm, rtol=1e-5, atol=1e-6)
                assert torch.allclose(got.hessian, stats.hessian, rtol=1e-5, atol=1e-5)
                assert (got.nsamples, got.ntokens) == (stats.nsamples, stats.ntokens)
    assert not torch.allclose(together[0][name].sq_norm, together[1][name].sq_norm)


def _sorted_topk(scores, keep):
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    ranks = torch.arange(scores.shape[1]).view(1, -1) < keep.view(-1, 1)
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, order, ranks)


@pytest.mark.parametrize("distinct", [1, 2, 4, 9])
@pytest.mark.parametrize("ties", [False, True])
def test_rows_topk_fast_path_equals_the_stable_sort(distinct, ties):
    gen = torch.Generator().manual_seed(distinct)
    for _ in range(20):
        scores = torch.randint(0, 3, (17, 23), generator=gen).float() if ties else torch.rand(17, 23, generator=gen)
        keep = torch.randint(0, 24, (distinct,), generator=gen)[torch.randint(0, distinct, (17,), generator=gen)]
        assert torch.equal(masks.rows_topk(scores, keep), _sorted_topk(scores, keep))


@pytest.mark.parametrize("ties", [False, True])
def test_one_sort_serves_every_keep_count(ties):
    gen = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 3, (17, 23), generator=gen).float() if ties else torch.rand(17, 23, generator=gen)
    ranks = masks.row_ranks(scores)
    assert ranks.dtype == torch.int32 and torch.equal(ranks.sort(1).values, torch.arange(23).expand(17, 23).int())
    for _ in range(20):
        keep = torch.randint(0, 24, (17,), generator=gen)
        assert torch.equal(masks.ranked_keep(ranks, keep), _sorted_topk(scores, keep))

