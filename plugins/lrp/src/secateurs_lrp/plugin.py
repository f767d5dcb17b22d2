"""secateurs plugin entry point: the ``lrp`` and ``taylor`` scorers and the
``lrp-tune`` command (``prune-curve`` is the core's)."""

from __future__ import annotations

from secateurs.hookspecs import hookimpl
from secateurs_lrp.scorers import LrpScorer, TaylorScorer


@hookimpl
def secateurs_register_scorers(register) -> None:
    register("lrp", LrpScorer)
    register("taylor", TaylorScorer)


@hookimpl
def secateurs_register_commands(cli) -> None:
    from secateurs_lrp.commands import lrp_tune_command

    lrp_tune_command(cli)
