"""Observability: structured logs, one span per stage, per-stage resource metrics.

    log = Logger(run_id, fmt="json")            # or "text"
    with log.stage("dedup", con) as span:       # one span; metrics land in the `metric` table
        span.rows_in = ...
        ...
        span.rows_out = ...

JSON mode writes one object per line to stderr: `timestamp, level, component, event, run_id,
trace_id, span_id, parent_span_id, stage, rows_in, rows_out, duration_ms` (plus any extra fields).
The trace id is the one of a W3C `TRACEPARENT` (`00-<32 hex>-<16 hex>-<2 hex>`) when set, so a
CI job or an orchestrator can tie the run into its own trace; otherwise it is derived from the run
id (the run id itself when it is 32 hex digits). Span ids are derived from the trace id, the stage
name and its sequence number, so logs of a re-run line up.

Per stage, `stage()` appends to `metric` (stage = the stage name, source/entity NULL):
`stage_duration_seconds`, `stage_cpu_seconds` (user + system, all threads), `stage_peak_rss_bytes`
(the process's peak resident set so far: getrusage is a high-water mark), `stage_rows_in`,
`stage_rows_out`, `stage_rows_per_second` (rows in, or rows out if no input count, per second).

Text mode prints short human lines and, on a terminal, a rich progress bar for stages that report
progress (`span.progress(total)` / `span.advance(n)`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import IO, Any

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def parse_traceparent(value: str | None) -> tuple[str, str] | None:
    """(trace_id, parent_span_id) of a valid W3C traceparent header, else None."""
    if not value:
        return None
    m = _TRACEPARENT.match(value.strip().lower())
    if not m or set(m.group(1)) == {"0"} or set(m.group(2)) == {"0"}:
        return None
    if value.strip().lower().startswith("ff"):  # version ff is invalid
        return None
    return m.group(1), m.group(2)


def trace_id_for(run_id: str) -> str:
    rid = run_id.lower().replace("-", "")
    if _HEX32.match(rid) and set(rid) != {"0"}:
        return rid
    return hashlib.sha256(run_id.encode("utf-8")).hexdigest()[:32]


def _rss_bytes(maxrss: int) -> int:
    # Linux reports kilobytes, macOS bytes
    return maxrss if sys.platform == "darwin" else maxrss * 1024


class Span:
    """What a stage reports about itself while it runs."""

    def __init__(self, logger: Logger, name: str, span_id: str) -> None:
        self.logger = logger
        self.name = name
        self.span_id = span_id
        self.rows_in: int | None = None
        self.rows_out: int | None = None
        self._progress: Any = None
        self._task: Any = None

    def event(self, event: str, level: str = "info", **fields: Any) -> None:
        self.logger.event(event, level, stage=self.name, span_id=self.span_id, **fields)

    def progress(self, total: float | None, description: str | None = None) -> None:
        """Show a progress bar (text mode on a terminal only)."""
        if self.logger.fmt != "text" or not self.logger.is_tty:
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TimeElapsedColumn

        self._progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            "{task.completed:,.0f}/{task.total:,.0f}",
            TimeElapsedColumn(),
            console=Console(file=self.logger.stream),
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task(description or self.name, total=total)

    def advance(self, n: float = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def _close_progress(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class Logger:
    def __init__(
        self,
        run_id: str,
        fmt: str = "text",
        *,
        component: str = "romirecon",
        stream: IO[str] | None = None,
        level: str = "info",
        traceparent: str | None = None,
        clock: Any = None,
    ) -> None:
        if fmt not in ("text", "json"):
            raise ValueError(f"log format must be text or json, not {fmt!r}")
        self.run_id = run_id
        self.fmt = fmt
        self.component = component
        self.stream = stream if stream is not None else sys.stderr
        self.min_level = LEVELS[level]
        tp = parse_traceparent(
            traceparent if traceparent is not None else os.environ.get("TRACEPARENT")
        )
        self.trace_id, self.parent_span_id = tp if tp else (trace_id_for(run_id), None)
        self.root_span_id = self._span_id("run", 0)
        self._seq = 0
        self._clock = clock or (lambda: datetime.now(UTC))
        self.is_tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def _span_id(self, name: str, seq: int) -> str:
        return hashlib.sha256(f"{self.trace_id}/{name}/{seq}".encode()).hexdigest()[:16]

    def traceparent(self, span_id: str | None = None) -> str:
        """A W3C traceparent for a child process or request made inside a span."""
        return f"00-{self.trace_id}-{span_id or self.root_span_id}-01"

    def event(self, event: str, level: str = "info", **fields: Any) -> None:
        if LEVELS[level] < self.min_level:
            return
        ts = self._clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if self.fmt == "json":
            rec: dict[str, Any] = {
                "timestamp": ts,
                "level": level,
                "component": fields.pop("component", self.component),
                "event": event,
                "run_id": self.run_id,
                "trace_id": self.trace_id,
                "span_id": fields.pop("span_id", self.root_span_id),
            }
            parent = fields.pop("parent_span_id", None) or (
                self.root_span_id if rec["span_id"] != self.root_span_id else self.parent_span_id
            )
            if parent:
                rec["parent_span_id"] = parent
            rec.update({k: v for k, v in fields.items() if v is not None})
            self.stream.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
        else:
            extra = " ".join(
                f"{k}={v}" for k, v in fields.items() if v is not None and k != "span_id"
            )
            self.stream.write(
                f"{ts[11:19]} {level.upper():7} {event}" + (f" {extra}" if extra else "") + "\n"
            )
        self.stream.flush()

    def info(self, event: str, **fields: Any) -> None:
        self.event(event, "info", **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self.event(event, "warning", **fields)

    def error(self, event: str, **fields: Any) -> None:
        self.event(event, "error", **fields)

    @contextmanager
    def stage(self, name: str, con: Any = None) -> Iterator[Span]:
        """Time a stage, log its start and end (or error), append its metrics to `metric`."""
        pieces = self.stage_in_pieces(name, con)
        with pieces.piece() as span:
            yield span
        pieces.end()

    def stage_in_pieces(self, name: str, con: Any = None) -> StagePieces:
        """A stage whose work comes in pieces interleaved with another stage's (ingest and
        contract alternate source by source, so one source's raw rows exist at a time): one
        stage.start now, one stage.end at `end()` with the pieces' summed time and CPU."""
        self._seq += 1
        return StagePieces(self, Span(self, name, self._span_id(name, self._seq)), con)

    def _end_stage(self, span: Span, con: Any, elapsed: float, cpu: float) -> None:
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        rss = _rss_bytes(r1.ru_maxrss)
        name = span.name
        rows = span.rows_in if span.rows_in is not None else span.rows_out
        rate = (rows / elapsed) if rows is not None and elapsed > 0 else None
        span.event(
            "stage.end",
            rows_in=span.rows_in,
            rows_out=span.rows_out,
            duration_ms=round(elapsed * 1000, 3),
            cpu_ms=round(cpu * 1000, 3),
            peak_rss_bytes=rss,
        )
        if con is not None:
            record_stage_metrics(
                con,
                self.run_id,
                name,
                duration=elapsed,
                cpu=cpu,
                peak_rss=rss,
                rows_in=span.rows_in,
                rows_out=span.rows_out,
                rows_per_second=rate,
            )


class StagePieces:
    """See `Logger.stage_in_pieces`."""

    def __init__(self, logger: Logger, span: Span, con: Any) -> None:
        self.logger, self.span, self.con = logger, span, con
        self.elapsed = 0.0
        self.cpu = 0.0
        span.event("stage.start")

    @contextmanager
    def piece(self) -> Iterator[Span]:
        span = self.span
        t0 = time.perf_counter()
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        try:
            yield span
        except BaseException as exc:
            span._close_progress()
            self.elapsed += time.perf_counter() - t0
            span.event(
                "stage.error",
                "error",
                duration_ms=round(self.elapsed * 1000, 3),
                error=f"{type(exc).__name__}: {exc}",
            )
            raise
        self.elapsed += time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        self.cpu += (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)

    def end(self) -> None:
        self.span._close_progress()
        self.logger._end_stage(self.span, self.con, self.elapsed, self.cpu)


def record_stage_metrics(
    con: Any,
    run_id: str,
    stage: str,
    *,
    duration: float,
    cpu: float,
    peak_rss: int,
    rows_in: int | None,
    rows_out: int | None,
    rows_per_second: float | None,
) -> None:
    from romirecon.stages.common import METRIC_DDL

    con.execute(METRIC_DDL)
    rows = [
        ("stage_duration_seconds", duration, "seconds"),
        ("stage_cpu_seconds", cpu, "seconds"),
        ("stage_peak_rss_bytes", float(peak_rss), "bytes"),
        ("stage_rows_in", rows_in, "rows"),
        ("stage_rows_out", rows_out, "rows"),
        ("stage_rows_per_second", rows_per_second, "rows/s"),
    ]
    con.executemany(
        "INSERT INTO metric VALUES (?, ?, NULL, NULL, ?, ?, NULL, NULL, ?)",
        [
            [run_id, stage, n, None if v is None else float(v), u]
            for n, v, u in rows
            if v is not None
        ],
    )


def console_summary(report: Any, stream: IO[str] | None = None) -> None:
    """A rich table of the checks that need attention, for text mode."""
    from rich.console import Console
    from rich.table import Table

    from romirecon.report.thresholds import fmt_value

    out = stream or sys.stderr
    tty = bool(getattr(out, "isatty", lambda: False)())
    console = Console(file=out, highlight=False, width=None if tty else 160)
    colors = {"pass": "green", "warn": "yellow", "fail": "red", "skipped": "dim"}
    counts = report.counts()
    status_color = colors.get(report.status, "magenta")
    console.print(
        f"SLA [bold {status_color}]{report.status.upper()}[/]: {counts['fail']} failed, "
        f"{counts['warn']} warnings, {counts['pass']} passed, {counts['skipped']} skipped",
        markup=True,
    )
    shown = [c for c in report.checks if c.status in ("fail", "warn")]
    if not shown:
        return
    table = Table(show_header=True, header_style="bold")
    for col in ("status", "check", "observed", "warn", "fail"):
        table.add_column(col)
    from rich.text import Text

    for c in shown:
        unit = c.unit if c.measure == "value" else ""
        table.add_row(
            Text(c.status, style=colors[c.status]),
            Text(c.id),
            Text(fmt_value(c.observed, unit)),
            Text(fmt_value(c.warn, unit)),
            Text(fmt_value(c.fail, unit)),
        )
    console.print(table)
