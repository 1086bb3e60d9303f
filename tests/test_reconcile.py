"""Reconciliation across CRM, ERP and billing: a hand-built estate with one example of every
finding type, the late-arrival window, amount tolerance after FX, and the metrics."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import duckdb
import pytest

from romirecon.exitcodes import ConfigError
from romirecon.stages import reconcile
from romirecon.stages.common import entity_table_ddl
from tests.conftest import insert_staged

ENTITIES = ("contact", "account", "deal", "invoice", "subscription", "fx_rate")


def insert(con: duckdb.DuckDBPyConnection, entity: str, rows: list[dict[str, Any]]) -> None:
    insert_staged(con, entity, rows, source_file=f"{entity}.csv", run_id="t")


def sf(**kw: Any) -> dict[str, Any]:
    return {"source_name": "sf", "source_system": "crm", "source_vendor": "salesforce", **kw}


def stripe(**kw: Any) -> dict[str, Any]:
    return {"source_name": "stripe", "source_system": "billing", "source_vendor": "stripe", **kw}


def ns(**kw: Any) -> dict[str, Any]:
    return {"source_name": "ns", "source_system": "erp", "source_vendor": "netsuite", **kw}


def inv(make: Any, sid: str, cus: str, cur: str, total: int, day: str, **kw: Any) -> dict[str, Any]:
    return make(
        source_id=sid,
        customer_id=cus,
        currency=cur,
        total=total,
        status=kw.pop("status", "paid"),
        created_at=f"{day} 10:00:00",
        **kw,
    )


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    c = duckdb.connect()
    for e in ENTITIES:
        c.execute(entity_table_ddl(e))
    insert(
        c,
        "contact",
        [
            sf(source_id="L1", record_type="lead", converted_to="C1"),
            sf(source_id="C1", record_type="contact", external_ref="cus_1"),
            sf(source_id="C9", record_type="contact"),
            sf(source_id="C9b", record_type="contact"),
            ns(source_id="NC2", external_ref="cus_2"),
            ns(source_id="NC3", external_ref="cus_1"),
        ],
    )
    insert(
        c,
        "deal",
        [
            # D1: no ids, linked through C1's entity to in_1 two days after close
            sf(source_id="D1", contact_id="C1", is_won=True, close_date="2024-01-08",
               amount=120000, currency="USD"),
            # D2: no invoice ever; window ends 2024-03-05 <= as_of - 2 -> finding
            sf(source_id="D2", contact_id="C9", is_won=True, close_date="2024-01-20",
               amount=50000, currency="USD"),
            # D3: window ends 2024-04-15, after as_of: pending, not a finding
            sf(source_id="D3", contact_id="C9", is_won=True, close_date="2024-03-01",
               amount=10000, currency="USD"),
            # lost deal: never a finding
            sf(source_id="D4", contact_id="C9", is_won=False, close_date="2024-01-02"),
        ],
    )  # fmt: skip
    insert(
        c,
        "invoice",
        [
            inv(stripe, "in_1", "cus_1", "usd", 10000, "2024-01-10"),
            inv(stripe, "in_2", "cus_2", "usd", 10000, "2024-01-05"),
            inv(stripe, "in_3", "cus_1", "usd", 10000, "2024-03-30"),  # 1 day old: late window
            inv(stripe, "in_4", "cus_1", "eur", 5500, "2024-02-10"),
            inv(stripe, "in_5", "cus_1", "usd", 10000, "2024-01-15"),
            inv(stripe, "in_6", "cus_1", "usd", 10000, "2024-01-15"),
            inv(stripe, "in_7", "cus_1", "usd", 10000, "2024-01-16", status="void"),
            inv(ns, "N1", "NC3", "USD", 10000, "2024-01-10", external_ref="in_1"),
            inv(ns, "N2", "NC2", "USD", 9500, "2024-01-05", external_ref="in_2"),
            inv(ns, "N3", "NC3", "EUR", 4000, "2024-02-01"),
            inv(ns, "N4", "NC3", "EUR", 9200, "2024-01-15", external_ref="in_5"),
            inv(ns, "N5", "NC3", "EUR", 9000, "2024-01-15", external_ref="in_6"),
            # N6: N1 posted again by a connector retry (no external id, same customer/amount/day)
            inv(ns, "N6", "NC3", "USD", 10000, "2024-01-10"),
        ],
    )
    insert(
        c,
        "fx_rate",
        [
            {"source_name": "ecb", "source_system": "fx", "date": d, "base": "EUR",
             "quote": "USD", "rate": r}
            for d, r in (("2024-01-15", "1.0870"), ("2024-02-01", "1.0900"),
                         ("2024-02-09", "1.0800"))
        ],
    )  # fmt: skip
    c.execute(
        "CREATE TABLE entity_xref (entity VARCHAR, source_name VARCHAR, source_system VARCHAR, "
        "source_id VARCHAR, source_file VARCHAR, source_row BIGINT, golden_id VARCHAR, "
        "rule VARCHAR, match_probability DOUBLE, is_survivor BOOLEAN)"
    )
    c.execute(
        "INSERT INTO entity_xref VALUES ('contact', 'sf', 'crm', 'C9', 'contact.csv', 3, 'g9', "
        "'email', 0.99, true), ('contact', 'sf', 'crm', 'C9b', 'contact.csv', 4, 'g9', 'email', "
        "0.99, false)"
    )
    return c


SETTINGS = {"as_of": "2024-03-31", "late_arrival_days": 2}


def test_entity_link_joins_systems(con: duckdb.DuckDBPyConnection) -> None:
    reconcile.run(con, "r1", "USD", SETTINGS)
    ent = dict(
        con.execute("SELECT vendor || ':' || source_id, entity_id FROM entity_link").fetchall()
    )
    # lead -> contact (converted_to) -> Stripe customer (external_ref) <- NetSuite customer
    assert (
        ent["salesforce:L1"] == ent["salesforce:C1"] == ent["stripe:cus_1"] == ent["netsuite:NC3"]
    )
    assert ent["stripe:cus_2"] == ent["netsuite:NC2"] != ent["stripe:cus_1"]
    assert ent["salesforce:C9"] == ent["salesforce:C9b"]  # dedup's golden id
    assert ent["salesforce:C9"] != ent["salesforce:C1"]


def test_findings(con: duckdb.DuckDBPyConnection) -> None:
    reconcile.run(con, "r1", "USD", SETTINGS)
    got = con.execute(
        "SELECT finding_type, left_id, right_id, difference_reporting FROM reconciliation "
        "ORDER BY finding_type, left_id"
    ).fetchall()
    assert got == [
        # N5 90.00 EUR * 1.0870 = 97.83 USD vs in_6 100.00 USD -> 2.17 > 0.01 (after FX)
        # N2 95.00 USD vs in_2 100.00 USD (same currency, native) -> 5.00
        # N4 92.00 EUR * 1.0870 = 100.004 vs 100.00 -> 0.004 <= 0.01: no finding
        ("amount-mismatch", "N2", "in_2", Decimal("5")),
        ("amount-mismatch", "N5", "in_6", Decimal("2.17")),
        # in_4 (EUR, 02-10) has no ERP copy: N3 is the same entity and currency but 9 days off
        ("billing-invoice-without-erp", "in_4", None, None),
        ("deal-without-invoice", "D2", None, None),
        ("erp-invoice-duplicate", "N6", "in_1", None),
        ("erp-invoice-without-billing", "N3", None, None),
        ("lost-crm-record", "cus_2", None, None),
    ]
    links = con.execute(
        "SELECT left_id, right_id, rule FROM recon_link "
        "ORDER BY link_type = 'deal-erp-invoice', link_type, left_id"
    ).fetchall()
    assert links == [
        ("D1", "in_1", "entity+amount+date"),
        ("N1", "in_1", "id:erp.external_ref"),
        ("N2", "in_2", "id:erp.external_ref"),
        ("N4", "in_5", "id:erp.external_ref"),
        ("N5", "in_6", "id:erp.external_ref"),
        # D1's invoice in_1 is N1 in the ERP
        ("D1", "N1", "entity+amount+date+id:erp.external_ref"),
    ]
    codes = con.execute(
        "SELECT code, record_id FROM finding WHERE stage = 'reconcile' AND code <> 'fx-rate-missing' "
        "ORDER BY code, record_id"
    ).fetchall()
    assert [c for c, _ in codes] == [r[0] for r in got]


def test_metrics(con: duckdb.DuckDBPyConnection) -> None:
    reconcile.run(con, "r1", "USD", SETTINGS)
    m = {
        (r[0], r[1]): (r[2], r[3], r[4])
        for r in con.execute(
            "SELECT source_name, name, value, numerator, denominator FROM metric "
            "WHERE stage = 'reconcile' AND name <> 'fx_gaps'"
        ).fetchall()
    }
    # paying entities judged: {cus_1's, cus_2's}; cus_2 has no CRM record -> 1/2
    assert m[("billing->crm", "lost_record_rate")] == (0.5, 1, 2)
    # deals judged: D1 (linked), D2 (lost); D3 pending; D4 lost deal -> 1/2
    assert m[("crm->billing", "lost_record_rate")] == (0.5, 1, 2)
    # ERP invoices N1..N6 all old enough; N3 lost (N6 is a duplicate, not lost) -> 1/6
    assert m[("erp->billing", "lost_record_rate")] == (1 / 6, 1, 6)
    assert m[("erp", "erp_duplicate_invoices")] == (1 / 6, 1, 6)
    # billing in_1, in_2, in_4, in_5, in_6 (in_3 too recent, in_7 void); in_4 lost -> 1/5
    assert m[("billing->erp", "lost_record_rate")] == (0.2, 1, 5)
    assert m[("erp<->billing", "amount_mismatches")] == (2, 2, 4)
    # in_3 (1 day old) and D3 (window still open)
    assert m[(None, "late_arrivals_pending")] == (2, None, None)


def test_tolerance_percent_and_late_window(con: duckdb.DuckDBPyConnection) -> None:
    # 5% of in_2's 100.00 = 5.00 >= 5.00 difference: N2 is within tolerance; N5's 2.17 too
    reconcile.run(
        con, "r2", "USD", {**SETTINGS, "amount_tolerance": {"absolute": 0.01, "percent": 5}}
    )
    n = con.execute(
        "SELECT count(*) FROM reconciliation WHERE finding_type = 'amount-mismatch'"
    ).fetchone()
    assert n == (0,)
    # a 90-day late window: 2024-03-31 - 90 = 2024-01-01 hides D2 (window end 03-05) and cus_2
    # (paying since 01-05); with 60 days (cut 01-31) cus_2 would still be a finding
    reconcile.run(con, "r3", "USD", {"as_of": "2024-03-31", "late_arrival_days": 90})
    types = {r[0] for r in con.execute("SELECT finding_type FROM reconciliation").fetchall()}
    assert "deal-without-invoice" not in types
    assert "lost-crm-record" not in types


def test_rerun_is_identical(con: duckdb.DuckDBPyConnection) -> None:
    reconcile.run(con, "r1", "USD", SETTINGS)
    a = con.execute(reconcile.reconciliation_output_query()).fetchall()
    reconcile.run(con, "r1", "USD", SETTINGS)
    b = con.execute(reconcile.reconciliation_output_query()).fetchall()
    assert a == b
    n = con.execute("SELECT count(*) FROM finding WHERE run_id = 'r1'").fetchone()
    assert n is not None and n[0] == len(a) + 0  # findings not doubled by the re-run


def test_an_invoice_exported_twice_counts_as_its_latest_copy(
    con: duckdb.DuckDBPyConnection,
) -> None:
    """in_2 (100.00 USD, no update time) against ERP N2 (95.00 USD) is an amount mismatch. A
    second export of in_2, updated a day later, says 95.00: only that latest copy counts, so
    the mismatch goes and no other finding names in_2 or N2. Were both copies kept, the
    100.00 copy would still be matched against N2."""

    def about_in_2() -> list[tuple[Any, ...]]:
        return [
            (r[0], r[5], r[8])
            for r in con.execute(reconcile.reconciliation_output_query()).fetchall()
            if "in_2" in (r[5], r[8]) or "N2" in (r[5], r[8])
        ]

    reconcile.run(con, "r1", "USD", SETTINGS)
    assert about_in_2() == [("amount-mismatch", "N2", "in_2")]
    insert(con, "invoice", [inv(stripe, "in_2", "cus_2", "usd", 9500, "2024-01-05",
                                updated_at="2024-01-06 00:00:00")])  # fmt: skip
    reconcile.run(con, "r2", "USD", SETTINGS)
    assert about_in_2() == []


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"late_days": 2}, "did you mean 'late_arrival_days'"),
        ({"as_of": "yesterday"}, "reconcile.as_of"),
        ({"deal_invoice_window_days": -1}, "reconcile.deal_invoice_window_days"),
        ({"amount_tolerance": {"percent": "x"}}, "amount_tolerance.percent"),
    ],
)
def test_bad_settings(settings: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        reconcile.parse_settings(settings)
    assert any(fragment in d for d in e.value.details)


def test_a_deal_whose_trial_lapsed_is_not_a_lost_record() -> None:
    from romirecon.stages.common import entity_table_ddl
    from romirecon.stages.reconcile import run

    con = duckdb.connect()
    for e in ("contact", "account", "deal", "invoice", "subscription", "fx_rate"):
        con.execute(entity_table_ddl(e))
    con.execute(
        "INSERT INTO stg_contact (source_id, email, source_name, source_system, source_vendor) VALUES "
        "('003A', 'a@x.com', 'sf', 'crm', 'salesforce'), ('cus_A', 'a@x.com', 'stripe', 'billing', 'stripe'), "
        "('003B', 'b@x.com', 'sf', 'crm', 'salesforce'), ('cus_B', 'b@x.com', 'stripe', 'billing', 'stripe')"
    )
    # both CRM contacts carry their billing id; both deals closed-won on 2024-01-10
    con.execute("UPDATE stg_contact SET external_ref = 'cus_A' WHERE source_id = '003A'")
    con.execute("UPDATE stg_contact SET external_ref = 'cus_B' WHERE source_id = '003B'")
    con.execute(
        "INSERT INTO stg_deal (source_id, contact_id, is_closed, is_won, amount, currency, close_date, "
        "source_name, source_system, source_vendor) VALUES "
        "('006A', '003A', true, true, 100000, 'USD', '2024-01-10', 'sfo', 'crm', 'salesforce'), "
        "('006B', '003B', true, true, 100000, 'USD', '2024-01-10', 'sfo', 'crm', 'salesforce')"
    )
    # A's trial ended unpaid (canceled); B has no subscription at all
    con.execute(
        "INSERT INTO stg_subscription (source_id, customer_id, status, trial_end, source_name, "
        "source_system, source_vendor) VALUES ('sub_A', 'cus_A', 'canceled', '2024-01-24', "
        "'stripe_subs', 'billing', 'stripe')"
    )
    run(con, "t", "USD", {"as_of": "2024-06-30"})
    got = con.execute(
        "SELECT left_id, finding_type, severity FROM reconciliation ORDER BY left_id"
    ).fetchall()
    assert got == [
        ("006A", "deal-trial-not-converted", "info"),
        ("006B", "deal-without-invoice", "warn"),
    ]
    rate = con.execute(
        "SELECT numerator FROM metric WHERE name = 'lost_record_rate' AND source_name = 'crm->billing'"
    ).fetchone()
    assert rate == (1.0,)  # only B is lost


def test_entity_link_is_built_once_per_run_and_connection(con: duckdb.DuckDBPyConnection) -> None:
    """The attribution stage reuses the entity_link this run's reconcile stage built on this
    connection (same inputs), and builds it afresh for another run id."""
    from romirecon.stages import attribution

    reconcile.run(con, "r1", "USD", SETTINGS)
    n = con.execute("SELECT count(*) FROM entity_link").fetchone()[0]
    # a marker row: survives only if attribution does not rebuild the table
    con.execute("INSERT INTO entity_link (entity, source_id, entity_id) VALUES ('x', 'x', 'E:x')")
    attribution.run(con, "r1", {})
    assert con.execute("SELECT count(*) FROM entity_link").fetchone()[0] == n + 1
    assert reconcile.entity_link_built(con, "r1")
    assert not reconcile.entity_link_built(con, "r2")
    attribution.run(con, "r2", {})
    assert con.execute("SELECT count(*) FROM entity_link").fetchone()[0] == n
    assert not reconcile.entity_link_built(duckdb.connect(), "r1")  # another connection
