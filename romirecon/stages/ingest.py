"""Ingest: every export file of a source into `raw_<source>`, all columns as VARCHAR.

Reading everything as text is deliberate: a value that does not parse is a contract failure of
that row (quarantine, with the original text), not a load failure of the whole file. Readers are
DuckDB's own (CSV/TSV sniffer, Parquet, JSON) plus fastexcel for XLSX; no Python row loops.

Tables written per source:
- `raw_<source>`: the export's columns (VARCHAR; nested JSON/struct values as JSON text) +
  `source_file, source_row, file_sha256`. For JSON sources `raw_<source>` is a view over the
  files, not a table: the whole record in `_json` and a column per top-level key, extracted as
  contract reads it (the files are read once here for their keys and record count).
- `rejects_<source>`: lines the CSV reader could not split into the header's columns
  (`source_file, line, error, raw_line`): they become `malformed-row` quarantine rows.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from romirecon.config import Project, Source
from romirecon.exitcodes import InputError, MissingInputError
from romirecon.sqlutil import ident, literal, table_name
from romirecon.stages.common import drop_relation

PROVENANCE_RAW = ("source_file", "source_row", "file_sha256")


@dataclass
class FileInfo:
    path: Path
    display: str  # relative to the project folder where possible
    sha256: str
    size: int
    mtime: float


@dataclass
class IngestResult:
    source: str
    files: list[FileInfo] = field(default_factory=list)
    rows_read: int = 0
    rows_rejected: int = 0
    columns: list[str] = field(default_factory=list)  # source columns (top-level keys for JSON)
    is_json: bool = False
    # NDJSON only: a view like the source view, over the same records in the same order, but
    # without their numbers (`source_row` NULL), so DuckDB reads the files on every thread
    # (numbering records WITH ORDINALITY reads a file on one thread). The records of each
    # file, in file order, are counted in `json_file_rows`; whoever writes the view's rows into
    # a table numbers them from their order there (`number_rows`).
    unnumbered_view: str | None = None
    json_file_rows: list[tuple[str, int]] = field(default_factory=list)


def raw_table(source: str) -> str:
    return table_name("raw", source)


def src_view(source: str) -> str:
    return table_name("src", source)


def unnumbered_view(source: str) -> str:
    return table_name("srcu", source)


def rejects_table(source: str) -> str:
    return table_name("rejects", source)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_all(project: Project) -> dict[str, list[FileInfo]]:
    """`resolve_files` for every source, the files hashed in parallel (hashlib releases the GIL:
    8 GB of exports hash in about 5 s on two cores instead of 10)."""
    from concurrent.futures import ThreadPoolExecutor

    matches = {s.name: _matches(project, s) for s in project.sources}
    paths = sorted({p for found in matches.values() for p in found})
    workers = max(1, min(len(paths), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        hashes = dict(zip(paths, pool.map(sha256_file, paths), strict=True))
    return {s.name: resolve_files(project, s, hashes, matches[s.name]) for s in project.sources}


def _matches(project: Project, source: Source) -> list[Path]:
    seen: dict[Path, None] = {}
    for pattern in source.patterns:
        full = pattern if os.path.isabs(pattern) else str(project.root / pattern)
        for hit in sorted(glob.glob(full, recursive=True)):
            p = Path(hit)
            if p.is_file():
                seen[p.resolve()] = None
    return sorted(seen)


def resolve_files(
    project: Project,
    source: Source,
    hashes: dict[Path, str] | None = None,
    paths: list[Path] | None = None,
) -> list[FileInfo]:
    """Expand the source's globs (sorted, de-duplicated). Missing input raises exit 4.
    `hashes` holds sha256 digests and `paths` the glob matches already found for this run (see
    resolve_all)."""
    files = []
    for p in _matches(project, source) if paths is None else paths:
        try:
            display = str(p.relative_to(project.root))
        except ValueError:
            display = str(p)
        st = p.stat()
        digest = hashes[p] if hashes and p in hashes else sha256_file(p)
        files.append(FileInfo(p, display, digest, st.st_size, st.st_mtime))
    if not files and source.required:
        globs = ", ".join(source.patterns)
        raise MissingInputError(f"source '{source.name}': no file matches {globs}")
    if files and source.max_age_hours is not None:
        newest = max(f.mtime for f in files)
        age_h = (time.time() - newest) / 3600
        if age_h > source.max_age_hours:
            raise MissingInputError(
                f"source '{source.name}': newest file {max(files, key=lambda f: f.mtime).display} "
                f"is {age_h:.1f} h old (max_age_hours: {source.max_age_hours}): stale input"
            )
    return files


def detect_type(source: Source, path: Path) -> str:
    """The reader for one file: the mapping's `format.type`, else the file's extension. A
    `.jsonl`/`.ndjson` file is always read a record per line: a mapping says which vendor object
    it reads (`type: json` with the API list's `json_path`), the file says how it was extracted,
    and bulk extract tools write the same records one per line."""
    name = path.name.lower()
    for suffix in (".gz", ".zst", ".zstd"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    ext = name.rsplit(".", 1)[-1] if "." in name else ""
    t = source.format.get("type", "auto")
    if t == "json" and ext in ("jsonl", "ndjson"):
        return "ndjson"
    if t != "auto":
        return t
    return {
        "csv": "csv",
        "tsv": "tsv",
        "txt": "csv",
        "parquet": "parquet",
        "json": "json",
        "ndjson": "ndjson",
        "jsonl": "ndjson",
        "xlsx": "xlsx",
        "xlsm": "xlsx",
    }.get(ext, "csv")


def _csv_options(fmt: dict, is_tsv: bool) -> str:
    opts = [
        "all_varchar = true",
        "header = " + ("true" if fmt.get("header", True) else "false"),
        # exports carry long notes / descriptions: allow 64 MB lines instead of DuckDB's 2 MB
        "max_line_size = 67108864",
    ]
    delim = fmt.get("delimiter") or ("\t" if is_tsv else None)
    if delim:
        opts.append(f"delim = {literal(delim)}")
    if fmt.get("quote") is not None:
        opts.append(f"quote = {literal(fmt['quote'])}")
    if fmt.get("escape") is not None:
        opts.append(f"escape = {literal(fmt['escape'])}")
    if fmt.get("encoding"):
        opts.append(f"encoding = {literal(fmt['encoding'])}")
    comp = fmt.get("compression", "auto")
    if comp != "auto":
        opts.append(f"compression = {literal(comp)}")
    if fmt.get("skip_rows"):
        opts.append(f"skip = {int(fmt['skip_rows'])}")
    if fmt.get("null_values"):
        opts.append("nullstr = [" + ", ".join(literal(v) for v in fmt["null_values"]) + "]")
    return ", ".join(opts)


_LINE_RE = re.compile(r"\b[Ll]ine:? (\d+)")


def describe_error(display: str, err: Exception, hint: str = "") -> str:
    """One line naming the file (and line, when DuckDB reports one) for a reader error."""
    text = str(err).strip()
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(err).__name__)
    first = re.sub(r"^(Invalid Input Error|IO Error|Conversion Error|Parser Error): ", "", first)
    m = _LINE_RE.search(text)
    where = f":{m.group(1)}" if m and f"line {m.group(1)}" not in first.lower() else ""
    if "unicode" in text.lower() and "utf" in text.lower() and not hint:
        hint = " (set format.encoding: latin-1 or utf-16 for this source)"
    return f"{display}{where}: cannot read: {first[:300]}{hint}"


def _read_file_sql(
    kind: str, path: Path, fmt: dict, rejects: str | None, numbered: bool = True
) -> str:
    """A SELECT yielding the file's columns (VARCHAR) plus `_ord` (1-based record number).
    `numbered=False` (CSV/TSV): `_ord` is NULL and the records come in file order, to be
    numbered from their order in the table (`number_rows`) instead of sorted by `_ord`. (WITH
    ORDINALITY would also keep DuckDB on one thread; with the 64 MB max_line_size above, DuckDB
    2.0 reads a CSV on one thread anyway.)"""
    p = literal(str(path))
    if kind in ("csv", "tsv"):
        opts = _csv_options(fmt, kind == "tsv")
        if rejects:
            opts += f", store_rejects = true, rejects_table = {literal(rejects)}"
            opts += f", rejects_scan = {literal(rejects + '_scan')}"
        if not numbered:
            return f"SELECT *, NULL::BIGINT AS _ord FROM read_csv({p}, {opts})"
        return f"SELECT * RENAME (ordinality AS _ord) FROM read_csv({p}, {opts}) WITH ORDINALITY"
    if kind == "parquet":
        return (
            f"SELECT COLUMNS(* EXCLUDE (file_row_number))::VARCHAR, file_row_number + 1 AS _ord "
            f"FROM read_parquet({p}, file_row_number = true)"
        )
    raise AssertionError(kind)


def _first_byte(path: Path) -> bytes:
    """The first non-blank byte of a (possibly gzip-compressed) file: `[` for a JSON array."""
    import gzip

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head[:1]


def json_records_sql(kind: str, path: Path, fmt: dict, numbered: bool = True) -> str:
    """A SELECT yielding `_json` (one record as JSON text) and `_ord` (1-based) for JSON files:
    NDJSON (a record per line), a top-level array, records under `json_path` in a wrapper
    object (Stripe list objects: `{"object": "list", "data": [...]}`), or one object per
    document. Each is a single streaming DuckDB read; no per-record Python.

    `numbered=False` (NDJSON only): `_ord` is NULL. DuckDB reads an NDJSON file on every thread
    then; WITH ORDINALITY reads it on one (the contract of a large export ran on one core).
    The records still come in file order: a scan feeding a projection keeps its order."""
    p = literal(str(path))
    comp = fmt.get("compression", "auto")
    copt = f", compression = {literal(comp)}" if comp != "auto" else ""
    if kind == "ndjson":
        if not numbered:
            return f"SELECT json AS _json, NULL::BIGINT AS _ord FROM read_ndjson_objects({p}{copt})"
        return (
            f"SELECT json AS _json, ordinality AS _ord FROM read_ndjson_objects({p}{copt}) "
            "WITH ORDINALITY"
        )
    assert numbered, kind
    json_path = fmt.get("json_path")
    if json_path:
        first, *rest = json_path.split(".")
        # the wrapper document is one JSON object: DuckDB must hold it whole, and it sizes its
        # buffer by maximum_object_size, so ask for what this file needs, not the 2 GB ceiling
        size = path.stat().st_size * (20 if path.name.lower().endswith(".gz") else 1)
        big = f", maximum_object_size = {min(max(size + (1 << 20), 16 << 20), 2147483647)}"
        if rest:
            inner = "$." + ".".join(json_key(k) for k in rest)
            cols = f"{{{literal(first)}: 'JSON'}}"
            arr = f"CAST(json_extract(d.{ident(first)}, {literal(inner)}) AS JSON[])"
        else:
            cols = f"{{{literal(first)}: 'JSON[]'}}"
            arr = f"d.{ident(first)}"
        return (
            f"SELECT u.j AS _json, (d.ordinality - 1) * 1000000000 + u.ord AS _ord "
            f"FROM read_json({p}, columns = {cols}{big}{copt}) WITH ORDINALITY d, "
            f"unnest({arr}) WITH ORDINALITY u(j, ord)"
        )
    layout = "array" if _first_byte(path) == b"[" else "auto"
    return (
        f"SELECT json AS _json, ordinality AS _ord FROM read_json_objects({p}, "
        f"format = {literal(layout)}{copt}) WITH ORDINALITY"
    )


def _xlsx_arrow(path: Path, fmt: dict):  # -> pyarrow.Table
    import fastexcel
    import pyarrow as pa

    reader = fastexcel.read_excel(str(path))
    sheet = fmt.get("sheet", 0)
    data = reader.load_sheet(sheet, skip_rows=fmt.get("skip_rows") or None, dtypes="string")
    table = data.to_arrow()
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    table = table.cast(pa.schema([pa.field(f.name, pa.string()) for f in table.schema]))
    ords = pa.array(range(1, table.num_rows + 1), type=pa.int64())
    return table.append_column("_ord", ords)


def _collect_rejects(con: duckdb.DuckDBPyConnection, scratch: str, rej: str, f: FileInfo) -> None:
    """Lines the CSV reader rejected: one row per line (DuckDB reports one error per missing
    column). A wrong encoding is a property of the file, not of a row: stop with a hint."""
    bad = con.execute(
        f"SELECT min(line) FROM {scratch} WHERE error_type::VARCHAR = 'INVALID ENCODING'"
    ).fetchone()[0]
    if bad is not None:
        raise InputError(
            f"{f.display}:{bad}: cannot read: the file is not valid UTF-8 "
            "(set format.encoding: latin-1 or utf-16 for this source)"
        )
    con.execute(
        f"INSERT INTO {ident(rej)} SELECT ?, line, min(error_type::VARCHAR), "
        f"string_agg(DISTINCT error_message, '; ' ORDER BY error_message), min(csv_line) "
        f"FROM {scratch} GROUP BY line ORDER BY line",
        [f.display],
    )


def _normalized_newlines(path: Path, dest: Path) -> None:
    """Copy `path` with CRLF and lone CR turned into LF (mixed line endings defeat the CSV
    sniffer). A streaming byte pass, not a row loop."""
    with path.open("rb") as src, dest.open("wb") as out:
        carry = b""
        for block in iter(lambda: src.read(1 << 22), b""):
            chunk = carry + block
            carry = b"\r" if chunk.endswith(b"\r") else b""
            if carry:
                chunk = chunk[:-1]
            out.write(chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n"))
        out.write(carry.replace(b"\r", b"\n"))


def number_rows(
    con: duckdb.DuckDBPyConnection, table: str, file_rows: list[tuple[str, int]]
) -> None:
    """Fill `source_row` of a freshly written `table` whose rows are the records of the files
    `file_rows` ((file, records) in file order) in their order (read unnumbered, see
    `json_records_sql` and `_read_file_sql`): the table's storage order
    (`rowid`, counted from the table's first row) is the read order, so a row's record number
    is its position among its file's rows. Checks that the rows add up and that each file's
    rows are where the counts put them; anything else is an internal error, never a silent
    misnumbering."""
    t = ident(table)
    first, n = con.execute(f"SELECT min(rowid), count(*) FROM {t}").fetchone()
    expected = sum(c for _, c in file_rows)
    if n != expected:
        raise RuntimeError(f"{table}: {n} rows written for {expected} records read")
    if not n:
        return
    pos = f"(rowid - {int(first)})"
    if len(file_rows) == 1:
        con.execute(f"UPDATE {t} SET source_row = {pos} + 1")
        return
    starts, ends, at = [], [], 0
    for f, c in file_rows:
        starts.append(f"{literal(f)}: {at}")
        ends.append(f"{literal(f)}: {at + c}")
        at += c
    start = f"map_extract_value(MAP {{{', '.join(starts)}}}, source_file)"
    end = f"map_extract_value(MAP {{{', '.join(ends)}}}, source_file)"
    misplaced = con.execute(
        f"SELECT count(*) FROM {t} WHERE NOT coalesce({pos} >= {start} AND {pos} < {end}, false)"
    ).fetchone()[0]
    if misplaced:
        raise RuntimeError(f"{table}: {misplaced} rows are not in their file's place")
    con.execute(f"UPDATE {t} SET source_row = {pos} - {start} + 1")


def _load_delimited(
    con: duckdb.DuckDBPyConnection,
    kind: str,
    f: FileInfo,
    fmt: dict,
    part: str,
    prov: str,
    scratch: str,
) -> None:
    rejects = scratch if kind != "parquet" else None
    # a delimited file is read unnumbered, in file order, and its rows are numbered from their
    # order in the table (`number_rows`): no sort of the wide rows by record number
    numbered = kind == "parquet"
    order = " ORDER BY _ord" if numbered else ""

    def create(sql: str) -> str:
        return f"CREATE OR REPLACE TEMP TABLE {part} AS SELECT * EXCLUDE (_ord), {prov} FROM ({sql}){order}"

    try:
        con.execute(create(_read_file_sql(kind, f.path, fmt, rejects, numbered)))
    except duckdb.Error as e:
        compressed = f.path.name.lower().endswith((".gz", ".zst", ".zstd"))
        if kind == "parquet" or compressed or "sniffing" not in str(e):
            raise
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            copy = Path(d) / f.path.name
            _normalized_newlines(f.path, copy)
            con.execute(create(_read_file_sql(kind, copy, fmt, rejects, numbered)))
    if not numbered:
        n = con.execute(f"SELECT count(*) FROM {part}").fetchone()[0]
        number_rows(con, part, [(f.display, n)])
        if rejects:
            _renumber_around_rejects(con, part, rejects)


def _renumber_around_rejects(con: duckdb.DuckDBPyConnection, part: str, rejects: str) -> None:
    """Number the rows of `part` among all the file's data rows, the rejected ones included.

    `number_rows` counts the rows the reader returned, so after a line the reader rejected (too
    many or too few fields) every later row was numbered one too low, and a user looking up row
    N of the file found row N+1. DuckDB's reject `line` counts the skipped rows, the header and
    each record once (a quoted value spanning lines is one), so a rejected record's data row is
    `line - skip_rows - header`; with r_1 < ... < r_m those rows, r_i - i rows were returned
    before r_i, and the k-th returned row moves down by the number of r_i with r_i - i < k (an
    ASOF join on that count). Blank lines are not records, but DuckDB counts them in `line`: with
    b blank lines before a rejected line, up to b rows right after it stay one too low, as they
    all were before; the rows after those are numbered right."""
    if not con.execute(f"SELECT count(*) FROM {rejects}").fetchone()[0]:
        return
    con.execute(
        f"""UPDATE {part} SET source_row = source_row + s.shift FROM (
            SELECT p.rowid AS rid, g.shift
            FROM {part} p ASOF JOIN (
                SELECT rec - i AS returned_before, max(i) AS shift FROM (
                    SELECT rec, row_number() OVER (ORDER BY rec) AS i
                    FROM (SELECT DISTINCT r.line - c.skip_rows - CASE WHEN c.has_header
                                 THEN 1 ELSE 0 END AS rec
                          FROM {rejects} r JOIN {rejects}_scan c USING (scan_id, file_id)))
                GROUP BY returned_before
            ) g ON p.source_row > g.returned_before
        ) s WHERE {part}.rowid = s.rid"""
    )


def ingest_source(
    con: duckdb.DuckDBPyConnection,
    project: Project,
    source: Source,
    run_id: str,
    files: list[FileInfo] | None = None,
) -> IngestResult:
    """Load every file of `source` into `raw_<source>`; raise InputError naming the file when a
    file cannot be read at all. `files`: the source's files as the run resolved them (hashed
    once per run), else resolved here."""
    if files is None:
        files = resolve_files(project, source)
    res = IngestResult(source=source.name, files=files)
    raw = raw_table(source.name)
    rej = rejects_table(source.name)
    drop_relation(con, src_view(source.name))
    drop_relation(con, unnumbered_view(source.name))
    drop_relation(con, raw)
    drop_relation(con, rej)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {ident(rej)} (source_file VARCHAR, line BIGINT, "
        "error_type VARCHAR, error VARCHAR, raw_line VARCHAR)"
    )
    kinds = {detect_type(source, f.path) for f in files}
    res.is_json = bool(kinds & {"json", "ndjson"})
    if res.is_json and kinds - {"json", "ndjson"}:
        raise InputError(f"source '{source.name}': mixes JSON and non-JSON files ({sorted(kinds)})")
    parts: list[str] = []
    json_parts: list[str] = []  # a SELECT per JSON file, in file order
    unnumbered_parts: list[str] = []  # the same SELECT without record numbers (NDJSON files)
    json_keys: set[str] = set()
    json_rows = 0  # records of the JSON files, counted by the keys pass
    for i, f in enumerate(files):
        kind = detect_type(source, f.path)
        part = f"_part_{i}"
        prov = (
            f"{literal(f.display)} AS source_file, _ord AS source_row, "
            f"{literal(f.sha256)} AS file_sha256"
        )
        if f.size == 0:
            continue  # an empty file has no header and no rows: counted as zero rows
        try:
            if kind in ("json", "ndjson"):
                # never copied into a table: the records are read twice straight from the file
                # (the keys and the record count here, then once more when contract reads the
                # `raw` view), which costs less than writing the text into a table and reading
                # it back (it spilled at 1M customers). Reading the file here also names it when
                # it cannot be read.
                records = _json_records(json_records_sql(kind, f.path, source.format), prov)
                unnumbered = (
                    _json_records(
                        json_records_sql(kind, f.path, source.format, numbered=False), prov
                    )
                    if kind == "ndjson"
                    else None
                )
                # the keys pass needs no record numbers: it reads on every thread
                keys, n = _json_keys(con, unnumbered or records)
                json_keys.update(keys)
                json_rows += n
                json_parts.append(records)
                if unnumbered is not None:
                    unnumbered_parts.append(unnumbered)
                res.json_file_rows.append((f.display, n))
                continue
            if kind == "xlsx":
                arrow = _xlsx_arrow(f.path, source.format)
                con.register("_xlsx_arrow", arrow)
                con.execute(
                    f"CREATE OR REPLACE TEMP TABLE {part} AS SELECT * EXCLUDE (_ord), {prov} "
                    "FROM _xlsx_arrow ORDER BY _ord"
                )
                con.unregister("_xlsx_arrow")
            else:
                scratch = f"_rej_{i}"
                _load_delimited(con, kind, f, source.format, part, prov, scratch)
                if kind != "parquet":
                    _collect_rejects(con, scratch, rej, f)
                    con.execute(f"DROP TABLE IF EXISTS {scratch}")
                    con.execute(f"DROP TABLE IF EXISTS {scratch}_scan")
        except duckdb.OutOfMemoryException:
            raise  # not the file's fault: pipeline.resource_errors names the setting
        except duckdb.Error as e:
            raise InputError(describe_error(f.display, e)) from None
        except InputError:
            raise
        except Exception as e:  # fastexcel and pyarrow errors
            raise InputError(describe_error(f.display, e)) from None
        parts.append(part)
    if res.is_json:
        _json_view(con, json_parts, sorted(json_keys), raw)
        if unnumbered_parts and len(unnumbered_parts) == len(json_parts):
            res.unnumbered_view = unnumbered_view(source.name)
            _json_view(con, unnumbered_parts, sorted(json_keys), res.unnumbered_view)
    elif len(parts) == 1:
        con.execute(f"ALTER TABLE {parts[0]} RENAME TO {ident(raw)}")
    elif parts:
        union = " UNION ALL BY NAME ".join(f"SELECT * FROM {p}" for p in parts)
        con.execute(f"CREATE TEMP TABLE {ident(raw)} AS {union}")
    else:
        con.execute(
            f"CREATE TEMP TABLE {ident(raw)} (source_file VARCHAR, source_row BIGINT, "
            "file_sha256 VARCHAR)"
        )
    for p in parts:
        con.execute(f"DROP TABLE IF EXISTS {p}")
    if res.is_json:
        res.rows_read = json_rows
    else:
        res.rows_read = con.execute(f"SELECT count(*) FROM {ident(raw)}").fetchone()[0]
    res.rows_rejected = con.execute(f"SELECT count(*) FROM {ident(rej)}").fetchone()[0]
    con.execute(f"CREATE TEMP VIEW {ident(src_view(source.name))} AS SELECT * FROM {ident(raw)}")
    res.columns = [
        r[0]
        for r in con.execute(f"DESCRIBE {ident(src_view(source.name))}").fetchall()
        if r[0] not in PROVENANCE_RAW and r[0] != "_json"
    ]
    return res


def drop_raw(con: duckdb.DuckDBPyConnection, source: str) -> None:
    """Free a source's raw rows once contract has staged them (they live for the run only)."""
    for name in (
        src_view(source),
        unnumbered_view(source),
        raw_table(source),
        rejects_table(source),
    ):
        drop_relation(con, name)


def _json_records(inner: str, prov: str) -> str:
    """The records a `json_records_sql` SELECT yields, as `_json` text plus provenance."""
    return f"SELECT _json::VARCHAR AS _json, {prov} FROM ({inner}) WHERE _json IS NOT NULL"


def _json_keys(con: duckdb.DuckDBPyConnection, records: str) -> tuple[list[str], int]:
    """The distinct top-level keys of the records a SELECT yields (`_json`), and how many records
    it yields: one pass, every record prepends a NULL to its keys (keys are never NULL), so the
    NULL group counts the records."""
    keys, n = [], 0
    for k, count in con.execute(
        f"SELECT k, count(*) FROM (SELECT unnest(list_prepend(NULL::VARCHAR, "
        f"coalesce(json_keys(_json), []))) AS k FROM ({records})) GROUP BY k"
    ).fetchall():
        if k is None:
            n = count
        else:
            keys.append(k)
    return keys, n


def _json_view(con: duckdb.DuckDBPyConnection, parts: list[str], keys: list[str], raw: str) -> None:
    """`raw` as a view over the JSON records (`parts`: a SELECT of `_json` + provenance per file,
    in file order, each in record order; UNION ALL and a plain projection keep that order): every
    top-level key of the records (`keys`: those of all records, not of a sample) becomes a
    VARCHAR column (nested values as JSON text), so mappings address JSON and flat exports the
    same way. Each record is parsed once for all its keys (`json_extract_string` with a list of
    paths), not once per column: a 30-key export read per column parsed every record 30 times.

    A view, not a table: contract reads it once (`chk_<source>`), so the records are parsed while
    they are checked instead of being written to a table (spilled at 1M customers) and read back.
    """
    if not parts:
        con.execute(
            f"CREATE TEMP TABLE {ident(raw)} (_json VARCHAR, source_file VARCHAR, "
            "source_row BIGINT, file_sha256 VARCHAR)"
        )
        return
    union = " UNION ALL ".join(f"({p})" for p in parts)
    keys = [k for k in keys if k not in PROVENANCE_RAW and k != "_json"]
    if not keys:
        con.execute(f"CREATE TEMP VIEW {ident(raw)} AS {union}")
        return
    paths = ", ".join(literal("$." + json_key(k)) for k in keys)
    cols = ", ".join(f"_l[{i}] AS {ident(k)}" for i, k in enumerate(keys, start=1))
    con.execute(
        f"CREATE TEMP VIEW {ident(raw)} AS SELECT {cols}, _json, "
        f"{', '.join(PROVENANCE_RAW)} FROM (SELECT json_extract_string(_json, [{paths}]) AS _l, "
        f"* FROM ({union}))"
    )


def json_key(key: str) -> str:
    """A JSONPath member: always quoted, so keys with dots or spaces work."""
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


def header_columns(
    con: duckdb.DuckDBPyConnection, project: Project, source: Source, f: FileInfo
) -> list[str]:
    """The columns (top-level keys for JSON, sampled) of one file, without loading it."""
    kind = detect_type(source, f.path)
    if f.size == 0:
        return []
    try:
        if kind in ("csv", "tsv", "parquet"):
            sql = _read_file_sql(kind, f.path, source.format, None)
            cols = [r[0] for r in con.execute(f"DESCRIBE {sql}").fetchall()]
            return [c for c in cols if c != "_ord"]
        if kind == "xlsx":
            return [c for c in _xlsx_arrow(f.path, source.format).column_names if c != "_ord"]
        inner = json_records_sql(kind, f.path, source.format)
        rows = con.execute(
            f"SELECT DISTINCT k FROM (SELECT unnest(json_keys(_json::JSON)) AS k FROM "
            f"(SELECT _json FROM ({inner}) LIMIT 1000)) ORDER BY k"
        ).fetchall()
        return [r[0] for r in rows]
    except duckdb.OutOfMemoryException:
        raise  # not the file's fault: pipeline.resource_errors names the setting
    except duckdb.Error as e:
        raise InputError(describe_error(f.display, e)) from None
    except Exception as e:
        raise InputError(describe_error(f.display, e)) from None
