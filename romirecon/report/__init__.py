"""The SLA report: one model (`romirecon.report.model`), five writers reading it.

`write_all(report, out_dir)` renders every file in memory first, then replaces each atomically,
so a failing writer leaves the previous files in place. `error_report(...)` builds the report of a
run that died (exit 3) so CI still gets a junit `<error>` and Prometheus a fresh status.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from romirecon.report.model import Report

FILES = ("sla_report.json", "sla_report.md", "sla_report.html", "junit.xml", "metrics.prom")

__all__ = ["FILES", "error_report", "render_all", "write_all", "write_error_report"]


def render_all(report: Report, out_dir: Path) -> dict[str, str]:
    """Every output file's text, keyed by file name."""
    from romirecon.report import to_html, to_json, to_junit, to_markdown, to_prom

    prom = out_dir / "metrics.prom"
    try:
        previous = prom.read_text("utf-8") if prom.exists() else None
    except (OSError, UnicodeDecodeError):
        previous = None
    return {
        "sla_report.json": to_json.render(report),
        "sla_report.md": to_markdown.render(report),
        "sla_report.html": to_html.render(report),
        "junit.xml": to_junit.render(report),
        "metrics.prom": to_prom.render(report, previous),
    }


def write_all(report: Report, out_dir: Path) -> list[Path]:
    """Write the five report files into `out_dir` (created if needed), each atomically; append
    the Markdown to `$GITHUB_STEP_SUMMARY` when that is set. Returns the paths written."""
    from romirecon.report._atomic import write_atomic

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    texts = render_all(report, out_dir)
    paths = [write_atomic(out_dir / name, texts[name]) for name in FILES]
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        try:
            with open(summary, "a", encoding="utf-8") as f:
                f.write(texts["sla_report.md"] + "\n")
        except OSError:
            pass  # a CI nicety: never fail the run over it
    return paths


def error_report(
    run_id: str,
    message: str,
    *,
    project: str = "",
    started_at: datetime | None = None,
    now: datetime | None = None,
    fail_on: str = "fail",
    status: str = "error",
) -> Report:
    """The report of a run that could not finish: status `error` (exit 3), or `inconclusive`
    (exit 4) for a missing, empty or stale input."""
    from romirecon import __version__
    from romirecon.report.model import Report

    def iso(ts: datetime) -> str:
        return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    return Report(
        run_id=run_id,
        status=status,
        project=project,
        started_at=iso(started_at) if started_at else None,
        finished_at=iso(now or datetime.now(UTC)),
        fail_on=fail_on,
        tool_version=__version__,
        error=message,
    )


def write_error_report(
    out_dir: Path,
    run_id: str,
    message: str,
    *,
    con: object | None = None,
    **kwargs: object,
) -> list[Path]:
    """Build `error_report(...)`, record it in the history (when a state connection is given, so
    the trend shows the failed run) and write the five files."""
    report = error_report(run_id, message, **kwargs)  # type: ignore[arg-type]
    if con is not None:
        from romirecon import history

        history.record_run(
            con,  # type: ignore[arg-type]
            run_id=run_id,
            project=report.project,
            started_at=report.started_at,
            finished_at=report.finished_at,
            status=report.status,
            metrics=[],
        )
    return write_all(report, out_dir)
