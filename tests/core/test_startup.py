"""A CLI that answers at once: ``--help`` of the root and of every subcommand, and
``secateurs plugins``, import no torch (nor timm, transformers, matplotlib...); plugin
commands come from entry-point metadata and are imported only when needed; every part
registered by reference resolves; every option is described and every command has an
example."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import EntryPoint

import click
import pytest
from cli_run import run_cli
from click.testing import CliRunner

from secateurs.cli import cli
from secateurs.errors import SecateursError
from secateurs.hookspecs import hookimpl
from secateurs.plugins import KINDS, LOAD_PLUGINS_ENV, PluginInfo, PluginManager

HEAVY = ("torch", "timm", "torchvision", "transformers", "matplotlib", "zennit", "optuna", "numba", "safetensors")
COMMANDS = cli.list_commands(click.Context(cli))


def _heavy_imports(args: list[str]) -> tuple[list[str], str]:
    """Run ``secateurs ARGS`` in a fresh interpreter: the heavy modules it imported, its stdout."""
    code = (
        "import sys\nfrom secateurs.cli import main\n"
        f"try:\n    main({args!r})\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        f"print('\\0' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out, _, heavy = proc.stdout.rpartition("\0")
    return [m for m in heavy.strip().split(",") if m], out


def test_every_core_and_plugin_command_is_listed():
    assert {"prune", "eval", "prune-curve", "plugins", "inspect", "ken-viz", "lrp-tune", "neuroal-plot"} <= set(COMMANDS)


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_imports_no_torch(command):
    """Fails when ``secateurs [COMMAND] --help`` imports torch or another heavy library."""
    heavy, out = _heavy_imports([*([command] if command else []), "--help"])
    assert heavy == [], f"`secateurs {command or ''} --help` imported {', '.join(heavy)}"
    assert "Usage: secateurs" in out


def test_plugins_lists_every_part_without_importing_one():
    heavy, out = _heavy_imports(["plugins", "--json"])
    assert heavy == []
    listing = json.loads(out)
    assert listing["failures"] == []
    ken = next(p for p in listing["plugins"] if p["name"] == "ken")
    assert ken["registered"]["scorer"] == ["ken", "delta-magnitude"] and ken["commands"] == ["ken-viz"]


def test_every_part_registered_by_reference_resolves_under_its_name():
    """A reference with a typo, or a name that is not its part's, fails here."""
    manager = PluginManager()
    assert manager.failures == []
    for kind in KINDS:
        for entry in manager.registries[kind]:
            declared = getattr(entry.factory, "name", None)  # imports the part's module
            if kind == "adapter" and isinstance(declared, str):
                assert declared == entry.name
            if kind == "model":
                assert manager.models.create(entry.name).name == entry.name


class ReferencePlugin:
    @hookimpl
    def secateurs_register_scorers(self, register):
        register("gone", "secateurs_nowhere.parts:GoneScorer")
        register("magnitude-too", "secateurs.builtins.scorers:MagnitudeScorer")


def test_a_reference_that_cannot_be_imported_names_the_plugin_when_used():
    manager = PluginManager(load_entry_points=False)
    manager.register(ReferencePlugin(), name="refs", distribution="secateurs-refs")
    assert manager.failures == [] and manager.scorers.create("magnitude-too") is not None
    with pytest.raises(SecateursError, match=r"scorer 'gone' of plugin refs \(secateurs-refs -\) cannot be "
                                             r"imported \(secateurs_nowhere.parts:GoneScorer\).*reinstall secateurs-refs"):
        manager.scorers.create("gone")


class MalformedPlugin:
    @hookimpl
    def secateurs_register_scorers(self, register):
        register("bad", "no_colon_here")


def test_a_malformed_reference_is_a_plugin_failure():
    manager = PluginManager(load_entry_points=False)
    manager.register(MalformedPlugin(), name="malformed")
    failure = next(f for f in manager.failures if f.plugin.name == "malformed")
    assert "'no_colon_here' is not of the form 'package.module:attribute'" in failure.error
    assert "bad" not in manager.scorers


def test_a_command_that_cannot_be_imported_is_listed_and_refuses_in_one_line(monkeypatch, capsys):
    broken = EntryPoint(name="broken-cmd", value="secateurs_nowhere.cli:command", group="secateurs.commands")
    monkeypatch.setattr("secateurs.cli.command_entry_points",
                        lambda: {"broken-cmd": (broken, PluginInfo("broken-cmd", "secateurs-nowhere", "1.0"))})
    monkeypatch.delitem(cli.commands, "broken-cmd", raising=False)
    try:
        code, out, _ = run_cli(["--help"], capsys)
        assert code == 0 and "broken-cmd" in out and "unavailable" in out
        code, _, err = run_cli(["broken-cmd", "x", "--flag"], capsys)
        assert code == 2 and err.count("\n") == 1
        assert "command 'broken-cmd' of secateurs-nowhere 1.0 cannot be imported" in err and "reinstall" in err
    finally:
        cli.commands.pop("broken-cmd", None)


def test_plugin_commands_follow_the_autoload_switch(monkeypatch):
    monkeypatch.setenv(LOAD_PLUGINS_ENV, "ken")
    listed = cli.list_commands(click.Context(cli))
    assert "ken-viz" in listed and "lrp-tune" not in listed and "neuroal-plot" not in listed
    monkeypatch.setenv(LOAD_PLUGINS_ENV, "")
    assert "ken-viz" not in cli.list_commands(click.Context(cli))


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_is_described_and_every_command_has_an_example(command):
    cmd = cli.get_command(click.Context(cli), command)
    undescribed = [p.opts[0] for p in cmd.params if isinstance(p, click.Option) and not p.help]
    assert undescribed == [], f"{command}: options without help: {undescribed}"
    assert "Example:" in (cmd.epilog or ""), f"{command} --help shows no example"
    assert f"secateurs {command}" in cmd.epilog


def test_ken_viz_takes_output_like_the_others_and_keeps_out():
    ken_viz = cli.get_command(click.Context(cli), "ken-viz")
    output = next(p for p in ken_viz.params if p.name == "output")
    assert {"-o", "--output", "--out"} <= set(output.opts)


def test_eval_set_help_says_how_values_are_quoted():
    result = CliRunner().invoke(cli, ["eval", "--help"], terminal_width=200)
    assert "corpus='\"nyt-test\"'" in result.output and "numbers and true/false bare" in result.output
