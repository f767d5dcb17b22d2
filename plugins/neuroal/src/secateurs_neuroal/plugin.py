"""secateurs plugin entry point: the ``neuroal`` allocator, registered by reference
(imported when first built). The ``neuroal-plot`` command is the entry point
``secateurs.commands``: ``secateurs_neuroal.plot:neuroal_plot``."""

from __future__ import annotations

from secateurs.hookspecs import hookimpl


@hookimpl
def secateurs_register_allocators(register) -> None:
    register("neuroal", "secateurs_neuroal.allocator:NeuroALAllocator")
