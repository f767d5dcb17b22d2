"""The ``secateurs`` command line: prune, eval, prune-curve, plugins, inspect, and the
commands plugins add.

Answering at once: this module imports only click and light secateurs modules; every
command imports what it works with when it runs, and plugin commands are listed from the
entry-point group ``secateurs.commands`` and imported only when run or when their help is
shown (``PluginCommands``), so ``secateurs --help`` and ``secateurs CMD --help`` import no torch.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from importlib.metadata import EntryPoint
from typing import TYPE_CHECKING, Any

import click

from secateurs.errors import SecateursError
from secateurs.plugins import KINDS, PluginInfo, command_entry_points, get_manager

if TYPE_CHECKING:
    from secateurs.outputs import Reads
    from secateurs.recipe import Recipe

PLURALS = {"calibration": "calibration sources", "model": "packaged models"}
OVERWRITE_HELP = "Replace an output directory an earlier secateurs run wrote (never any other folder)."
TOML_VALUES = (
    "Values are TOML: numbers and true/false bare, strings quoted (--set {example}); "
    "an unquoted value that is not TOML is taken as a string."
)
SET_HELP = "Override any recipe key, dotted; repeatable. " + TOML_VALUES.format(example="calibration.corpus='\"nyt-train\"'")
RESUME_HELP = "Continue the [recover] distillation from its checkpoint (OUTPUT.recover-checkpoint) after a kill."
RATES_HELP = "Pruning rates in percent: START:STOP:STEP (inclusive) or a comma list."


def _silence_bars(_ctx: click.Context, _param: click.Parameter, quiet: bool) -> bool:
    """``-q`` also silences the libraries' bars (transformers' loading and saving): tqdm
    reads ``TQDM_DISABLE`` when first imported, which a command does only once it runs."""
    if quiet:
        os.environ["TQDM_DISABLE"] = "1"
    return quiet


def quiet_option(text: str = "No progress bars (neither secateurs' nor its libraries').") -> Any:
    """The ``--quiet/-q`` flag every command that runs a recipe takes."""
    return click.option("--quiet", "-q", is_flag=True, callback=_silence_bars, help=text)


def example(*lines: str) -> str:
    """A command's epilog: its example command lines, shown unwrapped under ``--help``."""
    return "\b\nExample:\n" + "\n".join(f"  {line}" for line in lines)


def command_recipe(path: str, sets: tuple[str, ...] = (), **options: object) -> Recipe:
    """RECIPE as a command was given it: loaded, then the ``--set KEY=VALUE`` pairs and
    every named option that was given (not ``None``) applied as overrides. Plugins'
    commands use it so that every command reads a recipe the same way."""
    from secateurs.recipe import load_recipe, parse_overrides

    overrides = parse_overrides(sets)
    overrides.update({key: value for key, value in options.items() if value is not None})
    return load_recipe(path).with_overrides(overrides)


def checked_reads(output: str | None, recipe_path: str, recipe: Recipe, *, overwrite: bool) -> Reads:
    """The paths a command of ``recipe`` reads; ``output`` (when given) is checked
    against them (``secateurs.outputs.check_output``) before any work."""
    from secateurs.outputs import check_output

    reads = [*recipe.read_paths(), ("recipe", recipe_path)]
    if output is not None:
        check_output(output, reads=reads, overwrite=overwrite)
    return reads


class PluginCommands(click.Group):
    """The root group: the core's commands, and the commands plugins declare in the
    entry-point group ``secateurs.commands`` (``secateurs.plugins.command_entry_points``),
    listed from metadata and imported only when run or when their help is shown. A command
    that cannot be imported is listed as unavailable and refuses, naming its distribution."""

    def _declared(self, ctx: click.Context) -> dict[str, tuple[EntryPoint, PluginInfo]]:
        meta = ctx.find_root().meta  # read once per invocation
        if "secateurs.commands" not in meta:
            meta["secateurs.commands"] = command_entry_points()
        return meta["secateurs.commands"]

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self._declared(ctx)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        declared = self._declared(ctx).get(cmd_name)
        if declared is None:
            return None
        return _load_command(cmd_name, *declared)  # not kept: the next call's metadata decides


def _load_command(name: str, point: EntryPoint, plugin: PluginInfo) -> click.Command:
    """The command ``point`` names, or one that refuses with why it is unavailable."""
    try:
        command = point.load()
    except Exception as exc:
        problem = f"cannot be imported ({point.value}): {exc!r}"
    else:
        if isinstance(command, click.Command):
            return command
        problem = f"is not a click command ({point.value} is a {type(command).__name__})"
    reason = f"command {name!r} of {plugin.distribution} {plugin.version} {problem}; reinstall {plugin.distribution}"

    def refuse(**_: Any) -> None:
        raise SecateursError(reason)

    return click.Command(
        name, callback=refuse, help=f"Unavailable: {reason}", short_help="unavailable (run it to see why)",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        params=[click.Argument(["args"], nargs=-1)],
    )


@click.group(cls=PluginCommands, epilog=example("secateurs prune recipes/smollm2-wanda-50.toml", "secateurs prune --help"))
@click.version_option(package_name="secateurs")
def cli() -> None:
    """secateurs: prune PyTorch models with pluggable scorers, allocators and appliers."""


@cli.command(epilog=example("secateurs prune recipes/smollm2-wanda-50.toml --sparsity 0.6 -o out/smollm2-wanda-60"))
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--model", help="Override the recipe's model (path or packaged name).")
@click.option("--output", "-o", help="Override the recipe's output directory.")
@click.option("--sparsity", type=float, help="Override the target sparsity (a fraction in [0, 1)).")
@click.option("--device", help="Device to prune on (cpu, cuda, cuda:1...).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--overwrite", is_flag=True, help=OVERWRITE_HELP)
@click.option("--resume", is_flag=True, help=RESUME_HELP)
@quiet_option()
def prune(recipe, model, output, sparsity, device, sets, overwrite, resume, quiet) -> None:
    """Prune a model as RECIPE (a TOML file) says."""
    from secateurs.masks import parse_nm
    from secateurs.run import prune as run_prune

    loaded_recipe = command_recipe(recipe, sets, model=model, output=output, sparsity=sparsity, device=device)
    pattern = loaded_recipe.applier.params.get("pattern")
    if sparsity is not None and pattern is not None:
        n, m = parse_nm(pattern)
        raise SecateursError(
            f"--sparsity {sparsity} does not apply: the applier's N:M pattern {pattern} fixes the sparsity "
            f"at {1 - n / m:.0%}; drop --sparsity, or change the pattern (e.g. --set applier.pattern=1:4)"
        )
    outcome = run_prune(loaded_recipe, overwrite=overwrite, progress=not quiet, reads=[("recipe", recipe)], resume=resume)
    result = outcome.result
    click.echo(
        f"{_what_was_done(result)} ({result.params_kept:,} of {result.params_total:,} parameters kept) "
        f"in {result.timings['total']:.1f} s"
    )
    recovered = result.records.get("recover")
    if recovered is not None:
        click.echo(f"recovered: {recovered['steps']} steps, {recovered['tokens']:,} tokens in {recovered['seconds']:.1f} s")
    if outcome.before is not None:
        for metric, value in outcome.after.items():
            click.echo(f"{metric}: {outcome.before[metric]:.4g} before, {value:.4g} after")
    if outcome.output is not None:
        click.echo(f"saved to {outcome.output}")


@cli.command(epilog=example(
    "secateurs recover out/smollm2-wanda-50 --teacher smollm2-135m -o out/smollm2-wanda-50-recovered --tokens 50000",
    "secateurs recover recover.toml --resume",
))
@click.argument("source")
@click.option("--teacher", help="The dense model to distil from (default: the model the folder's report.json names).")
@click.option("--output", "-o", help="Where the recovered model goes.")
@click.option("--tokens", type=int, help="Training tokens (the budget; [recover] tokens).")
@click.option("--device", help="Device to train on (cpu, cuda, cuda:1...).")
@click.option("--dtype", help="Load both models in this dtype (default: their own; 16-bit students train in float32).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Set a [recover] key, dotted; repeatable. " + TOML_VALUES.format(example="lr=3e-4 --set lora.rank=8"))
@click.option("--resume", is_flag=True, help="Continue from the checkpoint (OUTPUT.recover-checkpoint) after a kill.")
@click.option("--overwrite", is_flag=True, help=OVERWRITE_HELP)
@quiet_option()
def recover(source, teacher, output, tokens, device, dtype, sets, resume, overwrite, quiet) -> None:
    """Recover what pruning cost: distil SOURCE (a pruned output folder, or a recovery
    TOML file with student, teacher, output and [recover]) from its dense teacher, keeping
    its zeros; docs/recovery.md."""
    from pathlib import Path

    from secateurs.recipe import parse_overrides
    from secateurs.recover_run import RecoverJob, load_job, recover_model

    is_file = source.endswith(".toml") and Path(source).expanduser().is_file()
    job = load_job(source) if is_file else RecoverJob(student=source)
    sets = parse_overrides(sets) | ({} if tokens is None else {"tokens": tokens})
    job = job.with_overrides({"teacher": teacher, "output": output, "device": device, "dtype": dtype}, sets)
    done = recover_model(job, resume=resume, overwrite=overwrite, progress=not quiet,
                         reads=[("recovery file", source)] if is_file else ())
    record = done.record
    evaluation = record["evaluation"]
    metrics = ""
    if evaluation is not None:
        metric = next(iter(evaluation["before"]))
        metrics = (f"; {metric} {evaluation['before'][metric]:.4g} before, {evaluation['after'][metric]:.4g} after "
                   f"(teacher {evaluation['teacher'][metric]:.4g})")
    click.echo(
        f"recovered {job.student} from {done.teacher}: {record['steps']} steps, {record['tokens']:,} tokens in "
        f"{record['seconds']:.1f} s ({record['tokens_per_second']:.0f} tokens/s){metrics}; saved to {done.output}"
    )


def _what_was_done(result: Any) -> str:
    """One phrase for a finished run (a ``PruneResult``): the sizes a sized run reached
    (``secateurs.shapes``), the layers removed (``secateurs.depth``), the hidden width
    (``secateurs.width``), else the units' sparsity."""
    records = result.records
    if records.get("steps"):
        return "pruned to " + ", ".join(f"{k} = {v}" for step in records["steps"] for k, v in step["after"].items())
    if "layers" in records:
        return f"removed {len(records['layers']['removed'])} of {records['layers']['layers_before']} layers"
    if "hidden" in records:
        return f"narrowed the hidden width from {records['hidden']['size_before']} to {records['hidden']['size_after']}"
    return f"pruned {len(result.units)} units to {result.sparsity:.2%} sparsity"


@cli.command("eval", epilog=example("secateurs eval out/smollm2-wanda-50 --set corpus='\"nyt-test\"' --set seqlen=512"))
@click.argument("model")
@click.option("--evaluator", default="perplexity", show_default=True,
              help="Registered evaluator to run (secateurs plugins lists them).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Evaluator parameter; repeatable. " + TOML_VALUES.format(example="corpus='\"nyt-test\"'"))
@click.option("--device", default="cpu", show_default=True, help="Device to evaluate on (cpu, cuda, cuda:1...).")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def eval_(model, evaluator, sets, device, as_json) -> None:
    """Measure MODEL (a path or packaged name) with an evaluator (default: perplexity)."""
    from secateurs.recipe import parse_overrides
    from secateurs.run import evaluate

    metrics = evaluate(model, evaluator, device=device, **parse_overrides(sets))
    if as_json:
        click.echo(json.dumps(metrics))
    else:
        for name, value in metrics.items():
            click.echo(f"{name}: {value:.6g}")


@cli.command("prune-curve", epilog=example("secateurs prune-curve recipes/smollm2-wanda-50.toml --rates 0:90:10 -o out/curve"))
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--output", "-o", type=click.Path(file_okay=False), help="Write curve.json and curve.png here.")
@click.option("--rates", help=RATES_HELP + "  [default: 0:95:5]")
@click.option("--metric", help="Metric of the recipe's evaluator to plot (default: its first).")
@click.option("--model", help="Override the recipe's model (path or packaged name).")
@click.option("--device", help="Device to run on (cpu, cuda, cuda:1...).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--overwrite", is_flag=True, help=OVERWRITE_HELP)
@quiet_option()
def prune_curve(recipe, output, rates, metric, model, device, sets, overwrite, quiet) -> None:
    """Metric-vs-pruning-rate curve of RECIPE, for any scorer: score the dense model once,
    prune a fresh copy at every rate (0, 5, ..., 95% by default; the masks nest) and
    evaluate it with the recipe's evaluator; table, area under the curve, JSON and PNG."""
    import time
    from pathlib import Path

    from tqdm.auto import tqdm

    from secateurs.curve import DEFAULT_RATES, check_plotting, curve_setup, parse_rates, plot_curves, pruning_curve
    from secateurs.outputs import atomic_output_dir, write_json

    parsed = command_recipe(recipe, sets, model=model, device=device)
    reads = checked_reads(output, recipe, parsed, overwrite=overwrite)
    if output is not None:
        check_plotting()
    rate_list = DEFAULT_RATES if rates is None else parse_rates(rates)
    setup = curve_setup(parsed)
    with tqdm(total=len(rate_list), desc="curve", unit="rate", disable=quiet) as bar:
        curve = pruning_curve(setup, rate_list, metric=metric, progress=lambda rate, metrics: bar.update())
    click.echo(curve.table())
    if output is not None:
        with atomic_output_dir(output, overwrite=overwrite, reads=reads) as tmp:
            write_json(tmp / "curve.json", {"recipe": parsed.to_dict(), "curve": curve.to_dict(), "date": time.strftime("%Y-%m-%d")})
            plot_curves({parsed.scorer.name: curve}, tmp / "curve.png", Path(str(parsed.model)).name)
        click.echo(f"saved curve.json and curve.png to {Path(output).resolve()}")


@cli.command(epilog=example("secateurs plugins --json"))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json) -> None:
    """List every plugin, its distribution and version, what it registered and the
    commands its distribution adds."""
    manager = get_manager()
    commands: dict[str, list[str]] = {}
    declared_by = {}  # distribution → its PluginInfo
    for name, (_, info) in sorted(command_entry_points().items()):
        commands.setdefault(info.distribution, []).append(name)
        declared_by[info.distribution] = info
    rows = [
        {
            "name": p.name,
            "distribution": p.distribution,
            "version": p.version,
            "registered": manager.registered.get(p.name, {}),
            "commands": commands.pop(p.distribution, []),
        }
        for p in manager.plugins
    ]
    rows += [
        {"name": dist, "distribution": dist, "version": declared_by[dist].version, "registered": {}, "commands": names}
        for dist, names in commands.items()
    ]
    failures = [{"plugin": f.plugin.name, "distribution": f.plugin.distribution, "error": f.error} for f in manager.failures]
    if as_json:
        click.echo(json.dumps({"plugins": rows, "failures": failures}, indent=2))
        return
    for row in rows:
        click.echo(f"{row['name']}  ({row['distribution']} {row['version']})")
        for kind in KINDS:
            names = row["registered"].get(kind)
            if names:
                click.echo(f"    {PLURALS.get(kind, kind + 's') + ':':<22}{', '.join(names)}")
        if row["commands"]:
            click.echo(f"    {'commands:':<22}{', '.join(row['commands'])}")
    for failure in failures:
        click.echo(f"FAILED {failure['plugin']} ({failure['distribution']})", err=True)


@cli.command("inspect", epilog=example("secateurs inspect smollm2-135m", "secateurs inspect out/smollm2-wanda-50 --json"))
@click.argument("model")
@click.option("--adapter", help="Use this adapter instead of the first that claims the model.")
@click.option("--device", default="cpu", show_default=True, help="Device to load the model on (cpu, cuda...).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect(model: str, adapter: str | None, device: str, as_json: bool) -> None:
    """Show how an adapter sees MODEL (a path or packaged name): blocks, prunable units
    with shapes, parameters and current sparsity, structured groups."""
    from secateurs.inspection import describe, render
    from secateurs.loading import load

    report = describe(load(model, device=device, adapter=adapter))
    click.echo(json.dumps(report, indent=2) if as_json else render(report))


def _warning_line(message: Warning | str, *_: Any, **__: Any) -> None:
    """``warnings.showwarning`` of the CLI: each warning as one ``warning: ...`` line."""
    click.echo(f"warning: {message}", err=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one clear line and exit with status 2; every plugin
    problem (``PluginManager.warnings``) prints one warning line first, on every command."""
    manager = get_manager()
    manager.add_commands(cli)
    for line in manager.warnings():
        click.echo(f"warning: {line}", err=True)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_line
            cli.main(args=argv, prog_name="secateurs", standalone_mode=False)
    except SecateursError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except (click.exceptions.Abort, KeyboardInterrupt):  # Ctrl-C: one line, nothing half-written
        from secateurs.outputs import interrupted

        click.echo(interrupted(), err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
