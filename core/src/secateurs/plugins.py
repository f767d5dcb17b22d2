"""The plugin manager: built-in plugins, entry-point plugins, and the typed registries.

Third-party plugins are distributions with an entry point in the group ``secateurs``.
``SECATEURS_LOAD_PLUGINS`` controls autoloading: unset loads every entry point; an empty
value loads none; a comma-separated list loads only those entry-point names (a name no
installed plugin has is reported). A plugin that fails to import or whose hook raises is
recorded in ``PluginManager.failures`` (with the plugin and its distribution named) and
skipped; a plugin that registers a name another plugin already has loses that one name
(recorded too) and keeps its other parts; the others still load. The CLI prints every
``PluginManager.warnings()`` line on every command.

Plugin modules stay light: a part may be registered by reference
(``register("ken", "secateurs_ken.parts:KenScorer")``, ``secateurs.references``) and is
imported when first built, so loading every plugin imports no torch. CLI commands are
declared in the entry-point group ``secateurs.commands`` (``command_entry_points``) and
imported only when run or when their help is shown.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs
import pluggy

from secateurs import hookspecs
from secateurs.builtins.registry import BUILTINS, BuiltinPlugin
from secateurs.errors import SecateursError
from secateurs.references import Lazy

if TYPE_CHECKING:
    from secateurs.protocols import (
        Adapter,
        Allocator,
        Applier,
        CalibrationSource,
        Evaluator,
        Exporter,
        PackagedModel,
        Scorer,
    )

ENTRY_POINT_GROUP = "secateurs"
LOAD_PLUGINS_ENV = "SECATEURS_LOAD_PLUGINS"
_NOT_LOADED = f"none of its parts are loaded (fix or uninstall it, or leave it out of {LOAD_PLUGINS_ENV})"

COMMANDS_GROUP = "secateurs.commands"
"""Entry-point group of CLI commands: ``name = "package.module:click_command"``."""

DEFAULT_PLUGINS: tuple[str, ...] = tuple(BUILTINS)
"""The built-in plugins, named after the modules their parts live in."""

KINDS: dict[str, str] = {
    "adapter": "secateurs_register_adapters",
    "scorer": "secateurs_register_scorers",
    "allocator": "secateurs_register_allocators",
    "applier": "secateurs_register_appliers",
    "exporter": "secateurs_register_exporters",
    "calibration": "secateurs_register_calibration_sources",
    "evaluator": "secateurs_register_evaluators",
    "model": "secateurs_register_models",
}

PROTOCOL_NAMES: dict[str, str] = {
    "adapter": "Adapter",
    "scorer": "Scorer",
    "allocator": "Allocator",
    "applier": "Applier",
    "exporter": "Exporter",
    "calibration": "CalibrationSource",
    "evaluator": "Evaluator",
    "model": "PackagedModel",
}
"""Kind → the ``secateurs.protocols`` class ``Registry.create`` checks the built part is."""


def protocol_of(kind: str) -> type:
    """The protocol of ``kind``, imported on first use (``secateurs.protocols`` imports torch)."""
    return getattr(importlib.import_module("secateurs.protocols"), PROTOCOL_NAMES[kind])


def __getattr__(name: str) -> Any:
    """``PROTOCOLS`` (kind → protocol class) is built on access, importing torch then."""
    if name == "PROTOCOLS":
        return {kind: protocol_of(kind) for kind in KINDS}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


T = TypeVar("T")


@attrs.frozen
class PluginInfo:
    """One loaded (or failed) plugin: its name, distribution and version."""

    name: str
    distribution: str
    version: str

    def label(self) -> str:
        return f"{self.name} ({self.distribution} {self.version})"


@attrs.frozen
class PluginFailure:
    plugin: PluginInfo
    error: str


@attrs.define
class Entry:
    """A registered name of a kind, the plugin that registered it, and its factory: a
    callable, or a reference (``secateurs.references.Lazy``) imported on first access of
    ``factory``; an import that fails raises a ``SecateursError`` naming the plugin."""

    kind: str
    name: str
    source: Callable[..., Any] | Lazy
    plugin: PluginInfo

    @property
    def factory(self) -> Callable[..., Any]:
        if isinstance(self.source, Lazy):
            try:
                self.source = self.source.load()
            except Exception as exc:
                raise SecateursError(
                    f"{self.kind} {self.name!r} of plugin {self.plugin.label()} cannot be imported "
                    f"({self.source.ref}): {exc!r}; reinstall {self.plugin.distribution} with its dependencies"
                ) from exc
        return self.source


class Registry(Generic[T]):
    """Named factories of one kind. ``create(name, **params)`` builds one with clear errors
    and checks it is a ``protocol`` (the kind's base protocol)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    @property
    def protocol(self) -> type[T]:
        return protocol_of(self.kind)

    def add(self, entry: Entry) -> None:
        if entry.name in self._entries:
            first = self._entries[entry.name].plugin
            raise SecateursError(
                f"{self.kind} {entry.name!r} is registered twice: by plugin "
                f"{first.label()} and again by plugin {entry.plugin.label()}"
            )
        self._entries[entry.name] = entry

    def discard(self, name: str) -> None:
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())

    def entry(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise SecateursError(
                f"unknown {self.kind} {name!r}; installed {self.kind}s: {known}"
            ) from None

    def create(self, name: str, **params: Any) -> T:
        """``factory(**params)`` of ``name``; a ``SecateursError`` names the part on bad
        parameters, and names the plugin and the missing members when the part built is
        not a ``protocol``."""
        factory = self.entry(name).factory
        try:
            part = factory(**params)
        except TypeError as exc:
            raise SecateursError(f"bad parameters for {self.kind} {name!r}: {exc}") from exc
        except ValueError as exc:
            raise SecateursError(f"{self.kind} {name!r}: {exc}") from exc
        if not isinstance(part, self.protocol):
            from secateurs.protocols import missing_members

            missing = missing_members(part, self.protocol)
            reason = f"it lacks {', '.join(missing)}" if missing else f"it is a {type(part).__name__}"
            raise SecateursError(
                f"{self.kind} {name!r} of plugin {self.entry(name).plugin.label()} does not satisfy the "
                f"{self.protocol.__name__} protocol (secateurs.protocols): {reason}"
            )
        return part


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class PluginManager:
    """Loads plugins and fills one registry per kind; the rest of the code uses its
    typed attributes (``scorers``, ``adapters``...), never ``pm.hook`` directly."""

    def __init__(self, *, load_entry_points: bool = True) -> None:
        self.pm = pluggy.PluginManager("secateurs")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []
        self.failures: list[PluginFailure] = []
        self.unknown_requested: list[str] = []
        self.registered: dict[str, dict[str, list[str]]] = {}
        for name in DEFAULT_PLUGINS:
            self._add(name, BuiltinPlugin(name), PluginInfo(name, "secateurs", _version("secateurs")))
        if load_entry_points:
            self._load_entry_points()
        self.registries: dict[str, Registry[Any]] = {}
        self._collect()

    # -- loading ---------------------------------------------------------------------
    def _add(self, name: str, module: ModuleType | object, info: PluginInfo) -> None:
        self.pm.register(module, name=name)
        self.plugins.append(info)

    def _load_entry_points(self) -> None:
        wanted = _wanted()
        points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        self.unknown_requested = sorted((wanted or set()) - {ep.name for ep in points})
        for ep in points:
            if wanted is not None and ep.name not in wanted:
                continue
            info = PluginInfo(ep.name, *_distribution(ep))
            if self.pm.has_plugin(ep.name):
                continue
            try:
                module = ep.load()
            except Exception as exc:  # a broken plugin must not break the others
                self.failures.append(PluginFailure(info, f"import failed: {exc!r}; {_NOT_LOADED}"))
                continue
            self._add(ep.name, module, info)

    def register(self, plugin: object, name: str, distribution: str = "(runtime)") -> None:
        """Register a plugin object at run time (tests, notebooks) and refresh registries."""
        self._add(name, plugin, PluginInfo(name, distribution, "-"))
        self._collect()

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.plugins = [p for p in self.plugins if p.name != name]
        self._collect()

    def _collect(self) -> None:
        """Ask every plugin what it registers; a plugin whose hook raises or whose names
        clash registers nothing and is recorded in ``failures``."""
        self.registries = {kind: Registry(kind) for kind in KINDS}
        self.registered = {}
        self.failures = [f for f in self.failures if f.error.startswith("import failed")]
        infos = {p.name: p for p in self.plugins}
        offered: dict[str, list[tuple[str, Entry]]] = {p.name: [] for p in self.plugins}
        broken: set[str] = set()
        for kind, hook_name in KINDS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                info = infos[impl.plugin_name]
                if info.name in broken:
                    continue
                entries: list[Entry] = []

                def register(name: str, factory: Callable[..., Any] | Lazy | str, _e=entries, _i=info, _k=kind) -> None:
                    _e.append(Entry(_k, name, Lazy(factory) if isinstance(factory, str) else factory, _i))

                try:
                    impl.function(register=register)
                except Exception as exc:
                    self.failures.append(PluginFailure(info, f"{hook_name} failed: {exc!r}; {_NOT_LOADED}"))
                    broken.add(info.name)
                    continue
                offered[info.name].extend((kind, e) for e in entries)
        for info in self.plugins:  # registration order: the first to claim a name keeps it
            if info.name not in broken:
                self._accept(info, offered[info.name])

    def _accept(self, info: PluginInfo, entries: list[tuple[str, Entry]]) -> None:
        """Add a plugin's entries; a name already taken is skipped (and recorded), the rest load."""
        for kind, entry in entries:
            try:
                self.registries[kind].add(entry)
            except SecateursError as exc:
                self.failures.append(PluginFailure(info, f"{exc}; that {kind} was skipped, its other parts are loaded"))
                continue
            self.registered.setdefault(info.name, {}).setdefault(kind, []).append(entry.name)

    def warnings(self) -> list[str]:
        """One line per plugin problem: each failure, and each unknown name in ``SECATEURS_LOAD_PLUGINS``."""
        lines = [f"plugin {f.plugin.label()}: {f.error}" for f in self.failures]
        if self.unknown_requested:
            installed = sorted(ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
            lines += [
                f"{LOAD_PLUGINS_ENV} names {name!r}, which no installed plugin has "
                f"(installed: {', '.join(installed) or 'none'})"
                for name in self.unknown_requested
            ]
        return lines

    def add_commands(self, cli: Any) -> None:
        """Let plugins that implement ``secateurs_register_commands`` add CLI sub-commands
        (the slower path: their modules are imported on every command; the entry-point
        group ``secateurs.commands`` is the fast one); a failing plugin is recorded, not fatal."""
        for impl in self.pm.hook.secateurs_register_commands.get_hookimpls():
            try:
                impl.function(cli=cli)
            except Exception as exc:
                info = next(p for p in self.plugins if p.name == impl.plugin_name)
                self.failures.append(PluginFailure(info, f"secateurs_register_commands failed: {exc}"))

    # -- typed access ----------------------------------------------------------------
    @property
    def adapters(self) -> Registry[Adapter]:
        return self.registries["adapter"]

    @property
    def scorers(self) -> Registry[Scorer]:
        return self.registries["scorer"]

    @property
    def allocators(self) -> Registry[Allocator]:
        return self.registries["allocator"]

    @property
    def appliers(self) -> Registry[Applier]:
        return self.registries["applier"]

    @property
    def exporters(self) -> Registry[Exporter]:
        return self.registries["exporter"]

    @property
    def calibration_sources(self) -> Registry[CalibrationSource]:
        return self.registries["calibration"]

    @property
    def evaluators(self) -> Registry[Evaluator]:
        return self.registries["evaluator"]

    @property
    def models(self) -> Registry[PackagedModel]:
        return self.registries["model"]


def _wanted() -> set[str] | None:
    """The entry-point names ``SECATEURS_LOAD_PLUGINS`` selects; ``None`` when unset (all)."""
    selected = os.environ.get(LOAD_PLUGINS_ENV)
    return None if selected is None else {s.strip() for s in selected.split(",") if s.strip()}


def _distribution(ep: importlib.metadata.EntryPoint) -> tuple[str, str]:
    return (ep.dist.name, ep.dist.version) if ep.dist else ("unknown", "unknown")


def selected_plugins() -> list[PluginInfo]:
    """The entry-point plugins ``SECATEURS_LOAD_PLUGINS`` selects (every installed one when
    unset), with their distributions; read from metadata, nothing imported."""
    wanted = _wanted()
    return [
        PluginInfo(ep.name, *_distribution(ep))
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        if wanted is None or ep.name in wanted
    ]


def command_entry_points() -> dict[str, tuple[importlib.metadata.EntryPoint, PluginInfo]]:
    """Commands plugins declare in the entry-point group ``secateurs.commands``, by name,
    with the distribution declaring each; read from metadata, nothing imported. Under
    ``SECATEURS_LOAD_PLUGINS`` only the commands of distributions it selects a plugin of."""
    wanted = _wanted()
    allowed = None if wanted is None else {
        _distribution(ep)[0] for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name in wanted
    }
    commands = {}
    for ep in importlib.metadata.entry_points(group=COMMANDS_GROUP):
        dist, version = _distribution(ep)
        if allowed is None or dist in allowed:
            commands.setdefault(ep.name, (ep, PluginInfo(ep.name, dist, version)))
    return commands


_manager: PluginManager | None = None


def get_manager() -> PluginManager:
    """The process-wide plugin manager, created on first use."""
    global _manager
    if _manager is None:
        _manager = PluginManager()
    return _manager


def reset_manager() -> None:
    """Forget the process-wide manager (tests; after installing a plugin at run time)."""
    global _manager
    _manager = None
