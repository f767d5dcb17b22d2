"""Sized runs (``[sizes]``, ``target_params``: ``secateurs.shapes``): every check that needs
no weight refuses before the model loads, with one line and nothing written (sizes against
the model's config.json included); the recipe fields parse and round-trip."""

from __future__ import annotations

import pytest

from secateurs.errors import SecateursError
from secateurs.recipe import Recipe, parse_count
from test_reliability import _refused, _snapshot


@pytest.fixture
def no_load(monkeypatch):
    """Fail the test if the run gets as far as loading the model (reading any weight)."""
    monkeypatch.setattr("secateurs.run.load_for", lambda *a, **k: pytest.fail("the model was loaded"))
    monkeypatch.setattr("secateurs.curve.load_for", lambda *a, **k: pytest.fail("the model was loaded"))


def _sized(folder, model, *lines: str, calibrated: bool = True, text=None) -> str:
    path = folder / "sized.toml"
    calibration = ["[calibration]", 'name = "text"', f'corpus = "{text}"', "nsamples = 2", "seqlen = 16"]
    text_lines = [f'model = "{model}"', f'output = "{folder / "out"}"', *lines, *(calibration if calibrated else [])]
    path.write_text("\n".join(text_lines) + "\n")
    return str(path)


def _refused_before_load(capsys, tmp_path, args, *needles) -> None:
    before = _snapshot(tmp_path)
    _refused(capsys, args, *needles)
    assert _snapshot(tmp_path) == before
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "lines,needles",
    [
        (["[sizes]", "num_layers = 1"], ("unknown size 'num_layers' in [sizes]", "num_hidden_layers")),
        (["[sizes]", "hidden_size = 0"], ("[sizes] hidden_size must be a positive whole number", "got 0")),
        (["[sizes]", "hidden_size = 31.5"], ("[sizes] hidden_size must be a positive whole number",)),
        (["[sizes]", 'intermediate_size = "64"'], ("[sizes] intermediate_size must be a positive whole number",)),
        (["sparsity = 0.5", "[sizes]", "num_hidden_layers = 1"], ("remove the recipe's 'sparsity'",)),
        (['granularity = "neurons"', "[sizes]", "num_hidden_layers = 1"], ("remove the recipe's 'granularity'",)),
        (['scorer = "magnitude"', "[sizes]", "num_hidden_layers = 1"], ("remove the recipe's 'scorer'", "[scorers]")),
        (['applier = "sparsegpt"', "[sizes]", "num_hidden_layers = 1"], ("remove the recipe's applier 'sparsegpt'",)),
        (['target_params = "50K"', "[sizes]", "num_hidden_layers = 1"], ("either [sizes] or target_params",)),
        (["[sizes]", "num_hidden_layers = 3"], ("[sizes] num_hidden_layers = 3 is larger than", "'s 2")),
        (["[sizes]", "hidden_size = 65"], ("[sizes] hidden_size = 65 is larger than", "'s 64")),
        (["[sizes]", "hidden_size = 30"], ("hidden_size = 30 is not a multiple of num_attention_heads = 4",
                                           "set hidden_size = 28 or 32")),
        (["[sizes]", "num_attention_heads = 3"], ("not a multiple of the model's 2 query heads per key/value head",
                                                  "set num_attention_heads = 2 or 4")),
        (["[sizes]", "num_hidden_layers = 2", "hidden_size = 64"],
         ("nothing to remove:", "already has num_hidden_layers = 2, hidden_size = 64")),
        (["[sizes]", "num_hidden_layers = 1", "[scorers]", 'layers = "nope"'], ("unknown scorer 'nope'",)),
        (["[sizes]", "num_hidden_layers = 1", "[scorers]", 'layers = "magnitude"'], ("cannot score whole layers",)),
        (["[sizes]", "intermediate_size = 8", "[scorers]", 'neurons = "skip-loss"'], ("scores whole layers",)),
        (["[sizes]", "intermediate_size = 8", "[scorers]", 'width = "magnitude"'], ("unknown step 'width' in [scorers]",)),
        (["[sizes]", "intermediate_size = 8", "[scorers]", 'layers = "skip-loss"'],
         ("[scorers] layers names the scorer of a step this run has not",)),
        (['target_params = "lots"'], ("recipe key 'target_params' must be a positive parameter count",)),
        (['target_params = "50K"', 'max_memory = "1GiB"'], ("target_params prunes a copy", "drop max_memory")),
        (['sparsity = 0.5', 'scorer = "magnitude"', "[scorers]", 'layers = "skip-loss"'], ("[scorers] names the scorers",)),
    ],
    ids=["unknown key", "zero", "fraction", "string", "sparsity", "granularity", "scorer", "applier", "both",
         "more layers", "wider", "hidden not a multiple of heads", "query heads", "same sizes", "unknown scorer", "entry scorer for layers", "layer scorer for neurons", "unknown step",
         "unused step", "bad target", "target and max_memory", "scorers without sizes"],
)
def test_sized_recipes_refuse_before_the_model_loads(tmp_path, tiny_lm_dir, text_file, capsys, no_load, lines, needles):
    recipe = _sized(tmp_path, tiny_lm_dir, *lines, text=text_file)
    _refused_before_load(capsys, tmp_path, ["prune", recipe, "-q"], *needles)


@pytest.mark.parametrize("lines", [["[sizes]", "num_hidden_layers = 1"], ['target_params = "50K"']])
def test_steps_that_need_calibration_refuse_without_it(tmp_path, tiny_lm_dir, capsys, no_load, lines):
    """The default scorers (skip-loss, activation) and the search's ranking need calibration."""
    recipe = _sized(tmp_path, tiny_lm_dir, *lines, calibrated=False)
    _refused_before_load(capsys, tmp_path, ["prune", recipe, "-q"], "calibration")


def test_the_sparsity_option_does_not_apply_to_sizes(tmp_path, tiny_lm_dir, text_file, capsys, no_load):
    recipe = _sized(tmp_path, tiny_lm_dir, "[sizes]", "num_hidden_layers = 1", text=text_file)
    _refused_before_load(capsys, tmp_path, ["prune", recipe, "-q", "--sparsity", "0.3"], "remove the recipe's 'sparsity'")


def test_a_curve_refuses_sizes(tmp_path, tiny_lm_dir, text_file, capsys, no_load):
    recipe = _sized(tmp_path, tiny_lm_dir, "[sizes]", "num_hidden_layers = 1", text=text_file)
    _refused_before_load(capsys, tmp_path, ["prune-curve", recipe, "-q"], "a pruning curve runs one sparsity",
                         "secateurs prune")


@pytest.mark.parametrize("text,count", [("90M", 90_000_000), ("1.2B", 1_200_000_000), ("500K", 500_000),
                                        (" 2.5m ", 2_500_000), (123, 123), ("77", 77)])
def test_parameter_counts_parse(text, count):
    assert parse_count(text) == count


@pytest.mark.parametrize("text", ["", "M", "-5M", 0, True, 1.5, "90 apples"])
def test_bad_parameter_counts_are_refused(text):
    with pytest.raises(SecateursError, match="must be a positive parameter count"):
        parse_count(text)


def test_a_sized_recipe_needs_no_sparsity_and_round_trips():
    recipe = Recipe.from_dict({"sizes": {"hidden_size": 24}, "scorers": {"hidden": {"name": "magnitude"}}})
    assert recipe.sparsity is None and recipe.scorer is None and recipe.shaped
    again = Recipe.from_dict({k: v for k, v in recipe.to_dict().items() if v is not None})
    assert again == recipe
    assert recipe.step_scorer("hidden").name == "magnitude" and recipe.step_scorer("layers").name == "skip-loss"
    assert recipe.with_overrides({"sizes.num_hidden_layers": 3}).sizes == {"hidden_size": 24, "num_hidden_layers": 3}
    with pytest.raises(SecateursError, match="missing required key 'sparsity'"):
        Recipe.from_dict({"scorer": "magnitude"})


def test_lrp_tune_refuses_sizes(tmp_path, tiny_lm_dir, text_file, capsys, no_load):
    pytest.importorskip("secateurs_lrp")
    recipe = _sized(tmp_path, tiny_lm_dir, "[sizes]", "num_hidden_layers = 1", text=text_file)
    _refused_before_load(capsys, tmp_path, ["lrp-tune", recipe, "-q", "-o", str(tmp_path / "tuned")],
                         "lrp-tune runs one sparsity")
