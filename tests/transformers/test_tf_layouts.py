"""The layout records (``secateurs_transformers.layouts``) against the name heuristics they
replace: for every family (``families.py``) the record names modules that exist, and the
groups and stages built from the record equal those the fallback finds by module names, so
the fallback is checked wherever the answer is declared."""

from __future__ import annotations

import pytest

from families import DECODERS, tiny_model
from secateurs.types import Group
from secateurs_transformers import groups
from secateurs_transformers.decoder import _expert_linears, _linears, _stage, decoder_layers
from secateurs_transformers.layouts import LAYOUTS


def _slices(group: Group | None):
    if group is None:
        return None
    return group.name, group.size, [(id(s.module), s.param, s.dim, s.start, s.length) for s in group.slices]


@pytest.mark.parametrize("family", DECODERS)
def test_every_family_has_a_record_naming_modules_it_has(family):
    model = tiny_model(family)
    record = LAYOUTS[model.config.model_type]
    layer = decoder_layers(model)[0][0]
    for path in (*record.readers, *record.writers, *record.norms):
        layer.get_submodule(path)
    for path, dim in record.expert_params:
        owner, _, param = path.rpartition(".")
        assert getattr(layer.get_submodule(owner), param).dim() > dim
    for path in (*record.embeddings, record.final_norm):
        model.get_submodule(path)


@pytest.mark.parametrize("family", DECODERS)
def test_groups_from_the_record_equal_the_name_fallback(family):
    model = tiny_model(family)
    record = groups.layout_record(model)
    layer = decoder_layers(model)[0][0]
    assert _slices(groups.neurons("p", layer, record)) == _slices(groups.neurons("p", layer, None))
    if groups.heads_refusal(model, layer, None) is None:  # the record may know more, never less
        assert groups.heads_refusal(model, layer, record) is None
        assert _slices(groups.heads("p", layer, record)) == _slices(groups.heads("p", layer, None))


@pytest.mark.parametrize("family", DECODERS)
def test_stages_from_the_record_equal_the_name_fallback(family):
    model = tiny_model(family)
    record = groups.layout_record(model)
    layer = decoder_layers(model)[0][0]
    paths = [p for p, _ in _linears(layer)] + [p for p, _ in _expert_linears(layer)]
    assert all(record.stage(p) is not None for p in paths), [p for p in paths if record.stage(p) is None]
    assert [_stage(p, record) for p in paths] == [_stage(p) for p in paths]
