"""Loading faults of transformers folders, as a user meets them through the CLI: a pickled
``pytorch_model.bin`` that ``weights_only`` refuses (its code must never run), a
safetensors header that stores a float weight as ``I32``, and weights holding NaN/Inf.

Every refusal: one ``error:`` line on stderr, exit status 2, no traceback, the inputs'
sha256 unchanged and nothing written.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path

import pytest
import secateurs
import torch
from cli_run import run_cli
from safetensors.torch import load_file, save_file
from secateurs.errors import SecateursError

LIED = "model.layers.0.mlp.up_proj.weight"
"""The float32 weight whose header dtype the lie rewrites to I32 (same byte size)."""
POISONED = ("model.layers.1.self_attn.q_proj.weight", "model.norm.weight")
"""The tensors given a NaN and an Inf."""


class Payload:
    """Unpickling this creates the file ``marker`` (the stand-in for any code a pickle runs)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _pickled_folder(source: Path, folder: Path, marker: Path, fmt: str) -> Path:
    """``source`` with its weights as a ``pytorch_model.bin`` (zip or legacy pickle format)
    that also holds a ``Payload``: the state dict plus one Python object."""
    shutil.copytree(source, folder)
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save({**state, "payload": Payload(marker)}, folder / "pytorch_model.bin", _use_new_zipfile_serialization=fmt == "zip")
    return folder


def _lie_about_dtype(weights: Path, name: str, dtype: str = "I32") -> None:
    """Rewrite ``name``'s dtype in the safetensors header (same length, same data bytes)."""
    data = weights.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    assert header[name]["dtype"] == "F32"
    header[name]["dtype"] = dtype
    encoded = json.dumps(header, separators=(",", ":")).encode()
    weights.write_bytes(data[:8] + encoded.ljust(length) + data[8 + length :])


def _recipe(folder: Path, model: Path, *lines: str) -> Path:
    recipe = folder / "recipe.toml"
    recipe.write_text("\n".join([f'model = "{model}"', f'output = "{folder / "out"}"', "sparsity = 0.5",
                                 'scorer = "magnitude"', *lines]) + "\n")
    return recipe


def _refused(capsys, args: list[str]) -> str:
    code, _, err = run_cli(args, capsys)
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    assert all(line in lines or "Loading weights" in line for line in err.strip().splitlines()), err
    return lines[0]


@pytest.fixture
def workspace(tmp_path, tiny_lm_dir):
    (tmp_path / "notes.txt").write_text("my notes")
    return tmp_path


def test_the_payload_runs_when_unpickled_unsafely(tmp_path, tiny_lm_dir):
    """The control: the pickles built here do run code when loaded without weights_only."""
    marker = tmp_path / "ran"
    folder = _pickled_folder(tiny_lm_dir, tmp_path / "bin", marker, "zip")
    torch.load(folder / "pytorch_model.bin", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("role", ["model", "reference_model"])
def test_an_unsafe_pickle_is_one_line_and_never_runs(workspace, tiny_lm_dir, capsys, fmt, role):
    marker = workspace / "PAYLOAD-RAN"
    evil = _pickled_folder(tiny_lm_dir, workspace / "evil", marker, fmt)
    model, extra = (evil, ()) if role == "model" else (tiny_lm_dir, (f'reference_model = "{evil}"',))
    recipe = _recipe(workspace, model, *extra)
    before = _snapshot(workspace)
    line = _refused(capsys, ["prune", str(recipe), "-q"])
    assert f"{evil / 'pytorch_model.bin'} is not a safe weights file" in line
    assert "weights_only" in line and "safetensors" in line and "safe_serialization=True" in line
    assert not marker.exists()
    assert _snapshot(workspace) == before
    assert not (workspace / "out").exists()


def test_an_unsafe_pickle_is_refused_by_the_python_api(tmp_path, tiny_lm_dir):
    marker = tmp_path / "PAYLOAD-RAN"
    evil = _pickled_folder(tiny_lm_dir, tmp_path / "evil", marker, "legacy")
    with pytest.raises(SecateursError, match="is not a safe weights file"):
        secateurs.load(evil)
    assert not marker.exists()


def test_a_safe_pickle_still_loads(tmp_path, tiny_lm_dir):
    """Only the refusal is caught: a plain .bin state dict loads as before."""
    folder = tmp_path / "bin"
    shutil.copytree(tiny_lm_dir, folder)
    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    assert secateurs.load(folder).model.model.layers[0].mlp.up_proj.weight.dtype == torch.float32


@pytest.mark.parametrize("budget", [(), ('max_memory = "1GiB"',)], ids=["in memory", "max_memory"])
def test_a_float_weight_stored_as_i32_is_refused_by_name(workspace, tiny_lm_dir, capsys, budget):
    weights = tiny_lm_dir / "model.safetensors"
    _lie_about_dtype(weights, LIED)
    recipe = _recipe(workspace, tiny_lm_dir, *budget)
    before = _snapshot(workspace)
    line = _refused(capsys, ["prune", str(recipe), "-q"])
    assert f"{weights}: tensor '{LIED}' is stored as I32" in line
    assert "floating-point (float32)" in line and "not loaded" in line
    assert _snapshot(workspace) == before
    assert not (workspace / "out").exists()


def test_the_dtype_expected_is_the_one_asked_for(tiny_lm_dir):
    _lie_about_dtype(tiny_lm_dir / "model.safetensors", LIED, "I16")
    with pytest.raises(SecateursError, match=r"stored as I16 .* floating-point \(bfloat16\)"):
        secateurs.load(tiny_lm_dir, dtype="bfloat16")


def test_a_lie_in_one_shard_of_a_sharded_model_is_found(tmp_path, tiny_lm_dir):
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(tiny_lm_dir).save_pretrained(folder, max_shard_size="60KB")
    index = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    shards = sorted(set(index.values()))
    assert len(shards) > 2
    _lie_about_dtype(folder / index[LIED], LIED)
    with pytest.raises(SecateursError, match=f"{index[LIED]}: tensor '{LIED}' is stored as I32"):
        secateurs.load(folder)


def test_nan_and_inf_weights_are_one_warning_line_naming_them(workspace, tiny_lm_dir, capsys):
    weights = tiny_lm_dir / "model.safetensors"
    state = load_file(str(weights))
    state[POISONED[0]][0, 3] = float("nan")
    state[POISONED[1]][1] = float("inf")
    save_file(state, str(weights), metadata={"format": "pt"})
    recipe = _recipe(workspace, tiny_lm_dir)
    code, _, err = run_cli(["prune", str(recipe), "-q"], capsys)
    assert code == 0, err
    assert "Traceback" not in err
    warned = [line for line in err.splitlines() if "NaN or Inf" in line]
    assert len(warned) == 1, err
    assert warned[0].startswith(f"warning: {tiny_lm_dir}: 2 weight tensors hold NaN or Inf values")
    assert all(name in warned[0] for name in POISONED)


def test_finite_weights_warn_nothing(tiny_lm_dir, recwarn):
    secateurs.load(tiny_lm_dir)
    assert not [w for w in recwarn if "NaN" in str(w.message)]
