"""The state database (DuckDB) and the run lock on the state folder."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType

import duckdb

from romirecon.config import Project
from romirecon.exitcodes import LockedError
from romirecon.sqlutil import literal

STATE_DB = "romirecon.duckdb"
LOCK_FILE = "run.lock"
DEFAULT_MEMORY_LIMIT = "4GB"


def configure(con: duckdb.DuckDBPyConnection, project: Project | None = None) -> None:
    """Session settings every run uses: UTC, insertion order kept (deterministic outputs), and the
    project's memory limit / temp folder so DuckDB spills to disk instead of failing."""
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = true")
    if project is None:
        return
    # DuckDB's own default is 80% of RAM; a nightly job shares the machine, so the default
    # here is 4 GB and DuckDB spills to the temp folder beyond it (state.memory_limit overrides)
    con.execute(f"SET memory_limit = {literal(project.memory_limit or DEFAULT_MEMORY_LIMIT)}")
    if project.threads:
        con.execute(f"SET threads = {int(project.threads)}")
    temp = project.temp_dir or (project.state_dir / "tmp")
    temp.mkdir(parents=True, exist_ok=True)
    con.execute(f"SET temp_directory = {literal(str(temp))}")


# What the state database file keeps: what the next run or a later command reads (golden ids,
# SLA history) and, for inspection, the last run's staged inputs with their quarantine and
# ingest statistics. Every other table of a run is TEMP: in memory, spilled to temp_dir beyond
# memory_limit, gone when the run ends. Writing them to the file cost a compressing write each
# (a third of a persistent CREATE TABLE ... AS is the write) that no later reader used, and the
# file grew by gigabytes at 1M customers.
KEEP_TABLES = frozenset(
    {"golden_id_map", "sla_run", "sla_history", "quarantine", "ingest_stats", "phone_e164_cache"}
)
KEEP_PREFIXES = ("staged_", "stg_")


def kept(name: str) -> bool:
    """Whether a relation of this name belongs in the state database file."""
    return name in KEEP_TABLES or name.startswith(KEEP_PREFIXES)


# Tables of a run that `state.keep_tables` may copy into the state database at the end of the
# run, for inspection (the schema's enum lists the same names); replaced by every run.
KEEPABLE = (
    "attribution_conversion", "attribution_credit", "billing_duplicate", "conversion",
    "duplicates", "entity_link", "entity_xref", "finding", "golden_account", "golden_contact",
    "metric", "recon_link", "reconciliation", "revenue", "revenue_adjustment", "revenue_event",
    "revenue_item", "romi", "romi_lineage", "touchpoint",
)  # fmt: skip


def keep_tables(con: duckdb.DuckDBPyConnection, names: tuple[str, ...] | list[str]) -> None:
    """Copy these TEMP tables of the run into the state database (`state.keep_tables`), each
    replacing the previous run's copy; one a run did not build is skipped. The next run drops
    them when it opens the database (`drop_stale`) and writes them again at its end, so a
    stage never sees a previous run's copy."""
    from romirecon.sqlutil import ident

    built = {
        r[0]
        for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall()
    }
    for name in names:
        if name in built:
            con.execute(
                f"CREATE OR REPLACE TABLE main.{ident(name)} AS SELECT * FROM temp.main.{ident(name)}"
            )


def drop_stale(con: duckdb.DuckDBPyConnection) -> None:
    """Drop the persistent tables and views earlier versions left in the state database (per-run
    tables, now TEMP; `metric`/`finding`, which grew by every run's rows while only the run's
    own were read): a persistent copy would shadow nothing but would still be listed, and read
    stale, by a check for a table's existence."""
    from romirecon.sqlutil import ident

    rows = con.execute(
        "SELECT table_name, 'TABLE' FROM duckdb_tables() WHERE NOT temporary "
        "AND database_name = current_database() AND schema_name = 'main' "
        "UNION ALL SELECT view_name, 'VIEW' FROM duckdb_views() WHERE NOT temporary "
        "AND NOT internal AND database_name = current_database() AND schema_name = 'main' "
        "ORDER BY 1"
    ).fetchall()
    for name, kind in rows:
        if not kept(name):
            con.execute(f"DROP {kind} IF EXISTS main.{ident(name)}")


def open_state(project: Project) -> duckdb.DuckDBPyConnection:
    project.state_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(project.state_dir / STATE_DB))
    configure(con, project)
    drop_stale(con)
    return con


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """An exclusive lock file in the state folder. A second run on the same state folder stops
    with a clear message; a lock left by a dead process (same host) is taken over."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_FILE
        self.held = False

    def _try_create(self) -> bool:
        payload = json.dumps(
            {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        ).encode()
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        return True

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._try_create():
                self.held = True
                return self
            try:
                info = json.loads(self.path.read_text() or "{}")
            except (OSError, ValueError):
                info = {}
            pid = int(info.get("pid", 0) or 0)
            same_host = info.get("host") in (None, socket.gethostname())
            if pid and same_host and _alive(pid) and pid != os.getpid():
                started = time.strftime(
                    "%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(info.get("started", 0)))
                )
                raise LockedError(
                    f"another romirecon run (pid {pid}, started {started}) holds {self.path}; "
                    "wait for it to finish"
                )
            if not same_host:
                raise LockedError(
                    f"{self.path} is held by a run on host {info.get('host')}; remove it if that run is dead"
                )
            # stale: the owner is gone. Rename it away (atomic) so only one taker wins.
            try:
                os.replace(self.path, self.path.with_suffix(f".stale.{os.getpid()}"))
                os.unlink(self.path.with_suffix(f".stale.{os.getpid()}"))
            except FileNotFoundError:
                pass
        raise LockedError(f"could not take the lock {self.path}")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.held = False
