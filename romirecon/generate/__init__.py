"""Synthetic estate generator with ground truth (`romirecon generate`).

`generate_estate(out_dir, customers, seed, dup_rate, as_of)` draws a world (people at companies,
their acquisition campaigns, subscriptions and invoices, daily ad spend, ECB rates), writes it as
vendor exports with every duplication vector injected and labelled, a `romirecon.yaml` that runs
on it, the mapping files it needs, and `truth/`:

- `records.parquet`: one row per exported record: source, source_file, source_row, source_id,
  entity_id (the true identity), vector (`original` or the duplication vector), detail.
- `clusters.parquet`: the true duplicate clusters, flat: one row per member record of every
  entity with more than one record (cluster_id = entity_id, source, source_file, source_row,
  vector), in the records' order. Records absent from it are singletons.
- `revenue.parquet`: month, customer_id, currency, amount_minor, amount_reporting.
- `romi.parquet`: period, platform, campaign_id, spend, revenue (reporting currency, last touch).
- `billing_cases.parquet`: which objects carry which billing edge case.
- `manifest.json`: parameters and row counts.

Same arguments -> byte-identical files.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from romirecon.exitcodes import ConfigError

DEFAULT_AS_OF = date(2026, 10, 31)
REPORTING_CURRENCY = "USD"
MARKER = ".romirecon-estate"
# how the API-list exports (Stripe, HubSpot, Chargebee, NetSuite SuiteQL) are written:
# "api" = one list document per file, as the API pages them; "ndjson" = one record per line in a
# `.jsonl` file, as bulk extract tools (Airbyte, Singer taps, Fivetran files) write them
JSON_LAYOUTS = ("api", "ndjson")


def layout_path(path: str, json_layout: str) -> str:
    """The file an export path names under a JSON layout (`x.json` -> `x.jsonl` for ndjson).
    Only the single-file API-list exports change; the ad platforms' per-account/month files
    (globs in SOURCES) stay as their APIs write them."""
    if json_layout == "ndjson" and path in _LISTED:
        return path[: -len(".json")] + ".jsonl"
    return path


# source name -> (system, entity, mapping file, path glob)
SOURCES: list[tuple[str, str, str, str, str]] = [
    ("hubspot_contact", "crm", "contact", "hubspot_contact.yaml", "exports/crm/hubspot/contacts.json"),
    ("salesforce_lead", "crm", "contact", "salesforce_lead.yaml", "exports/crm/salesforce/Lead_*.csv"),
    ("salesforce_contact", "crm", "contact", "salesforce_contact.yaml", "exports/crm/salesforce/Contact.csv"),
    ("salesforce_account", "crm", "account", "salesforce_account.yaml", "exports/crm/salesforce/Account.csv"),
    ("salesforce_opportunity", "crm", "deal", "salesforce_opportunity.yaml", "exports/crm/salesforce/Opportunity.csv"),
    ("stripe_customer", "billing", "contact", "stripe_customer.yaml", "exports/billing/stripe/customers.json"),
    ("stripe_subscription", "billing", "subscription", "stripe_subscription.yaml", "exports/billing/stripe/subscriptions.json"),
    ("stripe_invoice", "billing", "invoice", "stripe_invoice.yaml", "exports/billing/stripe/invoices.json"),
    ("stripe_invoice_line", "billing", "invoice_line", "stripe_invoice_line_item.yaml", "exports/billing/stripe/invoice_line_items.json"),
    ("stripe_credit_note", "billing", "credit_note", "stripe_credit_note.yaml", "exports/billing/stripe/credit_notes.json"),
    ("stripe_refund", "billing", "refund", "stripe_refund.yaml", "exports/billing/stripe/refunds.json"),
    ("stripe_event", "billing", "billing_event", "stripe_event.yaml", "exports/billing/stripe/events.json"),
    ("chargebee_customer", "billing", "contact", "chargebee_customer.yaml", "exports/billing/chargebee/customers.json"),
    ("chargebee_subscription", "billing", "subscription", "chargebee_subscription.yaml", "exports/billing/chargebee/subscriptions.json"),
    ("chargebee_invoice", "billing", "invoice", "chargebee_invoice.yaml", "exports/billing/chargebee/invoices.json"),
    ("netsuite_customer", "erp", "contact", "netsuite_customer.yaml", "exports/erp/netsuite/customers.json"),
    ("netsuite_invoice", "erp", "invoice", "netsuite_invoice.yaml", "exports/erp/netsuite/invoices.json"),
    ("google_ads", "ads", "ad_spend", "google_ads_campaign.yaml", "exports/ads/google_ads/*.json"),
    ("meta_ads", "ads", "ad_spend", "meta_ads_insights.yaml", "exports/ads/meta_ads/*.json"),
    ("linkedin_ads", "ads", "ad_spend", "linkedin_ads_analytics.yaml", "exports/ads/linkedin_ads/*.json"),
    ("microsoft_ads", "ads", "ad_spend", "microsoft_ads_campaign.yaml", "exports/ads/microsoft_ads/*.csv"),
    ("ecb_rates", "fx", "fx_rate", "ecb_eurofxref.yaml", "exports/fx/ecb/eurofxref-hist.csv"),
    ("treasury_rates", "fx", "fx_rate", "treasury_fx_rate.yaml", "exports/fx/treasury/rates.csv"),
]  # fmt: skip


@dataclass(frozen=True)
class GenerateResult:
    out_dir: Path
    project_file: Path
    files: list[str]
    counts: dict[str, int]
    missing_mappings: list[str] = field(default_factory=list)


def repo_mappings_dir() -> Path:
    import romirecon

    return Path(romirecon.__file__).resolve().parent.parent / "mappings"


def _prepare(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir}: exists and is not a folder")
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MARKER).exists():
        raise ConfigError(
            f"{out_dir}: folder is not empty and was not made by `romirecon generate`; "
            "choose an empty or new folder"
        )
    for sub in ("exports", "truth", "mappings"):
        shutil.rmtree(out_dir / sub, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text("written by romirecon generate; safe to regenerate\n")


_LISTED = {p for *_, p in SOURCES if p.endswith(".json") and "*" not in p}


def generate_estate(
    out_dir: Path,
    customers: int,
    seed: int,
    dup_rate: float = 0.05,
    as_of: date | None = None,
    json_layout: str = "api",
) -> GenerateResult:
    """Write a whole synthetic estate with its ground truth into out_dir (see module doc)."""
    if customers < 1:
        raise ConfigError(f"--customers must be at least 1, got {customers}")
    if not 0.0 <= dup_rate <= 1.0:
        raise ConfigError(f"--dup-rate must be between 0 and 1, got {dup_rate}")
    if seed < 0:
        raise ConfigError(f"--seed must be non-negative, got {seed}")
    if json_layout not in JSON_LAYOUTS:
        raise ConfigError(
            f"--json-layout must be one of {', '.join(JSON_LAYOUTS)}, got {json_layout}"
        )
    from romirecon.generate.build import build_estate

    out_dir = Path(out_dir)
    _prepare(out_dir)
    return build_estate(out_dir, customers, seed, dup_rate, as_of or DEFAULT_AS_OF, json_layout)


__all__ = [
    "DEFAULT_AS_OF",
    "JSON_LAYOUTS",
    "SOURCES",
    "GenerateResult",
    "generate_estate",
    "repo_mappings_dir",
]
