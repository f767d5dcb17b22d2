"""Every recipe shipped in recipes/ is valid and passes every check that needs no weight
(``secateurs.run.build_parts``: parts, device, granularity, allocator, the seqlen against
the model's config), so a user who runs one is not refused after minutes of work."""

from __future__ import annotations

from pathlib import Path

import pytest

from secateurs.plugins import get_manager
from secateurs.recipe import load_recipe
from secateurs.recover_run import PruneRecovery
from secateurs.run import build_parts

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.toml"))


@pytest.mark.real
@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_a_shipped_recipe_passes_every_check_before_loading(path, monkeypatch):
    monkeypatch.setattr("secateurs.run.load_for", lambda *a, **k: pytest.fail("the model was loaded"))
    recipe = load_recipe(path)
    parts = build_parts(recipe, progress=False)
    PruneRecovery.plan(recipe, get_manager())  # a [recover] table's checks (None without one)
    assert (parts.scorer is not None or parts.step_scorers) and recipe.output  # step_scorers: [sizes] runs


def test_recipes_are_found():
    assert len(RECIPES) >= 3


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_a_recipe_survives_its_own_dict(path):
    """What a report records (``Recipe.to_dict``) builds the same recipe again: exporters and
    commands that re-read ``result.recipe`` (KEN's delta) depend on it."""
    from secateurs.recipe import Recipe

    recipe = load_recipe(path)
    assert Recipe.from_dict(recipe.to_dict()) == recipe
