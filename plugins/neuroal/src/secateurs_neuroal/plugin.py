"""secateurs plugin entry point: the ``neuroal`` allocator and the ``neuroal-plot`` command."""

from __future__ import annotations

from secateurs.hookspecs import hookimpl
from secateurs_neuroal import plot
from secateurs_neuroal.allocator import NeuroALAllocator


@hookimpl
def secateurs_register_allocators(register) -> None:
    register("neuroal", NeuroALAllocator)


@hookimpl
def secateurs_register_commands(cli) -> None:
    plot.register(cli)
