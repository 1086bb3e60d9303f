"""Writing output files: atomically (temp file in the same folder, then os.replace), and CSV cells
that a spreadsheet would run as a formula are neutralised."""

from __future__ import annotations

import os
import re
from pathlib import Path

import duckdb

from romirecon.sqlutil import ident, literal

# a cell starting with one of these characters is a formula in Excel / LibreOffice / Google
# Sheets. `contains` on a string of the characters, not `IN (...)` / `list_contains([...])`: DuckDB
# plans a list of six constants as a MARK join, and a join does not keep row order, so the CSV
# COPY wrote 2048-row chunks out of the query's order (and different bytes from run to run)
_FORMULA_CHARS = literal("=+-@\t\r")


# zstd at level 1, not DuckDB's default 3: at 1M customers the Parquet outputs took 2.5 s less to
# write (romi_lineage 7.0 -> 6.1 s, duplicates 4.1 -> 3.1 s) and came out 1% smaller in total
# (798 MB against 806 MB; romi_lineage and golden_contact 1.3% larger, the others 3-8% smaller).
# Small estates lose a little: 4% larger at 30k customers (romi_lineage 13%), 0.7 MB
PARQUET_OPTIONS = "FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1"


def atomic_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp-{os.getpid()}")


def write_text(final: Path, text: str) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic_path(final)
    try:
        with tmp.open("w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def _safe_csv_select(con: duckdb.DuckDBPyConnection, relation: str) -> str:
    cols = con.execute(f"DESCRIBE {relation}").fetchall()
    out = []
    for name, ctype, *_ in cols:
        q = ident(name)
        if ctype == "VARCHAR":
            # the first character against _FORMULA_CHARS: a regexp per cell cost more than the
            # CSV writer itself on the larger outputs
            out.append(
                f"CASE WHEN {q} <> '' AND contains({_FORMULA_CHARS}, left({q}, 1)) "
                f"THEN chr(39) || {q} ELSE {q} END AS {q}"
            )
        elif ctype.endswith("[]") or ctype.startswith(("STRUCT", "MAP")):
            out.append(f"CAST(to_json({q}) AS VARCHAR) AS {q}")
        else:
            out.append(q)
    return f"SELECT {', '.join(out)} FROM {relation}"


# column types a Parquet file gives back exactly as they went in (DuckDB writes HUGEINT as DOUBLE,
# for one): a query with any other column keeps its sorted rows in a temp table instead
_PARQUET_EXACT = re.compile(
    r"(VARCHAR|BOOLEAN|TINYINT|SMALLINT|INTEGER|BIGINT|FLOAT|DOUBLE|DATE|TIMESTAMP"
    r"|TIMESTAMP WITH TIME ZONE|DECIMAL\(\d+,\d+\))(\[\])*"
)


def write_table(
    con: duckdb.DuckDBPyConnection,
    query: str,
    out_dir: Path,
    stem: str,
    formats: list[str],
) -> list[Path]:
    """Write the result of `query` (which must carry its own ORDER BY) as `<stem>.parquet` /
    `<stem>.csv`, each atomically. Returns the files written.

    Two files: the query (its ORDER BY sort) runs once. The Parquet file is written first and the
    CSV read back from it (a single file's scan keeps its order; each column cast back to the
    query's type). Keeping the sorted rows in a temp table for both writes, spilled at that
    point of a 1M run, took 2-6 s more for `duplicates` alone (four pairs under a 4 GB limit).
    A query with a column type Parquet changes still goes through the temp table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    view = f"_publish_{stem}"
    types = [(r[0], r[1]) for r in con.execute(f"DESCRIBE {query}").fetchall()]
    via_parquet = (
        len(formats) > 1
        and "parquet" in formats
        and all(_PARQUET_EXACT.fullmatch(t) for _, t in types)
    )
    kind = "TABLE" if len(formats) > 1 and not via_parquet else "VIEW"
    con.execute(f"CREATE OR REPLACE TEMP {kind} {ident(view)} AS {query}")
    source = view
    written: dict[str, Path] = {}
    try:
        for fmt in sorted(formats, key=lambda f: f != "parquet") if via_parquet else formats:
            final = out_dir / f"{stem}.{fmt}"
            tmp = atomic_path(final)
            try:
                if fmt == "parquet":
                    con.execute(
                        f"COPY (SELECT * FROM {ident(source)}) TO {literal(str(tmp))} "
                        f"({PARQUET_OPTIONS})"
                    )
                else:
                    con.execute(
                        f"COPY ({_safe_csv_select(con, ident(source))}) TO {literal(str(tmp))} "
                        "(FORMAT csv, HEADER true)"
                    )
                os.replace(tmp, final)
            finally:
                tmp.unlink(missing_ok=True)
            written[fmt] = final
            if fmt == "parquet" and via_parquet:
                source = f"_publish_{stem}_file"
                cols = ", ".join(f"CAST({ident(n)} AS {t}) AS {ident(n)}" for n, t in types)
                con.execute(
                    f"CREATE OR REPLACE TEMP VIEW {ident(source)} AS SELECT {cols} "
                    f"FROM read_parquet({literal(str(final))})"
                )
    finally:
        con.execute(f"DROP {kind} IF EXISTS {ident(view)}")
        if source != view:
            con.execute(f"DROP VIEW IF EXISTS {ident(source)}")
    return [written[f] for f in formats if f in written]
