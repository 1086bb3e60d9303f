"""Tables every stage may append to: `metric` and `finding` (see HACKING.md)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import duckdb

METRIC_DDL = """
CREATE TEMP TABLE IF NOT EXISTS metric (
    run_id VARCHAR, stage VARCHAR, source_name VARCHAR, entity VARCHAR, name VARCHAR,
    value DOUBLE, numerator DOUBLE, denominator DOUBLE, unit VARCHAR
)"""

FINDING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS finding (
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


def entity_table_ddl(entity: str, name: str | None = None) -> str:
    """CREATE TABLE for an empty staged table of `entity`: canonical columns then provenance."""
    from romirecon.model import ENTITIES, PROVENANCE, TYPES
    from romirecon.sqlutil import ident

    cols = [f"{ident(c.name)} {TYPES[c.type]}" for c in ENTITIES[entity].values()]
    cols += [f"{ident(n)} {t}" for n, t in PROVENANCE.items()]
    return f"CREATE TABLE {ident(name or 'stg_' + entity)} ({', '.join(cols)})"


def record_view_name(entity: str) -> str:
    """The temp view of `stg_<entity>`'s rows with their record number `rid`
    (`contract.record_numbers_sql`)."""
    return f"rec_{entity}"


def record_view(con: duckdb.DuckDBPyConnection, entity: str) -> str | None:
    """The name of `entity`'s record-number view when this run created one, else None (an
    unpivoted source, or a connection whose entity views were not made by the contract
    stage): callers then number rows by a window over provenance."""
    name = record_view_name(entity)
    row = con.execute(
        "SELECT count(*) FROM duckdb_views() WHERE view_name = ? AND temporary", [name]
    ).fetchall()[0]
    return name if row[0] else None


def ensure_entity_views(con: duckdb.DuckDBPyConnection) -> None:
    """Guarantee a `stg_<entity>` relation for every canonical entity (empty when no source
    feeds it), so later stages never have to ask whether a table exists."""
    from romirecon.model import ENTITIES

    existing = {
        r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
    }
    for entity in ENTITIES:
        if f"stg_{entity}" not in existing:
            con.execute(entity_table_ddl(entity))


def drop_relation(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Drop a table or view of that name, whichever it is (a previous run may have left either)."""
    from romirecon.sqlutil import ident

    # temp and persistent relations alike (an older version kept raw_* in the state database)
    kinds = con.execute(
        "SELECT table_catalog, table_schema, table_type FROM information_schema.tables "
        "WHERE table_name = ? AND table_schema = current_schema()",
        [name],
    ).fetchall()
    for catalog, schema, kind in kinds:
        con.execute(
            f"DROP {'VIEW' if kind == 'VIEW' else 'TABLE'} IF EXISTS "
            f"{ident(catalog)}.{ident(schema)}.{ident(name)}"
        )


def exec_sql(con: duckdb.DuckDBPyConnection, sql: str, params: object = None) -> None:
    """Execute one statement, with parameters when there are any."""
    if params is None:
        con.execute(sql)
    else:
        con.execute(sql, params)


def table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    row = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
    ).fetchone()
    return bool(row and row[0])


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """One transaction around a piece of work (a stage; one source's ingest + contract).

    DuckDB keeps the data of every table dropped inside a transaction until that transaction
    commits (a rollback could bring it back), temp tables included. The scratch tables of a whole
    run inside one transaction therefore all stayed alive: 19 GB spilled at 1M customers. A
    transaction per piece frees them at its end, and still syncs the WAL once per piece rather
    than once per statement. On an error the piece is rolled back."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
