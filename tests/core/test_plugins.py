"""The plugin system: built-ins, entry points, the autoload switch, broken plugins, and
the contract that every hook is tested and documented."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from secateurs import hookspecs, protocols
from secateurs.errors import SecateursError
from secateurs.hookspecs import hookimpl
from secateurs.plugins import DEFAULT_PLUGINS, KINDS, LOAD_PLUGINS_ENV, PROTOCOLS, PluginManager

ROOT = Path(__file__).resolve().parents[2]
HOOKS = sorted(n for n in dir(hookspecs) if n.startswith("secateurs_"))
PROTOCOL_CLASSES = [
    obj for obj in vars(protocols).values()
    if isinstance(obj, type) and getattr(obj, "_is_protocol", False) and obj.__module__ == protocols.__name__
]
MEMBERS = [(p.__name__, m) for p in PROTOCOL_CLASSES for m in protocols.protocol_members(p)]


def test_every_kind_has_a_hookspec():
    assert set(KINDS.values()) <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook):
    """Fails when a hook is added without a test that exercises it."""
    uses = [
        p for p in (ROOT / "tests").rglob("test_*.py")
        if p.name != "test_plugins.py" and hook in p.read_text()
    ] + [Path(__file__)] * (f"def {hook}(" in Path(__file__).read_text())
    assert uses, f"no test implements or calls {hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook):
    assert hook in (ROOT / "docs" / "plugins.md").read_text(), f"{hook} is missing from docs/plugins.md"


@pytest.mark.parametrize("protocol", [p.__name__ for p in PROTOCOL_CLASSES])
def test_every_protocol_is_documented(protocol):
    assert f"`{protocol}`" in (ROOT / "docs" / "plugins.md").read_text(), f"{protocol} is missing from docs/plugins.md"


@pytest.mark.parametrize("protocol,member", MEMBERS)
def test_every_protocol_member_is_documented(protocol, member):
    """Fails when a member a plugin may implement (required or optional) is undocumented."""
    docs = (ROOT / "docs" / "plugins.md").read_text()
    assert re.search(rf"`{member}[`(]", docs), f"{protocol}.{member} is missing from docs/plugins.md"


def test_every_optional_protocol_belongs_to_a_kind():
    optional = {p for group in protocols.OPTIONAL.values() for p in group}
    assert set(protocols.OPTIONAL) <= set(PROTOCOLS.values())
    runtime = {p for p in PROTOCOL_CLASSES if getattr(p, "_is_runtime_protocol", False)}
    assert runtime - set(PROTOCOLS.values()) == optional, "an optional protocol is not in OPTIONAL"


def test_builtins_are_registered_by_kind():
    manager = PluginManager(load_entry_points=False)
    assert {"magnitude", "random", "wanda"} <= set(manager.scorers.names())
    assert {"uniform", "global"} <= set(manager.allocators.names())
    assert "zero" in manager.appliers.names()
    assert {"safetensors", "report"} <= set(manager.exporters.names())
    assert [p.name for p in manager.plugins] == list(DEFAULT_PLUGINS)
    assert manager.failures == []


def test_transformers_adapter_is_loaded_from_its_entry_point():
    manager = PluginManager()
    plugin = next(p for p in manager.plugins if p.name == "transformers")
    assert plugin.distribution == "secateurs-transformers"
    assert "llama" in manager.registered["transformers"]["adapter"]


@pytest.mark.parametrize("value,loaded", [("", False), ("transformers", True), ("nothing-else", False)])
def test_autoload_env_var_restricts_entry_points(monkeypatch, value, loaded):
    monkeypatch.setenv(LOAD_PLUGINS_ENV, value)
    manager = PluginManager()
    assert ("transformers" in {p.name for p in manager.plugins}) is loaded


class ExtraScorerPlugin:
    """A plugin object registered at run time, as a notebook or a test would."""

    @hookimpl
    def secateurs_register_scorers(self, register):
        from secateurs.builtins.scorers import MagnitudeScorer

        register("runtime-magnitude", MagnitudeScorer)


def test_runtime_registration_and_unregistration():
    manager = PluginManager(load_entry_points=False)
    manager.register(ExtraScorerPlugin(), name="extra")
    try:
        assert "runtime-magnitude" in manager.scorers
        assert manager.registered["extra"] == {"scorer": ["runtime-magnitude"]}
    finally:
        manager.unregister("extra")
    assert "runtime-magnitude" not in manager.scorers


class DuplicatePlugin:
    @hookimpl
    def secateurs_register_scorers(self, register):
        register("mine", object)
        register("wanda", object)


def test_a_name_registered_twice_is_reported_against_the_later_plugin():
    manager = PluginManager(load_entry_points=False)
    manager.register(DuplicatePlugin(), name="dup", distribution="dup-dist")
    failure = next(f for f in manager.failures if f.plugin.name == "dup")
    assert "wanda" in failure.error and "dup-dist" in failure.error and "secateurs" in failure.error
    assert "its other parts are loaded" in failure.error
    assert "mine" in manager.scorers  # only the clashing name is skipped
    assert manager.scorers.entry("wanda").plugin.distribution == "secateurs"  # the first keeps it


def test_unknown_name_lists_the_installed_ones():
    manager = PluginManager(load_entry_points=False)
    with pytest.raises(SecateursError, match="installed scorers: activation, block-influence, magnitude, random, skip-loss, wanda"):
        manager.scorers.create("nope")


def test_bad_parameters_name_the_part():
    manager = PluginManager(load_entry_points=False)
    with pytest.raises(SecateursError, match="scorer 'magnitude'"):
        manager.scorers.create("magnitude", colour="red")


@pytest.mark.parametrize(
    "kind,name,params,msg",
    [("allocator", "owl", {"m": 0}, "m must be a positive number"),
     ("allocator", "owl", {"lam": -1}, "lam must be a number >= 0"),
     ("applier", "sparsegpt", {"blocksize": 0}, "blocksize must be a positive integer"),
     ("applier", "sparsegpt", {"percdamp": 1.0}, r"percdamp must be a fraction in \(0, 1\)"),
     ("calibration", "text", {"batch_size": True}, "batch_size must be a positive integer"),
     ("evaluator", "perplexity", {"max_windows": 0}, "max_windows must be a positive integer")],
)
def test_built_in_parameters_are_validated(kind, name, params, msg):
    registry = PluginManager(load_entry_points=False).registries[kind]
    with pytest.raises(SecateursError, match=f"{kind} {name!r}: {msg}"):
        registry.create(name, **params)


class IncompletePlugin:
    """A scorer without ``score`` and an allocator that is not one at all."""

    @hookimpl
    def secateurs_register_scorers(self, register):
        class NoScore:
            requires = frozenset()
            comparison = "row"
            selects = False

        register("no-score", NoScore)

    @hookimpl
    def secateurs_register_allocators(self, register):
        register("not-an-allocator", dict)


def test_a_part_missing_a_member_is_refused_naming_the_plugin_and_the_member():
    manager = PluginManager(load_entry_points=False)
    manager.register(IncompletePlugin(), name="incomplete", distribution="incomplete-dist")
    named = r"scorer 'no-score' of plugin incomplete \(incomplete-dist -\) does not satisfy the Scorer"
    with pytest.raises(SecateursError, match=named + r" protocol.*: it lacks score$"):
        manager.scorers.create("no-score")
    with pytest.raises(SecateursError, match="lacks needs_scores, prepare, allocate"):
        manager.allocators.create("not-an-allocator")


@pytest.mark.parametrize("kind", KINDS)
def test_every_builtin_part_satisfies_its_protocol(kind):
    manager = PluginManager(load_entry_points=False)
    registry = manager.registries[kind]
    for name in registry.names():  # every built-in part has defaults for all its parameters
        assert isinstance(registry.create(name), PROTOCOLS[kind])


# -- a real third-party distribution, built as a wheel and installed with pip -----------

GOOD_PLUGIN = '''
import attrs, torch
from typing import ClassVar
from secateurs.hookspecs import hookimpl

@attrs.frozen
class SquareScorer:
    comparison: str = "row"
    requires: ClassVar[frozenset] = frozenset()
    selects: ClassVar[bool] = False

    def score(self, unit, ctx):
        return unit.weight.detach().float() ** 2

@hookimpl
def secateurs_register_scorers(register):
    register("square", SquareScorer)
'''


def _wheel(tmp: Path, dist: str, module: str, source: str) -> Path:
    """Build a minimal wheel with one module and a ``secateurs`` entry point."""
    info = f"{dist.replace('-', '_')}-1.0.dist-info"
    files = {
        f"{module}.py": source,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/entry_points.txt": f"[secateurs]\n{dist} = {module}\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join(record + [f"{info}/RECORD,,"]) + "\n"
    path = tmp / f"{dist.replace('-', '_')}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


@pytest.fixture
def installed_plugins(tmp_path, monkeypatch):
    """Install a good and a broken third-party plugin into a fresh target directory."""
    target = tmp_path / "site"
    wheels = [
        _wheel(tmp_path, "secateurs-square", "secateurs_square", GOOD_PLUGIN),
        _wheel(tmp_path, "secateurs-broken", "secateurs_broken", "raise ImportError('missing dependency xyz')\n"),
    ]
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", str(target), *map(str, wheels)],
        check=True,
    )
    monkeypatch.syspath_prepend(str(target))
    return target


def test_third_party_plugin_is_listed_usable_and_a_broken_one_is_reported(installed_plugins, tiny_lm_dir, tmp_path):
    import secateurs

    manager = PluginManager()
    assert "square" in manager.scorers
    assert manager.scorers.entry("square").plugin.distribution == "secateurs-square"
    broken = [f for f in manager.failures if f.plugin.distribution == "secateurs-broken"]
    assert broken and "missing dependency xyz" in broken[0].error
    assert "llama" in manager.adapters  # the others still load

    outcome = secateurs.prune(
        {"model": str(tiny_lm_dir), "sparsity": 0.5, "scorer": "square", "output": str(tmp_path / "out")},
        manager=manager,
        progress=False,
    )
    assert outcome.result.sparsity == pytest.approx(0.5)
    assert (tmp_path / "out" / "report.json").is_file()


def test_plugins_command_lists_third_party_and_broken_plugins(installed_plugins):
    env_path = f"{installed_plugins}"
    proc = subprocess.run(
        [sys.executable, "-c", "from secateurs.cli import main; main(['plugins', '--json'])"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "PYTHONPATH": env_path},
    )
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(proc.stdout)
    square = next(p for p in listing["plugins"] if p["name"] == "secateurs-square")
    assert square["distribution"] == "secateurs-square" and square["version"] == "1.0"
    assert square["registered"] == {"scorer": ["square"]}
    assert any(f["distribution"] == "secateurs-broken" for f in listing["failures"])
    assert re.search(r"builtins\.scorers", proc.stdout)
