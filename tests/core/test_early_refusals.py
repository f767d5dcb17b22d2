"""Every check that can be made from the recipe, the config and the command line refuses
before any weight is read: one line on stderr, exit status 2, no traceback, inputs
unchanged, nothing written (issue 23's recipe cases and late checks)."""

from __future__ import annotations

import pytest

import secateurs
from secateurs.errors import SecateursError
from test_reliability import _recipe, _refused, _snapshot


@pytest.fixture
def no_load(monkeypatch):
    """Fail the test if the run gets as far as loading the model (reading any weight)."""
    monkeypatch.setattr("secateurs.run.load_for", lambda *a, **k: pytest.fail("the model was loaded"))
    monkeypatch.setattr("secateurs.curve.load_for", lambda *a, **k: pytest.fail("the model was loaded"))


def _refused_before_load(capsys, tmp_path, args, *needles) -> None:
    before = _snapshot(tmp_path)
    _refused(capsys, args, *needles)
    assert _snapshot(tmp_path) == before
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_a_recipe_that_is_not_utf8_is_one_line(tmp_path, tiny_lm_dir, capsys, no_load):
    recipe = _recipe(tmp_path, tiny_lm_dir, tmp_path / "out", "# caf\xe9".encode("latin-1").decode("latin-1"))
    recipe.write_bytes(recipe.read_text().encode("latin-1"))
    _refused_before_load(capsys, tmp_path, ["prune", str(recipe), "-q"], "is not UTF-8 text (byte 0xe9", "save it as UTF-8")


@pytest.mark.parametrize("value", ['"x"', "1.5", "true", str(2**64)])
def test_a_bad_seed_is_refused_before_the_model_loads(tmp_path, tiny_lm_dir, capsys, no_load, value):
    recipe = _recipe(tmp_path, tiny_lm_dir, tmp_path / "out")
    args = ["prune", str(recipe), "-q", "--set", f"seed={value}"]
    _refused_before_load(capsys, tmp_path, args, "recipe key 'seed' must be a whole number")


@pytest.mark.parametrize(
    "rates,needle",
    [("0:50:0", "needs START <= STOP and a STEP > 0"), ("50:0:10", "START <= STOP"), ("0:inf:5", "STEP > 0"),
     ("0:x:5", "START:STOP:STEP or a comma list"), ("0,100", "percents in [0, 100)")],
)
def test_bad_curve_rates_are_one_line(tmp_path, tiny_lm_dir, capsys, no_load, rates, needle):
    recipe = _recipe(tmp_path, tiny_lm_dir, tmp_path / "out")
    _refused_before_load(capsys, tmp_path, ["prune-curve", str(recipe), "--rates", rates, "-q"], needle)


@pytest.mark.parametrize(
    "lines,needles",
    [
        (['granularity = "filters"'], ("unknown granularity 'filters'", "heads", "neurons")),
        (['[calibration]', 'name = "text"', "seqlen = 100000"], ("calibration seqlen 100000 exceeds", "<= 256")),
        (['[evaluate]', 'name = "perplexity"', "seqlen = 257"], ("evaluation seqlen 257 exceeds", "<= 256")),
        (['[allocator]', 'name = "owl"', "lam = 0.6"], ("allocator 'owl': lam = 0.6", "use lam < 0.5")),
        (['[allocator]', 'name = "ken-k"', "k = 4"], ("ken-k: the recipe's sparsity 0.5 contradicts k = 4",)),
        (['[allocator]', 'name = "neuroal"'], ("neuroal measures activations on calibration data",)),
        (["--set", 'scorer="wanda"'], ("needs calibration data",)),
    ],
    ids=["granularity", "calibration seqlen", "evaluation seqlen", "owl lam", "ken-k", "neuroal", "wanda"],
)
def test_late_checks_refuse_before_any_weight_is_read(tmp_path, tiny_lm_dir, text_file, capsys, no_load, lines, needles):
    """Each was refused only after the model loaded and the "before" evaluation ran."""
    sets = lines[:2] if lines[0] == "--set" else []
    lines = [line.replace('name = "text"', f'name = "text"\ncorpus = "{text_file}"') for line in lines[len(sets):]]
    recipe = _recipe(tmp_path, tiny_lm_dir, tmp_path / "out", *lines)
    _refused_before_load(capsys, tmp_path, ["prune", str(recipe), "-q", *sets], *needles)


def test_a_granularity_the_model_lacks_is_refused_before_the_first_evaluation(tmp_path, tiny_lm_dir, text_file, monkeypatch):
    """Known kinds this model has not (channels of a decoder) need the model: refused after
    loading, before minutes of evaluating it."""
    monkeypatch.setattr(
        "secateurs.builtins.text.Perplexity.evaluate", lambda *a, **k: pytest.fail("evaluated before the check")
    )
    recipe = _recipe(tmp_path, tiny_lm_dir, tmp_path / "out", 'granularity = "channels"', 'applier = "remove"',
                     "[evaluate]", 'name = "perplexity"', f'corpus = "{text_file}"', "seqlen = 32")
    with pytest.raises(SecateursError, match="defines no 'channels' groups"):
        secateurs.prune(recipe, progress=False)


@pytest.mark.parametrize(
    "calibration,needle",
    [(["hello"], "calibration batch 0 is a str"), ("hello", "calibration must be a list of batches"),
     ([{"input_ids": "hello"}], "calibration batch 0 is a dict with no tensor")],
)
def test_calibration_batches_of_the_wrong_type_are_refused_before_the_model_loads(
    tmp_path, tiny_lm_dir, no_load, calibration, needle
):
    recipe = {"model": str(tiny_lm_dir), "sparsity": 0.5, "scorer": "wanda"}
    with pytest.raises(SecateursError, match=needle):
        secateurs.prune(recipe, calibration=calibration, progress=False)


def test_eval_checks_its_seqlen_before_the_model_loads(tmp_path, tiny_lm_dir, capsys, monkeypatch):
    monkeypatch.setattr("secateurs.run.load", lambda *a, **k: pytest.fail("the model was loaded"))
    args = ["eval", str(tiny_lm_dir), "--set", "seqlen=1000"]
    _refused_before_load(capsys, tmp_path, args, "evaluation seqlen 1000 exceeds the maximum positions", "<= 256")
