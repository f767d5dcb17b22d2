"""``report.json`` records where a run came from (``secateurs.provenance``): versions of
secateurs, its plugins, torch and transformers, the device and threads, the UTC date, the
command line, and the input model's identity (resolved path, sha256 of its config and
weights index, or of its safetensors headers; never of the weights)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import struct
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import torch

import secateurs
from cli_run import run_cli
from lm_models import char_tokenizer, tiny_causal_lm
from secateurs.plugins import get_manager


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _header(path: Path) -> bytes:
    """The length prefix and JSON header of a safetensors file."""
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    return raw[: 8 + size]


def _recipe(model: Path, output: Path) -> dict:
    return {"model": str(model), "output": str(output), "sparsity": 0.5, "scorer": "magnitude", "exporters": ["report"]}


def _provenance(output: Path) -> dict:
    return json.loads((output / "report.json").read_text())["provenance"]


def test_report_records_versions_device_date_and_the_models_identity(tiny_lm_dir, tmp_path):
    started = datetime.now(UTC)
    secateurs.prune(_recipe(tiny_lm_dir, tmp_path / "out"), progress=False)
    prov = _provenance(tmp_path / "out")

    assert set(prov) == {"versions", "plugins", "device", "torch_threads", "date", "command", "model"}
    for distribution in ("secateurs", "torch", "transformers"):
        assert prov["versions"][distribution] == importlib.metadata.version(distribution)
    installed = {p.name: p for p in get_manager().plugins if p.distribution != "secateurs"}
    assert installed, "the workspace's plugins are installed"
    assert set(prov["plugins"]) == set(installed)
    for name, info in installed.items():
        assert prov["plugins"][name] == {"distribution": info.distribution, "version": info.version}
        assert info.version == importlib.metadata.version(info.distribution)
    assert prov["device"]["name"] == "cpu"
    assert prov["torch_threads"] == torch.get_num_threads()
    date = datetime.fromisoformat(prov["date"])
    assert date.utcoffset() == timedelta(0)
    assert started - timedelta(seconds=1) <= date <= datetime.now(UTC)
    assert prov["command"] == "python API"

    model = prov["model"]
    assert model["path"] == str(tiny_lm_dir.resolve())
    assert model["sha256"] == {
        "config.json": _sha256(tiny_lm_dir / "config.json"),
        "model.safetensors (header)": hashlib.sha256(_header(tiny_lm_dir / "model.safetensors")).hexdigest(),
    }


def test_a_sharded_model_is_identified_by_its_index_not_its_weights(tmp_path):
    folder = tmp_path / "sharded"
    tiny_causal_lm("llama").save_pretrained(folder, max_shard_size="20KB")
    char_tokenizer().save_pretrained(folder)
    assert len(list(folder.glob("*.safetensors"))) > 1
    secateurs.prune(_recipe(folder, tmp_path / "out"), progress=False)
    assert _provenance(tmp_path / "out")["model"]["sha256"] == {
        "config.json": _sha256(folder / "config.json"),
        "model.safetensors.index.json": _sha256(folder / "model.safetensors.index.json"),
    }


def test_the_cli_records_its_command_line(tiny_lm_dir, tmp_path, capsys, monkeypatch):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        f'model = "{tiny_lm_dir}"\nsparsity = 0.5\nscorer = "magnitude"\nexporters = ["report"]\n'
    )
    args = ["prune", str(recipe), "-o", str(tmp_path / "out"), "-q", "--set", "seed=3"]
    monkeypatch.setattr(sys, "argv", ["/usr/bin/secateurs", *args])  # as the console script sees it
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert _provenance(tmp_path / "out")["command"] == ["/usr/bin/secateurs", *args]


def test_a_factory_model_and_its_reference_are_identified_by_their_file(tmp_path):
    factory = tmp_path / "net.py"
    factory.write_text(
        "import torch\nfrom torch import nn\n\n"
        "def net():\n    torch.manual_seed(0)\n    return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))\n"
    )
    recipe = {
        "model": f"{factory}:net",
        "reference_model": f"{factory}:net",
        "output": str(tmp_path / "out"),
        "sparsity": 0.5,
        "scorer": "magnitude",
        "exporters": ["report"],
    }
    with pytest.warns(UserWarning, match="generic 'module' adapter"):
        secateurs.prune(recipe, progress=False)
    prov = _provenance(tmp_path / "out")
    for key in ("model", "reference_model"):
        assert prov[key] == {"source": f"{factory}:net", "path": str(factory.resolve()), "sha256": {"net.py": _sha256(factory)}}


def test_an_in_memory_model_is_named_by_its_source():
    from secateurs.provenance import model_identity

    assert model_identity("<Net in memory>") == {"source": "<Net in memory>"}
