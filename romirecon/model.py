"""The canonical model: entities, their columns and canonical types.

A mapping file maps one export onto one entity: each canonical column is filled from a source
column (or a SQL expression over source columns) and typed here. The contract stage writes one
`staged_<source>` table per source with exactly these columns (those the mapping fills; the rest are
NULL) plus the provenance columns, and one `stg_<entity>` view that unions every source of that
entity by name. Later stages read `stg_<entity>`; nothing downstream reads raw export columns.

Money is exact: every `money` column holds whole minor units (BIGINT) of the currency in the
entity's `currency` column (see `romirecon.money` for exponents). Timestamps are UTC.
"""

from __future__ import annotations

from dataclasses import dataclass

# canonical type -> DuckDB type of the staged column
TYPES: dict[str, str] = {
    "string": "VARCHAR",
    "integer": "BIGINT",
    "decimal": "DECIMAL(38,10)",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMP",  # UTC, naive
    "money": "BIGINT",  # minor units of the row's currency
    "list": "VARCHAR[]",
}

# columns every staged row carries, set by ingest/contract, never by a mapping
PROVENANCE: dict[str, str] = {
    "source_name": "VARCHAR",  # the source's name in romirecon.yaml
    "source_system": "VARCHAR",  # crm | erp | billing | ads | fx
    "source_vendor": "VARCHAR",  # salesforce, hubspot, stripe, ... (from the mapping)
    "source_file": "VARCHAR",  # path relative to the project folder
    "source_row": "BIGINT",  # 1-based record number within the file
    "file_sha256": "VARCHAR",
    "run_id": "VARCHAR",
}

SYSTEMS = ("crm", "erp", "billing", "ads", "fx")


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    doc: str


def _cols(*specs: tuple[str, str, str]) -> dict[str, Column]:
    return {n: Column(n, t, d) for n, t, d in specs}


_PARTY = (
    ("source_id", "string", "the record's id in its system"),
    ("email", "string", "email address as exported"),
    ("first_name", "string", ""),
    ("last_name", "string", ""),
    ("full_name", "string", "when the export has no first/last split"),
    ("phone", "string", "phone as exported (normalised to E.164 later)"),
    ("company", "string", "company / account name"),
    ("website", "string", "company website or domain"),
    ("title", "string", "job title"),
    ("street", "string", ""),
    ("city", "string", ""),
    ("state", "string", ""),
    ("postal_code", "string", ""),
    ("country", "string", "ISO 3166 alpha-2 where the export has it"),
    ("currency", "string", "the record's default currency"),
    ("account_id", "string", "parent account/company id in the same system"),
    (
        "external_ref",
        "string",
        "an id of this party in another system (e.g. Stripe id on a CRM record)",
    ),
    ("lead_source", "string", "CRM lead source / original source"),
    ("latest_source", "string", "HubSpot latest source"),
    ("utm_source", "string", ""),
    ("utm_medium", "string", ""),
    ("utm_campaign", "string", ""),
    ("utm_term", "string", ""),
    ("utm_content", "string", ""),
    ("gclid", "string", "Google click id"),
    ("fbclid", "string", "Meta click id"),
    ("li_fat_id", "string", "LinkedIn click id"),
    ("msclkid", "string", "Microsoft click id"),
    ("record_type", "string", "lead | contact | customer | ... (the export's object)"),
    ("status", "string", ""),
    ("is_deleted", "boolean", "soft-deleted in the source"),
    ("merged_into", "string", "the id this record was merged into (Salesforce MasterRecordId)"),
    ("merged_ids", "list", "ids merged into this record (HubSpot hs_merged_object_ids)"),
    ("converted_to", "string", "Salesforce Lead.ConvertedContactId"),
    ("created_at", "timestamp", ""),
    ("updated_at", "timestamp", ""),
)

ENTITIES: dict[str, dict[str, Column]] = {
    # people and organisations that pay or might pay: CRM leads/contacts, ERP customers,
    # billing customers. Dedup runs across all sources of this entity.
    "contact": _cols(*_PARTY),
    "account": _cols(*_PARTY),
    "deal": _cols(
        ("source_id", "string", ""),
        ("name", "string", ""),
        ("account_id", "string", ""),
        ("contact_id", "string", ""),
        ("stage", "string", ""),
        ("is_closed", "boolean", ""),
        ("is_won", "boolean", ""),
        ("amount", "money", ""),
        ("currency", "string", ""),
        ("close_date", "date", ""),
        ("campaign_id", "string", "primary campaign source"),
        ("lead_source", "string", ""),
        ("deal_type", "string", "new business / renewal / upsell"),
        ("external_ref", "string", "billing subscription / customer id if recorded"),
        ("is_deleted", "boolean", ""),
        ("created_at", "timestamp", ""),
        ("updated_at", "timestamp", ""),
        ("merged_ids", "list", "ids merged into this deal (HubSpot hs_merged_object_ids)"),
    ),
    "campaign_member": _cols(
        ("source_id", "string", ""),
        ("campaign_id", "string", ""),
        ("campaign_name", "string", ""),
        ("contact_id", "string", "lead or contact id"),
        ("status", "string", ""),
        ("has_responded", "boolean", ""),
        ("responded_at", "timestamp", ""),
        ("utm_source", "string", ""),
        ("utm_medium", "string", ""),
        ("utm_campaign", "string", ""),
        ("is_deleted", "boolean", ""),
        ("created_at", "timestamp", ""),
    ),
    "subscription": _cols(
        ("source_id", "string", ""),
        ("customer_id", "string", ""),
        ("status", "string", "trialing | active | past_due | canceled | ..."),
        ("plan_id", "string", ""),
        ("currency", "string", ""),
        ("quantity", "integer", ""),
        ("trial_start", "timestamp", ""),
        ("trial_end", "timestamp", ""),
        ("current_period_start", "timestamp", ""),
        ("current_period_end", "timestamp", ""),
        ("coupon", "string", "coupon / promotion code"),
        ("canceled_at", "timestamp", ""),
        ("created_at", "timestamp", ""),
        ("livemode", "boolean", ""),
    ),
    "invoice": _cols(
        ("source_id", "string", ""),
        ("number", "string", "invoice number"),
        ("customer_id", "string", ""),
        ("subscription_id", "string", ""),
        ("status", "string", "draft | open | paid | uncollectible | void"),
        ("currency", "string", ""),
        ("subtotal", "money", "before invoice-level discounts and tax"),
        ("discount", "money", "invoice-level discount total"),
        ("tax", "money", ""),
        ("total", "money", ""),
        ("amount_paid", "money", ""),
        (
            "billing_reason",
            "string",
            "subscription_create | subscription_cycle | subscription_update | manual",
        ),
        ("coupon", "string", "coupon / promotion code"),
        ("period_start", "timestamp", ""),
        ("period_end", "timestamp", ""),
        ("exchange_rate", "decimal", "ERP: rate to the subsidiary's base currency"),
        ("subsidiary", "string", "ERP subsidiary"),
        ("external_ref", "string", "id of the same invoice in another system"),
        ("deal_ref", "string", "CRM opportunity / deal id if recorded"),
        ("charge_id", "string", "the payment (Stripe charge) that paid it: refunds point at it"),
        ("livemode", "boolean", ""),
        ("created_at", "timestamp", ""),
        ("updated_at", "timestamp", ""),
    ),
    "invoice_line": _cols(
        ("source_id", "string", "line id"),
        ("unique_id", "string", "Stripe's stable line id (il_...) when source_id is a sub_... id"),
        ("invoice_id", "string", ""),
        ("customer_id", "string", "denormalised where the export has it"),
        ("subscription_id", "string", ""),
        ("subscription_item_id", "string", ""),
        ("price_id", "string", ""),
        ("plan_id", "string", ""),
        ("description", "string", ""),
        ("line_type", "string", "subscription | invoiceitem"),
        ("currency", "string", ""),
        ("amount", "money", "gross line amount before discounts and tax"),
        ("discount", "money", "sum of line-level discount amounts"),
        ("tax", "money", ""),
        ("quantity", "integer", ""),
        ("proration", "boolean", ""),
        ("discountable", "boolean", ""),
        ("period_start", "timestamp", "service period start (inclusive)"),
        ("period_end", "timestamp", "service period end (exclusive)"),
        ("coupon", "string", ""),
        ("created_at", "timestamp", ""),
    ),
    "credit_note": _cols(
        ("source_id", "string", ""),
        ("number", "string", ""),
        ("invoice_id", "string", ""),
        ("invoice_line_id", "string", "the credited line, if the export has line detail"),
        ("customer_id", "string", ""),
        ("status", "string", "issued | void"),
        ("currency", "string", ""),
        ("amount", "money", "credited amount excluding tax"),
        ("tax", "money", ""),
        ("refund_id", "string", "refund this credit note paid out, if any"),
        ("reason", "string", ""),
        ("created_at", "timestamp", ""),
    ),
    "refund": _cols(
        ("source_id", "string", ""),
        ("charge_id", "string", ""),
        ("invoice_id", "string", ""),
        ("credit_note_id", "string", ""),
        ("customer_id", "string", ""),
        ("status", "string", "succeeded | pending | failed | canceled"),
        ("currency", "string", ""),
        ("amount", "money", ""),
        ("reason", "string", ""),
        ("created_at", "timestamp", ""),
    ),
    "billing_event": _cols(
        ("source_id", "string", "event id (evt_...)"),
        ("event_type", "string", "invoice.paid, ..."),
        ("object_id", "string", "id of the object the event carries"),
        ("idempotency_key", "string", "request.idempotency_key"),
        ("request_id", "string", "request.id"),
        ("livemode", "boolean", ""),
        ("created_at", "timestamp", ""),
    ),
    "ad_spend": _cols(
        ("source_id", "string", "row key when the export has one"),
        ("platform", "string", "google_ads | meta_ads | linkedin_ads | microsoft_ads"),
        ("account_id", "string", ""),
        ("account_name", "string", ""),
        ("account_timezone", "string", "IANA zone of the ad account's day"),
        ("campaign_group_id", "string", "LinkedIn campaign group"),
        ("campaign_id", "string", ""),
        ("campaign_name", "string", ""),
        ("date", "date", "day in the account's timezone"),
        ("currency", "string", "account currency"),
        ("spend", "money", "in the account currency"),
        ("impressions", "integer", ""),
        ("clicks", "integer", ""),
        ("conversions", "decimal", "platform-reported conversions"),
        ("conversion_value", "decimal", "platform-reported conversion value"),
    ),
    "fx_rate": _cols(
        ("date", "date", ""),
        ("base", "string", "1 base = rate quote"),
        ("quote", "string", ""),
        ("rate", "decimal", ""),
        ("rate_type", "string", "e.g. ecb_reference"),
    ),
}


def entity_columns(entity: str) -> dict[str, Column]:
    return ENTITIES[entity]
