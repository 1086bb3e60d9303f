"""Every shipped mapping validates and reads a hand-written sample in its system's real format.

Samples live in tests/samples/<vendor>/ and were written by hand from the vendors' documentation
(see docs/formats.md). The checks here do not go through the contract stage: they read each sample
the way ingest does (DuckDB's CSV reader, all VARCHAR; JSON records with their nested values) and
check that every source path a mapping names exists in the sample and every `expr` evaluates.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import pytest

from romirecon.config import _load_mapping, load_yaml
from romirecon.sqlutil import literal

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


def _json_records(path: Path, fmt: dict) -> list[dict]:
    text = path.read_text("utf-8")
    if fmt.get("type") == "ndjson":
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
    if fmt.get("type") in ("json", "ndjson"):
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
