"""Never lose a user's data, and every bad input gets one clear line before any work.

Every data-loss case asserts exit status 2, a message that names the problem and what to
do, no traceback, the sha256 of every input file unchanged and no sibling gone.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from lm_models import char_tokenizer, tiny_causal_lm
from cli_run import run_cli
from secateurs.errors import SecateursError
from secateurs.outputs import MARKER, atomic_file, clean_stale


def _snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (the inputs and their siblings)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def _recipe(folder: Path, model: Path, output: Path | str, *lines: str, name: str = "recipe.toml") -> Path:
    path = folder / name
    text = [f'model = "{model}"', f'output = "{output}"', "sparsity = 0.5", 'scorer = "magnitude"', *lines]
    path.write_text("\n".join(text) + "\n")
    return path


def _refused(capsys, args: list[str], *needles: str) -> str:
    """Run the CLI: exit status 2, no traceback, one ``error:`` message (which may go on
    over indented lines, as "no adapter supports" does), holding every needle; returns it."""
    code, _, err = run_cli(args, capsys)
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    message = err[err.index("error: "):]
    for needle in needles:
        assert needle in message, message
    return message


@pytest.fixture
def workspace(tmp_path, tiny_lm_dir, text_file):
    """A user's folder: a tiny model, a text file and a sibling note, all to be kept."""
    (tmp_path / "notes.txt").write_text("my notes")
    return tmp_path


# -- data loss: outputs that are, contain or lie inside an input -------------------------


@pytest.mark.parametrize(
    "where,needle",
    [
        ("model", "is the model"),
        ("parent", "contains the model"),
        ("inside", "lies inside the model"),
        ("symlink", "is the model"),
    ],
)
def test_prune_never_writes_over_into_or_around_the_model(workspace, tiny_lm_dir, capsys, where, needle):
    (workspace / "link").symlink_to(tiny_lm_dir, target_is_directory=True)
    output = {"model": tiny_lm_dir, "parent": workspace, "inside": tiny_lm_dir / "pruned", "symlink": workspace / "link"}[where]
    recipe = _recipe(workspace, tiny_lm_dir, output)
    before = _snapshot(workspace)
    _refused(capsys, ["prune", str(recipe), "-q", "-o", str(output), "--overwrite"], needle, "choose")
    assert _snapshot(workspace) == before
    assert not (tiny_lm_dir / "pruned").exists()


def test_prune_refuses_the_home_folder(workspace, tiny_lm_dir, capsys, monkeypatch):
    home = workspace / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    monkeypatch.setenv("HOME", str(home))
    recipe = _recipe(workspace, tiny_lm_dir, "out")
    before = _snapshot(workspace)
    _refused(capsys, ["prune", str(recipe), "-q", "-o", "~", "--overwrite"], "secateurs did not write", "thesis.tex", "choose")
    assert _snapshot(workspace) == before


@pytest.mark.parametrize("key", ["reference_model", "offload_folder", "calibration.corpus", "recipe"])
def test_prune_never_replaces_any_path_the_recipe_reads(workspace, tiny_lm_dir, text_file, capsys, key):
    data = workspace / "data"
    data.mkdir()
    corpus = data / "corpus.txt"
    corpus.write_text(text_file.read_text())
    lines = {
        "reference_model": [f'reference_model = "{tiny_lm_dir}"'],
        "offload_folder": ['max_memory = "1GiB"', f'offload_folder = "{data}"'],
        "calibration.corpus": ["[calibration]", 'name = "text"', f'corpus = "{corpus}"', "nsamples = 2", "seqlen = 16"],
        "recipe": [],
    }[key]
    output = tiny_lm_dir if key == "reference_model" else data
    recipe = _recipe(data if key == "recipe" else workspace, workspace / "no-model", output, *lines)
    if key == "reference_model":  # the model itself elsewhere, so only the reference clashes
        recipe = _recipe(workspace, workspace / "other-model", output, *lines)
        tiny_causal_lm("llama").save_pretrained(workspace / "other-model")
    before = _snapshot(workspace)
    _refused(capsys, ["prune", str(recipe), "-q", "--overwrite"], key.split(".")[0], "choose")
    assert _snapshot(workspace) == before


def test_overwrite_replaces_only_what_secateurs_wrote(workspace, tiny_lm_dir, capsys):
    out = workspace / "out"
    recipe = _recipe(workspace, tiny_lm_dir, out)
    out.mkdir()  # an empty folder needs no flag
    assert run_cli(["prune", str(recipe), "-q"], capsys)[0] == 0
    assert json.loads((out / MARKER).read_text())["files"]
    _refused(capsys, ["prune", str(recipe), "-q"], "earlier secateurs output", "--overwrite")
    assert run_cli(["prune", str(recipe), "-q", "--overwrite"], capsys)[0] == 0
    (out / "my-eval.txt").write_text("added by the user")
    before = _snapshot(workspace)
    _refused(capsys, ["prune", str(recipe), "-q", "--overwrite"], "my-eval.txt", "secateurs did not write")
    assert _snapshot(workspace) == before


def test_a_foreign_folder_is_never_replaced(workspace, tiny_lm_dir, capsys):
    out = workspace / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    recipe = _recipe(workspace, tiny_lm_dir, out)
    before = _snapshot(workspace)
    for flags in ([], ["--overwrite"]):
        _refused(capsys, ["prune", str(recipe), "-q", *flags], "keep.txt", "choose a new or empty directory")
    assert _snapshot(workspace) == before


def test_an_output_that_is_a_file_is_refused(workspace, tiny_lm_dir, capsys):
    recipe = _recipe(workspace, tiny_lm_dir, workspace / "notes.txt")
    before = _snapshot(workspace)
    _refused(capsys, ["prune", str(recipe), "-q", "--overwrite"], "is not a directory", "choose")
    assert _snapshot(workspace) == before


@pytest.mark.parametrize("command", ["prune-curve", "lrp-tune"])
def test_plugin_commands_refuse_outputs_that_lose_data(workspace, tiny_lm_dir, capsys, command):
    recipe = _recipe(workspace, tiny_lm_dir, "unused")
    before = _snapshot(workspace)
    _refused(capsys, [command, str(recipe), "-o", str(workspace), "--overwrite", "-q"], "contains the model", "choose")
    _refused(capsys, [command, str(recipe), "-o", str(tiny_lm_dir), "-q"], "is the model", "choose")
    assert _snapshot(workspace) == before


def test_ken_viz_refuses_outputs_that_lose_data(workspace, tiny_lm_dir, capsys):
    args = ["ken-viz", str(tiny_lm_dir), str(tiny_lm_dir), "--matrix", "q_proj.weight", "--k", "2"]
    before = _snapshot(workspace)
    _refused(capsys, [*args, "--out", str(tiny_lm_dir), "--overwrite"], "is the pretrained model", "choose")
    _refused(capsys, [*args, "--out", str(workspace)], "contains the pretrained model", "choose")
    assert _snapshot(workspace) == before


def test_neuroal_plot_refuses_to_replace_its_report_or_a_foreign_file(workspace, capsys):
    report = workspace / "run" / "report.json"
    report.parent.mkdir()
    report.write_text(json.dumps({"records": {}}))
    (workspace / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n not ours")
    before = _snapshot(workspace)
    _refused(capsys, ["neuroal-plot", str(report), "-o", str(report), "--overwrite"], "is the report", "choose")
    _refused(capsys, ["neuroal-plot", str(report), "-o", str(workspace / "photo.png")], "exists", "--overwrite")
    _refused(capsys, ["neuroal-plot", str(report), "-o", str(workspace / "photo.png"), "--overwrite"],
             "not written by secateurs", "choose another path")
    assert _snapshot(workspace) == before


def test_the_exporters_write_only_inside_the_checked_output(workspace, tiny_lm_dir, capsys):
    out = workspace / "out"
    recipe = _recipe(workspace, tiny_lm_dir, out, 'exporters = ["safetensors", "report"]')
    before = _snapshot(workspace)
    assert run_cli(["prune", str(recipe), "-q"], capsys)[0] == 0
    after = _snapshot(workspace)
    assert {k: v for k, v in after.items() if not k.startswith("out/")} == before


# -- litter after a crash ------------------------------------------------------------------

KILLED_SAVE = """
import sys, time
from pathlib import Path
import secateurs
from secateurs.builtins.exporters import ReportExporter

def slow(self, loaded, result, directory):
    (directory / "report.json").write_text("{")  # half-written
    Path(sys.argv[2]).write_text("writing")
    time.sleep(120)

ReportExporter.export = slow
secateurs.prune(sys.argv[1], progress=False)
"""


def test_a_kill_during_save_leaves_no_output_and_the_next_run_cleans_the_litter(workspace, tiny_lm_dir):
    out = workspace / "out"
    recipe = _recipe(workspace, tiny_lm_dir, out)
    ready = workspace / "ready"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SAVE, str(recipe), str(ready)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # nothing half-written at the final path
    litter = [p.name for p in workspace.iterdir() if p.name.startswith(".out.tmp-")]
    assert litter
    (workspace / ".other.tmp-1-abcd").mkdir()  # not this output's: kept
    done = subprocess.run([sys.executable, "-c", "from secateurs.cli import main; main()", "prune", str(recipe), "-q"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (out / "report.json").is_file() and json.loads((out / "report.json").read_text())
    assert not [p for p in workspace.iterdir() if p.name.startswith(".out.")]
    assert (workspace / ".other.tmp-1-abcd").is_dir()


def test_clean_stale_removes_only_dead_older_litter_of_the_same_output(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    final = tmp_path / "out"
    old = time.time() - 3600
    entries = {
        f".out.tmp-{dead.pid}-ab12": True,  # a killed run's: removed
        f".out.old-{dead.pid}-cd34": True,
        f".out.tmp-{os.getppid()}-ef56": False,  # a live process's: kept
        f".other.tmp-{dead.pid}-ab12": False,  # another output's: kept
        ".out.tmpnotes": False,  # not secateurs' pattern: kept
    }
    for name in entries:
        (tmp_path / name).mkdir()
        os.utime(tmp_path / name, (old, old))
    fresh = tmp_path / f".out.tmp-{dead.pid}-9999"  # newer than this process: kept
    fresh.mkdir()
    removed = {p.name for p in clean_stale(final)}
    assert removed == {n for n, gone in entries.items() if gone}
    assert fresh.is_dir() and all((tmp_path / n).exists() for n, gone in entries.items() if not gone)


# -- permissions: the umask applies ---------------------------------------------------------


def test_outputs_get_the_permissions_of_a_normal_write(workspace, tiny_lm_dir, capsys):
    saved = os.umask(0o022)
    try:
        recipe = _recipe(workspace, tiny_lm_dir, workspace / "out")
        assert run_cli(["prune", str(recipe), "-q"], capsys)[0] == 0
        with atomic_file(workspace / "single.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(saved)
    assert (workspace / "out").stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in (workspace / "out").iterdir()} == {0o644}
    assert (workspace / "single.json").stat().st_mode & 0o777 == 0o644


# -- bad models: one line, nothing written ---------------------------------------------------


def _broken_model(folder: Path, case: str) -> Path:
    model = folder / f"model-{case}"
    tiny_causal_lm("llama").save_pretrained(model)
    char_tokenizer().save_pretrained(model)
    config = json.loads((model / "config.json").read_text())
    weights = model / "model.safetensors"
    if case == "no weights":
        weights.unlink()
    elif case == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif case == "corrupt":
        weights.write_bytes(b"\xff" * 64)
    elif case == "unknown model_type":
        (model / "config.json").write_text(json.dumps({**config, "model_type": "llamaa"}))
    elif case == "invalid config.json":
        (model / "config.json").write_text('{"model_type": "llama",')
    elif case == "malformed layer sizes":
        (model / "config.json").write_text(json.dumps({**config, "secateurs_layer_sizes": [{"intermediate_size": "big"}]}))
    return model


BAD_MODELS = {
    "no weights": ("no weights", "copy the weights"),
    "truncated": ("cannot load the model", "copy the model folder again"),
    "corrupt": ("cannot load the model", "truncated or corrupt"),
    "unknown model_type": ("model_type 'llamaa'", "fix model_type"),
    "invalid config.json": ("is not valid JSON", "config.json"),
    "malformed layer sizes": ("secateurs_layer_sizes must list", "fix it or remove the key"),
}


@pytest.mark.parametrize("case", BAD_MODELS)
def test_a_broken_model_folder_is_one_clear_line(workspace, capsys, case):
    model = _broken_model(workspace, case)
    recipe = _recipe(workspace, model, workspace / "out")
    message = _refused(capsys, ["prune", str(recipe), "-q"], *BAD_MODELS[case])
    assert "no installed adapter supports" not in message
    assert not (workspace / "out").exists() and not [p for p in workspace.iterdir() if p.name.startswith(".out.")]


@pytest.mark.parametrize(
    "device,needle",
    [("cuda", "not available"), ("meta", "holds no data"), ("gpu-please", "unknown device")],
)
def test_bad_devices_are_refused_up_front_listing_the_available_ones(workspace, tiny_lm_dir, capsys, device, needle):
    if device == "cuda" and torch.cuda.is_available():
        device = f"cuda:{torch.cuda.device_count()}"
    recipe = _recipe(workspace, tiny_lm_dir, workspace / "out")
    _refused(capsys, ["prune", str(recipe), "-q", "--device", device], needle, "available devices: cpu")
    assert not (workspace / "out").exists()


@pytest.mark.parametrize("family,table", [("llama", "calibration"), ("llama", "evaluate"), ("bert", "calibration")])
def test_a_seqlen_past_the_models_positions_is_refused(workspace, tiny_lm_dir, text_file, capsys, family, table):
    model = tiny_lm_dir
    if family == "bert":
        import transformers

        model = workspace / "tiny-bert"
        torch.manual_seed(0)
        config = transformers.BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                         intermediate_size=64, max_position_embeddings=64)
        transformers.BertModel(config).save_pretrained(model)
        char_tokenizer().save_pretrained(model)
    limit = 256 if family == "llama" else 64
    name = "text" if table == "calibration" else "perplexity"
    lines = [f"[{table}]", f'name = "{name}"', f'corpus = "{text_file}"', f"seqlen = {limit + 1}"]
    recipe = _recipe(workspace, model, workspace / "out", *lines)
    what = "calibration" if table == "calibration" else "evaluation"
    _refused(capsys, ["prune", str(recipe), "-q"], f"{what} seqlen {limit + 1} exceeds", f"use seqlen <= {limit}")
    assert not (workspace / "out").exists()


def test_seqlen_max_is_the_models_maximum(tiny_lm_dir, text_file):
    import secateurs
    from secateurs.builtins.text import TextCalibration

    loaded = secateurs.load(str(tiny_lm_dir))
    batches = TextCalibration(corpus=str(text_file), nsamples=1, seqlen="max").batches(loaded)
    assert batches[0]["input_ids"].shape == (1, 256)


@pytest.mark.parametrize(
    "lines,flags,needles",
    [
        (['[applier]', 'name = "zero"', "pattern = 24"], [], ("N:M pattern 24 is not a string", 'pattern = "2:4"')),
        (["sparsity = false"], [], ("'sparsity' must be a number", "got false")),
        (['[applier]', 'name = "zero"', 'pattern = "2:4"'], ["--sparsity", "0.3"], ("pattern 2:4 fixes the sparsity at 50%", "drop --sparsity")),
    ],
    ids=["pattern as a number", "boolean sparsity", "sparsity with a pattern"],
)
def test_bad_recipe_values_are_one_clear_line(workspace, tiny_lm_dir, capsys, lines, flags, needles):
    recipe = workspace / "recipe.toml"
    head = [f'model = "{tiny_lm_dir}"', f'output = "{workspace / "out"}"', 'scorer = "magnitude"']
    if not any(line.startswith("sparsity") for line in lines):
        head.append("sparsity = 0.5")
    recipe.write_text("\n".join(head + [line for line in lines if line.startswith("sparsity")]
                                + [line for line in lines if not line.startswith("sparsity")]) + "\n")
    _refused(capsys, ["prune", str(recipe), "-q", *flags], *needles)
    assert not (workspace / "out").exists()


# -- KEN delta and LRP composite files --------------------------------------------------------


@pytest.fixture
def ken_delta(tmp_path):
    from secateurs_ken.delta import save_ken_delta

    base = {"a.weight": torch.randn(4, 8), "b.weight": torch.randn(3, 16)}
    ken = {k: v.clone() for k, v in base.items()}
    ken["a.weight"][0, :3] += 1
    ken["b.weight"][:, 5] += 1
    path = tmp_path / "delta.safetensors"
    save_ken_delta(base, ken, path)
    return base, path


def _break_delta(path: Path, case: str) -> None:
    from safetensors.torch import load_file, save_file

    manifest = path.with_suffix(".json")
    data = json.loads(manifest.read_text())
    if case == "malformed JSON":
        manifest.write_text(manifest.read_text()[:-5])
    elif case == "missing keys":
        manifest.write_text(json.dumps({k: v for k, v in data.items() if k != "tensors"}))
    elif case == "wrong tensor name":
        manifest.write_text(json.dumps({**data, "tensors": ["c.weight"]}))
    elif case == "missing tensor":
        tensors = load_file(str(path))
        save_file({k: v for k, v in tensors.items() if not k.endswith("::values")}, str(path))
    elif case == "wrong shape":
        tensors = load_file(str(path))
        save_file({k: (v[:-1] if k.endswith("::values") else v) for k, v in tensors.items()}, str(path))
    elif case == "truncated":
        path.write_bytes(path.read_bytes()[:40])


DELTA_CASES = {
    "malformed JSON": ("delta.json is not valid JSON", "write it again"),
    "missing keys": ("lacks or mangles tensors", "write it again"),
    "wrong tensor name": ("names tensor 'c.weight'", "base model does not have"),
    "missing tensor": ("lacks tensor", "write it again"),
    "wrong shape": ("values for", "write it again"),
    "truncated": ("truncated or corrupt", "copy it again"),
}


@pytest.mark.parametrize("case", DELTA_CASES)
def test_a_damaged_ken_delta_names_the_file_and_the_problem(ken_delta, case):
    from secateurs_ken.delta import load_ken_delta

    base, path = ken_delta
    _break_delta(path, case)
    with pytest.raises(SecateursError) as info:
        load_ken_delta(base, path)
    message = str(info.value)
    assert "delta" in message and all(n in message for n in DELTA_CASES[case])


@pytest.mark.parametrize("text,needle", [('{"composite": 5}', "must be a table"), ("[" * 100_000 + "]" * 100_000, "nested too deeply")])
def test_a_bad_composite_file_is_one_clear_error(tmp_path, text, needle):
    from secateurs_lrp.library import resolve_composite

    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(SecateursError, match=needle) as info:
        resolve_composite(str(path))
    assert str(path) in str(info.value)


def test_timm_descriptions_pass_only_allowed_create_kwargs():
    pytest.importorskip("timm")
    from secateurs_timm.spec import TimmSpec

    description = {"timm_model": "resnet18", "input_size": [3, 32, 32],
                   "create_kwargs": {"num_classes": 2, "checkpoint_path": "/etc/passwd"}}
    with pytest.raises(SecateursError, match="create_kwargs checkpoint_path not allowed; allowed: channels"):
        TimmSpec.from_json(description)
    assert TimmSpec.from_json({**description, "create_kwargs": {"num_classes": 2}}).kwargs == {"num_classes": 2}


# -- dtype: a bf16 model stays bf16 ----------------------------------------------------------


@pytest.mark.parametrize("dtype,saved", [(None, "BF16"), ("float32", "F32")])
def test_a_bf16_model_keeps_its_dtype_unless_the_recipe_asks(workspace, capsys, dtype, saved):
    model = workspace / "bf16"
    tiny_causal_lm("llama").to(torch.bfloat16).save_pretrained(model)
    lines = [f'dtype = "{dtype}"'] if dtype else []
    recipe = _recipe(workspace, model, workspace / "out", *lines)
    assert run_cli(["prune", str(recipe), "-q"], capsys)[0] == 0
    with safe_open(str(workspace / "out" / "model.safetensors"), "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
        q = f.get_tensor("model.layers.0.self_attn.q_proj.weight")
    assert dtypes == {saved}
    assert float((q == 0).float().mean()) == pytest.approx(0.5)


# -- plugins: failures are visible on every command -------------------------------------------


class _BrokenHook:
    from secateurs.hookspecs import hookimpl

    @hookimpl
    def secateurs_register_scorers(self, register):
        raise RuntimeError("needs libfoo")


class _Clash:
    from secateurs.hookspecs import hookimpl

    @hookimpl
    def secateurs_register_scorers(self, register):
        register("wanda", object)
        register("clash-own", object)


@pytest.mark.parametrize("command", ["prune", "plugins", "eval"])
def test_plugin_problems_are_warned_on_every_command(monkeypatch, capsys, tmp_path, command):
    import secateurs.cli
    from secateurs.plugins import LOAD_PLUGINS_ENV, PluginManager

    monkeypatch.setenv(LOAD_PLUGINS_ENV, "transformers,no-such-plugin")
    manager = PluginManager()
    manager.register(_BrokenHook(), name="broken", distribution="secateurs-broken")
    manager.register(_Clash(), name="clash", distribution="secateurs-clash")
    monkeypatch.setattr(secateurs.cli, "get_manager", lambda: manager)
    assert "clash-own" in manager.scorers  # a clash skips only the clashing name
    args = {"prune": ["prune", str(tmp_path / "none.toml")], "plugins": ["plugins"], "eval": ["eval", str(tmp_path / "none")]}
    _, _, err = run_cli(args[command], capsys)
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert any("secateurs-broken" in w and "needs libfoo" in w and "none of its parts" in w for w in warnings), err
    assert any("'wanda' is registered twice" in w and "its other parts are loaded" in w for w in warnings), err
    assert any("SECATEURS_LOAD_PLUGINS names 'no-such-plugin'" in w and "installed:" in w for w in warnings), err
    assert "Traceback" not in err
