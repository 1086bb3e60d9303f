"""Structured logs, trace/span ids, per-stage metrics."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime

import duckdb
import pytest

from romirecon.obs import Logger, parse_traceparent, trace_id_for
from romirecon.stages.common import ensure_common_tables

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"  # W3C spec example
CLOCK = lambda: datetime(2026, 12, 2, 3, 4, 5, 678000, tzinfo=UTC)  # noqa: E731


def lines(buf: io.StringIO) -> list[dict]:
    return [json.loads(x) for x in buf.getvalue().splitlines()]


def test_traceparent_parsing() -> None:
    assert parse_traceparent(TP) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    for bad in (None, "", "garbage", "00-" + "0" * 32 + "-00f067aa0ba902b7-01",
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"):  # fmt: skip
        assert parse_traceparent(bad) is None
    assert (
        trace_id_for("4BF92F35-77B3-4DA6-A3CE-929D0E0E4736") == "4bf92f3577b34da6a3ce929d0e0e4736"
    )
    assert re.fullmatch("[0-9a-f]{32}", trace_id_for("a1b2c3"))


def test_json_lines_carry_trace_and_stage_span(monkeypatch) -> None:
    monkeypatch.setenv("TRACEPARENT", TP)
    buf = io.StringIO()
    con = duckdb.connect()
    ensure_common_tables(con)
    log = Logger("run-1", "json", stream=buf, clock=CLOCK)
    log.info("run.start", sources=2)
    with log.stage("ingest", con) as span:
        span.rows_in = 1000
        span.rows_out = 990
    recs = lines(buf)
    assert [r["event"] for r in recs] == ["run.start", "stage.start", "stage.end"]
    for r in recs:
        assert r["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
        assert r["run_id"] == "run-1" and r["component"] == "romirecon" and r["level"] == "info"
        assert r["timestamp"] == "2026-12-02T03:04:05.678000Z"
        assert re.fullmatch("[0-9a-f]{16}", r["span_id"])
    assert recs[0]["parent_span_id"] == "00f067aa0ba902b7"  # the caller's span
    assert recs[1]["span_id"] == recs[2]["span_id"] != recs[0]["span_id"]
    assert recs[2]["parent_span_id"] == recs[0]["span_id"]
    end = recs[2]
    assert (end["stage"], end["rows_in"], end["rows_out"]) == ("ingest", 1000, 990)
    assert end["duration_ms"] >= 0
    got = dict(
        con.execute(
            "SELECT name, value FROM metric WHERE run_id = 'run-1' AND stage = 'ingest'"
        ).fetchall()
    )
    assert set(got) == {
        "stage_duration_seconds", "stage_cpu_seconds", "stage_peak_rss_bytes",
        "stage_rows_in", "stage_rows_out", "stage_rows_per_second",
    }  # fmt: skip
    assert (got["stage_rows_in"], got["stage_rows_out"]) == (1000, 990)
    assert got["stage_peak_rss_bytes"] > 1_000_000  # a Python process with duckdb loaded
    assert got["stage_rows_per_second"] == pytest.approx(1000 / got["stage_duration_seconds"])


def test_trace_id_from_run_id_without_traceparent(monkeypatch) -> None:
    monkeypatch.delenv("TRACEPARENT", raising=False)
    buf = io.StringIO()
    Logger("run-1", "json", stream=buf).info("x")
    (r,) = lines(buf)
    assert r["trace_id"] == trace_id_for("run-1") and "parent_span_id" not in r
    # span ids are stable across re-runs of the same run id
    buf2 = io.StringIO()
    Logger("run-1", "json", stream=buf2).info("x")
    assert lines(buf2)[0]["span_id"] == r["span_id"]


def test_stage_error_is_logged_and_reraised() -> None:
    buf = io.StringIO()
    con = duckdb.connect()
    ensure_common_tables(con)
    log = Logger("r", "json", stream=buf, traceparent="")
    with pytest.raises(ValueError), log.stage("billing", con):
        raise ValueError("no EUR rate for 2026-01-03")
    last = lines(buf)[-1]
    assert (last["event"], last["level"]) == ("stage.error", "error")
    assert last["error"] == "ValueError: no EUR rate for 2026-01-03"
    assert con.execute("SELECT count(*) FROM metric").fetchone() == (0,)


def test_text_format_is_one_readable_line() -> None:
    buf = io.StringIO()
    log = Logger("r", "text", stream=buf, clock=CLOCK, traceparent="")
    log.warning("input.stale", source="crm", age_hours=30)
    assert buf.getvalue() == "03:04:05 WARNING input.stale source=crm age_hours=30\n"
    with pytest.raises(ValueError):
        Logger("r", "yaml")
