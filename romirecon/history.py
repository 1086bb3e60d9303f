"""Run history in the state database: every run's metrics, for trends and the anomaly check.

Tables (created on first use, never dropped):
- `sla_run`: `run_id, project, started_at, finished_at, status` (one row per run)
- `sla_history`: `run_id, finished_at, name, source_name, entity, label, value, numerator,
  denominator, unit` (one row per metric per run)

Re-recording a run id replaces its rows, so evaluating a run twice equals evaluating it once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import duckdb

from romirecon.report.model import HistoryPoint, HistorySeries, Metric

RUN_DDL = """
CREATE TABLE IF NOT EXISTS sla_run (
    run_id VARCHAR, project VARCHAR, started_at VARCHAR, finished_at VARCHAR, status VARCHAR
)"""

HISTORY_DDL = """
CREATE TABLE IF NOT EXISTS sla_history (
    run_id VARCHAR, finished_at VARCHAR, name VARCHAR, source_name VARCHAR, entity VARCHAR,
    label VARCHAR, value DOUBLE, numerator DOUBLE, denominator DOUBLE, unit VARCHAR
)"""

# runs whose metrics are trusted as a baseline (an errored run's numbers are partial)
_BASELINE_STATUSES = ("pass", "warn", "fail")


def ensure_history_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(RUN_DDL)
    con.execute(HISTORY_DDL)


def _f(x: float | None) -> float | None:
    return None if x is None else float(x)


def record_run(
    con: duckdb.DuckDBPyConnection,
    *,
    run_id: str,
    project: str,
    started_at: str | None,
    finished_at: str | None,
    status: str,
    metrics: Iterable[Metric],
) -> None:
    """Append (or replace) this run and its metrics."""
    import pyarrow as pa

    ensure_history_tables(con)
    ms = list(metrics)
    text = pa.string()
    batch = pa.table(
        {
            "run_id": pa.array([run_id] * len(ms), type=text),
            "finished_at": pa.array([finished_at] * len(ms), type=text),
            "name": pa.array([m.name for m in ms], type=text),
            "source_name": pa.array([m.source_name for m in ms], type=text),
            "entity": pa.array([m.entity for m in ms], type=text),
            "label": pa.array([m.label for m in ms], type=text),
            "value": pa.array([_f(m.value) for m in ms], type=pa.float64()),
            "numerator": pa.array([_f(m.numerator) for m in ms], type=pa.float64()),
            "denominator": pa.array([_f(m.denominator) for m in ms], type=pa.float64()),
            "unit": pa.array([m.unit for m in ms], type=text),
        }
    )
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM sla_history WHERE run_id = ?", [run_id])
        con.execute("DELETE FROM sla_run WHERE run_id = ?", [run_id])
        con.execute(
            "INSERT INTO sla_run VALUES (?, ?, ?, ?, ?)",
            [run_id, project, started_at, finished_at, status],
        )
        con.register("_sla_history_batch", batch)
        con.execute("INSERT INTO sla_history BY NAME SELECT * FROM _sla_history_batch")
        con.unregister("_sla_history_batch")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def has_history(con: duckdb.DuckDBPyConnection) -> bool:
    names = {
        r[0]
        for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_name IN (?, ?)",
            ["sla_run", "sla_history"],
        ).fetchall()
    }
    return names == {"sla_run", "sla_history"}


def _recent_runs_sql(limit_param: bool = True) -> str:
    """Previous runs usable as a baseline, newest first (finished_at, then run_id: total order)."""
    statuses = ", ".join("?" for _ in _BASELINE_STATUSES)
    return (
        "SELECT run_id, finished_at FROM sla_run "
        f"WHERE run_id <> ? AND status IN ({statuses}) "
        "ORDER BY finished_at DESC NULLS LAST, run_id DESC" + (" LIMIT ?" if limit_param else "")
    )


def previous_values(
    con: duckdb.DuckDBPyConnection, run_id: str
) -> dict[tuple[str, str | None, str | None, str | None], tuple[float | None, float | None]]:
    """(value, numerator) of every metric in the newest baseline run before `run_id`."""
    if not has_history(con):
        return {}
    rows = con.execute(
        f"""
        WITH prev AS ({_recent_runs_sql()})
        SELECT h.name, h.source_name, h.entity, h.label, h.value, h.numerator
        FROM sla_history h JOIN prev USING (run_id)
        ORDER BY h.name, h.source_name, h.entity, h.label
        """,
        [run_id, *_BASELINE_STATUSES, 1],
    ).fetchall()
    return {(r[0], r[1], r[2], r[3]): (r[4], r[5]) for r in rows}


@dataclass(frozen=True)
class Baseline:
    name: str
    source_name: str | None
    entity: str | None
    label: str | None
    runs: int
    median: float
    mad: float


def baselines_sql() -> str:
    """Median and MAD of every metric over the last N baseline runs (parameters: run id, the
    baseline statuses, N)."""
    return f"""
    WITH recent AS ({_recent_runs_sql()}),
    h AS (
        SELECT h.name, h.source_name, h.entity, h.label, h.value
        FROM sla_history h JOIN recent r USING (run_id)
        WHERE h.value IS NOT NULL AND isfinite(h.value)
    ),
    med AS (
        SELECT name, source_name, entity, label, count(*) AS runs, median(value) AS m
        FROM h GROUP BY ALL
    )
    SELECT med.name, med.source_name, med.entity, med.label, med.runs, med.m,
           median(abs(h.value - med.m)) AS mad
    FROM med JOIN h
      ON h.name = med.name
     AND h.source_name IS NOT DISTINCT FROM med.source_name
     AND h.entity IS NOT DISTINCT FROM med.entity
     AND h.label IS NOT DISTINCT FROM med.label
    GROUP BY ALL
    ORDER BY med.name, med.source_name NULLS FIRST, med.entity NULLS FIRST, med.label NULLS FIRST
    """


def baselines(con: duckdb.DuckDBPyConnection, run_id: str, window: int) -> list[Baseline]:
    if not has_history(con):
        return []
    rows = con.execute(baselines_sql(), [run_id, *_BASELINE_STATUSES, window]).fetchall()
    return [Baseline(r[0], r[1], r[2], r[3], int(r[4]), float(r[5]), float(r[6])) for r in rows]


def series(
    con: duckdb.DuckDBPyConnection,
    names: list[str],
    *,
    limit: int = 30,
    include_run: str | None = None,
) -> list[HistorySeries]:
    """The last `limit` runs of each metric named, oldest first, one series per scope."""
    if not has_history(con) or not names:
        return []
    marks = ", ".join("?" for _ in names)
    rows = con.execute(
        f"""
        WITH runs AS (
            SELECT run_id, finished_at FROM sla_run
            WHERE status IN ({", ".join("?" for _ in _BASELINE_STATUSES)}) OR run_id = ?
            ORDER BY finished_at DESC NULLS LAST, run_id DESC LIMIT ?
        )
        SELECT h.name, h.source_name, h.entity, h.label, h.unit, h.run_id, r.finished_at, h.value
        FROM sla_history h JOIN runs r USING (run_id)
        WHERE h.name IN ({marks})
        ORDER BY h.name, h.source_name NULLS FIRST, h.entity NULLS FIRST, h.label NULLS FIRST,
                 r.finished_at NULLS FIRST, h.run_id
        """,
        [*_BASELINE_STATUSES, include_run or "", limit, *names],
    ).fetchall()
    out: list[HistorySeries] = []
    for name, src, ent, label, unit, rid, fin, value in rows:
        if not out or (out[-1].metric, out[-1].source_name, out[-1].entity, out[-1].label) != (
            name,
            src,
            ent,
            label,
        ):
            out.append(HistorySeries(name, src, ent, label, unit or "", []))
        out[-1].points.append(HistoryPoint(rid, fin or "", value))
    return out


@dataclass(frozen=True)
class Trend:
    """One metric scope over the last runs (oldest first)."""

    name: str
    source_name: str | None
    entity: str | None
    label: str | None
    unit: str
    runs: list[str]
    values: list[float | None]


def runs(con: duckdb.DuckDBPyConnection, limit: int = 20) -> list[tuple[str, str, str]]:
    """(run_id, finished_at, status) of the last `limit` runs, oldest first."""
    if not has_history(con):
        return []
    rows = con.execute(
        "SELECT run_id, finished_at, status FROM sla_run "
        "ORDER BY finished_at DESC NULLS LAST, run_id DESC LIMIT ?",
        [limit],
    ).fetchall()
    return [(r[0], r[1] or "", r[2]) for r in reversed(rows)]


def trends(
    con: duckdb.DuckDBPyConnection, metric: str | None = None, limit: int = 20
) -> list[Trend]:
    """Every metric (or one) over the last `limit` runs; a run without the metric is None."""
    recent = runs(con, limit)
    if not recent:
        return []
    ids = [r[0] for r in recent]
    marks = ", ".join("?" for _ in ids)
    where = " AND name = ?" if metric else ""
    rows = con.execute(
        f"""
        SELECT name, source_name, entity, label, any_value(unit ORDER BY run_id) AS unit,
               map(list(run_id ORDER BY run_id), list(value ORDER BY run_id)) AS v
        FROM sla_history WHERE run_id IN ({marks}){where}
        GROUP BY name, source_name, entity, label
        ORDER BY name, source_name NULLS FIRST, entity NULLS FIRST, label NULLS FIRST
        """,
        [*ids, *([metric] if metric else [])],
    ).fetchall()
    out = []
    for name, src, ent, label, unit, v in rows:
        values = dict(v)
        out.append(Trend(name, src, ent, label, unit or "", ids, [values.get(i) for i in ids]))
    return out


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float | None]) -> str:
    """A unicode sparkline; gaps (no value) are spaces."""
    present = [v for v in values if v is not None]
    if not present:
        return " " * len(values)
    lo, hi = min(present), max(present)
    span = hi - lo
    out = []
    for v in values:
        if v is None:
            out.append(" ")
        else:
            out.append(SPARKS[0 if span == 0 else round((v - lo) / span * (len(SPARKS) - 1))])
    return "".join(out)
