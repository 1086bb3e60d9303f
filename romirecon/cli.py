"""The command line: thin click commands over `romirecon.api`.

Each command parses options, makes one library call and turns `RomireconError` into a one-line
message and its exit code. Heavy modules (duckdb, polars) are imported inside the library calls so
`romirecon --help` stays instant.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from romirecon import __version__
from romirecon.exitcodes import ExitCode, RomireconError

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int) -> None:
    click.echo(f"romirecon: error: {message}", err=True)
    sys.exit(code)


def handle_errors(fn: F) -> F:
    """Turn library errors into a clean message and exit code; --debug shows the traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        debug = bool(ctx.find_root().params.get("debug"))
        try:
            return fn(*args, **kwargs)
        except RomireconError as e:
            if debug:
                raise
            click.echo(f"romirecon: error: {e.message}", err=True)
            for line in e.details:
                click.echo(f"  - {line}", err=True)
            sys.exit(int(e.exit_code))
        except KeyboardInterrupt:
            _fail("interrupted", int(ExitCode.RUNTIME))
        except Exception as e:  # an internal bug: still one line, with the way to see more
            if debug:
                raise
            _fail(
                f"internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                "(run with --debug for the traceback)",
                int(ExitCode.RUNTIME),
            )

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="romirecon")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
def main(debug: bool) -> None:
    """Deduplicate and reconcile CRM, ERP, billing and ad-platform exports into a ROMI table.

    Exit codes: 0 pass, 1 SLA breached, 2 usage or config error, 3 runtime error (results
    incomplete), 4 inconclusive (an input missing, empty or stale).
    """
    from romirecon.stages.normalize import allow_process_pool

    allow_process_pool()  # the console script guards its main module (see PROCESS_POOL)


project_option = click.option(
    "--project",
    "project",
    type=click.Path(path_type=Path),
    default=None,
    help="Project folder (or romirecon.yaml). Default: the current folder.",
)


@main.command()
@project_option
@click.option(
    "--out", type=click.Path(path_type=Path), help="Output folder (default: outputs.dir)."
)
@click.option(
    "--fail-on",
    type=click.Choice(["warn", "fail", "never"]),
    default="fail",
    show_default=True,
    help="Which check status makes the exit code 1.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Console summary (text) or one JSON object per log line on stderr (json).",
)
@click.option("--show-pii", is_flag=True, help="Show emails and names in logs and reports.")
@handle_errors
def run(
    project: Path | None, out: Path | None, fail_on: str, log_format: str, show_pii: bool
) -> None:
    """Run the whole pipeline: ingest, contract, dedup, billing, reconcile, ROMI, SLA."""
    from romirecon import api

    result = api.run(
        project, out_dir=out, fail_on=fail_on, log_format=log_format, show_pii=show_pii
    )
    sys.exit(int(result.exit_code))


@main.command()
@project_option
@handle_errors
def validate(project: Path | None) -> None:
    """Check the project file, every mapping, and every export's header without running."""
    from romirecon import api

    report = api.validate(project)
    for line in report.lines:
        click.echo(line)
    sys.exit(int(report.exit_code))


@main.command()
@click.argument("directory", type=click.Path(path_type=Path), default=".")
@click.option("--force", is_flag=True, help="Overwrite an existing romirecon.yaml.")
@handle_errors
def init(directory: Path, force: bool) -> None:
    """Scaffold a project folder with a commented romirecon.yaml."""
    from romirecon import api

    path = api.init_project(directory, force=force)
    click.echo(f"wrote {path}")


def _register_commands() -> None:
    """Commands that live with their feature's package (their heavy imports stay lazy)."""
    from romirecon.dedup.cli import dedupe, explain
    from romirecon.generate.cli import generate
    from romirecon.report.cli import history

    for command in (dedupe, explain, generate, history):
        main.add_command(command)


_register_commands()
