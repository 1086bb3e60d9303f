"""Reliability and hostile input: locks, kills, re-runs, injection, path escapes."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from romirecon import db
from tests.conftest import CONTACT_MAPPING, ROOT, run_cli, write_project


def digest(folder: Path) -> dict[str, str]:
    """Hashes of the data outputs. The report files (sla_report.*, junit.xml, metrics.prom) carry
    the run id and stage timings, so they differ from run to run by design."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(".") and p.suffix in (".parquet", ".csv")
    }


def test_rerun_is_byte_identical(contact_project: Path) -> None:
    out = contact_project / "out"
    assert run_cli("run", "--project", str(contact_project)).returncode == 0
    first = digest(out)
    assert run_cli("run", "--project", str(contact_project)).returncode == 0
    assert digest(out) == first
    # no double counting, but the history records both runs
    con = duckdb.connect(str(contact_project / ".romirecon" / "romirecon.duckdb"), read_only=True)
    assert con.execute("SELECT count(DISTINCT run_id) FROM sla_run").fetchone() == (2,)
    assert con.execute("SELECT count(*) FROM stg_contact").fetchone() == (1,)
    # the file keeps what the next run or a later command reads, and the staged inputs; the
    # per-run tables (revenue, duplicates, metric, ...) were TEMP and are gone with the run
    persistent = {
        r[0]
        for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE NOT temporary UNION ALL "
            "SELECT view_name FROM duckdb_views() WHERE NOT temporary AND NOT internal"
        ).fetchall()
    }
    con.close()
    assert {"golden_id_map", "sla_run", "sla_history", "quarantine", "ingest_stats"} <= persistent
    assert {"staged_sf_contacts", "stg_contact"} <= persistent
    assert not {"metric", "finding", "revenue", "duplicates", "entity_xref", "golden_contact"} & (
        persistent
    )
    assert persistent == {
        n for n in persistent if n in db.KEEP_TABLES or n.startswith(db.KEEP_PREFIXES)
    }
    assert {"quarantine.parquet", "quarantine.csv", "duplicates.parquet", "revenue.csv"} <= set(
        first
    )


def test_tables_an_older_version_left_in_the_state_database_are_dropped(
    contact_project: Path,
) -> None:
    """Earlier versions wrote every per-run table, and every run's metric and finding rows, to
    the state database file. The next run drops them; golden ids and history stay."""
    state = contact_project / ".romirecon"
    state.mkdir()
    con = duckdb.connect(str(state / "romirecon.duckdb"))
    con.execute("CREATE TABLE revenue AS SELECT 'stale' AS revenue_id")
    con.execute("CREATE TABLE metric (run_id VARCHAR, name VARCHAR)")
    con.execute("INSERT INTO metric VALUES ('old-run', 'rows_read')")
    con.execute("CREATE VIEW revenue_daily AS SELECT * FROM revenue")
    con.execute(
        "CREATE TABLE golden_id_map (entity VARCHAR, record_key VARCHAR, golden_id VARCHAR, "
        "first_run_id VARCHAR, last_run_id VARCHAR)"
    )
    # a record of an earlier night that this night's export no longer has: its id stays
    con.execute(
        "INSERT INTO golden_id_map VALUES ('contact', 'sf_contacts:003Z', 'G-old', 'r0', 'r0')"
    )
    con.close()
    assert run_cli("run", "--project", str(contact_project)).returncode == 0
    con = duckdb.connect(str(state / "romirecon.duckdb"), read_only=True)
    names = {
        r[0]
        for r in con.execute(
            "SELECT table_name FROM duckdb_tables() UNION ALL "
            "SELECT view_name FROM duckdb_views() WHERE NOT internal"
        ).fetchall()
    }
    assert not {"revenue", "metric", "revenue_daily"} & names
    assert con.execute(
        "SELECT golden_id FROM golden_id_map WHERE record_key = 'sf_contacts:003Z'"
    ).fetchall() == [("G-old",)]
    # this run's one staged contact (003B has no last name: quarantined) was added beside it
    assert con.execute("SELECT record_key FROM golden_id_map ORDER BY 1").fetchall() == [
        ("sf_contacts:003A",),
        ("sf_contacts:003Z",),
    ]
    con.close()


def test_live_lock_stops_a_second_run(contact_project: Path) -> None:
    state = contact_project / ".romirecon"
    state.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket

        (state / "run.lock").write_text(
            json.dumps({"pid": holder.pid, "host": socket.gethostname(), "started": time.time()})
        )
        r = run_cli("run", "--project", str(contact_project))
        assert r.returncode == 3
        assert f"pid {holder.pid}" in r.stderr and "another romirecon run" in r.stderr
        assert (state / "run.lock").exists()  # not stolen
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_is_taken_over(contact_project: Path) -> None:
    state = contact_project / ".romirecon"
    state.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    (state / "run.lock").write_text(
        json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": 0})
    )
    r = run_cli("run", "--project", str(contact_project))
    assert r.returncode == 0, r.stderr
    assert not (state / "run.lock").exists()  # released after the run


def test_hostile_column_names_and_values(tmp_path: Path) -> None:
    evil = 'x"; DROP TABLE quarantine; --'
    mapping = {
        "entity": "contact",
        "columns": {
            "source_id": {"from": "Id", "required": True},
            "last_name": {"from": evil},
            "email": {"from": "it's", "required": True},
        },
    }
    csv_text = (
        f'Id,"{evil.replace(chr(34), chr(34) * 2)}",it\'s\n'
        '1,=HYPERLINK("http://evil"),a@x.com\n'
        "2,'; DROP TABLE stg_contact; --,\n"
    )
    proj = write_project(
        tmp_path / "p",
        [{"name": "evil", "system": "crm", "entity": "contact", "mapping": "mappings/e.yaml",
          "path": "data/*.csv"}],
        {"e": mapping},
        {"data/evil.csv": csv_text},
    )  # fmt: skip
    r = run_cli("run", "--project", str(proj))
    assert r.returncode == 0, r.stderr
    con = duckdb.connect(str(proj / ".romirecon" / "romirecon.duckdb"), read_only=True)
    assert con.execute("SELECT source_id, last_name FROM stg_contact").fetchall() == [
        ("1", '=HYPERLINK("http://evil")')
    ]
    assert con.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 1
    # the quarantined row's record carries the hostile value; the CSV cell is neutralised
    csv_out = (proj / "out" / "quarantine.csv").read_text()
    assert "'; DROP TABLE" in csv_out
    for line in csv_out.splitlines()[1:]:
        for cell in line.split(","):
            assert not cell.startswith(("=", "+", "-", "@")), cell


def test_csv_rows_keep_the_query_order(tmp_path: Path) -> None:
    # several 2048-row chunks of text cells on two threads: the formula guard must not turn the
    # CSV COPY into an unordered write (an IN list of six constants became a MARK join and the
    # chunks came out shuffled). The CSV must list the rows exactly as the query orders them.
    from romirecon.publish import write_table

    con = duckdb.connect()
    con.execute("SET threads = 2")
    con.execute("SET preserve_insertion_order = true")
    con.execute(
        "CREATE TABLE t AS SELECT (i * 7919) % 300000 AS n, "
        "CASE WHEN i % 5 = 0 THEN '=x' ELSE 's' || i END AS s, 'c' || i AS c "
        "FROM range(300000) r(i)"
    )
    # the CSV is read back from the Parquet file: 300,000 rows are three of its row groups
    write_table(con, "SELECT n, s, c FROM t ORDER BY n", tmp_path, "x", ["csv", "parquet"])
    import csv

    with (tmp_path / "x.csv").open(newline="") as f:
        got = [int(r["n"]) for r in csv.DictReader(f)]
    # 7919 is prime and does not divide 300000, so i -> 7919 i mod 300000 is a permutation
    assert got == list(range(300000))
    groups = con.execute(
        f"SELECT count(DISTINCT row_group_id) FROM parquet_metadata('{tmp_path / 'x.parquet'}')"
    ).fetchone()[0]
    assert groups > 1
    # the CSV and the Parquet file agree row for row (with the guard applied to the CSV)
    pq = con.execute(f"SELECT n, s FROM read_parquet('{tmp_path / 'x.parquet'}')").fetchall()
    with (tmp_path / "x.csv").open(newline="") as f:
        rows_csv = [(int(r["n"]), r["s"]) for r in csv.DictReader(f)]
    assert rows_csv == [(n, "'" + s if s.startswith("=") else s) for n, s in pq]
    # whether a small table comes out shuffled depends on thread timing; the plan says whether
    # DuckDB writes the CSV in order at all (an order-keeping "Batch Copy To File")
    from romirecon.publish import _safe_csv_select

    plan = con.execute(
        f"EXPLAIN COPY ({_safe_csv_select(con, 't')}) TO '{tmp_path / 'y.csv'}' (FORMAT csv)"
    ).fetchall()[0][1]
    assert "Batch Copy To File" in plan


def test_parquet_outputs_are_zstd_compressed_and_read_back_whole(tmp_path: Path) -> None:
    # the outputs are written at zstd level 1 (faster than DuckDB's default level 3, no larger):
    # every column chunk is ZSTD, and the file reads back equal to the query
    from romirecon.publish import write_table

    con = duckdb.connect()
    con.execute(
        "CREATE TABLE t AS SELECT i AS n, 'name ' || (i % 97) AS s, i / 3.0 AS d "
        "FROM range(5000) r(i)"
    )
    write_table(con, "SELECT * FROM t ORDER BY n", tmp_path, "x", ["parquet"])
    path = str(tmp_path / "x.parquet")
    codecs = con.execute(
        "SELECT DISTINCT compression FROM parquet_metadata(?) ORDER BY 1", [path]
    ).fetchall()
    assert codecs == [("ZSTD",)]
    diff = con.execute(
        "SELECT count(*) FROM ((SELECT * FROM t EXCEPT ALL SELECT * FROM read_parquet(?)) "
        "UNION ALL (SELECT * FROM read_parquet(?) EXCEPT ALL SELECT * FROM t))",
        [path, path],
    ).fetchone()[0]
    assert diff == 0
    assert con.execute("SELECT count(*) FROM read_parquet(?)", [path]).fetchone()[0] == 5000


def test_csv_keeps_column_types_parquet_would_change(tmp_path: Path) -> None:
    # with both formats the CSV is read back from the Parquet file, but DuckDB writes a HUGEINT
    # to Parquet as a DOUBLE: such a query goes through a temp table, so the CSV keeps the exact
    # integer 2^60 + 1, and a TIMESTAMPTZ / DECIMAL column read back from Parquet its own text
    import csv

    from romirecon.publish import write_table

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(
        "CREATE TABLE t AS SELECT 1 AS k, CAST(1152921504606846977 AS HUGEINT) AS h, "
        "TIMESTAMPTZ '2024-03-01 12:30:00+00' AS ts, CAST(12.3456 AS DECIMAL(38,14)) AS d"
    )
    write_table(con, "SELECT k, h FROM t ORDER BY k", tmp_path, "h", ["parquet", "csv"])
    with (tmp_path / "h.csv").open(newline="") as f:
        assert [r["h"] for r in csv.DictReader(f)] == ["1152921504606846977"]
    write_table(con, "SELECT k, ts, d FROM t ORDER BY k", tmp_path, "t", ["parquet", "csv"])
    with (tmp_path / "t.csv").open(newline="") as f:
        assert [(r["ts"], r["d"]) for r in csv.DictReader(f)] == [
            ("2024-03-01 12:30:00+00", "12.34560000000000")
        ]


def test_formula_cells_neutralised_in_csv(tmp_path: Path) -> None:
    from romirecon.publish import write_table

    con = duckdb.connect()
    con.execute(
        "CREATE TABLE t AS SELECT * FROM (VALUES (1, '=cmd|'' /C calc''!A0'), (2, '+1'), (3, '-2'), "
        "(4, '@SUM(A1)'), (5, chr(9) || 'tab'), (6, chr(13) || 'cr'), (7, 'plain'), (8, 'a=b')) v(n, s)"
    )
    write_table(con, "SELECT n, s FROM t ORDER BY n", tmp_path, "x", ["csv", "parquet"])
    import csv

    with (tmp_path / "x.csv").open(newline="") as f:
        cells = [r["s"] for r in csv.DictReader(f)]
    assert cells == [
        "'=cmd|' /C calc'!A0",
        "'+1",
        "'-2",
        "'@SUM(A1)",
        "'\ttab",
        "'\rcr",
        "plain",
        "a=b",
    ]
    # parquet keeps the exact values: it is data, not a spreadsheet
    back = (
        duckdb.connect().execute(f"SELECT s FROM '{tmp_path / 'x.parquet'}' ORDER BY n").fetchall()
    )
    assert back[0][0] == "=cmd|' /C calc'!A0"


def test_paths_may_not_escape_the_project(tmp_path: Path) -> None:
    proj = write_project(
        tmp_path / "p",
        [{"name": "c", "system": "crm", "entity": "contact", "mapping": "../../m.yaml",
          "path": "../outside/*.csv"}],
        {},
        {},
    )  # fmt: skip
    r = run_cli("validate", "--project", str(proj))
    assert r.returncode == 2
    assert "escapes the project folder" in r.stderr
    assert r.stderr.count("escapes the project folder") == 2  # mapping and path, both reported


def _big_project(tmp_path: Path, rows: int) -> Path:
    lines = ["Id,Email,LastName,CurrencyIsoCode,CreatedDate"]
    lines += [f"003{i:08d},u{i}@x.com,Name{i},USD,2024-01-15" for i in range(rows)]
    return write_project(
        tmp_path / "big",
        [{"name": "sf", "system": "crm", "entity": "contact", "mapping": "mappings/c.yaml",
          "path": "data/*.csv"}],
        {"c": CONTACT_MAPPING},
        {"data/Contact.csv": "\n".join(lines) + "\n"},
    )  # fmt: skip


@pytest.mark.slow
def test_sigkill_at_random_points_never_corrupts(tmp_path: Path) -> None:
    proj = _big_project(tmp_path, 40_000)
    out = proj / "out"
    exe = Path(sys.executable).parent / "romirecon"
    assert run_cli("run", "--project", str(proj)).returncode == 0
    good = digest(out)
    rng = random.Random(7)
    for _ in range(4):
        p = subprocess.Popen([str(exe), "run", "--project", str(proj)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(rng.uniform(0.5, 4.0))
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        # the previous outputs are intact (never half-written)
        assert digest(out) == good
    r = run_cli("run", "--project", str(proj))
    assert r.returncode == 0, r.stderr  # stale lock taken over, state database recovered
    assert digest(out) == good  # equals an uninterrupted run


def test_hash_pii_replaces_emails_in_outputs(tmp_path: Path) -> None:
    mapping = {**CONTACT_MAPPING, "columns": {**CONTACT_MAPPING["columns"],
                                               "email": {"from": "Email", "pattern": "[^@]+@[^@]+"}}}  # fmt: skip
    csv_text = (
        "Id,Email,LastName,CurrencyIsoCode,CreatedDate\n"
        "1,secret.person@corp.example,,USD,2024-01-01\n"  # missing last name: quarantined
        "2,not-an-email,Lee,USD,2024-01-01\n"  # pattern-mismatch on the email itself
    )
    proj = write_project(
        tmp_path / "p",
        [{"name": "c", "system": "crm", "entity": "contact", "mapping": "mappings/c.yaml",
          "path": "data/*.csv"}],
        {"c": mapping},
        {"data/c.csv": csv_text},
        outputs={"hash_pii": True},
    )  # fmt: skip
    assert run_cli("run", "--project", str(proj)).returncode == 0
    out = (proj / "out" / "quarantine.csv").read_text()
    assert "secret.person" not in out and "not-an-email" not in out
    assert out.count("sha256:") == 3  # two records' Email fields + one value
    # the same value hashes the same way on the next night (salt kept in the state folder)
    assert run_cli("run", "--project", str(proj)).returncode == 0
    assert (proj / "out" / "quarantine.csv").read_text() == out


def test_reports_show_ids_unless_show_pii(tmp_path: Path) -> None:
    row = "003A,ann.lee@corp.example,Lee,USD,2024-01-15T10:20:30Z\n"
    proj = write_project(
        tmp_path / "p",
        [{"name": "sf", "system": "crm", "entity": "contact", "mapping": "mappings/c.yaml",
          "path": "data/*.csv"}],
        {"c": CONTACT_MAPPING},
        # the same contact twice (an overlapping re-export): a duplicate cluster in the report
        {"data/c.csv": "Id,Email,LastName,CurrencyIsoCode,CreatedDate\n" + row + row},
    )  # fmt: skip
    run_cli("run", "--project", str(proj))
    for name in ("sla_report.html", "sla_report.json", "sla_report.md", "junit.xml"):
        assert "ann.lee@corp.example" not in (proj / "out" / name).read_text(), name
    assert "003A" in (proj / "out" / "sla_report.html").read_text()  # ids are shown
    run_cli("run", "--project", str(proj), "--show-pii")
    assert "ann.lee@corp.example" in (proj / "out" / "sla_report.html").read_text()


def _keep_project(root: Path, keep: list[str]) -> Path:
    csv = (
        "Id,Email,LastName,CurrencyIsoCode,CreatedDate\n"
        "003A,A@x.com,Lee,USD,2024-01-15T10:20:30.000Z\n"
        "003B,b@x.com,Lee,EUR,2024-01-16T10:20:30.000Z\n"
        "003C,c@x.com,Kim,EUR,2024-01-17T10:20:30.000Z\n"
    )
    return write_project(
        root,
        [{"name": "sf_contacts", "system": "crm", "entity": "contact",
          "mapping": "mappings/contact.yaml", "path": "data/Contact*.csv"}],
        {"contact": CONTACT_MAPPING},
        {"data/Contact.csv": csv},
        state={"keep_tables": keep},
    )  # fmt: skip


def test_keep_tables_copies_the_run_tables_asked_for(tmp_path: Path) -> None:
    """state.keep_tables keeps the named tables of the last run in the state database."""
    proj = _keep_project(tmp_path / "p", ["entity_xref", "metric"])
    db_file = proj / ".romirecon" / "romirecon.duckdb"
    for _ in range(2):
        assert run_cli("run", "--project", str(proj)).returncode in (0, 1)
    con = duckdb.connect(str(db_file), read_only=True)
    # the three staged contacts, and the golden ids the published golden records carry
    rows = con.execute("SELECT source_id FROM entity_xref ORDER BY source_id").fetchall()
    assert rows == [("003A",), ("003B",), ("003C",)]
    ids = {r[0] for r in con.execute("SELECT golden_id FROM entity_xref").fetchall()}
    published = duckdb.connect().execute(
        "SELECT golden_id FROM read_parquet(?)", [str(proj / "out" / "golden_contact.parquet")]
    )
    assert ids == {r[0] for r in published.fetchall()}
    # the last run's metrics only: the copy is replaced, not appended to
    assert con.execute("SELECT count(DISTINCT run_id) FROM metric").fetchone() == (1,)
    last = con.execute("SELECT max(run_id) FROM sla_run").fetchone()[0]
    assert con.execute("SELECT DISTINCT run_id FROM metric").fetchall() == [(last,)]
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    con.close()
    assert "duplicates" not in tables and "revenue" not in tables


def test_keep_tables_rejects_a_name_it_does_not_know(tmp_path: Path) -> None:
    proj = _keep_project(tmp_path / "p", ["entity_xrefs"])
    r = run_cli("run", "--project", str(proj))
    assert r.returncode == 2
    assert "keep_tables" in r.stderr and "entity_xrefs" in r.stderr


def test_keep_tables_schema_lists_the_keepable_tables() -> None:
    schema = json.loads((Path(db.__file__).parent / "schemas" / "project.schema.json").read_text())
    enum = schema["properties"]["state"]["properties"]["keep_tables"]["items"]["enum"]
    assert sorted(enum) == sorted(db.KEEPABLE)


def _demo_run(root: Path, keep: tuple[str, ...] = ()) -> Path:
    """The demo estate run in this process (so a test can patch the pipeline); returns its
    output folder."""
    from romirecon import pipeline
    from romirecon.config import load_project

    shutil.copytree(
        ROOT / "fixtures" / "demo", root, ignore=shutil.ignore_patterns(".romirecon", "out")
    )
    project = load_project(root, root / "out")
    project.keep_tables = keep
    assert pipeline.run(project).exit_code in (0, 1)
    return root / "out"


def test_tables_no_later_step_reads_are_released_after_their_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each stage's last-read tables are dropped when it ends, except those keep_tables asks
    for, and the outputs are the same as when every table lives to the end of the run."""
    from romirecon import pipeline

    released: dict[str, dict[str, int]] = {}
    real_release, real_publish = pipeline.release, pipeline.publish

    def release(con: duckdb.DuckDBPyConnection, stage: str, keep: tuple[str, ...] = ()) -> None:
        released[stage] = {
            n: con.execute(f"SELECT count(*) FROM temp.main.{n}").fetchone()[0]
            for n in pipeline.RELEASED_AFTER.get(stage, ())
        }
        real_release(con, stage, keep)

    at_publish: set[str] = set()

    def publish(con: duckdb.DuckDBPyConnection, project: object) -> list[Path]:
        at_publish.update(
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_catalog = 'temp'"
            ).fetchall()
        )
        return real_publish(con, project)

    monkeypatch.setattr(pipeline, "release", release)
    monkeypatch.setattr(pipeline, "publish", publish)
    out = _demo_run(tmp_path / "a", keep=("touchpoint",))
    assert set(released) == {"billing", "reconcile", "romi"}
    # the demo fills every released relation, so each drop below frees something
    assert all(n > 0 for counts in released.values() for n in counts.values()), released
    dropped = {n for names in pipeline.RELEASED_AFTER.values() for n in names} - {"touchpoint"}
    assert not dropped & at_publish
    # a kept table stays to the end of the run and is copied into the state database
    assert {"touchpoint", "romi", "revenue", "entity_xref", "duplicates"} <= at_publish
    con = duckdb.connect(str(tmp_path / "a" / ".romirecon" / "romirecon.duckdb"), read_only=True)
    kept = con.execute("SELECT count(*) FROM touchpoint").fetchone()[0]
    con.close()
    assert kept == released["romi"]["touchpoint"]

    # nothing after a stage read what it released: a run that keeps every table alive to the
    # end writes the same bytes (a stage that made an empty stand-in for a missing table would
    # not crash, but would change them)
    monkeypatch.setattr(pipeline, "RELEASED_AFTER", {})
    assert digest(_demo_run(tmp_path / "b")) == digest(out)


def test_released_tables_are_named_by_no_later_step() -> None:
    """The static side of the test above, for code paths the demo does not take: no module that
    runs after a stage names a table that stage releases."""
    import inspect
    import re

    from romirecon import pipeline, publish
    from romirecon.stages import attribution, reconcile, romi, sla

    report = sorted((Path(pipeline.__file__).parent / "report").glob("*.py"))
    after_all = [inspect.getsource(sla), inspect.getsource(publish)]
    after_all += [inspect.getsource(pipeline.publish), *(p.read_text() for p in report)]
    later = {
        "billing": [inspect.getsource(m) for m in (reconcile, attribution, romi)],
        "reconcile": [inspect.getsource(m) for m in (attribution, romi)],
        "romi": [],
    }
    assert set(later) == set(pipeline.RELEASED_AFTER)
    for stage, names in pipeline.RELEASED_AFTER.items():
        for name in names:
            readers = [s for s in later[stage] + after_all if re.search(rf"\b{name}\b", s)]
            assert not readers, f"{name} is released after {stage} but read later"
