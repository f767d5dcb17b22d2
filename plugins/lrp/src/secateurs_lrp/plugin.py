"""secateurs plugin entry point: the ``lrp`` and ``taylor`` scorers, registered by
reference (imported when first built). The ``lrp-tune`` command is the entry point
``secateurs.commands``: ``secateurs_lrp.commands:lrp_tune`` (``prune-curve`` is the core's)."""

from __future__ import annotations

from secateurs.hookspecs import hookimpl


@hookimpl
def secateurs_register_scorers(register) -> None:
    register("lrp", "secateurs_lrp.scorers:LrpScorer")
    register("taylor", "secateurs_lrp.scorers:TaylorScorer")
