"""The bad-input corpus (tests/corpus/): each broken export either loads with rows quarantined by
reason (and every row accounted for) or stops with a one-line error naming the file, and exits 3
(4 for missing or empty input). Never a traceback, never a silent drop."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pytest

from romirecon.config import load_project
from romirecon.db import configure
from romirecon.exitcodes import RomireconError
from romirecon.pipeline import ingest_and_stage
from tests.conftest import write_project

CORPUS = Path(__file__).parent / "corpus"

MAPPING: dict[str, Any] = {
    "entity": "deal",
    "columns": {
        "source_id": {"from": "Id", "required": True},
        "name": {"from": "LastName", "required": True},
        "contact_id": {"from": "Email"},
        "currency": {"from": "CurrencyIsoCode"},
        "amount": {"from": "Amount", "unit": "major", "min": 0, "max": 1000000000},
        "created_at": {"from": "CreatedDate"},
    },
}
DATE_FORMATS = {"formats": ["%Y-%m-%d", "%d/%m/%Y %H:%M", "%b %d %Y"]}

# name: (file, format options, column overrides, expectation)
# expectation: {"exit": code, "says": [...]} or {"staged": n, "reasons": [(reason, row or line)]}
CASES: dict[str, tuple[str, dict, dict, dict]] = {
    "empty file": ("empty.csv", {}, {}, {"exit": 4, "says": ["no data rows"]}),
    "header only": ("header_only.csv", {}, {}, {"exit": 4, "says": ["no data rows"]}),
    "wrong delimiter, sniffed": ("wrong_delimiter.csv", {}, {}, {"staged": 2, "reasons": []}),
    "wrong delimiter, declared": (
        "wrong_delimiter.csv", {"delimiter": ","}, {},
        {"exit": 3, "says": ["'Id'", "is not in the export"]},
    ),
    "mixed line endings": ("mixed_line_endings.csv", {}, {}, {"staged": 2, "reasons": []}),
    "utf-8 BOM": ("bom.csv", {}, {}, {"staged": 2, "reasons": []}),
    "latin-1 declared": ("latin1.csv", {"encoding": "latin-1"}, {}, {"staged": 1, "reasons": [], "name": "Müller"}),
    "latin-1 undeclared": ("latin1.csv", {}, {}, {"exit": 3, "says": ["latin1.csv", "encoding"]}),
    "utf-16 declared": ("utf16.csv", {"encoding": "utf-16"}, {}, {"staged": 1, "reasons": [], "name": "Müller"}),
    # the sniffer finds no consistent quoting, so the stray quote stays in the value: visible,
    # nothing lost
    "unbalanced quotes": ("unbalanced_quotes.csv", {}, {}, {"staged": 2, "reasons": [], "name": '"Lee'}),
    "too many fields": ("too_many_fields.csv", {}, {}, {"staged": 2, "reasons": [("malformed-row", 4)]}),
    "too few fields": ("too_few_fields.csv", {}, {}, {"staged": 2, "reasons": [("malformed-row", 4)]}),
    "duplicated header": ("duplicated_header.csv", {}, {}, {"staged": 1, "reasons": [], "contact": "a@x.com"}),
    "missing required column": (
        "missing_required_column.csv", {}, {}, {"exit": 3, "says": ["'LastName'", "is not in the export"]},
    ),
    "columns renamed by the vendor": (
        "renamed_columns.csv", {}, {}, {"exit": 3, "says": ["did you mean 'Last_Name'"]},
    ),
    "decimal comma": (
        "decimal_comma.csv", {"delimiter": ";", "decimal_separator": ",", "thousands_separator": "."}, {},
        {"staged": 1, "reasons": [], "amount": 123456},
    ),
    "thousands separator": (
        "thousands_separator.csv", {"thousands_separator": ","}, {}, {"staged": 1, "reasons": [], "amount": 123456},
    ),
    "several date formats, default parser": (
        "date_formats.csv", {}, {},
        {"staged": 1, "reasons": [("invalid-timestamp", 2), ("invalid-timestamp", 3)]},
    ),
    "several date formats, declared": (
        "date_formats.csv", {}, {"created_at": DATE_FORMATS}, {"staged": 3, "reasons": []},
    ),
    "timestamps with and without zones": (
        "timestamp_zones.csv", {}, {}, {"staged": 3, "reasons": [], "same_instant": dt.datetime(2024, 1, 15, 10)},
    ),
    "negative and absurd amounts": (
        "absurd_amounts.csv", {}, {}, {"staged": 1, "reasons": [("out-of-range", 1), ("out-of-range", 2)]},
    ),
    "unknown currency": ("unknown_currency.csv", {}, {}, {"staged": 1, "reasons": [("unknown-currency", 1)]}),
    "NaN and Infinity in JSON": (
        "nan_infinity.json", {}, {}, {"staged": 1, "reasons": [("invalid-money", 1), ("invalid-money", 2)]},
    ),
    "deeply nested JSON": ("deeply_nested.json", {}, {}, {"staged": 1, "reasons": []}),
    "parquet with the wrong schema": (
        "wrong_schema.parquet", {}, {}, {"exit": 3, "says": ["wrong_schema.parquet", "'Id'", "did you mean 'id'"]},
    ),
    "truncated gzip": ("truncated.csv.gz", {}, {}, {"exit": 3, "says": ["truncated.csv.gz"]}),
}  # fmt: skip


def _project(tmp_path: Path, file: str, fmt: dict, overrides: dict) -> Path:
    mapping = {**MAPPING, "columns": {**MAPPING["columns"]}}
    for col, extra in overrides.items():
        mapping["columns"][col] = {**mapping["columns"][col], **extra}
    proj = write_project(
        tmp_path / "p",
        [{"name": "corpus", "system": "crm", "entity": "deal", "mapping": "mappings/m.yaml",
          "path": f"data/{file}", **({"format": fmt} if fmt else {})}],
        {"m": mapping},
        {},
    )  # fmt: skip
    (proj / "data").mkdir()
    if file in {p.name for p in CORPUS.iterdir()}:
        shutil.copy(CORPUS / file, proj / "data" / file)
    return proj


def _outcome(proj: Path) -> tuple[int | None, str, duckdb.DuckDBPyConnection | None]:
    """Ingest + contract only (the stages bad input concerns), in memory: fast enough to run
    every case and the fuzzers on each `make test`."""
    con = duckdb.connect()
    configure(con)
    try:
        ingest_and_stage(con, load_project(proj), "test")
    except RomireconError as e:
        return int(e.exit_code), e.message, None
    return None, "", con


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(tmp_path: Path, case: str) -> None:
    file, fmt, overrides, want = CASES[case]
    proj = _project(tmp_path, file, fmt, overrides)
    code, message, con = _outcome(proj)
    if "exit" in want:
        assert code == want["exit"], message
        assert "\n" not in message and "Traceback" not in message
        for fragment in want["says"]:
            assert fragment in message
        return
    assert code is None, message
    assert con is not None
    staged = con.execute("SELECT count(*) FROM stg_deal").fetchone()[0]
    q = con.execute(
        "SELECT reason, coalesce(source_row, source_line) FROM quarantine ORDER BY 2"
    ).fetchall()
    assert staged == want["staged"]
    assert q == want["reasons"]
    # conservation against an independent count of the file's records
    read = con.execute("SELECT sum(rows_read) FROM ingest_stats").fetchone()[0]
    assert read == staged + len(q)
    if "name" in want:
        assert con.execute("SELECT name FROM stg_deal").fetchone()[0] == want["name"]
    if "contact" in want:
        assert con.execute("SELECT contact_id FROM stg_deal").fetchone()[0] == want["contact"]
    if "amount" in want:
        assert con.execute("SELECT amount FROM stg_deal").fetchone()[0] == want["amount"]
    if "same_instant" in want:
        instants = {r[0] for r in con.execute("SELECT created_at FROM stg_deal").fetchall()}
        assert instants == {want["same_instant"]}


def test_glob_that_matches_nothing(tmp_path: Path) -> None:
    proj = _project(tmp_path, "nothing-*.csv", {}, {})
    code, message, _ = _outcome(proj)
    assert code == 4 and "no file matches data/nothing-*.csv" in message


def test_ten_megabyte_field(tmp_path: Path) -> None:
    proj = _project(tmp_path, "big.csv", {}, {})
    (proj / "data" / "big.csv").write_text(
        "Id,Email,LastName,CurrencyIsoCode,Amount,CreatedDate\n"
        f"003A,a@x.com,{'x' * 10_000_000},USD,1,2024-01-15\n003B,b@x.com,Moe,USD,1,2024-01-15\n"
    )
    code, message, con = _outcome(proj)
    assert code is None, message
    assert con is not None
    assert con.execute("SELECT max(length(name)), count(*) FROM stg_deal").fetchone() == (
        10_000_000,
        2,
    )


# --- fuzz: random bytes and random CSV shapes -------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

HEADER = "Id,Email,LastName,CurrencyIsoCode,Amount,CreatedDate\n"
fuzz_cell = st.one_of(
    st.sampled_from(["003A", "a@x.com", "USD", "1.5", "-1", "", '"', '""', ",", "\n", "\r\n",
                     "2024-01-15", "NaN", "é", "\x00", "\ufeff", ";", "\t"]),
    st.text(max_size=6),
)  # fmt: skip


def _check_outcome(proj: Path) -> None:
    """Either a clean error (exit 3 or 4, one line naming the file) or full conservation."""
    code, message, con = _outcome(proj)
    if code is not None:
        assert code in (3, 4), message
        assert "\n" not in message
        assert "data/" in message or "source 'corpus'" in message
        return
    assert con is not None
    try:
        read = con.execute("SELECT sum(rows_read) FROM ingest_stats").fetchone()[0]
        staged = con.execute("SELECT count(*) FROM stg_deal").fetchone()[0]
        quarantined = con.execute("SELECT count(*) FROM quarantine").fetchone()[0]
        assert read == staged + quarantined
    finally:
        con.close()


def _fresh(tmp: Path, data: bytes) -> Path:
    import tempfile

    d = Path(tempfile.mkdtemp(dir=tmp))
    proj = _project(d, "fuzz.csv", {}, {})
    (proj / "data" / "fuzz.csv").write_bytes(data)
    return proj


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=400))
def test_fuzz_random_bytes(tmp_path: Path, data: bytes) -> None:
    _check_outcome(_fresh(tmp_path, data))


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=st.lists(st.lists(fuzz_cell, min_size=0, max_size=8), max_size=12),
       sep=st.sampled_from([",", ";", "\t", "|"]), crlf=st.booleans())  # fmt: skip
def test_fuzz_random_csv_shapes(
    tmp_path: Path, rows: list[list[str]], sep: str, crlf: bool
) -> None:
    nl = "\r\n" if crlf else "\n"
    text = HEADER.replace(",", sep).replace("\n", nl) + "".join(sep.join(r) + nl for r in rows)
    _check_outcome(_fresh(tmp_path, text.encode("utf-8", "surrogatepass")))


@pytest.mark.parametrize("preamble", [0, 2])
def test_rows_after_a_rejected_line_keep_their_file_row_number(
    tmp_path: Path, preamble: int
) -> None:
    """A rejected line is still a data row of the file: the rows after it keep their own row
    numbers (a quoted value spanning two lines is one row; a preamble skipped by `skip_rows`
    is not a row). Expected numbers are the data rows of the file as written below."""
    head = "Id,Email,LastName,CurrencyIsoCode,Amount,CreatedDate\n"
    rows = [
        "D1,a@x.com,Lee,USD,1.00,2024-01-15T10:20:30Z",  # row 1
        'D2,b@x.com,"Moe\nJr",EUR,2.00,2024-01-16T08:00:00Z',  # row 2, two lines
        "D3,c@x.com,Roe,USD,3.00,2024-01-17T00:00:00Z,EXTRA",  # row 3: too many fields
        "D4,d@x.com,Poe",  # row 4: too few fields
        "D5,e@x.com,Kay,USD,abc,2024-01-18T00:00:00Z",  # row 5: not a number
        "D6,f@x.com,Fox,USD,6.00,2024-01-19T00:00:00Z",  # row 6
        "D7,g@x.com,Gil,USD,7.00,2024-01-20T00:00:00Z,EXTRA",  # row 7: too many fields
        "D8,h@x.com,Gus,USD,8.00,2024-01-21T00:00:00Z",  # row 8
    ]
    text = "".join(f"note {i}\n" for i in range(preamble)) + head + "\n".join(rows) + "\n"
    proj = _project(tmp_path, "deals.csv", {"skip_rows": preamble} if preamble else {}, {})
    (proj / "data" / "deals.csv").write_text(text)
    code, message, con = _outcome(proj)
    assert code is None and con is not None, message
    staged = con.execute("SELECT source_id, source_row FROM stg_deal ORDER BY 1").fetchall()
    assert staged == [("D1", 1), ("D2", 2), ("D6", 6), ("D8", 8)]
    bad = con.execute(
        "SELECT source_row, reason FROM quarantine WHERE source_row IS NOT NULL"
    ).fetchall()
    assert [r[0] for r in bad] == [5] and bad[0][1] != "malformed-row"
    # rejected lines keep DuckDB's line number: preamble, header and each record once
    lines = con.execute(
        "SELECT source_line FROM quarantine WHERE reason = 'malformed-row' ORDER BY 1"
    ).fetchall()
    assert lines == [(preamble + 1 + 3,), (preamble + 1 + 4,), (preamble + 1 + 7,)]
