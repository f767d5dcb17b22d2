"""secateurs entry point of secateurs-ken: scorers ``ken`` and ``delta-magnitude``, the
``ken-k`` allocator, the ``restore`` and ``dare`` appliers, the ``ken-delta`` exporter
and the ``secateurs ken-viz`` command."""

from __future__ import annotations

from secateurs.hookspecs import hookimpl
from secateurs_ken.delta import KenDeltaExporter
from secateurs_ken.parts import DeltaMagnitudeScorer, KenKAllocator, KenScorer, RestoreApplier, dare_applier


@hookimpl
def secateurs_register_scorers(register) -> None:
    register("ken", KenScorer)
    register("delta-magnitude", DeltaMagnitudeScorer)


@hookimpl
def secateurs_register_allocators(register) -> None:
    register("ken-k", KenKAllocator)


@hookimpl
def secateurs_register_appliers(register) -> None:
    register("restore", RestoreApplier)
    register("dare", dare_applier)


@hookimpl
def secateurs_register_exporters(register) -> None:
    register("ken-delta", KenDeltaExporter)


@hookimpl
def secateurs_register_commands(cli) -> None:
    from secateurs_ken.cli import add_command

    add_command(cli)
