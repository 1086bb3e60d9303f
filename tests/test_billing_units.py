"""Billing stage: settings, contract columns, and the rules the YAML cases do not isolate."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import duckdb
import pytest

from romirecon.exitcodes import ConfigError
from romirecon.stages import billing
from romirecon.stages.common import entity_table_ddl
from tests.conftest import BILLING_TABLES, insert_staged

TABLES = BILLING_TABLES
T = dt.datetime


def _con(**rows: list[dict[str, Any]]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for e in TABLES:
        con.execute(entity_table_ddl(e))
        insert_staged(
            con, e, rows.get(e, []), source_name=f"src_{e}", source_vendor="stripe",
            source_file="f.csv",
        )  # fmt: skip
    return con


def _inv(i: str, cust: str, status: str = "paid", **kw: Any) -> dict[str, Any]:
    return {
        "source_id": i,
        "customer_id": cust,
        "status": status,
        "currency": "usd",
        "created_at": T(2024, 1, 1),
        **kw,
    }


def _line(i: str, inv: str, amount: int, start: T, end: T, **kw: Any) -> dict[str, Any]:
    return {
        "source_id": i,
        "invoice_id": inv,
        "currency": "usd",
        "amount": amount,
        "period_start": start,
        "period_end": end,
        **kw,
    }


def _proration(i: str, inv: str, amount: int, **kw: Any) -> dict[str, Any]:
    """A proration line of subscription sub_B over Jan 21-31 2024 (a plan change on Jan 21)."""
    return _line(
        i, inv, amount, T(2024, 1, 21), T(2024, 2, 1), proration=True, subscription_id="sub_B", **kw
    )


def test_settings_errors_are_listed_together() -> None:
    with pytest.raises(ConfigError) as e:
        billing.parse_settings(
            {"uncolectible": "x", "adjustment_timing": "soon", "fx_max_fallback_days": -1}
        )
    details = e.value.details
    assert any("uncolectible" in d and "did you mean 'uncollectible'" in d for d in details)
    assert any("adjustment_timing" in d and "line-period" in d for d in details)
    assert any("fx_max_fallback_days" in d for d in details)
    assert len(details) == 3


def test_settings_defaults() -> None:
    s = billing.parse_settings(None)
    assert (s.fx_max_fallback_days, s.uncollectible, s.adjustment_timing) == (
        7,
        "write-off",
        "line-period",
    )


def test_revenue_contract_columns_and_types() -> None:
    con = _con(
        invoice=[_inv("in_1", "c1")],
        invoice_line=[_line("il_1", "in_1", 1000, T(2024, 1, 1), T(2024, 1, 2))],
    )
    billing.run(con, "r", "USD", {})
    types = dict(
        con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'revenue'"
        ).fetchall()
    )
    assert types["month"] == "DATE"
    assert types["amount_minor"] == "BIGINT"
    assert types["amount_reporting"] == "DECIMAL(38,2)"
    assert types["fx_rate"] == "DECIMAL(38,10)"
    for col in ("customer_id", "entity_id", "currency", "lines"):
        assert col in types
    # JPY reporting: rounded to whole yen
    con2 = _con(
        invoice=[_inv("in_1", "c1")],
        invoice_line=[_line("il_1", "in_1", 1000, T(2024, 1, 1), T(2024, 1, 2))],
    )
    billing.run(con2, "r", "JPY", {})
    t2 = con2.execute("SELECT typeof(amount_reporting) FROM revenue").fetchone()
    assert t2 == ("DECIMAL(38,0)",)


@pytest.mark.parametrize(
    ("mode", "want"), [("write-off", [(0, 1, 1)]), ("revenue", [(2000, 1, 0)]), ("exclude", [])]
)
def test_uncollectible_modes(mode: str, want: list[tuple[int, int, int]]) -> None:
    con = _con(
        invoice=[_inv("in_u", "c1", "uncollectible", total=2000, amount_paid=0)],
        invoice_line=[_line("il_u", "in_u", 2000, T(2024, 1, 1), T(2024, 1, 2))],
    )
    billing.run(con, "r", "USD", {"uncollectible": mode})
    assert con.execute("SELECT amount_minor, lines, adjustments FROM revenue").fetchall() == want


def test_lineless_invoice_is_one_line_over_its_period_or_day() -> None:
    # NetSuite-style invoices without line detail: subtotal spread over the invoice period,
    # or booked on the invoice date when there is no period.
    con = _con(
        invoice=[
            _inv(
                "NS-1",
                "c1",
                subtotal=6000,
                discount=0,
                tax=600,
                period_start=T(2024, 1, 1),
                period_end=T(2024, 1, 4),
            ),
            _inv("NS-2", "c2", "open", subtotal=999, created_at=T(2024, 2, 29, 17, 0)),
        ]
    )
    billing.run(con, "r", "USD", {})
    assert con.execute(
        "SELECT customer_id, day, amount_minor FROM revenue_daily ORDER BY customer_id, day"
    ).fetchall() == [
        ("c1", dt.date(2024, 1, 1), 2000),  # 6000 / 3 days; tax 600 not revenue
        ("c1", dt.date(2024, 1, 2), 2000),
        ("c1", dt.date(2024, 1, 3), 2000),
        ("c2", dt.date(2024, 2, 29), 999),
    ]
    assert con.execute("SELECT line_id, synthetic FROM revenue_event ORDER BY 1").fetchall() == [
        ("invoice:NS-1", True),
        ("invoice:NS-2", True),
    ]


def test_entity_id_from_entity_xref() -> None:
    con = _con(
        invoice=[_inv("in_1", "cus_1"), _inv("in_2", "cus_2")],
        invoice_line=[
            _line("il_1", "in_1", 100, T(2024, 1, 1), T(2024, 1, 2)),
            _line("il_2", "in_2", 200, T(2024, 1, 1), T(2024, 1, 2)),
        ],
    )
    con.execute(
        "CREATE TABLE entity_xref (entity VARCHAR, source_name VARCHAR, source_id VARCHAR, golden_id VARCHAR)"
    )
    con.execute(entity_table_ddl("contact"))
    con.execute(
        "INSERT INTO stg_contact (source_id, source_name, source_vendor) VALUES ('cus_1', 'stripe_customers', 'stripe')"
    )
    con.execute(
        "INSERT INTO entity_xref VALUES ('contact', 'stripe_customers', 'cus_1', 'G-42'), ('contact', 'hubspot', 'cus_2', 'G-99')"
    )
    billing.run(con, "r", "USD", {})
    # cus_2's xref row is from another system (hubspot): an id collision, not a match
    assert con.execute("SELECT customer_id, entity_id FROM revenue ORDER BY 1").fetchall() == [
        ("cus_1", "G-42"),
        ("cus_2", None),
    ]


def test_test_mode_missing_invoice_and_unknown_status() -> None:
    con = _con(
        invoice=[_inv("in_test", "c1", livemode=False), _inv("in_odd", "c2", "pending")],
        invoice_line=[
            _line("il_test", "in_test", 100, T(2024, 1, 1), T(2024, 1, 2)),
            _line("il_odd", "in_odd", 100, T(2024, 1, 1), T(2024, 1, 2)),
            _line("il_orphan", "in_gone", 100, T(2024, 1, 1), T(2024, 1, 2)),
        ],
    )
    billing.run(con, "r", "USD", {})
    assert con.execute("SELECT count(*) FROM revenue").fetchone() == (0,)
    assert con.execute("SELECT code, record_id FROM finding ORDER BY code").fetchall() == [
        ("invoice-missing", "il_orphan"),
        ("invoice-status-unknown", "in_odd"),
    ]
    # with livemode_only off, the test-mode invoice counts
    billing.run(con, "r", "USD", {"livemode_only": False})
    assert con.execute("SELECT customer_id, amount_minor FROM revenue").fetchall() == [("c1", 100)]


def test_refund_without_invoice_is_booked_on_its_date_with_a_finding() -> None:
    con = _con(
        refund=[
            {
                "source_id": "re_1",
                "customer_id": "c1",
                "status": "succeeded",
                "currency": "usd",
                "amount": 700,
                "created_at": T(2024, 3, 5, 9),
            },
            {
                "source_id": "re_2",
                "customer_id": "c1",
                "status": "failed",
                "currency": "usd",
                "amount": 900,
                "created_at": T(2024, 3, 5, 9),
            },
        ]
    )
    billing.run(con, "r", "USD", {})
    assert con.execute(
        "SELECT month, customer_id, amount_minor, lines, adjustments FROM revenue"
    ).fetchall() == [(dt.date(2024, 3, 1), "c1", -700, 0, 1)]
    assert con.execute("SELECT code, record_id FROM finding").fetchall() == [
        ("adjustment-unlinked", "re_1")
    ]
    assert con.execute(
        "SELECT document_id, counted, not_counted_reason FROM revenue_adjustment ORDER BY 1"
    ).fetchall() == [("re_1", True, None), ("re_2", False, "status:failed")]


def test_reexported_invoice_latest_state_wins() -> None:
    # exported open on day 1, void on day 2: the void copy (later updated_at) is kept
    con = _con(
        invoice=[
            _inv("in_1", "c1", "open", updated_at=T(2024, 1, 1), source_file="day1.csv"),
            _inv("in_1", "c1", "void", updated_at=T(2024, 1, 2), source_file="day2.csv"),
        ],
        invoice_line=[_line("il_1", "in_1", 100, T(2024, 1, 1), T(2024, 1, 2))],
    )
    billing.run(con, "r", "USD", {})
    assert con.execute("SELECT count(*) FROM revenue").fetchone() == (0,)
    assert con.execute(
        "SELECT entity, source_file, kept_source_file, reason FROM billing_duplicate"
    ).fetchall() == [("invoice", "day1.csv", "day2.csv", "reexport")]


def test_amount_reporting_rounds_once_half_even() -> None:
    # EUR 0.03 over 3 days = 0.01/day at 1.5 USD: exact 3 x 0.015 = 0.045, a tie at 2 decimals.
    # Rounded once, half-to-even: 0.04. (Half-up would give 0.05; rounding each day first would
    # give 3 x 0.02 = 0.06.)
    con = _con(
        invoice=[_inv("in_1", "c1", currency="eur")],
        invoice_line=[_line("il_1", "in_1", 3, T(2024, 3, 1), T(2024, 3, 4), currency="eur")],
        fx_rate=[
            {"date": dt.date(2024, 3, d), "base": "EUR", "quote": "USD", "rate": Decimal("1.5")}
            for d in (1, 2, 3)
        ],
    )
    billing.run(con, "r", "USD", {})
    assert con.execute("SELECT amount_minor, amount_reporting FROM revenue").fetchall() == [
        (3, Decimal("0.04"))
    ]


def test_net_downgrade_credit_never_turns_into_negative_revenue() -> None:
    # Only the downgrade's proration lines are in the export (the Pro line that paid for January
    # is older than the export window): unused Pro -2200 and remaining Basic +1100 over Jan 21-31
    # (11 days) net to -1100. Nothing in the data earns money on those days (available 0), so the
    # whole -1100 is customer credit: +1100 'customer-credit' (100/day) brings each day to
    # -200 + 100 + 100 = 0, and January's revenue to 0 instead of -$11.00.
    lines = [_proration("il_unused", "in_2", -2200), _proration("il_remain", "in_2", 1100)]
    con = _con(invoice=[_inv("in_2", "cus_B", total=-1100, amount_paid=0)], invoice_line=lines)
    billing.run(con, "r", "USD", {})
    assert con.execute("SELECT amount_minor, lines, adjustments FROM revenue").fetchall() == [
        (0, 2, 1)
    ]
    assert con.execute(
        "SELECT min(s), max(s) FROM (SELECT day, sum(amount_minor) AS s FROM revenue_daily GROUP BY day)"
    ).fetchone() == (0, 0)
    assert con.execute(
        "SELECT kind, amount, invoice_line_id FROM revenue_adjustment"
    ).fetchall() == [("customer-credit", 1100, "il_unused")]
    assert con.execute("SELECT code, severity FROM finding").fetchall() == [
        ("downgrade-credit-carried", "info")
    ]

    # With the Pro line present (6200 over January: 6200 x 11 // 31 = 2200 earned in Jan 21-31)
    # the -1100 fits inside the period: no customer-credit adjustment, January = 5100.
    con2 = _con(
        invoice=[_inv("in_1", "cus_B"), _inv("in_2", "cus_B", total=-1100, amount_paid=0)],
        invoice_line=[
            _line("il_pro", "in_1", 6200, T(2024, 1, 1), T(2024, 2, 1), subscription_id="sub_B"),
            *lines,
        ],
    )
    billing.run(con2, "r", "USD", {})
    assert con2.execute("SELECT amount_minor, adjustments FROM revenue").fetchall() == [(5100, 0)]
    assert con2.execute("SELECT count(*) FROM revenue_adjustment").fetchone() == (0,)


def test_bad_periods_and_currencies_are_findings_not_silent_losses() -> None:
    con = _con(
        invoice=[
            _inv("in_1", "c1"),
            _inv("in_2", "c2", created_at=None),
            _inv("in_3", "c3", currency="xxx"),
            _inv("in_4", "c4", status=None),
        ],
        invoice_line=[
            # period_end 9999-12-31: more than max_service_days (3700) -> booked on 2024-01-01
            _line("il_long", "in_1", 500, T(2024, 1, 1), T(9999, 12, 31)),
            # no period, no invoice date, no line date: cannot be placed in time
            _line("il_nodate", "in_2", 700, None, None),
            _line("il_xxx", "in_3", 900, T(2024, 1, 1), T(2024, 1, 2), currency="xxx"),
            _line("il_nostatus", "in_4", 300, T(2024, 1, 1), T(2024, 1, 2)),
        ],
    )
    billing.run(con, "r", "USD", {})
    assert con.execute(
        "SELECT customer_id, currency, amount_minor, amount_reporting FROM revenue ORDER BY 1"
    ).fetchall() == [("c1", "USD", 500, Decimal("5.00")), ("c3", "XXX", 900, None)]
    assert con.execute(
        "SELECT code, record_id FROM finding ORDER BY code, record_id"
    ).fetchall() == [
        ("currency-unknown", "XXX"),
        ("fx-rate-missing", "XXX"),
        ("invoice-status-unknown", "in_4"),
        ("service-date-missing", "il_nodate"),
        ("service-period-too-long", "il_long"),
    ]


def test_invoice_created_twice_under_one_idempotency_key_counts_once() -> None:
    # An API retry created in_A2 with the idempotency key that already created in_A: in_A2 and
    # its line are surplus copies (kept: in_A, the earlier event). A EUR credit note against the
    # USD invoice cannot be netted and is reported, not counted.
    ev = [
        {
            "source_id": "evt_1",
            "event_type": "invoice.created",
            "object_id": "in_A",
            "idempotency_key": "K",
            "created_at": T(2024, 1, 1, 9),
        },
        {
            "source_id": "evt_2",
            "event_type": "invoice.created",
            "object_id": "in_A2",
            "idempotency_key": "K",
            "created_at": T(2024, 1, 1, 9, 0, 3),
        },
    ]
    con = _con(
        billing_event=ev,
        invoice=[_inv("in_A", "c1"), _inv("in_A2", "c1")],
        invoice_line=[
            _line("il_A", "in_A", 1000, T(2024, 1, 1), T(2024, 1, 2)),
            _line("il_A2", "in_A2", 1000, T(2024, 1, 1), T(2024, 1, 2)),
        ],
        credit_note=[
            {
                "source_id": "cn_eur",
                "invoice_id": "in_A",
                "status": "issued",
                "currency": "eur",
                "amount": 100,
                "created_at": T(2024, 1, 5),
            }
        ],
    )
    billing.run(con, "r", "USD", {})
    assert con.execute("SELECT amount_minor, lines, adjustments FROM revenue").fetchall() == [
        (1000, 1, 0)
    ]
    assert con.execute(
        "SELECT entity, record_id, kept_id, reason FROM billing_duplicate ORDER BY entity, record_id"
    ).fetchall() == [
        ("invoice", "in_A2", "in_A", "idempotency-key"),
        ("invoice_line", "il_A2", "in_A", "idempotency-key"),
    ]
    assert con.execute("SELECT code, record_id FROM finding").fetchall() == [
        ("adjustment-currency-mismatch", "cn_eur")
    ]


def test_one_request_creating_different_items_and_lines_without_ids_are_not_duplicates() -> None:
    # One subscription-creation request (key K) legitimately creates two different invoice items;
    # two lines exported without any id are distinct rows, not copies of each other.
    ev = [
        {
            "source_id": "evt_1",
            "event_type": "invoiceitem.created",
            "object_id": "ii_setup",
            "idempotency_key": "K",
            "created_at": T(2024, 1, 1),
        },
        {
            "source_id": "evt_2",
            "event_type": "invoiceitem.created",
            "object_id": "ii_seats",
            "idempotency_key": "K",
            "created_at": T(2024, 1, 1),
        },
    ]
    day = (T(2024, 1, 1), T(2024, 1, 2))
    con = _con(
        billing_event=ev,
        invoice=[_inv("in_1", "c1")],
        invoice_line=[
            _line("ii_setup", "in_1", 5000, *day, description="Setup fee"),
            _line("ii_seats", "in_1", 1200, *day, description="3 extra seats"),
            _line(None, "in_1", 100, *day),
            _line(None, "in_1", 100, *day),
        ],
    )
    billing.run(con, "r", "USD", {})
    # 5000 + 1200 + 100 + 100 = 6400, four lines
    assert con.execute("SELECT amount_minor, lines FROM revenue").fetchall() == [(6400, 4)]
    assert con.execute("SELECT count(*) FROM billing_duplicate").fetchone() == (0,)


def test_erp_invoice_mirroring_a_stripe_invoice_is_not_counted_twice() -> None:
    # NetSuite records the Stripe invoice in_1 as INV-77 (external_ref in_1) without line
    # detail; INV-78 is a NetSuite-only invoice. Revenue: Stripe's in_1 once (3000) + INV-78 (500).
    con = _con(
        invoice=[
            _inv("in_1", "cus_1", source_system="billing"),
            _inv(
                "INV-77",
                "cus_1",
                subtotal=3000,
                external_ref="in_1",
                source_system="erp",
                source_vendor="netsuite",
                source_name="ns",
            ),
            _inv(
                "INV-78",
                "C-9",
                subtotal=500,
                source_system="erp",
                source_vendor="netsuite",
                source_name="ns",
            ),
        ],
        invoice_line=[
            _line("il_1", "in_1", 3000, T(2024, 1, 1), T(2024, 1, 2), source_system="billing")
        ],
    )
    billing.run(con, "r", "USD", {})
    assert con.execute(
        "SELECT customer_id, source_vendor, amount_minor FROM revenue ORDER BY 1"
    ).fetchall() == [
        ("C-9", "netsuite", 500),
        ("cus_1", "stripe", 3000),
    ]
    assert con.execute(
        "SELECT entity, record_id, kept_id, reason FROM billing_duplicate"
    ).fetchall() == [("invoice", "INV-77", "in_1", "cross-system-mirror")]


def test_write_off_and_downgrade_credit_name_the_file_and_row_of_one_line() -> None:
    # invoices whose lines came in two export files (a re-import split across batches): an
    # adjustment points at one real line, its file with that line's own row. A write-off names
    # the first line by (file, row): ("a.jsonl", 7); a downgrade credit its credit line il_x:
    # ("d.jsonl", 12). Any file with the smallest row of all would give row 1 and row 9: rows
    # that hold no such line.
    day, next_day = T(2024, 1, 1), T(2024, 1, 2)
    con = _con(
        invoice=[
            _inv("in_u", "c1", "uncollectible", total=3000, amount_paid=0),
            _inv("in_d", "c2", total=-1100, amount_paid=0),
        ],
        invoice_line=[
            _line("il_b", "in_u", 1000, day, next_day, source_file="b.jsonl", source_row=1),
            _line("il_a", "in_u", 2000, day, next_day, source_file="a.jsonl", source_row=7),
            # a net downgrade (unused -2200, remaining +1100) in two files as well
            _proration("il_x", "in_d", -2200, source_file="d.jsonl", source_row=12),
            _proration("il_y", "in_d", 1100, source_file="c.jsonl", source_row=9),
        ],
    )
    billing.run(con, "r", "USD", {})
    # the write-off is spread over the invoice's two lines: a row for each, both naming il_a's place
    assert con.execute(
        "SELECT kind, source_file, source_row, amount FROM revenue_adjustment ORDER BY ALL"
    ).fetchall() == [
        ("customer-credit", "d.jsonl", 12, 1100),
        ("write-off", "a.jsonl", 7, -2000),
        ("write-off", "a.jsonl", 7, -1000),
    ]
