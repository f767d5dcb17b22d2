"""CLI commands: ``secateurs prune-curve`` and ``secateurs lrp-tune``."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import click
from tqdm.auto import tqdm

from secateurs.cli import OVERWRITE_HELP, parse_overrides
from secateurs.errors import SecateursError
from secateurs.outputs import atomic_output_dir, check_output
from secateurs.plugins import get_manager
from secateurs.recipe import Recipe, load_recipe
from secateurs_lrp.curve import DEFAULT_RATES, curve_parts, parse_rates, plot_curves, pruning_curve
from secateurs_lrp.library import save_composite, write_json
from secateurs_lrp.scorers import LrpScorer
from secateurs_lrp.tune import SAMPLERS, tune

_RATES_HELP = "Pruning rates in percent: START:STOP:STEP (inclusive) or a comma list."


def _recipe(path: str, sets: tuple[str, ...], model: str | None, device: str | None) -> Recipe:
    overrides = parse_overrides(sets)
    if model is not None:
        overrides["model"] = model
    if device is not None:
        overrides["device"] = device
    return load_recipe(path).with_overrides(overrides)


def _check_output(output: str | None, recipe_path: str, recipe: Recipe, overwrite: bool) -> list[tuple[str, str]]:
    """The paths the command reads; ``output`` (when given) checked against them before any work."""
    reads = [*recipe.read_paths(), ("recipe", recipe_path)]
    if output is not None:
        check_output(output, reads=reads, overwrite=overwrite)
    return reads


def _rates(text: str | None):
    return DEFAULT_RATES if text is None else parse_rates(text)


def prune_curve_command(cli: click.Group) -> None:
    @cli.command("prune-curve")
    @click.argument("recipe", type=click.Path(dir_okay=False))
    @click.option("--output", "-o", type=click.Path(file_okay=False), help="Write curve.json and curve.png here.")
    @click.option("--rates", help=_RATES_HELP + "  [default: 0:95:5]")
    @click.option("--metric", help="Metric of the recipe's evaluator to plot (default: its first).")
    @click.option("--model", help="Override the recipe's model.")
    @click.option("--device", help="Device (cpu, cuda...).")
    @click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override any recipe key (dotted).")
    @click.option("--overwrite", is_flag=True, help=OVERWRITE_HELP)
    @click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
    def prune_curve(recipe, output, rates, metric, model, device, sets, overwrite, quiet) -> None:
        """Accuracy-vs-pruning-rate curve of RECIPE: prune the dense model at every rate
        (0, 5, ..., 95% of components; the masks nest) and evaluate; table, area, PNG."""
        parsed = _recipe(recipe, sets, model, device)
        reads = _check_output(output, recipe, parsed, overwrite)
        rate_list = _rates(rates)
        parts = curve_parts(parsed, get_manager())
        bar = tqdm(total=len(rate_list), desc="curve", unit="rate", disable=quiet)
        curve = pruning_curve(parts, rate_list, metric=metric, progress=lambda r, m: bar.update())
        bar.close()
        click.echo(curve.table())
        if output is not None:
            with atomic_output_dir(output, overwrite=overwrite, reads=reads) as tmp:
                record = {"recipe": parsed.to_dict(), "curve": curve.to_dict(), "date": time.strftime("%Y-%m-%d")}
                write_json(tmp / "curve.json", record)
                plot_curves({parsed.scorer.name: curve}, tmp / "curve.png", f"{Path(str(parsed.model)).name}")
            click.echo(f"saved curve.json and curve.png to {Path(output).resolve()}")


def lrp_tune_command(cli: click.Group) -> None:
    @cli.command("lrp-tune")
    @click.argument("recipe", type=click.Path(dir_okay=False))
    @click.option("--trials", default=30, show_default=True, type=int, help="Trial budget.")
    @click.option("--seed", default=0, show_default=True, type=int, help="Seed of the sampler.")
    @click.option("--sampler", default="tpe", show_default=True, type=click.Choice(SAMPLERS))
    @click.option("--rates", help=_RATES_HELP + "  [default: 0:95:5]")
    @click.option("--heldout", multiple=True, metavar="KEY=VALUE",
                  help="Evaluator parameters of the held-out subset (e.g. samples=500 seed=1).")
    @click.option("--name", help="Save the best composite under this name (default: RECIPE's stem + '-tuned').")
    @click.option("--output", "-o", type=click.Path(file_okay=False), help="Also write best.json and trials.json here.")
    @click.option("--model", help="Override the recipe's model.")
    @click.option("--device", help="Device (cpu, cuda...).")
    @click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override any recipe key (dotted).")
    @click.option("--overwrite", is_flag=True, help=OVERWRITE_HELP)
    @click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
    def lrp_tune(recipe, trials, seed, sampler, rates, heldout, name, output, model, device, sets, overwrite, quiet):
        """Find the LRP composite (rule per depth group, epsilon, gamma, softmax rule) that
        maximizes the area under RECIPE's accuracy-vs-pruning-rate curve on a held-out
        subset (Bayesian optimisation with optuna); save it so `prune` can use it by name."""
        parsed = _recipe(recipe, sets, model, device)
        reads = _check_output(output, recipe, parsed, overwrite)
        if parsed.scorer.name != "lrp":
            raise SecateursError(f"lrp-tune tunes the 'lrp' scorer; the recipe's scorer is {parsed.scorer.name!r}")
        if parsed.evaluate is None:
            raise SecateursError("lrp-tune needs an evaluator: add an [evaluate] table to the recipe")
        manager = get_manager()
        held = {**parsed.evaluate.params, **parse_overrides(heldout)}
        evaluator = manager.evaluators.create(parsed.evaluate.name, **held)
        base = {k: v for k, v in parsed.scorer.params.items() if k != "composite"}
        LrpScorer(**base)  # bad scorer parameters fail before loading
        parts = curve_parts(parsed, manager, evaluator=evaluator)
        started = time.perf_counter()
        result = tune(
            parts,
            lambda spec: LrpScorer(composite=spec.to_dict(), **base),
            trials=trials,
            seed=seed,
            rates=_rates(rates),
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
