"""Format the world model as vendor exports, inject the duplication vectors, record the truth.

Each writer returns the frame it wrote plus its truth rows (source, source_file, source_row,
source_id, entity_id, vector, detail). Duplicates are drawn per source: each original record is
copied with probability `dup_rate`, the copy's vector chosen among those that source suffers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from romirecon.generate import layout_path
from romirecon.generate.util import (
    epoch_to_str,
    salesforce_ids,
    vendor_ids,
    write_api_list,
    write_csv,
    write_json_records,
)
from romirecon.generate.world import PLATFORMS, SUFFIX_VARIANTS, World

SF_TS = "%Y-%m-%dT%H:%M:%S.000Z"
SUITEQL_TS = "%Y-%m-%d %H:%M:%S"


def write_suiteql(records: pl.DataFrame, path: Path) -> None:
    """A SuiteQL REST query response: {links, count, hasMore, items, offset, totalResults}."""
    n = records.height
    write_json_records(records, path, "items", {"links": [], "count": n, "hasMore": False},
                       {"offset": 0, "totalResults": n})  # fmt: skip


def _fixed_major(minor: pl.Expr, exponent: pl.Expr) -> pl.Expr:
    """Minor units as exact decimal text in major units (no float formatting)."""
    div = pl.lit(10).pow(exponent).cast(pl.Int64)
    whole = (minor.abs() // div).cast(pl.String)
    frac = (minor.abs() % div).cast(pl.String).str.zfill(exponent)
    sign = pl.when(minor < 0).then(pl.lit("-")).otherwise(pl.lit(""))
    return sign + pl.when(exponent == 0).then(whole).otherwise(whole + "." + frac)


CLICK_PREFIX = {"google_ads": "Cj0KCQiA", "meta_ads": "IwAR", "linkedin_ads": "li",
                "microsoft_ads": "ms"}  # fmt: skip


def click_id(token: pl.Expr, k: int) -> pl.Expr:
    """A platform's click id for the person's click (pure arithmetic: stable across versions)."""
    return ((token + k * 1_000_003) % (2**62)).cast(pl.String)


TRUTH_COLS = ["source", "source_file", "source_row", "source_id", "entity_id", "vector", "detail"]


@dataclass
class Estate:
    root: Path
    truth: list[pl.DataFrame] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    json_layout: str = "api"

    def record(self, source: str, rel: str, df: pl.DataFrame, id_col: str) -> None:
        """Register a written file: its rows, in file order, with their truth columns."""
        rel = layout_path(rel, self.json_layout)
        self.files.append(rel)
        self.truth.append(
            df.select(
                source=pl.lit(source),
                source_file=pl.lit(rel),
                source_row=pl.int_range(1, pl.len() + 1, dtype=pl.Int64),
                source_id=pl.col(id_col).cast(pl.String),
                entity_id=pl.col("_entity"),
                vector=pl.col("_vector"),
                detail=pl.col("_detail"),
            )
        )

    def path(self, rel: str) -> Path:
        return self.root / layout_path(rel, self.json_layout)


def _orig(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(_vector=pl.lit("original"), _detail=pl.lit(""))


def _choose(rng: np.random.Generator, n: int, rate: float, vectors: list[str]) -> np.ndarray:
    """Per record: '' (no copy) or the vector of its copy."""
    hit = rng.random(n) < rate
    v = np.array(vectors)[rng.integers(0, len(vectors), size=n)]
    return np.where(hit, v, "")


# ---------------------------------------------------------------- value transforms (vectorised)


def typo(col: str, pos_seed: pl.Expr) -> pl.Expr:
    """Swap two adjacent characters inside the value (a transposition typo)."""
    s = pl.col(col)
    n = s.str.len_chars()
    k = (pos_seed % (n - 2).clip(lower_bound=1)) + 1
    return (
        pl.when(n >= 4)
        .then(s.str.slice(0, k) + s.str.slice(k + 1, 1) + s.str.slice(k, 1) + s.str.slice(k + 2))
        .otherwise(s + s.str.slice(-1))
    )


def suffix_variant(col: str) -> pl.Expr:
    e = pl.col(col)
    for a, b in sorted(SUFFIX_VARIANTS.items(), key=lambda kv: -len(kv[0])):
        e = (
            pl.when(pl.col(col).str.ends_with(" " + a))
            .then(pl.col(col).str.strip_suffix(" " + a) + " " + b)
            .otherwise(e)
        )
    return e


def phone_national(cc: str = "calling_code", nsn: str = "nsn") -> pl.Expr:
    """Phone in a national format: (212) 555-0147 for NANP, 0 + number elsewhere."""
    n = pl.col(nsn)
    return (
        pl.when(pl.col(cc) == "1")
        .then("(" + n.str.slice(0, 3) + ") " + n.str.slice(3, 3) + "-" + n.str.slice(6))
        .when(pl.col(cc).is_in(["965", "354"]))  # no trunk prefix
        .then(n.str.slice(0, 4) + " " + n.str.slice(4))
        .otherwise("0" + n.str.slice(0, 3) + " " + n.str.slice(3))
    )


def phone_international() -> pl.Expr:
    n = pl.col("nsn")
    return "+" + pl.col("calling_code") + " " + n.str.slice(0, 3) + " " + n.str.slice(3)


MAPPING_ERRORS = ["case", "whitespace", "swap_names", "phone_format", "legal_suffix", "typo"]


def apply_mapping_error(df: pl.DataFrame, kind: pl.Series, phone_col: str) -> pl.DataFrame:
    """Per row, apply the named transformation error to first/last name, email, phone, company."""
    k = pl.Series("_k", kind)
    df = df.with_columns(k, _seed=(pl.col("person_idx") * 7919 + 17) % 1000)
    kk = pl.col("_k")
    return df.with_columns(
        first_name=pl.when(kk == "case").then(pl.col("first_name").str.to_uppercase())
        .when(kk == "whitespace").then(" " + pl.col("first_name") + "  ")
        .when(kk == "swap_names").then(pl.col("last_name"))
        .otherwise(pl.col("first_name")),
        last_name=pl.when(kk == "case").then(pl.col("last_name").str.to_uppercase())
        .when(kk == "swap_names").then(pl.col("first_name"))
        .when(kk == "typo").then(typo("last_name", pl.col("_seed")))
        .otherwise(pl.col("last_name")),
        email=pl.when(kk == "case").then(pl.col("email").str.to_uppercase())
        .when(kk == "whitespace").then(pl.col("email") + " ")
        .otherwise(pl.col("email")),
        company=pl.when(kk == "legal_suffix").then(suffix_variant("company"))
        .when(kk == "case").then(pl.col("company").str.to_uppercase())
        .otherwise(pl.col("company")),
        **{phone_col: pl.when(kk == "phone_format").then(
            pl.lit("00") + pl.col("calling_code") + pl.col("nsn")
        ).otherwise(pl.col(phone_col))},
        _detail=kk,
    ).drop("_k", "_seed")  # fmt: skip


# ---------------------------------------------------------------- Salesforce


def write_salesforce(est: Estate, rng: np.random.Generator, world: World, people: pl.DataFrame,
                     subs: pl.DataFrame, stripe_cus: pl.DataFrame, dup_rate: float) -> dict[str, pl.DataFrame]:  # fmt: skip
    p = people.with_columns(
        lead_id=pl.Series(salesforce_ids("00Q", people["person_idx"].to_numpy())),
        contact_id=pl.Series(salesforce_ids("003", people["person_idx"].to_numpy())),
        phone_sf=pl.when(pl.col("calling_code") == "1")
        .then(phone_national())
        .otherwise(phone_international()),
    )
    # companies of converted people become accounts
    acc = (
        p.filter(pl.col("converted") & pl.col("b2b"))
        .group_by("company_idx")
        .agg(
            pl.col("conv_ts").min(),
            pl.col("company_entity").first(),
            pl.col("company").first(),
            pl.col("domain").first(),
            pl.col("country").first(),
            pl.col("city").first(),
            pl.col("currency").first(),
        )
        .sort("company_idx")
    )
    acc = acc.with_columns(
        account_id=pl.Series(salesforce_ids("001", acc["company_idx"].to_numpy()))
    )
    p = p.join(acc.select("company_idx", "account_id"), on="company_idx", how="left").sort(
        "person_idx"
    )

    # ------------------------------------------------ leads
    src = pl.col("platform")
    utm = {
        "UTM_Source__c": pl.when(src.is_not_null()).then(src.replace_strict(
            {k: v[0] for k, v in PLATFORMS.items()}, default=None))
        .when(pl.col("channel") == "referral").then(pl.lit("partner_site")),
        "UTM_Medium__c": pl.when(src.is_not_null()).then(src.replace_strict(
            {k: v[1] for k, v in PLATFORMS.items()}, default=None))
        .when(pl.col("channel") == "referral").then(pl.lit("referral")),
        "UTM_Campaign__c": pl.col("campaign_name"),
    }  # fmt: skip
    click = {
        f"{v[2].upper()}__c": pl.when(src == k).then(
            pl.lit(CLICK_PREFIX[k]) + click_id(pl.col("click_token"), i)
        )
        for i, (k, v) in enumerate(PLATFORMS.items())
    }
    lead_source = (
        pl.when(src.is_not_null()).then(pl.lit("Advertisement"))
        .when(pl.col("channel") == "referral").then(pl.lit("External Referral"))
        .otherwise(pl.lit("Web"))
    )  # fmt: skip
    status = (
        pl.when(pl.col("converted")).then(pl.lit("Closed - Converted"))
        .when(pl.col("person_idx") % 3 == 0).then(pl.lit("Closed - Not Converted"))
        .when(pl.col("person_idx") % 3 == 1).then(pl.lit("Working - Contacted"))
        .otherwise(pl.lit("Open - Not Contacted"))
    )  # fmt: skip
    leads = p.with_columns(
        Id=pl.col("lead_id"),
        IsDeleted=pl.lit("false"),
        MasterRecordId=pl.lit(None, dtype=pl.String),
        Company=pl.when(pl.col("b2b")).then(pl.col("company")).otherwise(pl.lit("[not provided]")),
        LeadSource=lead_source,
        Status=status,
        IsConverted=pl.when(pl.col("converted")).then(pl.lit("true")).otherwise(pl.lit("false")),
        ConvertedContactId=pl.when(pl.col("converted")).then(pl.col("contact_id")),
        ConvertedAccountId=pl.when(pl.col("converted")).then(pl.col("account_id")),
        ConvertedDate=pl.when(pl.col("converted")).then(
            epoch_to_str(pl.col("conv_ts"), "%Y-%m-%d")),
        created=pl.col("lead_ts"),
        modified=pl.when(pl.col("converted")).then(pl.col("conv_ts")).otherwise(pl.col("lead_ts")),
        phone_out=pl.col("phone_sf"),
        **utm,
        **click,
        _entity=pl.col("entity_id"),
    )  # fmt: skip
    leads = _orig(leads)
    choice = _choose(rng, leads.height, dup_rate, ["merged", "manual_entry"])
    base = leads.filter(pl.Series(choice != ""))
    vec = choice[choice != ""]
    copies = base.with_columns(
        Id=pl.Series(salesforce_ids("00Q", base["person_idx"].to_numpy() + 50_000_000)),
        _vector=pl.Series(vec),
        created=pl.col("lead_ts") + pl.Series(rng.integers(60, 40 * 86400, size=base.height)),
    ).with_columns(modified=pl.col("created"))
    merged = copies["_vector"] == "merged"
    copies = copies.with_columns(
        # a merged loser: soft-deleted, pointing at the survivor
        IsDeleted=pl.when(merged).then(pl.lit("true")).otherwise(pl.lit("false")),
        MasterRecordId=pl.when(merged).then(pl.col("lead_id")),
        IsConverted=pl.lit("false"),
        ConvertedContactId=pl.lit(None, dtype=pl.String),
        ConvertedAccountId=pl.lit(None, dtype=pl.String),
        ConvertedDate=pl.lit(None, dtype=pl.String),
        Status=pl.when(merged).then(pl.col("Status")).otherwise(pl.lit("Open - Not Contacted")),
    )
    manual = copies["_vector"] == "manual_entry"
    kinds = np.array(["case", "typo", "legal_suffix", "phone_format"])[
        rng.integers(0, 4, size=copies.height)
    ]
    man = apply_mapping_error(
        copies.filter(manual), pl.Series(kinds[manual.to_numpy()]), "phone_out"
    )
    man = man.with_columns(
        Company=pl.when(pl.col("b2b")).then(pl.col("company")).otherwise(pl.lit("[not provided]")),
        phone_out=pl.when(pl.col("_detail") == "phone_format").then(phone_national())
        .otherwise(pl.col("phone_out")),
        LeadSource=pl.lit("Trade Show"),
        **{c: pl.lit(None, dtype=pl.String) for c in [*utm, *click]},
    )  # fmt: skip
    leads = pl.concat([leads, copies.filter(~manual).with_columns(_detail=pl.lit("")),
                       man.select(copies.columns)], how="vertical_relaxed")  # fmt: skip
    lead_cols = {
        "Id": "Id", "IsDeleted": "IsDeleted", "MasterRecordId": "MasterRecordId",
        "FirstName": "first_name", "LastName": "last_name", "Company": "Company", "Title": "title",
        "Street": "street", "City": "city", "State": "state", "PostalCode": "postal_code",
        "Country": "country", "Phone": "phone_out", "Email": "email", "Website": "domain",
        "CurrencyIsoCode": "currency",
        "LeadSource": "LeadSource", "Status": "Status", "IsConverted": "IsConverted",
        "ConvertedContactId": "ConvertedContactId", "ConvertedAccountId": "ConvertedAccountId",
        "ConvertedDate": "ConvertedDate",
    }  # fmt: skip
    out = leads.with_columns(
        CreatedDate=epoch_to_str(pl.col("created"), SF_TS),
        LastModifiedDate=epoch_to_str(pl.max_horizontal("created", "modified"), SF_TS),
    ).sort("created", "Id")
    sel = [pl.col(v).alias(k) for k, v in lead_cols.items()] + [
        "CreatedDate", "LastModifiedDate", *utm, *click, "_entity", "_vector", "_detail", "created",
    ]  # fmt: skip
    out = out.select(sel)
    # overlapping batch re-exports: two files by CreatedDate; rows near the cut are in both
    span = world.as_of_day - world.start_day
    cut = (world.start_day + span // 2) * 86400
    overlap = round(dup_rate * 120) * 86400
    part1 = out.filter(pl.col("created") < cut + overlap)
    # rows of the second batch that the first batch already holds are the re-exports
    again = pl.col("created") < cut + overlap
    part2 = out.filter(pl.col("created") >= cut - overlap).with_columns(
        _vector=pl.when(again).then(pl.lit("batch_overlap")).otherwise("_vector"),
        _detail=pl.when(again).then(pl.lit("re-exported")).otherwise("_detail"),
    )
    # a re-exported row is the same record again: its entity is the row's own entity
    for i, part in enumerate((part1, part2), start=1):
        rel = f"exports/crm/salesforce/Lead_{i}.csv"
        write_csv(
            part.drop("_entity", "_vector", "_detail", "created"),
            est.path(rel),
            quote_style="always",
        )
        est.record("salesforce_lead", rel, part, "Id")

    # ------------------------------------------------ accounts
    accounts = _orig(acc.with_columns(_entity=pl.col("company_entity")))
    choice = _choose(rng, accounts.height, dup_rate, ["mapping_error"])
    dup = accounts.filter(pl.Series(choice != "")).with_columns(
        account_id=pl.Series(
            salesforce_ids(
                "001",
                accounts.filter(pl.Series(choice != ""))["company_idx"].to_numpy() + 50_000_000,
            )
        ),
        company=suffix_variant("company"),
        conv_ts=pl.col("conv_ts") + 3600,
        _vector=pl.lit("mapping_error"),
        _detail=pl.lit("legal_suffix"),
    )
    accounts = pl.concat([accounts, dup]).sort("conv_ts", "account_id")
    acc_out = accounts.select(
        Id="account_id", IsDeleted=pl.lit("false"), MasterRecordId=pl.lit(None, dtype=pl.String),
        Name="company", Type=pl.lit("Customer"), Phone=pl.lit(None, dtype=pl.String),
        Website=pl.lit("https://www.") + pl.col("domain"), BillingStreet=pl.lit(None, dtype=pl.String),
        BillingCity="city", BillingState=pl.lit(None, dtype=pl.String),
        BillingPostalCode=pl.lit(None, dtype=pl.String), BillingCountry="country",
        AccountSource=pl.lit(None, dtype=pl.String), CurrencyIsoCode="currency",
        CreatedDate=epoch_to_str(pl.col("conv_ts"), SF_TS),
        LastModifiedDate=epoch_to_str(pl.col("conv_ts"), SF_TS),
    )  # fmt: skip
    rel = "exports/crm/salesforce/Account.csv"
    write_csv(acc_out, est.path(rel), quote_style="always")
    est.record("salesforce_account", rel, accounts.rename({"account_id": "Id"}), "Id")

    # ------------------------------------------------ contacts (converted leads)
    c = (
        p.filter(pl.col("converted"))
        .join(
            stripe_cus.select("person_idx", "stripe_id", "chargebee_id"),
            on="person_idx",
            how="left",
        )
        .sort("person_idx")
    )
    contacts = _orig(c.with_columns(created=pl.col("conv_ts"), _entity=pl.col("entity_id"),
                                    phone_out=pl.col("phone_sf"), Id=pl.col("contact_id")))  # fmt: skip
    choice = _choose(rng, contacts.height, dup_rate, ["sync_race", "mapping_error"])
    base = contacts.filter(pl.Series(choice != ""))
    vec = choice[choice != ""]
    base = base.with_columns(
        Id=pl.Series(salesforce_ids("003", base["person_idx"].to_numpy() + 50_000_000)),
        _vector=pl.Series(vec),
        created=pl.col("created") + pl.when(pl.Series(vec) == "sync_race").then(1).otherwise(
            pl.Series(rng.integers(3600, 30 * 86400, size=base.height))),
    )  # fmt: skip
    race = base.filter(pl.col("_vector") == "sync_race").with_columns(
        _detail=pl.lit("double create")
    )
    me = base.filter(pl.col("_vector") == "mapping_error")
    me = apply_mapping_error(
        me, pl.Series(np.array(MAPPING_ERRORS)[rng.integers(0, 6, size=me.height)]), "phone_out"
    )
    contacts = pl.concat([contacts, race, me.select(race.columns)]).sort("created", "Id")
    con_out = contacts.select(
        "Id", IsDeleted=pl.lit("false"), MasterRecordId=pl.lit(None, dtype=pl.String),
        AccountId="account_id", FirstName="first_name", LastName="last_name", Email="email",
        Phone="phone_out", Title="title", MailingStreet="street", MailingCity="city",
        MailingState="state", MailingPostalCode="postal_code", MailingCountry="country",
        CurrencyIsoCode="currency",
        LeadSource=lead_source,
        Stripe_Customer_ID__c="stripe_id",
        Chargebee_Customer_ID__c="chargebee_id",
        CreatedDate=epoch_to_str(pl.col("created"), SF_TS),
        LastModifiedDate=epoch_to_str(pl.col("created"), SF_TS),
    )  # fmt: skip
    rel = "exports/crm/salesforce/Contact.csv"
    write_csv(con_out, est.path(rel), quote_style="always")
    est.record("salesforce_contact", rel, contacts, "Id")

    # ------------------------------------------------ opportunities (closed won)
    o = subs.join(p.select("person_idx", "contact_id", "account_id", "conv_ts", "close_day",
                           "first_name", "last_name", "company", "b2b"), on="person_idx")  # fmt: skip
    o = o.with_columns(
        Id=pl.Series(salesforce_ids("006", o["sub_idx"].to_numpy())),
        _entity=pl.lit("D") + pl.col("sub_idx").cast(pl.String).str.zfill(8),
    ).sort("conv_ts", "Id")
    o = _orig(o)
    opp_out = o.select(
        "Id", IsDeleted=pl.lit("false"), AccountId="account_id", ContactId="contact_id",
        Name=pl.when(pl.col("b2b")).then(pl.col("company")).otherwise(
            pl.col("first_name") + " " + pl.col("last_name")) + " - " + pl.col("plan"),
        StageName=pl.lit("Closed Won"), IsClosed=pl.lit("true"), IsWon=pl.lit("true"),
        Amount=pl.col("amount_major_annual"), CurrencyIsoCode="currency",
        CloseDate=pl.from_epoch(pl.col("close_day"), time_unit="d").dt.strftime("%Y-%m-%d"),
        Type=pl.lit("New Business"), LeadSource=pl.lit(None, dtype=pl.String),
        CampaignId=pl.lit(None, dtype=pl.String),
        Stripe_Subscription_ID__c="billing_sub_id",
        CreatedDate=epoch_to_str(pl.col("conv_ts"), SF_TS),
        LastModifiedDate=epoch_to_str(pl.col("close_day") * 86400 + 43200, SF_TS),
    )  # fmt: skip
    rel = "exports/crm/salesforce/Opportunity.csv"
    write_csv(opp_out, est.path(rel), quote_style="always")
    est.record("salesforce_opportunity", rel, o, "Id")
    return {"people": p}


def stripe_customer_ids(index: np.ndarray) -> np.ndarray:
    return vendor_ids("cus_", index, salt=11)


def make_stripe_ids(subs: pl.DataFrame) -> pl.DataFrame:
    """Billing-system ids: Stripe cus_/sub_ ids, or Chargebee's alphanumeric ids."""
    idx = subs["sub_idx"].to_numpy()
    stripe = pl.col("billing") == "stripe"
    return subs.with_columns(
        stripe_id=pl.when(stripe).then(pl.Series(stripe_customer_ids(idx))),
        chargebee_id=pl.when(~stripe).then(pl.Series(vendor_ids("16", idx, salt=71, width=15))),
        billing_sub_id=pl.when(stripe)
        .then(pl.Series(vendor_ids("sub_", idx, salt=12)))
        .otherwise(pl.Series(vendor_ids("Azq", idx, salt=72, width=14))),
    ).with_columns(billing_customer_id=pl.coalesce("stripe_id", "chargebee_id"))


__all__ = ["TRUTH_COLS", "Estate", "make_stripe_ids", "write_salesforce"]


# ---------------------------------------------------------------- Stripe


def _lower(col: str) -> pl.Expr:
    return pl.col(col).str.to_lowercase()


def write_stripe(est: Estate, rng: np.random.Generator, people: pl.DataFrame, subs: pl.DataFrame,
                 b: dict[str, pl.DataFrame], dup_rate: float, as_of_day: int) -> pl.DataFrame:  # fmt: skip
    """customers, subscriptions, invoices, invoice lines, credit notes, refunds, events: one list
    document per object type, as `GET /v1/<objects>` returns them (records under "data")."""
    base = "exports/billing/stripe"
    subs = subs.filter(pl.col("billing") == "stripe")
    mine = subs["sub_idx"].implode()
    b = {k: v.filter(pl.col("sub_idx").is_in(mine)) for k, v in b.items()}
    s = subs.join(
        people.select("person_idx", "first_name", "last_name", "email", "calling_code", "nsn",
                      "company", "b2b", "street", "city", "state", "postal_code", "contact_id"),
        on="person_idx",
    ).sort("sub_idx")  # fmt: skip
    cus = _orig(s.with_columns(
        id=pl.col("stripe_id"),
        created=pl.col("start_ts") - 120,
        idem=pl.lit("k") + ((pl.col("sub_idx") * 2654435761 + 97) % 4294967296).cast(pl.String).str.zfill(10),
        _entity=pl.col("entity_id"),
        phone_out=pl.lit("+") + pl.col("calling_code") + pl.col("nsn"),
    ))  # fmt: skip
    choice = _choose(rng, cus.height, dup_rate, ["sync_race", "api_retry"])
    d = cus.filter(pl.Series(choice != ""))
    d = d.with_columns(
        id=pl.Series(vendor_ids("cus_", d["sub_idx"].to_numpy() + 50_000_000, salt=11)),
        _vector=pl.Series(choice[choice != ""]),
        created=pl.col("created") + pl.Series(rng.integers(1, 3, size=d.height)),
        _detail=pl.when(pl.Series(choice[choice != ""]) == "api_retry")
        .then(pl.lit("same idempotency key"))
        .otherwise(pl.lit("double create")),
    )
    cus = pl.concat([cus, d]).sort("created", "id")
    cus_out = cus.select(
        "id", object=pl.lit("customer"),
        address=pl.struct(city="city", country="country", line1="street",
                          line2=pl.lit(None, dtype=pl.String), postal_code="postal_code",
                          state="state"),
        created="created", currency=_lower("currency"),
        description=pl.when(pl.col("b2b")).then(pl.col("company")),
        email="email", livemode=pl.lit(True),
        metadata=pl.struct(salesforce_contact_id="contact_id"),
        name=pl.col("first_name") + " " + pl.col("last_name"), phone="phone_out",
    )  # fmt: skip
    rel = f"{base}/customers.json"
    write_api_list(cus_out, est.path(rel), "/v1/customers")
    est.record("stripe_customer", rel, cus, "id")

    # subscriptions
    status = (
        pl.when(pl.col("trial") & (pl.col("trial_end_day") > as_of_day)).then(pl.lit("trialing"))
        .when((pl.col("canceled_day") >= 0) & (pl.col("canceled_day") <= as_of_day)).then(pl.lit("canceled"))
        .otherwise(pl.lit("active"))
    )  # fmt: skip
    sub = _orig(
        s.with_columns(_entity=pl.lit("S") + pl.col("sub_idx").cast(pl.String).str.zfill(8))
    )
    per = (
        b["invoices"]
        .filter(pl.col("kind") != "reissue")
        .group_by("sub_idx")
        .agg(cps=pl.col("period_start_day").max(), cpe=pl.col("period_end_day").max())
    )
    sub = sub.join(per, on="sub_idx", how="left").sort("start_ts", "billing_sub_id")
    sec = pl.col("start_sec")
    sub_out = sub.select(
        id="billing_sub_id", object=pl.lit("subscription"),
        cancel_at_period_end=pl.lit(False),
        canceled_at=pl.when(pl.col("canceled_day") >= 0).then(pl.col("canceled_day") * 86400 + sec),
        created="start_ts", currency=_lower("currency"),
        current_period_end=pl.col("cpe") * 86400 + sec,
        current_period_start=pl.col("cps") * 86400 + sec,
        customer="stripe_id",
        discount=pl.when(pl.col("coupon") != "").then(pl.struct(coupon=pl.struct(
            id="coupon", percent_off=pl.when(pl.col("coupon") == "SPRING25").then(25).otherwise(10),
            duration=pl.when(pl.col("coupon") == "SPRING25").then(pl.lit("repeating")).otherwise(pl.lit("forever"))))),
        livemode=pl.lit(True),
        metadata=pl.struct(salesforce_opportunity_id=pl.lit(None, dtype=pl.String)),
        plan=pl.struct(id=pl.col("plan") + "_" + _lower("currency"), amount=pl.col("price") // pl.col("quantity"),
                       currency=_lower("currency"), interval=pl.lit("month")),
        quantity="quantity", start_date="start_ts", status=status,
        trial_end=pl.when(pl.col("trial")).then(pl.col("trial_end_day") * 86400 + sec),
        trial_start=pl.when(pl.col("trial")).then(pl.col("start_ts")),
    )  # fmt: skip
    rel = f"{base}/subscriptions.json"
    write_api_list(sub_out, est.path(rel), "/v1/subscriptions")
    est.record("stripe_subscription", rel, sub.rename({"billing_sub_id": "sid"}), "sid")

    # invoices
    inv = b["invoices"].join(
        s.select("sub_idx", "stripe_id", "billing_sub_id", "start_sec", "coupon", "trial"),
        on="sub_idx",
    )
    inv = inv.with_columns(
        id=pl.Series(vendor_ids("in_", inv["inv_idx"].to_numpy(), salt=21)),
        charge=pl.Series(vendor_ids("ch_", inv["inv_idx"].to_numpy(), salt=22)),
        pi=pl.Series(vendor_ids("pi_", inv["inv_idx"].to_numpy(), salt=23)),
        seq=pl.col("inv_idx").rank("ordinal").over("sub_idx").cast(pl.Int64),
        _entity=pl.lit("I") + pl.col("inv_idx").cast(pl.String).str.zfill(9),
    ).with_columns(
        number=pl.col("stripe_id").str.slice(4, 8).str.to_uppercase() + "-" + pl.col("seq").cast(pl.String).str.zfill(4),
    )  # fmt: skip
    inv = _orig(inv).sort("created_ts", "id")
    first_paid = (pl.col("cycle") == 0) & ~pl.col("trial")
    paid = pl.col("status") == "paid"
    inv_out = inv.select(
        "id", object=pl.lit("invoice"),
        amount_due=pl.max_horizontal("total", pl.lit(0)), amount_paid="amount_paid",
        amount_remaining=pl.when(pl.col("status") == "open").then(pl.max_horizontal("total", pl.lit(0))).otherwise(0),
        billing_reason=pl.when((pl.col("kind") == "trial") | first_paid).then(pl.lit("subscription_create"))
        .otherwise(pl.lit("subscription_cycle")),
        charge=pl.when(paid & (pl.col("total") > 0)).then(pl.col("charge")),
        created="created_ts", currency=_lower("currency"), customer="stripe_id",
        discount=pl.when(pl.col("discount") != 0).then(pl.struct(coupon=pl.struct(id="coupon"))),
        livemode=pl.lit(True), number="number",
        payment_intent=pl.when(pl.col("total") > 0).then(pl.col("pi")),
        period_end="created_ts", period_start="created_ts",
        status="status",
        status_transitions=pl.struct(
            finalized_at="created_ts",
            paid_at=pl.when(paid).then(pl.col("created_ts") + 60),
            voided_at=pl.when(pl.col("status") == "void").then(pl.col("created_ts") + 1800),
        ),
        subscription="billing_sub_id", subtotal="subtotal", tax="tax", total="total",
        total_discount_amounts=pl.when(pl.col("discount") != 0).then(
            pl.concat_list(pl.struct(amount="discount", discount=pl.lit("di_") + pl.col("sub_idx").cast(pl.String).str.zfill(14)))),
    )  # fmt: skip
    rel = f"{base}/invoices.json"
    write_api_list(inv_out, est.path(rel), "/v1/invoices")
    est.record("stripe_invoice", rel, inv, "id")

    # invoice lines (GET /v1/invoices/:id/lines for every invoice; `invoice` names the parent)
    ln = b["lines"].join(
        inv.select("inv_idx", "id", "created_ts", "billing_sub_id", "start_sec", "coupon"),
        on="inv_idx",
    )
    ln = _orig(ln.with_columns(
        line_id=pl.Series(vendor_ids("il_", ln["line_idx"].to_numpy(), salt=31)),
        _entity=pl.lit("L") + pl.col("line_idx").cast(pl.String).str.zfill(9),
    )).sort("created_ts", "id", "line_idx")  # fmt: skip
    plan_name = pl.col("plan").str.to_titlecase()
    change_date = pl.from_epoch(pl.col("period_start_day"), time_unit="d").dt.strftime("%d %b %Y")
    ln_out = ln.select(
        id="line_id", object=pl.lit("line_item"), amount="amount", currency=_lower("currency"),
        description=pl.when(pl.col("line_kind") == "unused").then("Unused time on " + plan_name + " after " + change_date)
        .when(pl.col("line_kind") == "remaining").then("Remaining time on " + plan_name + " after " + change_date)
        .when(pl.col("line_kind") == "trial").then(pl.lit("Trial period for ") + plan_name)
        .otherwise(pl.lit("1 × ") + plan_name),
        discount_amounts=pl.when(pl.col("discount") != 0).then(pl.concat_list(pl.struct(amount="discount", discount=pl.lit("di_") + pl.col("sub_idx").cast(pl.String).str.zfill(14)))).otherwise(pl.lit([], dtype=pl.List(pl.Struct({"amount": pl.Int64, "discount": pl.String})))),
        discountable=pl.lit(True), invoice="id", livemode=pl.lit(True),
        period=pl.struct(end=pl.col("period_end_day") * 86400 + pl.col("start_sec"), start=pl.col("period_start_day") * 86400 + pl.col("start_sec")),
        plan=pl.struct(id=pl.col("plan") + "_" + _lower("currency")),
        proration="proration", quantity=pl.lit(1, dtype=pl.Int64),
        price=pl.struct(id=pl.lit("price_") + pl.col("plan") + "_" + _lower("currency")),
        subscription="billing_sub_id",
        subscription_item=pl.lit("si_") + pl.col("billing_sub_id").str.slice(4),
        tax_amounts=pl.when(pl.col("tax") != 0).then(pl.concat_list(pl.struct(amount="tax", inclusive=pl.lit(False)))).otherwise(pl.lit([], dtype=pl.List(pl.Struct({"amount": pl.Int64, "inclusive": pl.Boolean})))),
        type=pl.when(pl.col("proration")).then(pl.lit("invoiceitem")).otherwise(pl.lit("subscription")),
    )  # fmt: skip
    rel = f"{base}/invoice_line_items.json"
    write_api_list(ln_out, est.path(rel), "/v1/invoices/lines")
    est.record("stripe_invoice_line", rel, ln, "line_id")

    # refunds (expand[]=data.charge: the charge names its invoice)
    ids = inv.select("inv_idx", "charge", "pi", "stripe_id", inv_id="id")
    rf = (
        b["refunds"]
        .join(ids, on="inv_idx")
        .with_columns(
            id=pl.Series(vendor_ids("re_", b["refunds"]["refund_idx"].to_numpy(), salt=41)),
            _entity=pl.lit("R") + pl.col("refund_idx").cast(pl.String).str.zfill(8),
        )
    )
    rf = _orig(rf).sort("refund_ts", "id")
    rf_out = rf.select(
        "id", object=pl.lit("refund"), amount="amount",
        charge="charge",
        created="refund_ts", currency=_lower("currency"), payment_intent="pi",
        reason=pl.lit("requested_by_customer"), status=pl.lit("succeeded"),
    )  # fmt: skip
    rel = f"{base}/refunds.json"
    write_api_list(rf_out, est.path(rel), "/v1/refunds")
    est.record("stripe_refund", rel, rf, "id")

    # credit notes
    first_line = ln.group_by("inv_idx").agg(pl.col("line_id").first())
    cn = (
        b["credit_notes"]
        .join(ids, on="inv_idx")
        .join(first_line, on="inv_idx")
        .join(rf.select("refund_idx", refund_id="id"), on="refund_idx", how="left")
    )
    cn = cn.with_columns(
        id=pl.Series(vendor_ids("cn_", cn["cn_idx"].to_numpy(), salt=51)),
        number=pl.col("stripe_id").str.slice(4, 8).str.to_uppercase()
        + "-CN-"
        + pl.col("cn_idx").cast(pl.String).str.zfill(4),
        _entity=pl.lit("C") + pl.col("cn_idx").cast(pl.String).str.zfill(8),
    )
    cn = _orig(cn).sort("cn_ts", "id")
    cn_out = cn.select(
        "id", object=pl.lit("credit_note"), amount="amount", created="cn_ts",
        currency=_lower("currency"), customer="stripe_id", invoice="inv_id",
        lines=pl.struct(object=pl.lit("list"), data=pl.concat_list(pl.struct(
            id=pl.lit("cnli_") + pl.col("line_id").str.slice(3), object=pl.lit("credit_note_line_item"),
            amount="amount", invoice_line_item="line_id", type=pl.lit("invoice_line_item")))),
        livemode=pl.lit(True), number="number",
        reason=pl.when(pl.col("refund_id").is_not_null()).then(pl.lit("product_unsatisfactory")).otherwise(pl.lit("order_change")),
        refund="refund_id", status=pl.when(pl.col("void")).then(pl.lit("void")).otherwise(pl.lit("issued")),
        subtotal="amount", total="amount", total_excluding_tax="amount", type=pl.lit("post_payment"),
        voided_at=pl.when(pl.col("void")).then(pl.col("cn_ts") + 86400),
    )  # fmt: skip
    rel = f"{base}/credit_notes.json"
    write_api_list(cn_out, est.path(rel), "/v1/credit_notes")
    est.record("stripe_credit_note", rel, cn, "id")

    # events: customer.created (with the request's idempotency key), invoice.paid; the webhook
    # log keeps redeliveries (same event id twice)
    ev_c = cus.select(obj="id", object=pl.lit("customer"), type=pl.lit("customer.created"),
                      created="created", idem="idem", _entity=pl.col("_entity"))  # fmt: skip
    ev_i = inv.filter(pl.col("status") == "paid").select(
        obj="id", object=pl.lit("invoice"), type=pl.lit("invoice.paid"), created=pl.col("created_ts") + 60,
        idem=pl.lit(None, dtype=pl.String), _entity=pl.col("_entity"))  # fmt: skip
    ev = pl.concat([ev_c, ev_i]).sort("created", "obj").with_row_index("ev_idx")
    ev = ev.with_columns(
        id=pl.Series(vendor_ids("evt_", ev["ev_idx"].to_numpy(), salt=61, width=24)),
        req=pl.Series(vendor_ids("req_", ev["ev_idx"].to_numpy(), salt=62)),
    ).with_columns(_entity=pl.lit("E:") + pl.col("id"))
    ev = _orig(ev)
    again = ev.filter(pl.Series(rng.random(ev.height) < dup_rate)).with_columns(
        _vector=pl.lit("api_retry"),
        _detail=pl.lit("webhook redelivery"),
    )
    ev = pl.concat([ev, again]).sort("created", "id", "_vector", maintain_order=True)
    ev_out = ev.select(
        "id", object=pl.lit("event"), api_version=pl.lit("2020-08-27"), created="created",
        data=pl.struct(object=pl.struct(id="obj", object="object")), livemode=pl.lit(True),
        pending_webhooks=pl.lit(0), request=pl.struct(id="req", idempotency_key="idem"), type="type",
    )  # fmt: skip
    rel = f"{base}/events.json"
    write_api_list(ev_out, est.path(rel), "/v1/events")
    est.record("stripe_event", rel, ev, "id")
    return inv


# ---------------------------------------------------------------- NetSuite


def write_netsuite(est: Estate, rng: np.random.Generator, people: pl.DataFrame, subs: pl.DataFrame,
                   inv: pl.DataFrame, factors: dict[str, np.ndarray], first_day: int,
                   dup_rate: float) -> None:  # fmt: skip
    base = "exports/erp/netsuite"
    subsidiary = {"EUR": ("Acme Europe B.V.", "EUR"), "GBP": ("Acme UK Ltd", "GBP")}
    c = subs.join(people.select("person_idx", "first_name", "last_name", "email", "calling_code",
                                "nsn", "company", "b2b", "domain"), on="person_idx").sort("sub_idx")  # fmt: skip
    c = _orig(c.with_columns(
        internal=pl.col("sub_idx") * 7 + 10_000,
        created=pl.col("start_ts") + pl.Series(rng.integers(600, 3 * 86400, size=c.height)),
        ext=pl.col("billing_customer_id"),
        phone_out=pl.when(pl.col("calling_code") == "1").then(
            pl.col("nsn").str.slice(0, 3) + "-" + pl.col("nsn").str.slice(3, 3) + "-" + pl.col("nsn").str.slice(6))
        .otherwise(pl.lit("+") + pl.col("calling_code") + " " + pl.col("nsn")),
        _entity=pl.col("entity_id"),
    ))  # fmt: skip
    choice = _choose(rng, c.height, dup_rate, ["mapping_error", "manual_entry", "sync_race"])
    d = c.filter(pl.Series(choice != "")).with_columns(_vector=pl.Series(choice[choice != ""]))
    d = d.with_columns(
        internal=pl.col("sub_idx") * 7 + 10_000_000 + pl.int_range(pl.len()),
        ext=pl.lit(None, dtype=pl.String),  # External ID is unique in NetSuite: the copy has none
        created=pl.col("created") + pl.when(pl.col("_vector") == "sync_race").then(2).otherwise(
            pl.Series(rng.integers(86400, 60 * 86400, size=d.height))),
    )  # fmt: skip
    me = d.filter(pl.col("_vector") != "sync_race")
    me = apply_mapping_error(
        me, pl.Series(np.array(MAPPING_ERRORS)[rng.integers(0, 6, size=me.height)]), "phone_out"
    )
    d = pl.concat([d.filter(pl.col("_vector") == "sync_race").with_columns(_detail=pl.lit("double create")),
                   me.select(d.columns)])  # fmt: skip
    c = pl.concat([c, d]).sort("created", "internal")
    sub_name = pl.col("currency").replace_strict(
        {k: v[0] for k, v in subsidiary.items()}, default="Acme Inc."
    )
    person_name = pl.col("first_name") + " " + pl.col("last_name")
    c_out = c.select(
        links=pl.lit([], dtype=pl.List(pl.String)),
        id=pl.col("internal").cast(pl.String),
        entityid=pl.lit("CUST-") + pl.col("internal").cast(pl.String) + " "
        + pl.when(pl.col("b2b")).then(pl.col("company")).otherwise(person_name),
        externalid="ext",
        isperson=pl.when(pl.col("b2b")).then(pl.lit("F")).otherwise(pl.lit("T")),
        companyname=pl.when(pl.col("b2b")).then(pl.col("company")),
        url=pl.when(pl.col("b2b")).then(pl.lit("https://") + pl.col("domain")),
        firstname="first_name", lastname="last_name", email="email", phone="phone_out",
        subsidiary=sub_name, currency="currency", isinactive=pl.lit("F"),
        datecreated=epoch_to_str(pl.col("created"), SUITEQL_TS),
        lastmodifieddate=epoch_to_str(pl.col("created") + 3600, SUITEQL_TS),
    )  # fmt: skip
    rel = f"{base}/customers.json"
    write_suiteql(c_out, est.path(rel))
    est.record(
        "netsuite_customer", rel, c.with_columns(pl.col("internal").cast(pl.String)), "internal"
    )

    # invoices: every counted Stripe invoice with a positive total, posted a few hours later
    cust = c.filter(pl.col("_vector") == "original").select("sub_idx", cust_internal="internal",
                                                         cust_name=pl.when(pl.col("b2b")).then(pl.col("company")).otherwise(pl.col("first_name") + " " + pl.col("last_name")))  # fmt: skip
    i = inv.filter(pl.col("status").is_in(["paid", "open"]) & (pl.col("total") > 0)).join(
        cust, on="sub_idx"
    )
    i = i.with_columns(
        internal=pl.col("inv_idx") * 3 + 500_000,
        posted=pl.col("created_ts") + 4 * 3600,
        _entity=pl.col("_entity"),
    )
    # exchange rate to the subsidiary's base currency on the invoice date
    keys = list(factors)
    cur = i["currency"].replace_strict({c: k for k, c in enumerate(keys)}, return_dtype=pl.Int64)
    cur = cur.to_numpy()
    days = (i["created_ts"].to_numpy() // 86400) - first_day
    rate = np.ones(cur.size)
    for code in np.unique(cur):  # loop over currencies
        m = cur == code
        cc = keys[int(code)]
        bc = subsidiary.get(cc, ("", "USD"))[1]
        rate[m] = factors[cc][days[m]] / factors[bc][days[m]]
    i = _orig(i.with_columns(xrate=pl.Series(np.round(rate, 6))))
    dup = i.filter(pl.Series(rng.random(i.height) < dup_rate)).with_columns(
        internal=pl.col("internal") + 90_000_000,
        posted=pl.col("posted") + 300,
        _vector=pl.lit("api_retry"),
        _detail=pl.lit("connector retried invoice.paid"),
    )
    i = pl.concat([i, dup]).sort("posted", "internal")
    exp = pl.col("currency").replace_strict(
        {"JPY": 0, "KWD": 3, "ISK": 2}, default=2, return_dtype=pl.Int64
    )
    i_out = i.select(
        links=pl.lit([], dtype=pl.List(pl.String)),
        id=pl.col("internal").cast(pl.String),
        tranid=pl.lit("INV-") + pl.col("internal").cast(pl.String).str.zfill(7),
        trandate=epoch_to_str(pl.col("posted"), "%Y-%m-%d"),
        type=pl.lit("CustInvc"),
        entity=pl.col("cust_internal").cast(pl.String),
        status=pl.when(pl.col("status") == "paid").then(pl.lit("B")).otherwise(pl.lit("A")),
        currency="currency",
        exchangerate=pl.col("xrate").round(6).cast(pl.String),
        foreigntotal=_fixed_major(pl.col("total"), exp),
        taxtotal=_fixed_major(pl.col("tax"), exp),
        subsidiary=sub_name,
        externalid=pl.when(pl.col("_vector") == "original").then(pl.col("id")),
        memo=pl.lit("Stripe ") + pl.col("id"),
        createddate=epoch_to_str(pl.col("posted"), SUITEQL_TS),
        lastmodifieddate=epoch_to_str(pl.col("posted") + 600, SUITEQL_TS),
    )  # fmt: skip
    rel = f"{base}/invoices.json"
    write_suiteql(i_out, est.path(rel))
    est.record(
        "netsuite_invoice", rel, i.with_columns(pl.col("internal").cast(pl.String)), "internal"
    )


# ---------------------------------------------------------------- HubSpot (marketing CRM)

COUNTRY_NAMES = {
    "US": "United States", "CA": "Canada", "GB": "United Kingdom", "DE": "Germany",
    "FR": "France", "NL": "Netherlands", "JP": "Japan", "KW": "Kuwait", "IS": "Iceland",
    "AU": "Australia",
}  # fmt: skip
HS_SOURCE = {"google_ads": "PAID_SEARCH", "microsoft_ads": "PAID_SEARCH",
             "meta_ads": "PAID_SOCIAL", "linkedin_ads": "PAID_SOCIAL"}  # fmt: skip
HS_TS = "%Y-%m-%dT%H:%M:%S.000Z"


def write_hubspot(
    est: Estate, rng: np.random.Generator, people: pl.DataFrame, dup_rate: float
) -> None:
    """HubSpot contacts (CRM v3 list, `properties` object, archived ones included): every lead
    arrives here first with its UTM parameters and click ids, then syncs to Salesforce.

    Duplicate vector: the same person submits a form again with another address; the two contacts
    are later merged: the survivor lists the other's id in hs_merged_object_ids and the merged-away
    contact is exported as archived."""
    p = people.sort("person_idx").with_columns(
        hs_id=(pl.col("person_idx") * 3 + 1001).cast(pl.String),
        _entity=pl.col("entity_id"),
        created=pl.col("lead_ts") - 30,
    )
    choice = _choose(rng, p.height, dup_rate, ["merged"])
    loser = p.filter(pl.Series(choice != "")).with_columns(
        hs_id=(pl.col("person_idx") * 3 + 900_000_002).cast(pl.String),
        # a second form fill with a personal mailbox
        email=pl.col("first_name").str.to_lowercase() + "." + pl.col("last_name").str.to_lowercase()
        + pl.col("person_idx").cast(pl.String) + "@gmail.com",
        created=pl.col("created") + pl.Series(rng.integers(3600, 20 * 86400, size=int((choice != "").sum()))),
        archived=pl.lit(True),
        merged=pl.lit(None, dtype=pl.String),
        _vector=pl.lit("merged"),
        _detail=pl.lit("merged away, archived"),
    )  # fmt: skip
    survivors = (
        _orig(p)
        .join(loser.select("person_idx", merged="hs_id"), on="person_idx", how="left")
        .with_columns(archived=pl.lit(False))
    )
    rows = pl.concat([survivors, loser.select(survivors.columns)]).sort("created", "hs_id")
    src = pl.col("platform")
    utm_source = src.replace_strict({k: v[0] for k, v in PLATFORMS.items()}, default=None)
    utm_medium = src.replace_strict({k: v[1] for k, v in PLATFORMS.items()}, default=None)
    hs_source = (
        pl.when(src.is_not_null()).then(src.replace_strict(HS_SOURCE, default=None))
        .when(pl.col("channel") == "organic").then(pl.lit("ORGANIC_SEARCH"))
        .when(pl.col("channel") == "referral").then(pl.lit("REFERRALS"))
        .otherwise(pl.lit("DIRECT_TRAFFIC"))
    )  # fmt: skip
    first_touch = pl.col("_vector") == "original"  # the second form fill came in directly
    props = pl.struct(
        hs_object_id="hs_id", email="email", firstname="first_name", lastname="last_name",
        phone=pl.lit("+") + pl.col("calling_code") + pl.col("nsn"),
        company=pl.when(pl.col("b2b")).then(pl.col("company")),
        website=pl.when(pl.col("b2b")).then(pl.col("domain")),
        jobtitle=pl.when(pl.col("b2b")).then(pl.col("title")),
        address="street", city="city", state=pl.when(pl.col("state") != "").then(pl.col("state")),
        zip="postal_code",
        country=pl.col("country").replace_strict(COUNTRY_NAMES, default=None),
        associatedcompanyid=pl.when(pl.col("b2b")).then((pl.col("company_idx") + 9001).cast(pl.String)),
        lifecyclestage=pl.when(pl.col("converted") & first_touch).then(pl.lit("customer")).otherwise(pl.lit("lead")),
        hs_analytics_source=pl.when(first_touch).then(hs_source).otherwise(pl.lit("DIRECT_TRAFFIC")),
        hs_analytics_source_data_1=pl.when(first_touch).then(utm_source),
        hs_analytics_source_data_2=pl.when(first_touch).then(pl.col("campaign_name")),
        hs_google_click_id=pl.when(first_touch & (src == "google_ads")).then(
            pl.lit(CLICK_PREFIX["google_ads"]) + click_id(pl.col("click_token"), 0)),
        hs_facebook_click_id=pl.when(first_touch & (src == "meta_ads")).then(
            pl.lit(CLICK_PREFIX["meta_ads"]) + click_id(pl.col("click_token"), 1)),
        utm_source=pl.when(first_touch).then(utm_source),
        utm_medium=pl.when(first_touch).then(utm_medium),
        utm_campaign=pl.when(first_touch).then(pl.col("campaign_name")),
        hs_merged_object_ids="merged",
        createdate=epoch_to_str(pl.col("created"), HS_TS),
        lastmodifieddate=epoch_to_str(pl.col("created") + 86400, HS_TS),
    )  # fmt: skip
    out = rows.select(
        id="hs_id", properties=props,
        createdAt=epoch_to_str(pl.col("created"), HS_TS),
        updatedAt=epoch_to_str(pl.col("created") + 86400, HS_TS),
        archived="archived",
    )  # fmt: skip
    rel = "exports/crm/hubspot/contacts.json"
    write_json_records(out, est.path(rel), "results", after={"paging": {}})
    est.record("hubspot_contact", rel, rows, "hs_id")


# ---------------------------------------------------------------- Chargebee


def _cb_list(records: pl.DataFrame, key: str, path: Path) -> None:
    """Chargebee API v2 list: {"list": [{"<type>": {...}}, ...]} (no next_offset: last page)."""
    write_json_records(records.select(pl.struct(pl.all()).alias(key)), path, "list")


def write_chargebee(est: Estate, people: pl.DataFrame, subs: pl.DataFrame,
                    b: dict[str, pl.DataFrame], as_of_day: int) -> pl.DataFrame:  # fmt: skip
    """customers, subscriptions and invoices (line items nested, as the API returns them)."""
    base = "exports/billing/chargebee"
    subs = subs.filter(pl.col("billing") == "chargebee")
    mine = subs["sub_idx"].implode()
    s = subs.join(
        people.select("person_idx", "first_name", "last_name", "email", "calling_code", "nsn",
                      "company", "b2b", "street", "city", "state", "postal_code", "contact_id"),
        on="person_idx",
    ).sort("sub_idx")  # fmt: skip
    cus = _orig(s.with_columns(_entity=pl.col("entity_id"), created=pl.col("start_ts") - 300)).sort(
        "created", "chargebee_id"
    )
    _cb_list(cus.select(
        id="chargebee_id", first_name="first_name", last_name="last_name", email="email",
        phone=pl.lit("+") + pl.col("calling_code") + pl.col("nsn"),
        company=pl.when(pl.col("b2b")).then(pl.col("company")),
        auto_collection=pl.lit("on"), net_term_days=pl.lit(0), created_at="created",
        updated_at="created", deleted=pl.lit(False), object=pl.lit("customer"),
        billing_address=pl.struct(first_name="first_name", last_name="last_name", line1="street",
                                  city="city", zip="postal_code", country="country", object=pl.lit("billing_address")),
        preferred_currency_code="currency", cf_salesforce_contact_id="contact_id",
    ), "customer", est.path(f"{base}/customers.json"))  # fmt: skip
    est.record("chargebee_customer", f"{base}/customers.json", cus, "chargebee_id")

    sec = pl.col("start_sec")
    per = b["invoices"].filter(pl.col("sub_idx").is_in(mine) & (pl.col("kind") != "reissue")).group_by("sub_idx").agg(
        cps=pl.col("period_start_day").max(), cpe=pl.col("period_end_day").max())  # fmt: skip
    sub = _orig(
        s.with_columns(_entity=pl.lit("S") + pl.col("sub_idx").cast(pl.String).str.zfill(8))
    )
    sub = sub.join(per, on="sub_idx", how="left").sort("start_ts", "billing_sub_id")
    status = (
        pl.when(pl.col("trial") & (pl.col("trial_end_day") > as_of_day)).then(pl.lit("in_trial"))
        .when((pl.col("canceled_day") >= 0) & (pl.col("canceled_day") <= as_of_day)).then(pl.lit("cancelled"))
        .otherwise(pl.lit("active"))
    )  # fmt: skip
    price_id = pl.col("plan") + "-" + pl.col("currency") + "-Monthly"
    _cb_list(sub.select(
        id="billing_sub_id", customer_id="chargebee_id", status=status, currency_code="currency",
        billing_period=pl.lit(1), billing_period_unit=pl.lit("month"),
        subscription_items=pl.concat_list(pl.struct(
            item_price_id=price_id, item_type=pl.lit("plan"), quantity="quantity",
            unit_price=pl.col("price") // pl.col("quantity"), amount="price",
            object=pl.lit("subscription_item"))),
        coupons=pl.when(pl.col("coupon") != "").then(pl.concat_list(pl.struct(
            coupon_id="coupon", object=pl.lit("coupon")))),
        trial_start=pl.when(pl.col("trial")).then(pl.col("start_ts")),
        trial_end=pl.when(pl.col("trial")).then(pl.col("trial_end_day") * 86400 + sec),
        current_term_start=pl.col("cps") * 86400 + sec,
        current_term_end=pl.col("cpe") * 86400 + sec - 1,
        started_at="start_ts", created_at="start_ts",
        cancelled_at=pl.when(pl.col("canceled_day") >= 0).then(pl.col("canceled_day") * 86400 + sec),
        deleted=pl.lit(False), object=pl.lit("subscription"),
    ), "subscription", est.path(f"{base}/subscriptions.json"))  # fmt: skip
    est.record("chargebee_subscription", f"{base}/subscriptions.json", sub, "billing_sub_id")

    inv = b["invoices"].filter(pl.col("sub_idx").is_in(mine)).join(
        s.select("sub_idx", "chargebee_id", "billing_sub_id", "start_sec", "coupon", "plan"), on="sub_idx"
    ).with_columns(
        id=(pl.col("inv_idx") + 2001).cast(pl.String),
        _entity=pl.lit("I") + pl.col("inv_idx").cast(pl.String).str.zfill(9),
    )  # fmt: skip
    ln = b["lines"].join(
        inv.select("inv_idx", "id", "start_sec", "chargebee_id", "billing_sub_id"), on="inv_idx"
    )
    items = ln.sort("line_idx").group_by("inv_idx", maintain_order=True).agg(
        line_items=pl.struct(
            id=pl.lit("li_") + pl.col("line_idx").cast(pl.String),
            date_from=pl.col("period_start_day") * 86400 + pl.col("start_sec"),
            date_to=pl.col("period_end_day") * 86400 + pl.col("start_sec") - 1,
            unit_amount="amount", quantity=pl.lit(1), amount="amount",
            pricing_model=pl.lit("per_unit"), is_taxed=pl.col("tax") != 0, tax_amount="tax",
            discount_amount="discount", item_level_discount_amount="discount",
            object=pl.lit("line_item"), subscription_id="billing_sub_id", customer_id="chargebee_id",
            description=pl.col("plan").str.to_titlecase() + " Monthly",
            entity_type=pl.lit("plan_item_price"),
            entity_id=pl.col("plan") + "-" + pl.col("currency") + "-Monthly",
        )
    )  # fmt: skip
    inv = _orig(inv.join(items, on="inv_idx", how="left")).sort("created_ts", "id")
    cb_status = pl.col("status").replace_strict(
        {"paid": "paid", "open": "payment_due", "void": "voided"}
    )
    _cb_list(inv.select(
        id="id", customer_id="chargebee_id", subscription_id="billing_sub_id", recurring=pl.lit(True),
        status=cb_status, price_type=pl.lit("tax_exclusive"), date="created_ts",
        due_date="created_ts", net_term_days=pl.lit(0), exchange_rate=pl.lit(1.0),
        currency_code="currency", total="total", amount_paid="amount_paid",
        amount_due=pl.when(pl.col("status") == "open").then(pl.col("total")).otherwise(0),
        paid_at=pl.when(pl.col("status") == "paid").then(pl.col("created_ts") + 60),
        voided_at=pl.when(pl.col("status") == "void").then(pl.col("created_ts") + 1800),
        updated_at=pl.col("created_ts") + 60, deleted=pl.lit(False), object=pl.lit("invoice"),
        first_invoice=pl.col("cycle") == 0, tax="tax", sub_total="subtotal",
        line_items="line_items",
        discounts=pl.when(pl.col("discount") != 0).then(pl.concat_list(pl.struct(
            amount="discount", description="coupon", entity_type=pl.lit("item_level_coupon"),
            entity_id="coupon", object=pl.lit("discount")))),
    ), "invoice", est.path(f"{base}/invoices.json"))  # fmt: skip
    est.record("chargebee_invoice", f"{base}/invoices.json", inv, "id")
    return inv
