"""The distributions as users get them: ``uv build --all-packages`` gives every wheel and
sdist the LICENSE, its README as the long description and bounded dependencies (plugins
on ``secateurs~=0.1.0``), and the ``secateurs`` + ``secateurs-ken`` wheels alone, in a
fresh virtual environment, list the KEN plugin and run a KEN prune.

The fresh environment takes every third-party version from ``uv.lock`` (``uv export``
as constraints), so after the README's ``uv run --all-packages`` uv's cache holds them
all and the install takes seconds; no model hub is used (the pair is two tiny modules
built by a factory file)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTIONS = {
    "secateurs": "core",
    "secateurs-transformers": "adapters/transformers",
    "secateurs-timm": "adapters/timm",
    "secateurs-ken": "plugins/ken",
    "secateurs-neuroal": "plugins/neuroal",
    "secateurs-lrp": "plugins/lrp",
}
PAIR = textwrap.dedent(
    """
    import torch
    from torch import nn

    def _mlp(shift):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
        with torch.no_grad():
            for p in net.parameters():
                p.add_(shift * torch.randn_like(p))
        return net.eval()

    def pretrained():
        return _mlp(0.0)

    def finetuned():
        return _mlp(0.01)
    """
)
K = 4


def _uv(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    proc = subprocess.run(["uv", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"uv {' '.join(args)}:\n{proc.stderr[-3000:]}"
    return proc


def _file(folder: Path, pattern: str) -> Path:
    (found,) = folder.glob(pattern)
    return found


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    if shutil.which("uv") is None:
        pytest.skip("uv is not installed (the README installs with it)")
    out = tmp_path_factory.mktemp("dist")
    _uv("build", "--all-packages", "--quiet", "-o", str(out))
    return out


def test_every_distribution_folder_has_the_license_and_a_readme():
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License") and "2026 the secateurs authors" in license_text
    for folder in DISTRIBUTIONS.values():
        assert (ROOT / folder / "LICENSE").read_text() == license_text, folder
        assert (ROOT / folder / "README.md").read_text().startswith("# "), folder


@pytest.mark.slow
@pytest.mark.parametrize("name", DISTRIBUTIONS)
def test_wheel_and_sdist_carry_license_readme_and_bounds(dist, name):
    folder = ROOT / DISTRIBUTIONS[name]
    stem = name.replace("-", "_")
    with zipfile.ZipFile(_file(dist, f"{stem}-*.whl")) as wheel:
        info = f"{stem}-0.1.0.dist-info"
        assert wheel.read(f"{info}/licenses/LICENSE") == (ROOT / "LICENSE").read_bytes()
        metadata = Parser().parsestr(wheel.read(f"{info}/METADATA").decode())
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert metadata.get_payload().strip() == (folder / "README.md").read_text().strip()
    requirements = [Requirement(r) for r in metadata.get_all("Requires-Dist")]
    for requirement in requirements:  # every dependency, extras' included, has a lower bound
        assert any(s.operator in {">=", "~=", "=="} for s in requirement.specifier), requirement
    if name != "secateurs":
        (core,) = [r for r in requirements if r.name == "secateurs"]
        assert str(core.specifier) == "~=0.1.0"
    with tarfile.open(_file(dist, f"{stem}-*.tar.gz")) as sdist:
        top = f"{stem}-0.1.0"
        assert sdist.extractfile(f"{top}/LICENSE").read() == (ROOT / "LICENSE").read_bytes()
        assert sdist.extractfile(f"{top}/README.md").read() == (folder / "README.md").read_bytes()


@pytest.fixture(scope="module")
def fresh_venv(dist, tmp_path_factory) -> Path:
    """A new virtual environment with only the secateurs and secateurs-ken wheels (and
    their dependencies, at the versions of ``uv.lock``) installed."""
    work = tmp_path_factory.mktemp("fresh")
    constraints = work / "constraints.txt"
    _uv("export", "--all-packages", "--frozen", "--no-hashes", "--no-emit-workspace", "--no-dev", "--quiet",
        "-o", str(constraints))
    venv = work / "venv"
    _uv("venv", "--quiet", "--python", os.path.realpath(sys.executable), str(venv), cwd=work)
    wheels = [str(_file(dist, "secateurs-*.whl")), str(_file(dist, "secateurs_ken-*.whl"))]
    _uv("pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), "-c", str(constraints), *wheels, cwd=work)
    return venv


def _secateurs(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH", "SECATEURS_LOAD_PLUGINS"}}
    env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run(
        [str(venv / "bin" / "secateurs"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_the_two_wheels_alone_list_ken_and_run_a_ken_prune(fresh_venv, tmp_path):
    freeze = _uv("pip", "freeze", "--python", str(fresh_venv / "bin" / "python")).stdout
    installed = {line.split("==")[0].split(" @ ")[0].lower() for line in freeze.splitlines()}
    assert {"secateurs", "secateurs-ken"} <= installed
    assert not installed & {"secateurs-transformers", "secateurs-timm", "secateurs-neuroal", "secateurs-lrp", "transformers"}

    listed = _secateurs(fresh_venv, "plugins", "--json", cwd=tmp_path)
    assert listed.returncode == 0 and listed.stderr == "", listed.stderr
    plugins = json.loads(listed.stdout)
    assert plugins["failures"] == []
    (ken,) = [p for p in plugins["plugins"] if p["name"] == "ken"]
    assert ken["distribution"] == "secateurs-ken" and ken["registered"]["scorer"] == ["ken", "delta-magnitude"]

    (tmp_path / "pair.py").write_text(PAIR)
    (tmp_path / "ken.toml").write_text(
        'model = "pair.py:finetuned"\nreference_model = "pair.py:pretrained"\noutput = "out"\n'
        f'sparsity = 0.0\nscorer = "ken"\nallocator = {{ name = "ken-k", k = {K} }}\napplier = "restore"\n'
        'exporters = ["safetensors", "report"]\n'
    )
    run = _secateurs(fresh_venv, "prune", "ken.toml", "-q", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr

    from secateurs.loading import build_from_factory

    pre = build_from_factory(f"{tmp_path / 'pair.py'}:pretrained").state_dict()
    ft = build_from_factory(f"{tmp_path / 'pair.py'}:finetuned").state_dict()
    pruned = load_file(tmp_path / "out" / "model.safetensors")
    for name in ("0.weight", "2.weight"):  # K fine-tuned entries kept per row, the rest restored
        kept = pruned[name] == ft[name]
        assert torch.equal(kept, pruned[name] != pre[name])
        assert kept.sum(1).tolist() == [K] * pruned[name].shape[0]
    for name in ("0.bias", "2.bias"):  # not a unit of the module adapter: left fine-tuned
        assert torch.equal(pruned[name], ft[name])
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {u["name"]: u["sparsity"] for u in report["units"]} == {"0": 1 - K / 16, "2": 1 - K / 32}
    assert report["provenance"]["plugins"] == {"ken": {"distribution": "secateurs-ken", "version": "0.1.0"}}
    assert "transformers" not in report["provenance"]["versions"]
