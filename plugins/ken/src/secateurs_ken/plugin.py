"""secateurs entry point of secateurs-ken: scorers ``ken`` and ``delta-magnitude``, the
``ken-k`` allocator, the ``restore`` and ``dare`` appliers and the ``ken-delta`` exporter,
registered by reference (imported when first built). The ``secateurs ken-viz`` command is
the entry point ``secateurs.commands``: ``secateurs_ken.cli:ken_viz_command``."""

from __future__ import annotations

from secateurs.hookspecs import hookimpl


@hookimpl
def secateurs_register_scorers(register) -> None:
    register("ken", "secateurs_ken.parts:KenScorer")
    register("delta-magnitude", "secateurs_ken.parts:DeltaMagnitudeScorer")


@hookimpl
def secateurs_register_allocators(register) -> None:
    register("ken-k", "secateurs_ken.parts:KenKAllocator")


@hookimpl
def secateurs_register_appliers(register) -> None:
    register("restore", "secateurs_ken.parts:RestoreApplier")
    register("dare", "secateurs_ken.parts:dare_applier")


@hookimpl
def secateurs_register_exporters(register) -> None:
    register("ken-delta", "secateurs_ken.delta:KenDeltaExporter")
