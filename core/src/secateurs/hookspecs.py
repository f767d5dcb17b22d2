"""The plugin contract: one hook per kind of part, each handed a ``register`` callback.

A plugin implements any of these hooks and calls ``register(name, factory)`` for every
part it provides. ``factory(**params)`` is called with the recipe's parameters for that
part and must return an object satisfying the protocol of its kind
(``secateurs.protocols``). ``factory`` may be the callable itself or a reference to it,
``"package.module:attribute"`` or ``secateurs.references.lazy(ref, *args)``, imported
when the part is first built: a plugin module that registers only references and imports
nothing heavy keeps ``secateurs --help`` and ``secateurs plugins`` fast. Names are global
per kind: registering a name that another plugin already registered is an error reported
against the later plugin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("secateurs")
hookimpl = pluggy.HookimplMarker("secateurs")

Register = Callable[..., None]


@hookspec
def secateurs_register_adapters(register: Register) -> None:
    """Register architecture adapters: ``register(name, factory)``; ``factory()`` returns an
    ``Adapter`` (supports, blocks, forward, block_output, load, save)."""


@hookspec
def secateurs_register_scorers(register: Register) -> None:
    """Register scorers: ``register(name, factory)``; ``factory(**params)`` returns a
    ``Scorer`` (requires, comparison, selects, score(unit, ctx) -> scores)."""


@hookspec
def secateurs_register_allocators(register: Register) -> None:
    """Register allocators: ``register(name, factory)``; ``factory(**params)`` returns an
    ``Allocator`` (needs_scores, prepare(session, target), allocate(block, scores, target))."""


@hookspec
def secateurs_register_appliers(register: Register) -> None:
    """Register mask-appliers: ``register(name, factory)``; ``factory(**params)`` returns an
    ``Applier`` (requires, row_ratios, apply(block, scores, allocation, ctx) -> masks)."""


@hookspec
def secateurs_register_exporters(register: Register) -> None:
    """Register exporters: ``register(name, factory)``; ``factory(**params)`` returns an
    ``Exporter`` (export(loaded, result, directory) -> files)."""


@hookspec
def secateurs_register_calibration_sources(register: Register) -> None:
    """Register calibration sources: ``register(name, factory)``; ``factory(**params)``
    returns a ``CalibrationSource`` (batches(loaded) -> list of model inputs)."""


@hookspec
def secateurs_register_evaluators(register: Register) -> None:
    """Register evaluators: ``register(name, factory)``; ``factory(**params)`` returns an
    ``Evaluator`` (evaluate(loaded) -> {metric: value})."""


@hookspec
def secateurs_register_models(register: Register) -> None:
    """Register real models shipped in packages: ``register(name, factory)``;
    ``factory()`` returns a ``PackagedModel`` whose ``fetch()`` gives a loadable path."""


@hookspec
def secateurs_register_commands(cli: Any) -> None:
    """Add sub-commands to the ``secateurs`` command line: ``cli`` is the root
    ``click.Group``; decorate new commands with ``@cli.command()``. The slower path (the
    plugin's commands are built on every command): declaring each command in the entry-point
    group ``secateurs.commands`` imports it only when it is run or its help is shown."""
