"""Every shipped mapping validates and reads a hand-written sample in its system's real format.

Samples live in tests/samples/<vendor>/ and were written by hand from the vendors' documentation
(see docs/formats.md). The checks here do not go through the contract stage: they read each sample
the way ingest does (DuckDB's CSV reader, all VARCHAR; JSON records with their nested values) and
check that every source path a mapping names exists in the sample and every `expr` evaluates.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from pathlib import Path

import duckdb
import pytest

from romirecon.config import _load_mapping, load_yaml
from romirecon.sqlutil import literal
from romirecon.testing import stage_sample

ROOT = Path(__file__).resolve().parent.parent
MAPPINGS = ROOT / "mappings"
SAMPLES = ROOT / "tests" / "samples"

# mapping file -> the sample files (relative to tests/samples) it must read
CASES: dict[str, list[str]] = {
    "salesforce_contact.yaml": ["salesforce/Contact.csv"],
    "salesforce_lead.yaml": ["salesforce/Lead.csv"],
    "salesforce_account.yaml": ["salesforce/Account.csv"],
    "salesforce_opportunity.yaml": ["salesforce/Opportunity.csv"],
    "salesforce_campaign_member.yaml": ["salesforce/CampaignMember.csv"],
    "hubspot_contact.yaml": ["hubspot/contacts.json"],
    "hubspot_deal.yaml": ["hubspot/deals.json"],
    "stripe_customer.yaml": ["stripe/customers.json"],
    "stripe_invoice.yaml": [
        "stripe/invoices_2024-06-20.json",
        "stripe/invoices_2025-03-31.basil.json",
    ],
    "stripe_invoice_line_item.yaml": [
        "stripe/invoice_line_items_2024-06-20.json",
        "stripe/invoice_line_items_2025-03-31.basil.json",
    ],
    "stripe_subscription.yaml": ["stripe/subscriptions.json"],
    "stripe_credit_note.yaml": ["stripe/credit_notes.json"],
    "stripe_refund.yaml": ["stripe/refunds.json"],
    "stripe_event.yaml": ["stripe/events.json"],
    "stripe_invoice_fivetran.yaml": ["stripe/fivetran/invoice.csv"],
    "stripe_invoice_line_item_fivetran.yaml": ["stripe/fivetran/invoice_line_item.csv"],
    "stripe_customer_fivetran.yaml": ["stripe/fivetran/customer.csv"],
    "stripe_subscription_fivetran.yaml": ["stripe/fivetran/subscription.csv"],
    "stripe_credit_note_fivetran.yaml": ["stripe/fivetran/credit_note.csv"],
    "stripe_refund_fivetran.yaml": ["stripe/fivetran/refund.csv"],
    "chargebee_invoice.yaml": ["chargebee/invoices.json"],
    "chargebee_customer.yaml": ["chargebee/customers.json"],
    "chargebee_subscription.yaml": ["chargebee/subscriptions.json"],
    "netsuite_customer.yaml": [
        "netsuite/customers_suiteql.json",
        "netsuite/customers_savedsearch.csv",
    ],
    "netsuite_invoice.yaml": [
        "netsuite/invoices_suiteql.json",
        "netsuite/invoices_savedsearch.csv",
    ],
    "netsuite_invoice_line.yaml": ["netsuite/invoice_lines_suiteql.json"],
    "google_ads_campaign.yaml": ["google_ads/campaign_search.json", "google_ads/campaign_gaql.csv"],
    "meta_ads_insights.yaml": ["meta_ads/insights.json", "meta_ads/insights.jsonl"],
    "linkedin_ads_analytics.yaml": ["linkedin_ads/ad_analytics_statistics.json"],
    "microsoft_ads_campaign.yaml": ["microsoft_ads/campaign_performance.csv"],
    "ecb_eurofxref.yaml": ["ecb/eurofxref-hist.csv"],
    "treasury_fx_rate.yaml": ["treasury/rates.csv"],
    "linkedin_ads_campaign.yaml": ["linkedin_ads/campaign_performance_export.csv"],
}


def all_mapping_files() -> list[str]:
    return sorted(p.name for p in MAPPINGS.glob("*.yaml"))


def test_every_mapping_has_a_sample() -> None:
    assert all_mapping_files() == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_mapping_validates(name: str) -> None:
    problems: list[str] = []
    m = _load_mapping(MAPPINGS / name, name, problems)
    assert problems == []
    assert m is not None
    doc = load_yaml(MAPPINGS / name)
    # where the column names come from is part of the file
    assert doc.get("docs"), f"{name}: list the documentation used under 'docs'"
    # file names are stable: mappings/<vendor>_<object>.yaml
    assert name.startswith(f"{doc['vendor']}_"), f"{name}: file name must start with the vendor"


# --- reading samples the way ingest does ---------------------------------------------------------


def _read_csv(con: duckdb.DuckDBPyConnection, path: Path, fmt: dict) -> None:
    opts = ["all_varchar = true", "header = true"]
    if fmt.get("delimiter"):
        opts.append(f"delim = {literal(fmt['delimiter'])}")
    if fmt.get("null_values"):
        opts.append("nullstr = [" + ", ".join(literal(v) for v in fmt["null_values"]) + "]")
    if fmt.get("skip_rows"):
        opts.append(f"skip = {int(fmt['skip_rows'])}")
    con.execute(
        f"CREATE OR REPLACE VIEW src AS SELECT * FROM read_csv({literal(str(path))}, {', '.join(opts)})"
    )


def _kind(path: Path, fmt: dict) -> str:
    """The reader ingest would pick: the mapping's format.type, else the file extension."""
    if fmt.get("type") not in (None, "auto"):
        return str(fmt["type"])
    return {".json": "json", ".jsonl": "ndjson", ".ndjson": "ndjson"}.get(path.suffix, "csv")


def _json_records(path: Path, fmt: dict) -> list[dict]:
    text = path.read_text("utf-8")
    if _kind(path, fmt) == "ndjson":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    doc = json.loads(text)
    if fmt.get("json_path"):
        for seg in fmt["json_path"].split("."):
            doc = doc[seg]
    return doc if isinstance(doc, list) else [doc]


def _read_json(con: duckdb.DuckDBPyConnection, records: list[dict]) -> None:
    """Like ingest's JSON view: `_json` holds the record, top-level keys are VARCHAR columns."""
    keys = sorted({k for r in records for k in r})
    con.execute("CREATE OR REPLACE TABLE _raw (_json VARCHAR)")
    con.executemany("INSERT INTO _raw VALUES (?)", [[json.dumps(r)] for r in records])
    cols = [
        f'json_extract_string(_json::JSON, {literal("$." + json.dumps(k))}) AS "{k}"' for k in keys
    ]
    con.execute(f"CREATE OR REPLACE VIEW src AS SELECT {', '.join([*cols, '_json'])} FROM _raw")


def _has_path(records: list[dict], path: str) -> bool:
    """A dotted path exists (null allowed) in at least one record."""
    for r in records:
        cur: object = r
        found = True
        for seg in path.split("."):
            if not isinstance(cur, dict) or seg not in cur:
                found = False
                break
            cur = cur[seg]
        if found:
            return True
    return False


def _sample_columns(doc: dict, path: Path) -> tuple[duckdb.DuckDBPyConnection, object]:
    """Load a sample into view `src`; return the connection and a `present(col)` predicate."""
    fmt = doc.get("format") or {}
    con = duckdb.connect()
    if _kind(path, fmt) in ("json", "ndjson"):
        records = _json_records(path, fmt)
        assert records, f"{path}: no records"
        _read_json(con, records)
        return con, lambda col: _has_path(records, col)
    _read_csv(con, path, fmt)
    header = [r[0] for r in con.execute("DESCRIBE src").fetchall()]
    if doc.get("unpivot"):
        keep = doc["unpivot"]["keep"]
        assert set(keep) <= set(header)
        header = [*keep, doc["unpivot"]["name_to"], doc["unpivot"]["value_to"]]
    return con, lambda col: col in header


def _alternatives(spec: dict) -> list[str]:
    src = spec.get("from")
    return [] if src is None else ([src] if isinstance(src, str) else list(src))


@pytest.mark.parametrize("name", sorted(CASES))
def test_samples_have_every_source_column(name: str) -> None:
    """Required columns are in every sample; optional ones in at least one sample of the mapping
    (an API version may lack a field, e.g. Stripe's invoice.discount after basil); every `expr`
    and `filter` evaluates over each sample."""
    doc = load_yaml(MAPPINGS / name)
    seen: set[str] = set()
    for sample in CASES[name]:
        con, present = _sample_columns(doc, SAMPLES / sample)
        for cname, spec in doc["columns"].items():
            alts = _alternatives(spec)
            if any(present(a) for a in alts):
                seen.add(cname)
            elif alts and spec.get("required"):
                pytest.fail(f"{name}: required {cname}: none of {alts} in {sample}")
            if spec.get("expr") and not doc.get("unpivot"):
                con.execute(f"SELECT {spec['expr']} FROM src").fetchall()
        if doc.get("filter") and not doc.get("unpivot"):
            con.execute(f"SELECT count(*) FROM src WHERE {doc['filter']}").fetchall()
    missing = [c for c, spec in doc["columns"].items() if _alternatives(spec) and c not in seen]
    assert missing == [], f"{name}: no sample has a source column for {missing}"


def test_format_notes_cover_every_mapping() -> None:
    text = (ROOT / "docs" / "formats.md").read_text("utf-8")
    for name in all_mapping_files():
        assert re.search(rf"`mappings/{re.escape(name)}`", text), (
            f"docs/formats.md does not describe {name}"
        )


# --- staging every sample through the contract stage ---------------------------------------------

SYSTEM = {
    "treasury": "fx",
    "salesforce": "crm",
    "hubspot": "crm",
    "netsuite": "erp",
    "stripe": "billing",
    "chargebee": "billing",
    "google_ads": "ads",
    "meta_ads": "ads",
    "linkedin_ads": "ads",
    "microsoft_ads": "ads",
    "ecb": "fx",
}

# quarantine that is part of a format, not a defect: (source_row, reason)
EXPECTED_QUARANTINE: dict[tuple[str, str], list[tuple[int, str]]] = {
    # SuiteQL returns each invoice's main line (rows 1 and 4) and its tax line (row 3) too
    ("netsuite_invoice_line.yaml", "netsuite/invoice_lines_suiteql.json"): [
        (1, "filtered-out"),
        (3, "filtered-out"),
        (4, "filtered-out"),
    ],
}


@cache
def staged(name: str, sample: str) -> tuple[duckdb.DuckDBPyConnection, str, tuple]:
    doc = load_yaml(MAPPINGS / name)
    con, table, quarantine = stage_sample(
        MAPPINGS / name, SAMPLES / sample, SYSTEM[doc["vendor"]], doc["entity"]
    )
    return con, table, tuple((q["source_row"], q["reason"]) for q in quarantine)


def rows(name: str, sample: str, cols: str) -> list[tuple]:
    con, table, _ = staged(name, sample)
    return con.execute(f"SELECT {cols} FROM {table} ORDER BY source_file, source_row").fetchall()


@pytest.mark.parametrize(
    ("name", "sample"), [(m, s) for m, ss in sorted(CASES.items()) for s in ss]
)
def test_sample_stages_without_unexpected_quarantine(name: str, sample: str) -> None:
    con, table, quarantine = staged(name, sample)
    assert list(quarantine) == EXPECTED_QUARANTINE.get((name, sample), [])
    assert con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0
    # every staged row carries the vendor from the mapping
    vendors = con.execute(f"SELECT DISTINCT source_vendor FROM {table}").fetchall()
    assert vendors == [(load_yaml(MAPPINGS / name)["vendor"],)]


def ts(s: str) -> datetime:
    return datetime.fromisoformat(s)


def test_salesforce_contact_values() -> None:
    got = rows(
        "salesforce_contact.yaml",
        "salesforce/Contact.csv",
        "source_id, record_type, is_deleted, merged_into, email, lead_source, currency, created_at",
    )
    assert got == [
        # the Data Loader writes UTC with a literal Z: 10:20:30.000Z stays 10:20:30
        ("0035e00000A1b2cAAB", "contact", False, None, "Ada.Lovelace@Example.com", "Web", "GBP",
         ts("2024-01-15 10:20:30")),
        # merged away: deleted, and MasterRecordId points at the survivor
        ("0035e00000A1b2dAAB", "contact", True, "0035e00000A1b2cAAB", "ada.lovelace@example.com",
         "Partner Referral", "GBP", ts("2024-02-01 09:00:00")),
        ("0035e00000A1b2eAAB", "contact", False, None, "jose@acme.es", "Advertisement", "EUR",
         ts("2024-05-20 16:45:00")),
    ]  # fmt: skip


def test_salesforce_lead_and_campaign_member_values() -> None:
    leads = rows(
        "salesforce_lead.yaml",
        "salesforce/Lead.csv",
        "source_id, converted_to, merged_into, is_deleted",
    )
    assert leads == [
        ("00Q5e00000L1m2nEAB", None, None, False),
        ("00Q5e00000L1m2oEAB", "0035e00000A1b2cAAB", None, False),  # converted to Ada's contact
        ("00Q5e00000L1m2pEAB", None, "00Q5e00000L1m2nEAB", True),
    ]
    members = rows(
        "salesforce_campaign_member.yaml",
        "salesforce/CampaignMember.csv",
        "contact_id, has_responded, responded_at",
    )
    assert members == [
        ("00Q5e00000L1m2oEAB", True, ts("2023-12-30 00:00:00")),  # a lead member
        ("0035e00000A1b2eAAB", False, None),  # a contact member
    ]


def test_salesforce_opportunity_amounts_are_major_units() -> None:
    got = rows(
        "salesforce_opportunity.yaml",
        "salesforce/Opportunity.csv",
        "source_id, amount, currency, close_date, is_closed, is_won",
    )
    assert got == [
        ("0065e00000P1q2rAAB", 1200000, "GBP", date(2024, 2, 28), True, True),  # 12000.00 GBP * 100
        ("0065e00000P1q2sAAB", 499999, "EUR", date(2024, 7, 31), False, False),  # 4999.99 EUR * 100
        ("0065e00000P1q2tAAB", 1500000, "JPY", date(2024, 4, 30), True, False),  # JPY: exponent 0
    ]


def test_hubspot_contact_values() -> None:
    got = rows(
        "hubspot_contact.yaml",
        "hubspot/contacts.json",
        "source_id, lead_source, latest_source, utm_source, utm_campaign, gclid, fbclid, merged_ids, created_at",
    )
    assert got == [
        ("51", "PAID_SEARCH", "EMAIL_MARKETING", "google", "brand-uk", "Cj0KCQiA-example-gclid", None,
         ["52", "77"], ts("2024-01-15 10:20:30.123")),  # hs_merged_object_ids "52;77"
        ("88", "PAID_SOCIAL", "PAID_SOCIAL", "facebook", "q2-launch", None, "IwAR-example-fbclid",
         None, ts("2024-06-03 14:05:00")),
    ]  # fmt: skip


def test_hubspot_deal_values() -> None:
    got = rows(
        "hubspot_deal.yaml",
        "hubspot/deals.json",
        "source_id, amount, currency, close_date, is_closed, is_won, account_id, contact_id, merged_ids",
    )
    assert got == [
        # "12000" GBP; deal 7002 was merged into it
        ("7001", 1200000, "GBP", date(2024, 2, 28), True, True, "9001", "51", ["7002"]),
        ("7003", 499999, "USD", date(2024, 7, 31), False, False, None, None, None),  # "4999.99"
    ]


LINE_COLS = (
    "source_id, unique_id, invoice_id, subscription_id, subscription_item_id, price_id, line_type, "
    "currency, amount, discount, tax, proration, period_start, period_end"
)


def test_stripe_line_items_before_basil() -> None:
    got = rows(
        "stripe_invoice_line_item.yaml", "stripe/invoice_line_items_2024-06-20.json", LINE_COLS
    )
    assert got == [
        # amount 1999 USD stays 1999 cents; period 1717200000..1719792000 = 2024-06-01..2024-07-01
        ("il_1PreA1aaaaaaaaa", "il_1PreA1aaaaaaaaa", "in_1PreAaaaaaaaaaa", "sub_1PreAaaaaaaaaaa",
         "si_PreAaaaaaaaaaa", "price_1Pro", "subscription", "USD", 1999, 0, 0, False,
         ts("2024-06-01"), ts("2024-07-01")),
        # the downgrade credit: negative, proration, no discount
        ("il_1PreB1bbbbbbbbb", "il_1PreB1bbbbbbbbb", "in_1PreBbbbbbbbbbb", "sub_1PreAaaaaaaaaaa",
         "si_PreAaaaaaaaaaa", "price_1Pro", "invoiceitem", "USD", -1000, 0, 0, True,
         ts("2024-06-16"), ts("2024-07-01")),
        # discount_amounts [{amount: 100}] -> discount 100
        ("il_1PreB2bbbbbbbbb", "il_1PreB2bbbbbbbbb", "in_1PreBbbbbbbbbbb", "sub_1PreAaaaaaaaaaa",
         "si_PreAaaaaaaaaaa", "price_1Business", "invoiceitem", "USD", 2000, 100, 0, True,
         ts("2024-06-16"), ts("2024-07-01")),
    ]  # fmt: skip


def test_stripe_line_items_basil_shape() -> None:
    got = rows(
        "stripe_invoice_line_item.yaml",
        "stripe/invoice_line_items_2025-03-31.basil.json",
        LINE_COLS,
    )
    assert got == [
        # proration, subscription and subscription_item come from parent.subscription_item_details;
        # JPY 1500 stays 1500 yen (zero-decimal), discount 150 from discount_amounts
        ("il_1BasJ1jjjjjjjjj", "il_1BasJ1jjjjjjjjj", "in_1BasJjjjjjjjjjj", "sub_1BasJjjjjjjjjjj",
         "si_BasJjjjjjjjjjj", "price_1JpStd", "subscription", "JPY", 1500, 150, 0, False,
         ts("2025-04-01"), ts("2025-05-01")),
        # a proration backed by an invoice item: parent.invoice_item_details.proration = true
        ("il_1BasJ2jjjjjjjjj", "il_1BasJ2jjjjjjjjj", "in_1BasJjjjjjjjjjj", "sub_1BasJjjjjjjjjjj",
         None, "price_1JpStd", "invoiceitem", "JPY", -500, 0, 0, True,
         ts("2025-04-15"), ts("2025-05-01")),
        # ISK is two-decimal in Stripe: 50000 = 500.00 ISK, staged as the integer Stripe wrote
        # (unit: minor keeps the vendor unit; see exponents: ISK: 2); taxes[].amount 12000 -> tax
        ("il_1BasI1iiiiiiiii", "il_1BasI1iiiiiiiii", "in_1BasIiiiiiiiiii", None, None,
         "price_1IsWorkshop", "invoiceitem", "ISK", 50000, 0, 12000, False,
         ts("2025-04-10 12:00:00"), ts("2025-04-10 12:00:00")),
    ]  # fmt: skip


def test_stripe_invoices_both_shapes() -> None:
    cols = "source_id, subscription_id, status, currency, subtotal, discount, tax, total, amount_paid, coupon, livemode"
    assert rows("stripe_invoice.yaml", "stripe/invoices_2024-06-20.json", cols) == [
        ("in_1PreAaaaaaaaaaa", "sub_1PreAaaaaaaaaaa", "paid", "USD", 1999, 0, 0, 1999, 1999, None, True),
        # tax 0 (top-level), coupon from discount.coupon.id; the 100 of total_discount_amounts
        # is already in the lines' discount_amounts, so the invoice-level remainder is 0
        ("in_1PreBbbbbbbbbbb", "sub_1PreAaaaaaaaaaa", "open", "USD", 1000, 0, 0, 900, 0, "SUMMER10", True),
    ]  # fmt: skip
    assert rows("stripe_invoice.yaml", "stripe/invoices_2025-03-31.basil.json", cols) == [
        # subscription from parent.subscription_details.subscription
        ("in_1BasJjjjjjjjjjj", "sub_1BasJjjjjjjjjjj", "paid", "JPY", 1000, 0, 0, 850, 1000, None, True),
        # total_taxes[].amount 12000 -> tax; 50000 + 12000 = 62000 total
        ("in_1BasIiiiiiiiiii", None, "open", "ISK", 50000, 0, 12000, 62000, 0, None, True),
    ]  # fmt: skip


def test_stripe_subscription_periods_both_shapes() -> None:
    got = rows(
        "stripe_subscription.yaml",
        "stripe/subscriptions.json",
        "source_id, plan_id, quantity, current_period_start, current_period_end, trial_end, coupon",
    )
    assert got == [
        ("sub_1PreAaaaaaaaaaa", "price_1Business", 1, ts("2024-06-01"), ts("2024-07-01"), None, "SUMMER10"),
        # basil: the period lives on items.data[0]
        ("sub_1BasJjjjjjjjjjj", "price_1JpStd", 1, ts("2025-04-01"), ts("2025-05-01"), ts("2025-04-01"), None),
    ]  # fmt: skip


def test_stripe_credit_notes_refunds_events() -> None:
    notes = rows(
        "stripe_credit_note.yaml",
        "stripe/credit_notes.json",
        "source_id, status, currency, amount, tax, refund_id",
    )
    assert notes == [
        ("cn_1PreAaaaaaaaaaa", "issued", "USD", 1000, 0, "re_1PreAaaaaaaaaaa"),  # "refund"
        ("cn_1BasIiiiiiiiiii", "void", "ISK", 10000, 2400, None),  # 12400 - 10000 = 2400 tax
    ]
    refunds = rows(
        "stripe_refund.yaml", "stripe/refunds.json", "source_id, charge_id, amount, status"
    )
    assert refunds == [("re_1PreAaaaaaaaaaa", "ch_1PreAaaaaaaaaaa", 1000, "succeeded")]
    events = rows(
        "stripe_event.yaml",
        "stripe/events.json",
        "source_id, event_type, object_id, idempotency_key, request_id",
    )
    assert events == [
        ("evt_1PreAinvpaid0001", "invoice.paid", "in_1PreAaaaaaaaaaa", None, None),
        ("evt_1PreAsubupd0002", "customer.subscription.updated", "sub_1PreAaaaaaaaaaa",
         "5f0c6b1e-upgrade-ada", "req_8aZkQ1upgrade"),
        # same request, different event type: not a duplicate
        ("evt_1PreAinvcre0003", "invoice.created", "in_1PreBbbbbbbbbbb",
         "5f0c6b1e-upgrade-ada", "req_8aZkQ1upgrade"),
    ]  # fmt: skip


def test_stripe_fivetran_tables() -> None:
    got = rows(
        "stripe_invoice_line_item_fivetran.yaml",
        "stripe/fivetran/invoice_line_item.csv",
        "source_id, unique_id, currency, amount, proration, period_start",
    )
    assert got == [
        ("sub_1LegacyOld", "il_1LegacyOldUnique", "EUR", 999, False, ts("2019-09-01")),
        ("il_1PreB1bbbbbbbbb", "il_1PreB1bbbbbbbbb", "USD", -1000, True, ts("2024-06-16")),
        ("il_1BasJ1jjjjjjjjj", "il_1BasJ1jjjjjjjjj", "JPY", 1500, False, ts("2025-04-01")),
    ]
    inv = rows(
        "stripe_invoice_fivetran.yaml",
        "stripe/fivetran/invoice.csv",
        "source_id, currency, subtotal, tax, total, livemode, created_at",
    )
    assert inv == [
        ("in_1PreAaaaaaaaaaa", "USD", 1999, None, 1999, True, ts("2024-06-01 00:00:05")),
        ("in_1BasIiiiiiiiiii", "ISK", 50000, 12000, 62000, True, ts("2025-04-10 12:00:00")),
        (
            "in_1TestMode00000",
            "USD",
            500,
            0,
            500,
            False,
            ts("2025-04-11"),
        ),  # test mode kept, flagged
    ]


def test_chargebee_invoice_values() -> None:
    got = rows(
        "chargebee_invoice.yaml",
        "chargebee/invoices.json",
        "source_id, status, currency, subtotal, discount, tax, total, exchange_rate, created_at",
    )
    assert got == [
        # 4900 - 490 (WELCOME10) = 4410
        ("1001", "paid", "USD", 4900, 490, 0, 4410, Decimal("1"), ts("2024-06-01")),
        (
            "1002",
            "open",
            "EUR",
            12000,
            0,
            2280,
            14280,
            Decimal("1.0843"),
            ts("2025-04-10 12:00:00"),
        ),
        (
            "1003",
            "void",
            "EUR",
            12000,
            0,
            2280,
            14280,
            Decimal("1.0843"),
            ts("2025-04-10 12:00:00"),
        ),
    ]


def test_netsuite_values() -> None:
    cust = rows(
        "netsuite_customer.yaml",
        "netsuite/customers_suiteql.json",
        "source_id, company, first_name, last_name, external_ref, currency, is_deleted",
    )
    assert cust == [
        ("1201", "Analytical Engines Ltd", None, None, "cus_Q1adaLovelace", "GBP", False),
        ("1202", None, "Hiroshi", "Tanaka", "cus_RjpTanaka", "JPY", False),
        ("1203", "Analytical Engines", None, None, None, "GBP", True),  # isinactive = T
    ]
    inv = rows(
        "netsuite_invoice.yaml",
        "netsuite/invoices_suiteql.json",
        "source_id, number, status, currency, total, exchange_rate, subsidiary, external_ref",
    )
    assert inv == [
        # status B = Paid In Full; foreigntotal 1583.20 GBP -> 158320 pence
        ("88001", "INV-UK-000123", "paid", "GBP", 158320, Decimal("1.2712"), "UK Ltd", "in_1PreAaaaaaaaaaa"),
        ("88002", "INV-JP-000007", "open", "JPY", 850, Decimal("0.0067"), "Japan KK", "in_1BasJjjjjjjjjjj"),
    ]  # fmt: skip
    lines = rows(
        "netsuite_invoice_line.yaml",
        "netsuite/invoice_lines_suiteql.json",
        "source_id, invoice_id, currency, amount, quantity",
    )
    assert lines == [
        ("88001:1", "88001", "GBP", 131933, 1),  # foreignamount -1319.33 negated
        ("88002:1", "88002", "JPY", 850, 1),  # -850 JPY negated
    ]


def test_google_ads_micros_round_half_even() -> None:
    got = rows(
        "google_ads_campaign.yaml",
        "google_ads/campaign_search.json",
        "account_id, campaign_id, date, currency, spend, clicks, account_timezone",
    )
    assert got == [
        # 12_345_678 micros USD = 1234.5678 cents -> 1235
        ("1234567890", "111111111", date(2025, 1, 15), "USD", 1235, 42, "America/New_York"),
        # 12_345_000 micros USD = 1234.5 cents -> 1234 (half to even, not 1235)
        ("1234567890", "111111111", date(2025, 1, 16), "USD", 1234, 40, "America/New_York"),
        # 1_500_000_000 micros JPY = 1500 yen; zero clicks are omitted from the JSON -> NULL
        ("9876543210", "222222222", date(2025, 1, 15), "JPY", 1500, None, "Asia/Tokyo"),
    ]


def test_meta_linkedin_microsoft_spend() -> None:
    meta = rows("meta_ads_insights.yaml", "meta_ads/insights.json", "date, currency, spend")
    assert meta == [
        (date(2025, 1, 15), "EUR", 5339),  # "53.39"
        (date(2025, 1, 16), "EUR", 533950),  # "5339.5"
        (date(2025, 1, 15), "KRW", 48200),  # KRW has no minor unit
    ]
    li = rows(
        "linkedin_ads_analytics.yaml",
        "linkedin_ads/ad_analytics_statistics.json",
        "account_id, campaign_group_id, campaign_id, date, currency, spend",
    )
    assert li == [
        # costInLocalCurrency "120.5" EUR (not costInUsd "125.92") -> 12050 cents
        ("507404993", "625612345", "187654321", date(2025, 1, 15), "EUR", 12050),
        # "0.004" EUR = 0.4 cent -> 0
        ("507404993", "625612345", "187654322", date(2025, 1, 15), "EUR", 0),
    ]
    ms = rows(
        "microsoft_ads_campaign.yaml",
        "microsoft_ads/campaign_performance.csv",
        "account_id, campaign_id, date, currency, spend, conversion_value",
    )
    assert ms == [
        ("149123456", "550001", date(2025, 1, 15), "GBP", 1877, Decimal("399.96")),
        ("149123456", "550001", date(2025, 1, 16), "GBP", 0, Decimal("0")),
    ]


def test_ecb_unpivots_and_drops_na() -> None:
    con, table, quarantine = staged("ecb_eurofxref.yaml", "ecb/eurofxref-hist.csv")
    assert quarantine == ()
    # 41 currency columns, 11 of them N/A on every sample day (CYP EEK LTL LVL MTL ROL SIT SKK HRK
    # RUB TRL), 3 days: 30 * 3 = 90 rates; the trailing-comma column yields none
    assert con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 90
    assert con.execute(f"SELECT DISTINCT base, rate_type FROM {table}").fetchall() == [
        ("EUR", "ecb_reference")
    ]
    got = con.execute(
        f"SELECT date, quote, rate FROM {table} WHERE quote IN ('USD', 'JPY', 'RUB') "
        "ORDER BY date DESC, quote"
    ).fetchall()
    assert got == [
        (date(2025, 1, 17), "JPY", Decimal("160.84")),
        (date(2025, 1, 17), "USD", Decimal("1.03")),
        (date(2025, 1, 16), "JPY", Decimal("160.2")),
        (date(2025, 1, 16), "USD", Decimal("1.0305")),
        (date(2025, 1, 15), "JPY", Decimal("162.03")),
        (date(2025, 1, 15), "USD", Decimal("1.0304")),
    ]


def test_stripe_fivetran_customer_subscription_credit_note_refund() -> None:
    cust = rows(
        "stripe_customer_fivetran.yaml",
        "stripe/fivetran/customer.csv",
        "source_id, email, full_name, country, currency, is_deleted",
    )
    assert cust == [
        ("cus_Q1adaLovelace", "ada.lovelace@example.com", "Ada Lovelace", "GB", "USD", False),
        ("cus_RjpTanaka", "tanaka@example.jp", "Tanaka Hiroshi", None, "JPY", False),
        # deleted duplicate; the trailing space of the email is trimmed, case kept for normalize
        ("cus_Q1adaDupe", "Ada.Lovelace@example.com", "Ada  Lovelace", "GB", None, True),
    ]
    subs = rows(
        "stripe_subscription_fivetran.yaml",
        "stripe/fivetran/subscription.csv",
        "source_id, status, trial_end, current_period_start, current_period_end",
    )
    assert subs == [
        ("sub_1PreAaaaaaaaaaa", "active", None, ts("2024-06-01"), ts("2024-07-01")),
        ("sub_1BasJjjjjjjjjjj", "active", ts("2025-04-01"), ts("2025-04-01"), ts("2025-05-01")),
    ]
    notes = rows(
        "stripe_credit_note_fivetran.yaml",
        "stripe/fivetran/credit_note.csv",
        "source_id, status, amount, tax, refund_id",
    )
    assert notes == [
        (
            "cn_1PreAaaaaaaaaaa",
            "issued",
            1000,
            0,
            "re_1PreAaaaaaaaaaa",
        ),  # 1000 - 0; 1000 - 1000 + 0
        ("cn_1BasIiiiiiiiiii", "void", 10000, 2400, None),  # 10000 - 0; 12400 - 10000 + 0
    ]
    refunds = rows(
        "stripe_refund_fivetran.yaml", "stripe/fivetran/refund.csv", "source_id, amount, created_at"
    )
    assert refunds == [("re_1PreAaaaaaaaaaa", 1000, ts("2024-06-20 09:30:00"))]


def test_stripe_events_from_a_webhook_log_as_ndjson() -> None:
    """The same mapping reads a webhook log (one event per line) when the source overrides the
    format type; a retried delivery is the same event id twice: kept for dedup's exact match on
    source_id, not quarantined."""
    con, table, quarantine = stage_sample(
        MAPPINGS / "stripe_event.yaml",
        SAMPLES / "stripe/webhook_events.ndjson",
        "billing",
        "billing_event",
        fmt={"type": "ndjson"},
    )
    assert quarantine == []
    got = con.execute(f"SELECT source_row, source_id FROM {table} ORDER BY source_row").fetchall()
    assert got == [
        (1, "evt_1PreAinvpaid0001"),
        (2, "evt_1PreAsubupd0002"),
        (3, "evt_1PreAinvpaid0001"),  # the retry
        (4, "evt_1PreAinvcre0003"),
    ]


def test_netsuite_saved_search_csv_stages_like_suiteql() -> None:
    """The two NetSuite exports of the same records stage to the same canonical values."""
    cols = (
        "source_id, number, customer_id, status, currency, total, tax, exchange_rate, external_ref"
    )
    json_rows = rows("netsuite_invoice.yaml", "netsuite/invoices_suiteql.json", cols)
    csv_rows = rows("netsuite_invoice.yaml", "netsuite/invoices_savedsearch.csv", cols)
    assert csv_rows == json_rows == [
        # 1583.20 GBP total of which 263.87 VAT; "Paid In Full" and status B both mean paid
        ("88001", "INV-UK-000123", "1201", "paid", "GBP", 158320, 26387, Decimal("1.2712"),
         "in_1PreAaaaaaaaaaa"),
        ("88002", "INV-JP-000007", "1202", "open", "JPY", 850, 0, Decimal("0.0067"),
         "in_1BasJjjjjjjjjjj"),
    ]  # fmt: skip
    cust = rows(
        "netsuite_customer.yaml",
        "netsuite/customers_savedsearch.csv",
        "source_id, full_name, company, last_name, is_deleted, created_at",
    )
    assert cust == [
        ("1201", "Analytical Engines Ltd", "Analytical Engines Ltd", None, False, ts("2024-01-16 09:12")),
        ("1202", "Tanaka Hiroshi", None, "Tanaka", False, ts("2025-03-16 10:00")),
        ("1204", "Grace Hopper", None, "Hopper", True, ts("2024-06-05 14:30")),  # "2:30 pm"
    ]  # fmt: skip


def test_google_ads_gaql_csv_and_meta_jsonl_stage_like_the_api_json() -> None:
    cols = "account_id, campaign_id, date, currency, spend, impressions, account_timezone"
    api = rows("google_ads_campaign.yaml", "google_ads/campaign_search.json", cols)
    csv = rows("google_ads_campaign.yaml", "google_ads/campaign_gaql.csv", cols)
    assert csv == api
    assert [r[4] for r in csv] == [1235, 1234, 1500]  # cost_micros -> cents/yen, half-even
    cols = "account_id, campaign_id, date, currency, spend, impressions, clicks"
    assert rows("meta_ads_insights.yaml", "meta_ads/insights.jsonl", cols) == rows(
        "meta_ads_insights.yaml", "meta_ads/insights.json", cols
    )


def test_linkedin_campaign_manager_export_and_treasury_rates() -> None:
    got = rows(
        "linkedin_ads_campaign.yaml",
        "linkedin_ads/campaign_performance_export.csv",
        "campaign_group_id, campaign_id, date, currency, spend, clicks",
    )
    assert got == [
        # the four report lines above the header are skipped; "Total Spent" 120.50 EUR
        ("625612345", "187654321", date(2025, 1, 15), "EUR", 12050, 37),
        ("625612345", "187654322", date(2025, 1, 15), "EUR", 0, 0),
        ("625612345", "187654321", date(2025, 1, 16), "EUR", 9801, 29),
    ]
    fx = rows("treasury_fx_rate.yaml", "treasury/rates.csv", "date, base, quote, rate, rate_type")
    assert fx[0] == (date(2025, 1, 15), "EUR", "KWD", Decimal("0.3178"), "treasury")
    assert len(fx) == 3


def test_salesforce_custom_fields_utm_and_billing_ids() -> None:
    # the conventional custom fields: UTM / click ids on the lead, the billing ids a sync writes
    # back on the contact and the opportunity (empty cells stay NULL)
    leads = rows(
        "salesforce_lead.yaml", "salesforce/Lead.csv",
        "source_id, utm_source, utm_medium, utm_campaign, utm_term, gclid, fbclid",
    )  # fmt: skip
    assert leads[0] == (
        "00Q5e00000L1m2nEAB", "google", "cpc", "brand_search_us", "data pipeline",
        "Cj0KCQjw-EXAMPLE", None,
    )  # fmt: skip
    assert all(r[1:] == (None,) * 6 for r in leads[1:])
    contacts = rows("salesforce_contact.yaml", "salesforce/Contact.csv", "source_id, external_ref")
    assert contacts[0] == ("0035e00000A1b2cAAB", "cus_Q1aBcDeFgHiJkL")
    deals = rows(
        "salesforce_opportunity.yaml", "salesforce/Opportunity.csv", "source_id, external_ref"
    )
    assert deals[0] == ("0065e00000P1q2rAAB", "sub_1PreAaaaaaaaaaa")


def test_chargebee_customer_and_subscription_values() -> None:
    customers = rows(
        "chargebee_customer.yaml", "chargebee/customers.json",
        "source_id, first_name, last_name, email, company, postal_code, country, currency, "
        "external_ref, is_deleted, created_at",
    )  # fmt: skip
    assert customers == [
        # created_at 1764269168 = 2025-11-27 18:46:08 UTC
        ("160VCNb0001tt1PHi", "Layla", "Schmidt", "layla.schmidt173@icloud.com", None, "78701",
         "US", "USD", "0035g00000000IvAAI", False, ts("2025-11-27 18:46:08")),
        ("160VCNb0002wHtObb", "Sam", "Bernard", "sam.bernard@novanetworks.com",
         "Nova Networks Inc.", "98101", "US", "USD", "0035g00000000KRAAY", False,
         ts("2025-12-21 11:10:47")),
    ]  # fmt: skip
    subs = rows(
        "chargebee_subscription.yaml", "chargebee/subscriptions.json",
        "source_id, customer_id, status, plan_id, quantity, currency, trial_end, canceled_at",
    )  # fmt: skip
    assert subs == [
        # Chargebee "cancelled" -> canonical "canceled"; trial_end 1765479068 = 2025-12-11 18:51:08
        ("AzqVdcm0001tt1RLR", "160VCNb0001tt1PHi", "canceled", "starter-USD-Monthly", 1, "USD",
         ts("2025-12-11 18:51:08"), ts("2025-12-11 18:51:08")),
        ("AzqVdcm0002wHtQfK", "160VCNb0002wHtObb", "active", "growth-USD-Monthly", 7, "USD", None,
         None),
    ]  # fmt: skip
