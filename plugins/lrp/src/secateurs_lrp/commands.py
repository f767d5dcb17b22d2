"""CLI command: ``secateurs lrp-tune`` (curves themselves are the core's ``prune-curve``).

Declared in the entry-point group ``secateurs.commands``; this module imports only click
and light secateurs modules, the work's modules (torch, zennit, optuna) are imported when
the command runs."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import click

from secateurs.cli import OVERWRITE_HELP, RATES_HELP, SET_HELP, checked_reads, command_recipe, quiet_option
from secateurs.errors import SecateursError

SAMPLERS = ("tpe", "gp")
"""``secateurs_lrp.tune.SAMPLERS`` (that module imports optuna)."""

EXAMPLE = """\b
Example:
  secateurs lrp-tune recipes/torchvision-resnet18-lrp-folder.toml --trials 30 --heldout root=data/heldout -o tuned/
"""


@click.command("lrp-tune", epilog=EXAMPLE)
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--trials", default=30, show_default=True, type=int, help="Trial budget.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the sampler.")
@click.option("--sampler", default="tpe", show_default=True, type=click.Choice(SAMPLERS),
              help="Optuna sampler: tpe (tree-structured Parzen estimator) or gp (Gaussian process).")
@click.option("--rates", help=RATES_HELP + "  [default: 0:95:5]")
@click.option("--heldout", multiple=True, metavar="KEY=VALUE",
              help="Evaluator parameter of the held-out subset, once per key (e.g. --heldout root=data/heldout).")
@click.option("--name", help="Save the best composite under this name (default: RECIPE's stem + '-tuned').")
@click.option("--output", "-o", type=click.Path(file_okay=False), help="Also write best.json and trials.json here.")
@click.option("--model", help="Override the recipe's model (path or packaged name).")
@click.option("--device", help="Device to run on (cpu, cuda, cuda:1...).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--overwrite", is_flag=True, help=OVERWRITE_HELP)
@quiet_option()
def lrp_tune(recipe, trials, seed, sampler, rates, heldout, name, output, model, device, sets, overwrite, quiet):
    """Find the LRP composite (rule per depth group, epsilon, gamma, softmax rule) that
    maximizes the area under RECIPE's accuracy-vs-pruning-rate curve on a held-out
    subset (Bayesian optimisation with optuna); save it so `prune` can use it by name."""
    from secateurs.curve import DEFAULT_RATES, curve_setup, parse_rates
    from secateurs.outputs import atomic_output_dir, write_json
    from secateurs.plugins import get_manager
    from secateurs.recipe import parse_overrides
    from secateurs_lrp.library import save_composite
    from secateurs_lrp.scorers import LrpScorer
    from secateurs_lrp.tune import tune

    parsed = command_recipe(recipe, sets, model=model, device=device)
    reads = checked_reads(output, recipe, parsed, overwrite=overwrite)
    parsed.require_single("lrp-tune")
    if parsed.scorer.name != "lrp":
        raise SecateursError(f"lrp-tune tunes the 'lrp' scorer; the recipe's scorer is {parsed.scorer.name!r}")
    if parsed.evaluate is None:
        raise SecateursError("lrp-tune needs an evaluator: add an [evaluate] table to the recipe")
    manager = get_manager()
    held = {**parsed.evaluate.params, **parse_overrides(heldout)}
    evaluator = manager.evaluators.create(parsed.evaluate.name, **held)
    base = {k: v for k, v in parsed.scorer.params.items() if k != "composite"}
    LrpScorer(**base)  # bad scorer parameters fail before loading
    setup = curve_setup(parsed, evaluator=evaluator, manager=manager)
    started = time.perf_counter()
    result = tune(
        setup,
        lambda spec: LrpScorer(composite=spec.to_dict(), **base),
        trials=trials,
        seed=seed,
        rates=DEFAULT_RATES if rates is None else parse_rates(rates),
        sampler=sampler,
        progress=not quiet,
    )
    record = {
        "recipe": parsed.to_dict(),
        "heldout": held,
        "sampler": sampler,
        "seed": seed,
        "trials_budget": trials,
        "seconds": time.perf_counter() - started,
        "machine": platform.platform(),
        **result.to_dict(),
    }
    name = name or f"{Path(recipe).stem}-tuned"
    saved = save_composite(name, result.best, {"best_area": result.best_area, "heldout": held})
    for preset, area in result.presets.items():
        click.echo(f"preset {preset:<12} area {area:.4f}")
    click.echo(f"best area {result.best_area:.4f}: {json.dumps(result.best.to_dict())}")
    click.echo(f"saved composite {name!r} to {saved} (use: composite = \"{name}\")")
    if output is not None:
        with atomic_output_dir(output, overwrite=overwrite, reads=reads) as tmp:
            write_json(tmp / "best.json", {"composite": result.best.to_dict(), "best_area": result.best_area})
            write_json(tmp / "trials.json", record)
        click.echo(f"wrote best.json and trials.json to {Path(output).resolve()}")
