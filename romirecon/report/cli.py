"""`romirecon history`: the trend of every SLA metric over the recorded runs.

Registered on the main group at the end of `romirecon/cli.py`; heavy imports stay inside the
command so `romirecon --help` stays instant.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from romirecon.exitcodes import RomireconError


@click.command("history")
@click.option(
    "--project",
    "project",
    type=click.Path(path_type=Path),
    default=None,
    help="Project folder (or romirecon.yaml). Default: the current folder.",
)
@click.option("--metric", "metric", default=None, help="Only this metric (e.g. duplicate_rate).")
@click.option("--runs", "limit", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="How many recent runs to show.")  # fmt: skip
def history(project: Path | None, metric: str | None, limit: int) -> None:
    """Show each SLA metric over the recent runs (from the state database)."""
    try:
        lines = history_lines(project, metric, limit)
    except RomireconError as e:
        click.echo(f"romirecon: error: {e.message}", err=True)
        for line in e.details:
            click.echo(f"  - {line}", err=True)
        sys.exit(int(e.exit_code))
    for line in lines:
        click.echo(line)


def history_lines(
    project: str | Path | None, metric: str | None = None, limit: int = 20
) -> list[str]:
    """The text `romirecon history` prints (callable without click)."""
    import duckdb

    from romirecon import history as hist
    from romirecon.config import did_you_mean, load_project
    from romirecon.db import STATE_DB
    from romirecon.exitcodes import ConfigError, LockedError
    from romirecon.report.thresholds import fmt_value

    proj = load_project(project)
    path = proj.state_dir / STATE_DB
    if not path.exists():
        return [f"no runs recorded yet ({path} does not exist)"]
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.IOException as e:
        raise LockedError(
            f"{path}: cannot open the state database ({str(e).splitlines()[0]})"
        ) from None
    try:
        recent = hist.runs(con, limit)
        if not recent:
            return ["no runs recorded yet"]
        trends = hist.trends(con, metric, limit)
        if metric and not trends:
            known = [r[0] for r in con.execute("SELECT DISTINCT name FROM sla_history").fetchall()]
            raise ConfigError(f"--metric: no metric named '{metric}'{did_you_mean(metric, known)}")
    finally:
        con.close()
    first, last = recent[0], recent[-1]
    out = [
        f"{len(recent)} runs from {first[1] or '?'} to {last[1] or '?'}; "
        f"latest {last[0]} ({last[2]})",
        f"statuses: {' '.join(r[2][:1].upper() for r in recent)}  (oldest first)",
        "",
    ]
    width = max(len(_scope_name(t)) for t in trends) if trends else 0
    for t in trends:
        values = [v for v in t.values if v is not None]
        latest = t.values[-1]
        prev = next((v for v in reversed(t.values[:-1]) if v is not None), None)
        delta = ""
        if latest is not None and prev is not None:
            d = latest - prev
            delta = f" ({'+' if d >= 0 else '-'}{fmt_value(abs(d), t.unit)} vs previous)"
        rng = (
            f" range {fmt_value(min(values), t.unit)}..{fmt_value(max(values), t.unit)}"
            if values
            else ""
        )
        out.append(
            f"{_scope_name(t):<{width}}  {hist.sparkline(t.values)}  "
            f"latest {fmt_value(latest, t.unit)}{delta}{rng}"
        )
    return out


def _scope_name(t: object) -> str:
    from romirecon.report.thresholds import check_id

    return check_id(t.name, t.source_name, t.entity, t.label)  # type: ignore[attr-defined]
