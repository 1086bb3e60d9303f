"""Property tests (hypothesis): spreading creates or loses nothing, and the largest-remainder
split agrees with an independent exact implementation."""

from __future__ import annotations

import datetime as dt
import random
from fractions import Fraction

import duckdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from romirecon.stages import billing
from romirecon.stages.common import entity_table_ddl
from tests.conftest import BILLING_TABLES

TABLES = BILLING_TABLES


def reference_split(total: int, weights: list[int]) -> list[int]:
    """Largest remainder, written independently with Fractions: floor of each exact share, then
    one unit each to the largest fractional parts (ties: lower index first), sign mirrored."""
    w = [max(x, 0) for x in weights]
    if sum(w) == 0:
        w = [1] * len(weights)
    exact = [Fraction(abs(total) * x, sum(w)) for x in w]
    floors = [int(e) for e in exact]  # non-negative, so int() is floor
    left = abs(total) - sum(floors)
    order = sorted(range(len(w)), key=lambda i: (-(exact[i] - floors[i]), i))
    for i in order[:left]:
        floors[i] += 1
    sign = -1 if total < 0 else 1
    return [sign * f for f in floors]


groups = st.lists(
    st.tuples(
        st.integers(-(10**13), 10**13),
        st.lists(st.integers(-5, 10**9), min_size=1, max_size=12),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(groups)
def test_largest_remainder_matches_reference(data: list[tuple[int, list[int]]]) -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE p (g INTEGER, i INTEGER, total BIGINT, w BIGINT)")
    rows = [(g, i, total, w) for g, (total, ws) in enumerate(data) for i, w in enumerate(ws)]
    con.executemany("INSERT INTO p VALUES (?, ?, ?, ?)", rows)
    sql = billing.largest_remainder_sql("p", ["g"], "total", "w", ["i"])
    got = con.execute(f"SELECT g, i, alloc FROM ({sql}) ORDER BY g, i").fetchall()
    want = [
        (g, i, a)
        for g, (total, ws) in enumerate(data)
        for i, a in enumerate(reference_split(total, ws))
    ]
    assert got == want
    for g, (total, _) in enumerate(data):
        assert sum(a for gg, _, a in got if gg == g) == total


line = st.fixed_dictionaries(
    {
        "amount": st.integers(-(10**9), 10**9),
        "discount_pct": st.integers(0, 100),
        "start": st.dates(dt.date(2023, 1, 1), dt.date(2025, 12, 31)),
        "days": st.integers(1, 400),
        "proration": st.booleans(),
        "currency": st.sampled_from(["USD", "JPY", "KWD", "EUR"]),
        "invoice": st.integers(0, 4),
    }
)


def _load(
    con: duckdb.DuckDBPyConnection,
    lines: list[dict],
    inv_discounts: list[int],
    order: list[int] | None = None,
) -> None:
    """Insert the lines (line k gets id il_k) in `order` (default: as given)."""
    for e in TABLES:
        con.execute(entity_table_ddl(e))
    for n, disc in enumerate(inv_discounts):
        con.execute(
            "INSERT INTO stg_invoice (source_id, customer_id, status, currency, discount, "
            "created_at, source_name, source_vendor, source_file, source_row) "
            "VALUES (?, ?, 'paid', NULL, ?, TIMESTAMP '2024-01-01', 'inv', 'stripe', 'i.csv', ?)",
            [f"in_{n}", f"cus_{n % 2}", disc, n + 1],
        )
    for pos, k in enumerate(order if order is not None else range(len(lines))):
        ln = lines[k]
        disc = abs(ln["amount"]) * ln["discount_pct"] // 100 * (1 if ln["amount"] >= 0 else -1)
        con.execute(
            "INSERT INTO stg_invoice_line (source_id, invoice_id, currency, amount, discount, "
            "proration, discountable, period_start, period_end, source_name, source_vendor, "
            "source_file, source_row) VALUES (?, ?, ?, ?, ?, ?, true, ?, ?, 'lines', 'stripe', 'l.csv', ?)",
            [
                f"il_{k}",
                f"in_{ln['invoice']}",
                ln["currency"],
                ln["amount"],
                disc,
                ln["proration"],
                ln["start"],
                ln["start"] + dt.timedelta(days=ln["days"]),
                pos + 1,
            ],
        )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(line, min_size=1, max_size=8),
    st.lists(st.integers(0, 10**6), min_size=5, max_size=5),
)
def test_daily_sum_equals_line_nets(lines: list[dict], inv_discounts: list[int]) -> None:
    con = duckdb.connect()
    _load(con, lines, inv_discounts)
    billing.run(con, "p", "USD", {})
    # the lines' nets computed here, independently: amount - line discount - invoice discounts
    # (every line is discountable, so each invoice with lines hands out its whole discount)
    used = {ln["invoice"] for ln in lines}
    line_disc = [
        abs(ln["amount"]) * ln["discount_pct"] // 100 * (1 if ln["amount"] >= 0 else -1)
        for ln in lines
    ]
    billable = [ln["amount"] != 0 for ln in lines]
    want_total = sum(ln["amount"] - d for ln, d in zip(lines, line_disc, strict=True)) - sum(
        inv_discounts[i]
        for i in used
        if any(b for ln, b in zip(lines, billable, strict=True) if ln["invoice"] == i)
    )

    def one(sql: str) -> int:
        row = con.execute(sql).fetchone()
        assert row is not None
        return int(row[0])

    nets = one("SELECT coalesce(sum(net), 0) FROM revenue_event WHERE billable")
    line_days = one("SELECT coalesce(sum(amount_minor), 0) FROM revenue_daily WHERE kind = 'line'")
    all_days = one("SELECT coalesce(sum(amount_minor), 0) FROM revenue_daily")
    adjustments = one("SELECT coalesce(sum(amount), 0) FROM revenue_adjustment WHERE counted")
    monthly = one("SELECT coalesce(sum(amount_minor), 0) FROM revenue")
    # spreading creates or loses nothing: line days = line nets; every day = nets + adjustments
    # (the only adjustments here are downgrade credits carried as customer credit)
    assert line_days == nets
    assert all_days == nets + adjustments == monthly
    # zero-amount lines carry no revenue, so their invoice discount share is 0 too
    if all(billable):
        assert line_days == want_total
    # per line: one row per service day, days within one unit of each other, exact sum
    per_line = con.execute(
        """SELECT e.event_id, any_value(e.net), any_value(e.service_days), count(d.day),
                  coalesce(sum(d.amount_minor), 0), max(d.amount_minor) - min(d.amount_minor)
           FROM revenue_event e LEFT JOIN revenue_daily d ON d.event_id = e.event_id AND d.kind = 'line'
           WHERE e.billable GROUP BY e.event_id"""
    ).fetchall()
    for _, net, days, n, total, spread in per_line:
        assert n == days and total == net and spread <= 1


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(line, min_size=1, max_size=8), st.randoms(use_true_random=False))
def test_input_order_and_rerun_do_not_change_output(lines: list[dict], rnd: random.Random) -> None:
    def result(order: list[int], runs: int) -> list[tuple]:
        con = duckdb.connect()
        _load(con, lines, [100, 0, 7, 0, 3], order)
        for _ in range(runs):
            billing.run(con, "p", "USD", {})
        return (
            con.execute(billing.revenue_output_query()).fetchall()
            + con.execute("SELECT * FROM revenue_daily ORDER BY item_id, day").fetchall()
        )

    shuffled = list(range(len(lines)))
    rnd.shuffle(shuffled)
    first = result(list(range(len(lines))), 1)
    assert result(list(range(len(lines))), 2) == first  # running twice equals once
    assert result(shuffled, 1) == first  # physical input order does not matter


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(-(10**12), 10**12), st.integers(1, 60)), min_size=1, max_size=8)
)
def test_day_spread_closed_form_equals_generic_split(items: list[tuple[int, int]]) -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE it (item_id INTEGER, total BIGINT, start_day DATE, end_day DATE)")
    start = dt.date(2024, 2, 20)
    con.executemany(
        "INSERT INTO it VALUES (?, ?, ?, ?)",
        [(i, t, start, start + dt.timedelta(days=n)) for i, (t, n) in enumerate(items)],
    )
    closed = con.execute(
        f"SELECT item_id, day, amount_minor FROM ({billing.spread_days_sql('it')}) ORDER BY 1, 2"
    ).fetchall()
    days = (
        "(SELECT *, CAST(unnest(range(start_day, end_day, INTERVAL 1 DAY)) AS DATE) AS day FROM it)"
    )
    generic = con.execute(
        "SELECT item_id, day, alloc FROM ("
        + billing.largest_remainder_sql(days, ["item_id"], "total", "1", ["day"])
        + ") ORDER BY 1, 2"
    ).fetchall()
    assert closed == generic
    for i, (t, n) in enumerate(items):
        mine = [a for j, _, a in closed if j == i]
        assert len(mine) == n and sum(mine) == t
        assert mine == reference_split(t, [1] * n)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(1, 10**7), st.integers(1, 90)), min_size=1, max_size=6),
    st.lists(st.integers(1, 10**6), min_size=1, max_size=4),
    st.sampled_from(["line-period", "document-date"]),
)
def test_credit_notes_are_allocated_without_loss(
    lines: list[tuple[int, int]], credits: list[int], timing: str
) -> None:
    con = duckdb.connect()
    for e in TABLES:
        con.execute(entity_table_ddl(e))
    con.execute(
        "INSERT INTO stg_invoice (source_id, customer_id, status, currency, created_at, "
        "source_name, source_vendor, source_file, source_row) "
        "VALUES ('in_1', 'c', 'paid', 'USD', TIMESTAMP '2024-01-01', 'i', 'stripe', 'i.csv', 1)"
    )
    start = dt.date(2024, 1, 1)
    for k, (amount, days) in enumerate(lines):
        con.execute(
            "INSERT INTO stg_invoice_line (source_id, invoice_id, currency, amount, period_start, "
            "period_end, source_name, source_vendor, source_file, source_row) "
            "VALUES (?, 'in_1', 'USD', ?, ?, ?, 'l', 'stripe', 'l.csv', ?)",
            [f"il_{k}", amount, start, start + dt.timedelta(days=days), k + 1],
        )
    for k, amount in enumerate(credits):
        con.execute(
            "INSERT INTO stg_credit_note (source_id, invoice_id, status, currency, amount, "
            "created_at, source_name, source_vendor, source_file, source_row) "
            "VALUES (?, 'in_1', 'issued', 'USD', ?, TIMESTAMP '2024-02-10', 'cn', 'stripe', 'cn.csv', ?)",
            [f"cn_{k}", amount, k + 1],
        )
    billing.run(con, "p", "USD", {"adjustment_timing": timing})

    def one(sql: str) -> int:
        row = con.execute(sql).fetchone()
        assert row is not None
        return int(row[0])

    # each credit note's parts add up to the note; every part lands in revenue_daily
    assert one("SELECT sum(amount) FROM revenue_adjustment WHERE counted") == -sum(credits)
    per_doc = con.execute(
        "SELECT document_id, sum(amount) FROM revenue_adjustment GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert per_doc == [
        (f"cn_{k}", -a) for k, a in sorted(enumerate(credits), key=lambda t: f"cn_{t[0]}")
    ]
    assert one("SELECT sum(amount_minor) FROM revenue_daily") == sum(a for a, _ in lines) - sum(
        credits
    )
    assert one("SELECT sum(amount_minor) FROM revenue") == sum(a for a, _ in lines) - sum(credits)


item_rows = st.lists(
    st.tuples(
        st.integers(-(10**9), 10**9),  # total (minor units)
        st.integers(0, 80),  # start: days after 2024-01-25
        st.integers(1, 70),  # days
        st.sampled_from(["USD", "EUR", "JPY", None]),
        st.sampled_from([0, 2, 3, None]),  # exponent
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(item_rows, st.sampled_from(billing.PERIOD_GRAINS), st.integers(0, 2**32))
def test_item_periods_equal_the_sum_of_the_day_rows(
    items: list[tuple[int, int, int, str | None, int | None]], grain: str, seed: int
) -> None:
    """item_periods_sql (no day rows) gives, per item and period, what summing the revenue_daily
    day rows gives: native units, exact reporting amount over the days with a rate (NULL when
    none has one), rate min/max, missing and fallback day counts."""
    con = duckdb.connect()
    base = dt.date(2024, 1, 25)
    con.execute(
        "CREATE TABLE revenue_item (item_no BIGINT, item_id VARCHAR, kind VARCHAR, "
        "event_id VARCHAR, adjustment_id VARCHAR, source_name VARCHAR, source_vendor VARCHAR, "
        "customer_id VARCHAR, entity_id VARCHAR, currency VARCHAR, exponent INTEGER, "
        "total BIGINT, start_day DATE, end_day DATE)"
    )
    con.executemany(
        "INSERT INTO revenue_item VALUES (?, ?, 'line', ?, NULL, 's', NULL, 'c', NULL, ?, ?, ?, ?, ?)",
        [
            (n, f"i{n}", f"i{n}", cur, exp, total, base + dt.timedelta(start),
             base + dt.timedelta(start + days))
            for n, (total, start, days, cur, exp) in enumerate(items, start=1)
        ],
    )  # fmt: skip
    # day rates: random, some days missing (NULL) and some carried from an earlier day
    rnd = random.Random(seed)
    con.execute(
        "CREATE TABLE revenue_fx_day (currency VARCHAR, day DATE, fx_rate DECIMAL(38,10), "
        "fx_rate_date DATE, fx_method VARCHAR, last_published DATE)"
    )
    rates = []
    for cur in ("USD", "EUR", "JPY"):
        for d in range(160):
            day = base + dt.timedelta(d)
            kind = rnd.random()
            rate = None if kind < 0.15 else f"{rnd.randint(1, 3 * 10**10) / 10**10:.10f}"
            lag = rnd.randint(1, 3) if 0.15 <= kind < 0.4 else 0
            rates.append((cur, day, rate, None if rate is None else day - dt.timedelta(lag)))
    con.executemany("INSERT INTO revenue_fx_day VALUES (?, ?, ?, ?, 'x', NULL)", rates)
    con.execute(f"CREATE VIEW revenue_daily AS {billing.revenue_daily_sql()}")
    billing.build_item_periods(con, grain, "got")
    trunc = "day" if grain == "day" else f"date_trunc('{grain}', day)"
    want = con.execute(
        f"""SELECT i.item_no, CAST({trunc} AS DATE) AS period, sum(d.amount_minor),
       sum(d.amount_reporting), min(d.fx_rate), max(d.fx_rate),
       count(*) FILTER (WHERE d.fx_rate IS NULL), count(*) FILTER (WHERE d.fx_rate_date < d.day)
FROM revenue_daily d JOIN revenue_item i USING (item_id) GROUP BY ALL ORDER BY 1, 2"""
    ).fetchall()
    got = con.execute("SELECT * FROM got ORDER BY 1, 2").fetchall()
    assert got == want
