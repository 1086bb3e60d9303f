"""Billing on tables staged by the real ingest + contract stages (not hand-built stg tables):
Stripe-style invoice and line exports in minor units, ECB's wide reference-rate CSV."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import duckdb

from romirecon.config import load_project
from romirecon.db import configure
from romirecon.pipeline import ingest_and_stage
from romirecon.stages import billing
from tests.conftest import write_project

INVOICE_MAPPING = {
    "vendor": "stripe",
    "object": "invoice",
    "entity": "invoice",
    "exponents": {"ISK": 2},
    "columns": {
        "source_id": {"from": "id", "required": True},
        "customer_id": {"from": "customer"},
        "status": {"from": "status"},
        "currency": {"from": "currency", "map": {"usd": "USD", "isk": "ISK"}},
        "subtotal": {"from": "subtotal", "unit": "minor"},
        "total": {"from": "total", "unit": "minor"},
        "tax": {"from": "tax", "unit": "minor"},
        "created_at": {"from": "created", "formats": ["epoch"]},
    },
}
LINE_MAPPING = {
    "vendor": "stripe",
    "object": "invoice line item",
    "entity": "invoice_line",
    "exponents": {"ISK": 2},
    "columns": {
        "source_id": {"from": "id", "required": True},
        "invoice_id": {"from": "invoice"},
        "currency": {"from": "currency", "map": {"usd": "USD", "isk": "ISK"}},
        "amount": {"from": "amount", "unit": "minor"},
        "proration": {"from": "proration"},
        "period_start": {"from": "period_start", "formats": ["epoch"]},
        "period_end": {"from": "period_end", "formats": ["epoch"]},
    },
}
ECB_MAPPING = {
    "vendor": "ecb",
    "object": "eurofxref-hist",
    "entity": "fx_rate",
    "unpivot": {"keep": ["Date"], "name_to": "currency", "value_to": "rate"},
    "columns": {
        "date": {"from": "Date", "required": True},
        "base": {"const": "EUR"},
        "quote": {"from": "currency"},
        "rate": {"from": "rate"},
        "rate_type": {"const": "ecb_reference"},
    },
}


def _epoch(y: int, m: int, d: int) -> int:
    return int(dt.datetime(y, m, d, tzinfo=dt.UTC).timestamp())


def test_billing_on_staged_exports(tmp_path: Path) -> None:
    jan1, feb1, mar1, mar2 = (
        _epoch(2024, 1, 1),
        _epoch(2024, 2, 1),
        _epoch(2024, 3, 1),
        _epoch(2024, 3, 2),
    )
    invoices = (
        "id,customer,status,currency,subtotal,tax,total,created\n"
        f"in_1,cus_1,paid,usd,3100,0,3100,{jan1}\n"
        f"in_2,cus_2,paid,isk,100000,0,100000,{mar1}\n"
        f"in_3,cus_3,draft,usd,999,0,999,{mar1}\n"
    )
    lines = (
        "id,invoice,currency,amount,proration,period_start,period_end\n"
        f"il_1,in_1,usd,3100,false,{jan1},{feb1}\n"
        f"il_2,in_2,isk,100000,false,{mar1},{mar2}\n"
        f"il_3,in_3,usd,999,false,{mar1},{mar2}\n"
    )
    ecb = "Date,USD,ISK\n2024-03-01,1.0830,150.10\n2024-01-02,1.0956,150.70\n"
    src = [
        ("stripe_invoices", "billing", "invoice", "invoice", "data/invoices.csv"),
        ("stripe_lines", "billing", "invoice_line", "line", "data/lines.csv"),
        ("ecb", "fx", "fx_rate", "ecb", "data/eurofxref.csv"),
    ]
    root = write_project(
        tmp_path / "proj",
        [
            {"name": n, "system": s, "entity": e, "mapping": f"mappings/{m}.yaml", "path": p}
            for n, s, e, m, p in src
        ],
        {"invoice": INVOICE_MAPPING, "line": LINE_MAPPING, "ecb": ECB_MAPPING},
        {"data/invoices.csv": invoices, "data/lines.csv": lines, "data/eurofxref.csv": ecb},
    )
    project = load_project(root)
    con = duckdb.connect()
    configure(con)
    ingest_and_stage(con, project, "run1")
    assert con.execute("SELECT count(*) FROM quarantine").fetchone() == (0,)
    billing.run(
        con,
        "run1",
        project.reporting_currency,
        project.section("billing"),
        source_exponents={s.name: s.mapping.exponents for s in project.sources},
    )
    # cus_1: USD 3100 over January -> $31.00 (identity rate).
    # cus_2: ISK 100000 Stripe minor units = 1000.00 kr (exponent 2 from the mapping) on 03-01;
    #   ISK->USD = 1.0830 / 150.10 = 0.0072151898.. -> 0.0072151899; 1000 x that = 7.2151899 -> 7.22
    # cus_3: draft -> nothing.
    assert con.execute(
        "SELECT month, customer_id, currency, amount_minor, amount_reporting, lines "
        f"FROM ({billing.revenue_output_query()})"
    ).fetchall() == [
        (dt.date(2024, 1, 1), "cus_1", "USD", 3100, Decimal("31.00"), 1),
        (dt.date(2024, 3, 1), "cus_2", "ISK", 100000, Decimal("7.22"), 1),
    ]
    assert con.execute("SELECT count(*) FROM finding WHERE stage = 'billing'").fetchone() == (0,)
