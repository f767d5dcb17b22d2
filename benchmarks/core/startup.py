"""How fast the command line answers: wall time of ``secateurs --help``, of every
``secateurs COMMAND --help`` and of ``secateurs plugins`` (median of ``--runs`` runs, each a
fresh process of the installed ``secateurs`` script, bytecode cached), whether each imported
torch, and the same for the root ``--help`` and ``plugins`` with no bytecode cache (every
module compiled, as on a read-only install). Goals (issue 23): every ``--help`` <= 0.5 s
without importing torch, ``plugins`` <= 2 s.

``--before REF`` measures a git revision too, in the same run: its ``*/src`` folders
(checked out into a temporary worktree) are put first on ``PYTHONPATH``.

Run:  flock /tmp/heavy.lock .venv/bin/python benchmarks/core/startup.py [--runs 5] [--before REF]
Writes benchmarks/results/core_startup.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from results_io import write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).parent / "secateurs"
GOALS = {"help_s": 0.5, "plugins_s": 2.0}
HEAVY = ("torch", "timm", "torchvision", "transformers", "matplotlib")
PROBE = (
    "import sys\nfrom secateurs.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
    f"print('\\0' + ','.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)"
)


def commands() -> list[list[str]]:
    """``--help``, ``COMMAND --help`` for every command of this checkout, then ``plugins``."""
    import click

    from secateurs.cli import cli

    names = cli.list_commands(click.Context(cli))
    return [["--help"], *([name, "--help"] for name in names), ["plugins"]]


def wall(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def heavy_imports(args: list[str], env: dict[str, str]) -> list[str]:
    err = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True).stderr
    return [m for m in err.rpartition("\0")[2].strip().split(",") if m]


def measure(args: list[str], env: dict[str, str], runs: int) -> dict:
    times = [wall([str(SCRIPT), *args], env) for _ in range(runs)]
    return {"median_s": round(statistics.median(times), 3), "runs_s": [round(t, 3) for t in times],
            "heavy_imports": heavy_imports(args, env)}


def cold(args: list[str], env: dict[str, str], runs: int) -> dict:
    """No usable bytecode: every module (torch's too, if imported) compiled from source."""
    with tempfile.TemporaryDirectory() as empty:
        env = {**env, "PYTHONPYCACHEPREFIX": empty, "PYTHONDONTWRITEBYTECODE": "1"}
        times = [wall([str(SCRIPT), *args], env) for _ in range(runs)]
    return {"median_s": round(statistics.median(times), 3), "runs_s": [round(t, 3) for t in times]}


def environments(before: str | None, tmp: Path) -> dict[str, dict[str, str]]:
    envs = {"after": dict(os.environ)}
    if before is not None:
        tree = tmp / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), before],
                       check=True, capture_output=True)
        sources = sorted(str(p) for p in tree.glob("*/src")) + sorted(str(p) for p in tree.glob("*/*/src"))
        envs["before"] = {**os.environ, "PYTHONPATH": os.pathsep.join(sources)}
    return envs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per command (median reported)")
    parser.add_argument("--before", metavar="REF", help="also measure this git revision (e.g. the commit before the change)")
    parser.add_argument("--name", default="core_startup")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        envs = environments(args.before, Path(tmp))
        for env in envs.values():  # write the bytecode, fill the file cache
            wall([str(SCRIPT), "plugins"], env)
        try:
            results: dict[str, dict] = {}
            for argv in commands():
                key = "secateurs " + " ".join(argv)
                results[key] = {label: measure(argv, env, args.runs) for label, env in envs.items()}
                print(key, {label: r["median_s"] for label, r in results[key].items()}, flush=True)
            no_bytecode = {
                "secateurs " + " ".join(argv): {label: cold(argv, env, max(1, args.runs // 2)) for label, env in envs.items()}
                for argv in (["--help"], ["plugins"])
            }
            print("no bytecode", {k: {l: r["median_s"] for l, r in v.items()} for k, v in no_bytecode.items()})
        finally:
            if args.before is not None:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(Path(tmp) / "before")],
                               check=False, capture_output=True)
    helps = [r["after"] for k, r in results.items() if k.endswith("--help")]
    met = {
        "help_within_goal": all(r["median_s"] <= GOALS["help_s"] and not r["heavy_imports"] for r in helps),
        "plugins_within_goal": results["secateurs plugins"]["after"]["median_s"] <= GOALS["plugins_s"],
    }
    path = write_results(args.name, {
        "command": " ".join(["benchmarks/core/startup.py", *sys.argv[1:]]),
        "goals": GOALS, "met": met, "before_ref": args.before, "runs": args.runs,
        "warm": results, "no_bytecode": no_bytecode,
    })
    print(met, "->", path)


if __name__ == "__main__":
    main()
