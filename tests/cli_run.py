"""Running the CLI in-process in tests (imported by name)."""

from __future__ import annotations

from secateurs.cli import main


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """``secateurs ARGS`` in this process: exit code, stdout, stderr."""
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err
