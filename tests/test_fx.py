"""FX rate selection, fallback, exact division and the reusable `convert`."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import duckdb
import pytest

from romirecon.stages import fx
from romirecon.stages.common import entity_table_ddl

D = dt.date


def _con(rates: list[tuple[str, str, str, str]]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(entity_table_ddl("fx_rate"))
    for i, (day, base, quote, rate) in enumerate(rates, start=1):
        con.execute(
            "INSERT INTO stg_fx_rate (date, base, quote, rate, source_name, source_file, source_row) "
            "VALUES (?, ?, ?, ?, 'ecb', 'eurofxref.csv', ?)",
            [day, base, quote, Decimal(rate), i],
        )
    return con


def _rates(con: duckdb.DuckDBPyConnection, pairs: list[tuple[str, str]], rep: str, days: int = 7):
    con.execute("CREATE OR REPLACE TABLE need (currency VARCHAR, day DATE)")
    con.executemany("INSERT INTO need VALUES (?, ?)", pairs)
    fx.build_daily_rates(con, "SELECT * FROM need", rep, "r", max_fallback_days=days)
    return {
        (c, str(d)): (r, m)
        for c, d, r, m in con.execute("SELECT currency, day, fx_rate, fx_method FROM r").fetchall()
    }


@pytest.mark.parametrize(
    ("num", "den", "want"),
    [
        ("1", "1.0830", "0.9233610342"),  # 0.92336103416435.. -> up
        ("1", "20000000000", "0.0000000000"),  # 0.00000000005 exactly: tie -> even (0)
        ("3", "20000000000", "0.0000000002"),  # 0.00000000015 exactly: tie -> even (2)
        ("1.0830", "162.50", "0.0066646154"),
        ("2", "3", "0.6666666667"),
    ],
)
def test_div_half_even(num: str, den: str, want: str) -> None:
    con = duckdb.connect()
    sql = fx.div_half_even_sql(f"CAST({num} AS DECIMAL(38,10))", f"CAST({den} AS DECIMAL(38,10))")
    got, typ = con.execute(f"SELECT {sql}, typeof({sql})").fetchone()
    assert (format(got, "f"), typ) == (want, "DECIMAL(38,10)")


def test_direct_inverse_cross_and_identity() -> None:
    con = _con(
        [
            ("2024-03-01", "EUR", "USD", "1.0830"),
            ("2024-03-01", "EUR", "JPY", "162.50"),
            ("2024-03-01", "GBP", "USD", "1.2700"),  # a direct quote beats the EUR cross
            ("2024-03-01", "EUR", "GBP", "0.8560"),
        ]
    )
    got = _rates(
        con,
        [
            ("EUR", "2024-03-01"),
            ("JPY", "2024-03-01"),
            ("GBP", "2024-03-01"),
            ("USD", "2024-03-01"),
        ],
        "USD",
    )
    assert got[("EUR", "2024-03-01")] == (Decimal("1.0830000000"), "direct")
    assert got[("JPY", "2024-03-01")] == (Decimal("0.0066646154"), "cross-eur")  # 1.083/162.5
    assert got[("GBP", "2024-03-01")] == (Decimal("1.2700000000"), "direct")
    assert got[("USD", "2024-03-01")] == (Decimal("1.0000000000"), "identity")


def test_reporting_in_eur_inverts_ecb_rates() -> None:
    con = _con([("2024-03-01", "EUR", "USD", "1.0830")])
    got = _rates(con, [("USD", "2024-03-01"), ("EUR", "2024-03-01")], "EUR")
    # 1 USD = 1 / 1.0830 EUR = 0.92336103416.. -> 0.9233610342
    assert got[("USD", "2024-03-01")] == (Decimal("0.9233610342"), "inverse")
    assert got[("EUR", "2024-03-01")] == (Decimal("1.0000000000"), "identity")


def test_fallback_window_is_configurable() -> None:
    con = _con([("2024-03-01", "EUR", "USD", "1.0830")])  # Friday
    pairs = [("EUR", "2024-03-03"), ("EUR", "2024-03-04")]  # Sunday (2 days), Monday (3 days)
    seven = _rates(con, pairs, "USD", days=7)
    assert seven[("EUR", "2024-03-03")] == (Decimal("1.0830000000"), "direct+fallback")
    assert seven[("EUR", "2024-03-04")] == (Decimal("1.0830000000"), "direct+fallback")
    two = _rates(con, pairs, "USD", days=2)
    assert two[("EUR", "2024-03-03")] == (Decimal("1.0830000000"), "direct+fallback")
    assert two[("EUR", "2024-03-04")] == (None, None)  # 3 days back > 2: missing, not 1.0


def test_no_rate_before_first_publication() -> None:
    con = _con([("2024-03-04", "EUR", "USD", "1.0850")])
    got = _rates(con, [("EUR", "2024-03-01")], "USD")
    assert got[("EUR", "2024-03-01")] == (None, None)  # never a later rate backwards


def test_cross_legs_come_from_the_same_publication() -> None:
    # JPY published Friday only, USD Friday and Monday: Monday's JPY->USD must use Friday's legs
    con = _con(
        [
            ("2024-03-01", "EUR", "USD", "1.0830"),
            ("2024-03-01", "EUR", "JPY", "162.50"),
            ("2024-03-04", "EUR", "USD", "1.0850"),
        ]
    )
    got = _rates(con, [("JPY", "2024-03-04")], "USD")
    assert got[("JPY", "2024-03-04")] == (Decimal("0.0066646154"), "cross-eur+fallback")


def test_convert_writes_amounts_findings_and_metric() -> None:
    con = _con([("2024-03-01", "EUR", "USD", "1.0830"), ("2024-03-01", "EUR", "JPY", "162.50")])
    con.execute("CREATE TABLE spend (campaign VARCHAR, cur VARCHAR, d DATE, amt BIGINT)")
    con.executemany(
        "INSERT INTO spend VALUES (?, ?, ?, ?)",
        [
            ("a", "JPY", D(2024, 3, 2), 10000),  # 10000 yen x 0.0066646154 = 66.646154
            ("b", "EUR", D(2024, 3, 1), 12345),  # 123.45 EUR x 1.083 = 133.69635
            ("c", "CHF", D(2024, 3, 1), 500),  # no CHF rate at all
            ("d", "KWD", D(2024, 3, 1), 1),  # 0.001 KWD, no rate
        ],
    )
    out = fx.convert(con, "spend", "amt", "cur", "d", "USD", "r9", stage="ads")
    rows = con.execute(
        f"SELECT campaign, amount_reporting, fx_rate FROM {out} ORDER BY campaign"
    ).fetchall()
    assert rows == [
        ("a", Decimal("66.6461540000"), Decimal("0.0066646154")),
        ("b", Decimal("133.6963500000"), Decimal("1.0830000000")),
        ("c", None, None),
        ("d", None, None),
    ]
    findings = con.execute(
        "SELECT stage, code, record_id, other_id, json_extract_string(detail, '$.currency') "
        "FROM finding ORDER BY record_id"
    ).fetchall()
    assert findings == [
        ("ads", "fx-rate-missing", "CHF", "2024-03-01", "CHF"),
        ("ads", "fx-rate-missing", "KWD", "2024-03-01", "KWD"),
    ]
    assert con.execute("SELECT value FROM metric WHERE name = 'fx_gaps'").fetchall() == [(2.0,)]


def test_reporting_amount_is_exact() -> None:
    con = duckdb.connect()
    # 1 fils (0.001 KWD) x 3.2522522523 = 0.0032522522523: every digit kept, nothing rounded
    exact = fx.exact_reporting_sql("CAST(1 AS BIGINT)", "CAST(3.2522522523 AS DECIMAL(38,10))", "3")
    got = con.execute(f"SELECT {exact}, typeof({exact})").fetchone()
    assert got == (Decimal("0.0032522522523"), "DECIMAL(38,14)")


def test_future_days_use_the_rate_as_of_the_run_date() -> None:
    # rates published up to Friday 2024-03-29; the run's as-of date is Sunday 03-31.
    # A service day on 04-20 (21 days after the last publication, in the future of the run)
    # takes Friday's rate, marked +forward; without an as-of date it is a gap, as before.
    con = _con([("2024-03-29", "EUR", "USD", "1.0790")])
    con.execute("CREATE OR REPLACE TABLE need (currency VARCHAR, day DATE)")
    con.execute("INSERT INTO need VALUES ('EUR', '2024-04-20'), ('EUR', '2024-03-30')")
    fx.build_daily_rates(con, "SELECT * FROM need", "USD", "r", forward_from=dt.date(2024, 3, 31))
    got = dict(
        ((str(d)), (r, m))
        for d, r, m in con.execute("SELECT day, fx_rate, fx_method FROM r").fetchall()
    )
    assert got["2024-04-20"] == (Decimal("1.0790000000"), "direct+forward")
    assert got["2024-03-30"] == (Decimal("1.0790000000"), "direct+fallback")
    assert _rates(con, [("EUR", "2024-04-20")], "USD")[("EUR", "2024-04-20")] == (None, None)


def test_stale_rate_file_is_not_carried_forward() -> None:
    # last publication 03-01, as-of 03-31: the file is 30 days stale, so a future day is a gap
    con = _con([("2024-03-01", "EUR", "USD", "1.0830")])
    con.execute("CREATE OR REPLACE TABLE need (currency VARCHAR, day DATE)")
    con.execute("INSERT INTO need VALUES ('EUR', '2024-04-05')")
    fx.build_daily_rates(con, "SELECT * FROM need", "USD", "r", forward_from=dt.date(2024, 3, 31))
    assert con.execute("SELECT fx_rate FROM r").fetchall() == [(None,)]


def test_convert_leaves_the_source_exponent_overrides_in_place() -> None:
    # billing installs per-source exponents (Stripe's ISK is 2, ISO says 0); a later convert
    # with ISO exponents must not replace that table for the readers after it
    con = _con([("2024-03-01", "EUR", "USD", "1.0830")])
    fx.ensure_exponent_table(con, {"stripe": {"isk": 2}})
    con.execute("CREATE TABLE spend (cur VARCHAR, d DATE, amt BIGINT)")
    con.execute("INSERT INTO spend VALUES ('EUR', DATE '2024-03-01', 12345)")
    out = fx.convert(con, "spend", "amt", "cur", "d", "USD", "r1")
    # 123.45 EUR (ISO exponent 2) x 1.083 = 133.69635
    assert con.execute(f"SELECT amount_reporting FROM {out}").fetchone() == (
        Decimal("133.6963500000"),
    )
    assert con.execute(
        "SELECT scope, key, exponent FROM currency_exponent WHERE currency = 'ISK' ORDER BY scope"
    ).fetchall() == [("iso", "", 0), ("source", "stripe", 2)]
