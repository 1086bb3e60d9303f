"""Tables every stage may append to: `metric` and `finding` (see HACKING.md)."""

from __future__ import annotations

import duckdb

METRIC_DDL = """
CREATE TABLE IF NOT EXISTS metric (
    run_id VARCHAR, stage VARCHAR, source_name VARCHAR, entity VARCHAR, name VARCHAR,
    value DOUBLE, numerator DOUBLE, denominator DOUBLE, unit VARCHAR
)"""

FINDING_DDL = """
CREATE TABLE IF NOT EXISTS finding (
    run_id VARCHAR, stage VARCHAR, code VARCHAR, severity VARCHAR, source_name VARCHAR,
    entity VARCHAR, record_id VARCHAR, other_id VARCHAR, message VARCHAR, detail VARCHAR
)"""


def ensure_common_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(METRIC_DDL)
    con.execute(FINDING_DDL)


def add_metric(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    stage: str,
    name: str,
    value: float | None,
    *,
    source_name: str | None = None,
    entity: str | None = None,
    numerator: float | None = None,
    denominator: float | None = None,
    unit: str = "",
) -> None:
    con.execute(
        "INSERT INTO metric VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [run_id, stage, source_name, entity, name, value, numerator, denominator, unit],
    )
