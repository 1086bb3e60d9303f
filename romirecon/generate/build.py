"""Orchestrate one estate: world -> billing -> exports -> truth -> project file."""

from __future__ import annotations

import logging
import shutil
import time
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import yaml

from romirecon.generate import (
    MARKER,
    REPORTING_CURRENCY,
    SOURCES,
    GenerateResult,
    layout_path,
    repo_mappings_dir,
)
from romirecon.generate import ads as ads_mod
from romirecon.generate import fx as fx_mod
from romirecon.generate import truth as truth_mod
from romirecon.generate.billing import build_billing
from romirecon.generate.estate import (
    Estate,
    make_stripe_ids,
    write_chargebee,
    write_hubspot,
    write_netsuite,
    write_salesforce,
    write_stripe,
)
from romirecon.generate.util import day_number, write_csv, write_json, write_parquet
from romirecon.generate.world import build_world

log = logging.getLogger(__name__)


def _year_start(as_of: date) -> date:
    """First day of the month eleven months before as_of's month (a 12-month window)."""
    m = as_of.year * 12 + as_of.month - 1 - 11
    return date(m // 12, m % 12 + 1, 1)


def build_estate(
    out_dir: Path, customers: int, seed: int, dup_rate: float, as_of: date, json_layout: str = "api"
) -> GenerateResult:
    rng = np.random.default_rng(seed)
    t0 = [time.perf_counter()]

    def _lap(step: str) -> None:
        now = time.perf_counter()
        log.info("generate: %s %.1fs", step, now - t0[0])
        t0[0] = now

    start_day = day_number(_year_start(as_of))
    as_of_day = day_number(as_of)
    world = build_world(rng, customers, start_day, as_of_day)
    people, billing = build_billing(rng, world)
    _lap("world")
    subs = make_stripe_ids(billing.subscriptions)
    exp = pl.col("currency").replace_strict(
        {"JPY": 0, "KWD": 3, "ISK": 2}, default=2, return_dtype=pl.Int64
    )
    subs = subs.with_columns(
        amount_major_annual=(pl.col("price").cast(pl.Float64) * 12 / pl.lit(10.0).pow(exp))
        .round(3).cast(pl.String)
    )  # fmt: skip

    # FX: published rates from 45 days before the window to as_of; factors to 80 days after
    fx_first, fx_last = start_day - 45, as_of_day + 80
    rates = fx_mod.draw_rates(rng, fx_first - 7, as_of_day)  # a week early: day one has a rate
    currencies = sorted({*PRICES_CURRENCIES, *world.campaigns["currency"].to_list(), "EUR"})
    factors, f_first = fx_mod.factor_table(rates, currencies, REPORTING_CURRENCY, fx_first, fx_last)
    _lap("billing+fx")

    est = Estate(out_dir, json_layout=json_layout)
    people = write_salesforce(
        est,
        rng,
        world,
        people,
        subs,
        subs.select("person_idx", "stripe_id", "chargebee_id"),
        dup_rate,
    )["people"]
    b = {"invoices": billing.invoices, "lines": billing.lines, "refunds": billing.refunds,
         "credit_notes": billing.credit_notes}  # fmt: skip
    write_hubspot(est, rng, people, dup_rate)
    inv = write_stripe(est, rng, people, subs, b, dup_rate, as_of_day)
    _lap("salesforce+stripe")
    cb_inv = write_chargebee(est, people, subs, b, as_of_day)
    keep = ["inv_idx", "sub_idx", "status", "total", "tax", "currency", "created_ts", "id",
            "_entity", "period_start_day", "period_end_day"]  # fmt: skip
    all_inv = pl.concat([inv.select(keep), cb_inv.select(keep)]).sort("inv_idx")
    write_netsuite(est, rng, people, subs, all_inv, factors, f_first, dup_rate)
    _lap("netsuite")
    spend = ads_mod.draw_spend(rng, world)
    ads_mod.write_ads(est, spend, world, dup_rate)
    _lap("ads")
    # FX files: the ECB historical CSV (newest first, N/A for discontinued) and a treasury file
    ecb = fx_mod.ecb_wide(rates)
    header = ",".join(ecb.columns[:-1]) + ","
    write_csv(ecb, out_dir / "exports/fx/ecb/eurofxref-hist.csv", header_lines=[header],
              skip_header=True)  # fmt: skip
    write_csv(fx_mod.treasury_kwd(rates), out_dir / "exports/fx/treasury/rates.csv")
    est.files += ["exports/fx/ecb/eurofxref-hist.csv", "exports/fx/treasury/rates.csv"]

    # ------------------------------------------------ truth
    tdir = out_dir / "truth"
    # each truth frame is one file in row order: ordering the frames orders the records
    frames = sorted(
        est.truth, key=lambda f: (f["source"][0], f["source_file"][0]) if f.height else ("", "")
    )
    records = pl.concat(frames)
    write_parquet(records, tdir / "records.parquet")
    # one row per member of every true cluster with more than one record (flat: a partition)
    # (kept in the records' order: source, source_file, source_row, which is already total)
    clusters = records.filter(pl.col("entity_id").is_duplicated()).select(
        cluster_id="entity_id", source="source", source_file="source_file", source_row="source_row",
        vector="vector",
    )  # fmt: skip
    write_parquet(clusters, tdir / "clusters.parquet")
    _lap("records+clusters")

    subs_ids = subs.select("sub_idx", "billing", customer_id="billing_customer_id")
    items = truth_mod.revenue_items(billing, subs_ids)
    rev = truth_mod.revenue_by_month(items, factors, f_first)
    revenue = (
        rev.group_by("month", "customer_id", "currency")
        .agg(pl.col("amount_minor").sum(), pl.col("amount_reporting").sum())
        .with_columns(
            month=pl.from_epoch(pl.col("month"), time_unit="d"),
            amount_reporting=truth_mod.round_half_even(pl.col("amount_reporting")),
        )
        .sort("month", "customer_id", "currency")
    )
    write_parquet(revenue, tdir / "revenue.parquet")
    _lap("revenue")

    # ROMI: last touch = the person's acquisition channel/campaign (the only touch they have)
    attrib = subs.select("sub_idx", "channel", "platform", "campaign_id")
    rev_c = (
        rev.join(attrib, on="sub_idx")
        .with_columns(platform=pl.coalesce("platform", "channel"))
        .group_by("month", "platform", "campaign_id")
        .agg(revenue=pl.col("amount_reporting").sum())
    )
    sp = spend.with_columns(month=pl.col("day").cast(pl.Int64))
    f = np.zeros(sp.height)
    cur = sp["currency"].to_numpy()
    d = sp["day"].to_numpy() - f_first
    for c in np.unique(cur):
        m = cur == c
        f[m] = factors[str(c)][d[m]]
    sp = (
        sp.with_columns(
            spend_rep=pl.Series(sp["spend"].to_numpy() / 100.0 * f),
            month=pl.Series(truth_mod.month_start(sp["day"].to_numpy())),
        )
        .group_by("month", "platform", "campaign_id")
        .agg(spend=pl.col("spend_rep").sum())
    )
    romi = (
        sp.join(
            rev_c,
            on=["month", "platform", "campaign_id"],
            how="full",
            coalesce=True,
            nulls_equal=True,
        )
        .with_columns(pl.col("spend").fill_null(0.0), pl.col("revenue").fill_null(0.0))
        .select(
            period=pl.from_epoch(pl.col("month"), time_unit="d"),
            platform="platform",
            campaign_id="campaign_id",
            spend=truth_mod.round_half_even(pl.col("spend")),
            revenue=truth_mod.round_half_even(pl.col("revenue")),
        )
        .sort("period", "platform", "campaign_id", nulls_last=True)
    )
    write_parquet(romi, tdir / "romi.parquet")
    _lap("romi")
    write_parquet(billing_cases(billing, subs, all_inv), tdir / "billing_cases.parquet")

    counts = {
        r["source"]: r["len"] for r in records.group_by("source").len().sort("source").to_dicts()
    }
    counts["people"] = world.people.height
    counts["subscriptions"] = subs.height
    missing = write_project(out_dir, as_of, json_layout)
    manifest = {
        "generator": "romirecon generate",
        "customers": customers,
        "seed": seed,
        "dup_rate": dup_rate,
        "as_of": as_of.isoformat(),
        "json_layout": json_layout,
        "window_start": _year_start(as_of).isoformat(),
        "reporting_currency": REPORTING_CURRENCY,
        "counts": counts,
        "files": sorted(est.files),
        # exports written but left out of romirecon.yaml: no mapping for them in this checkout
        "unmapped": missing,
    }
    write_json(manifest, tdir / "manifest.json")
    (tdir / "README.md").write_text(TRUTH_README)
    return GenerateResult(
        out_dir=out_dir,
        project_file=out_dir / "romirecon.yaml",
        files=sorted(est.files),
        counts=counts,
        missing_mappings=missing,
    )


PRICES_CURRENCIES = ["USD", "EUR", "GBP", "CAD", "AUD", "JPY", "KWD", "ISK"]


def billing_cases(billing, subs: pl.DataFrame, inv: pl.DataFrame) -> pl.DataFrame:  # type: ignore[no-untyped-def]
    """(case, object, object_id): which Stripe objects carry which billing edge case."""
    s = subs
    cases = [
        s.filter(pl.col("trial") & pl.col("trial_converts")).select(case=pl.lit("trial_converted"), object=pl.lit("subscription"), object_id="billing_sub_id"),
        s.filter(pl.col("trial") & ~pl.col("trial_converts")).select(case=pl.lit("trial_not_converted"), object=pl.lit("subscription"), object_id="billing_sub_id"),
        s.filter((pl.col("change_cycle") >= 0) & (pl.col("new_price") > pl.col("price"))).select(case=pl.lit("prorated_upgrade"), object=pl.lit("subscription"), object_id="billing_sub_id"),
        s.filter((pl.col("change_cycle") >= 0) & (pl.col("new_price") < pl.col("price"))).select(case=pl.lit("prorated_downgrade"), object=pl.lit("subscription"), object_id="billing_sub_id"),
        s.filter(pl.col("coupon") != "").select(case=pl.lit("coupon"), object=pl.lit("subscription"), object_id="billing_sub_id"),
        s.filter(pl.col("currency") == "JPY").select(case=pl.lit("zero_decimal_currency"), object=pl.lit("subscription"), object_id="billing_sub_id"),
        s.filter(pl.col("currency") == "KWD").select(case=pl.lit("three_decimal_currency"), object=pl.lit("subscription"), object_id="billing_sub_id"),
        s.filter(pl.col("currency") == "ISK").select(case=pl.lit("isk_two_decimal_in_stripe"), object=pl.lit("subscription"), object_id="billing_sub_id"),
        inv.filter(pl.col("status") == "void").select(case=pl.lit("voided_invoice"), object=pl.lit("invoice"), object_id="id"),
        inv.filter(pl.col("status") == "open").select(case=pl.lit("open_invoice"), object=pl.lit("invoice"), object_id="id"),
        inv.filter(pl.col("total") < 0).select(case=pl.lit("net_credit_invoice"), object=pl.lit("invoice"), object_id="id"),
        billing.refunds.join(inv.select("inv_idx", "id"), on="inv_idx").select(
            case=pl.when(pl.col("with_credit_note")).then(pl.lit("refund_with_credit_note")).otherwise(pl.lit("refund")),
            object=pl.lit("invoice"), object_id="id"),
        billing.credit_notes.filter(pl.col("refund_idx").is_null()).join(inv.select("inv_idx", "id"), on="inv_idx").select(
            case=pl.when(pl.col("void")).then(pl.lit("void_credit_note")).otherwise(pl.lit("credit_note")),
            object=pl.lit("invoice"), object_id="id"),
    ]  # fmt: skip
    return pl.concat(cases).sort("case", "object", "object_id")


def write_project(out_dir: Path, as_of: date, json_layout: str = "api") -> list[str]:
    """romirecon.yaml plus the mapping files it names (copied from the repo's mappings/)."""
    src_dir = repo_mappings_dir()
    mdir = out_dir / "mappings"
    mdir.mkdir(parents=True, exist_ok=True)
    missing = []
    sources = []
    own_dir = Path(__file__).resolve().parent / "mappings"  # formats only the generator writes
    for name, system, entity, mapping, path in SOURCES:
        if (src_dir / mapping).is_file():
            shutil.copyfile(src_dir / mapping, mdir / mapping)
        elif (own_dir / mapping).is_file():
            shutil.copyfile(own_dir / mapping, mdir / mapping)
        else:  # the export is written, but the project leaves it out until a mapping exists
            missing.append(mapping)
            continue
        sources.append({"name": name, "system": system, "entity": entity,
                        "mapping": f"mappings/{mapping}", "path": layout_path(path, json_layout)})  # fmt: skip
    project = {
        "version": 1,
        "name": "synthetic estate (romirecon generate)",
        "reporting_currency": REPORTING_CURRENCY,
        "as_of": as_of.isoformat(),
        "sources": sources,
        "outputs": {"dir": "out", "formats": ["parquet", "csv"]},
        "state": {"dir": ".romirecon"},
        "sla": {},
        # LinkedIn's analytics API names campaigns by URN only: like a real team, the estate
        # keeps a mapping table from its UTM campaign values to the platform's campaign ids
        "attribution": {"campaign_mapping": "campaign_mapping.csv"},
    }
    from romirecon.generate.world import campaigns_frame

    li = campaigns_frame().filter(pl.col("platform") == "linkedin_ads")
    lines = ["match,value,platform,campaign_id,channel,campaign_name"]
    lines += [
        f"utm_campaign,{name},linkedin_ads,{cid},paid_social,{name}"
        for cid, name in li.select("campaign_id", "campaign_name").iter_rows()
    ]
    (out_dir / "campaign_mapping.csv").write_text("\n".join(lines) + "\n")
    text = "# Written by `romirecon generate`: a synthetic estate with its truth in truth/.\n"
    text += yaml.safe_dump(project, sort_keys=False, allow_unicode=True)
    (out_dir / "romirecon.yaml").write_text(text)
    (out_dir / MARKER).touch()
    return missing


TRUTH_README = """# Ground truth of this synthetic estate

Written by `romirecon generate` from its own model of the world, never by reading the exports
back or running the pipeline. Same parameters (manifest.json) give byte-identical files.

| file | one row per | columns |
|---|---|---|
| records.parquet | exported record | source, source_file, source_row (1-based, file order), source_id, entity_id (true identity), vector, detail |
| clusters.parquet | record of an entity with more than one record | cluster_id (= entity_id), source, source_file, source_row, vector |
| revenue.parquet | billing customer x month | month, customer_id (billing system id), currency, amount_minor (native, vendor exponent), amount_reporting |
| romi.parquet | month x platform x campaign | period, platform, campaign_id, spend, revenue (reporting currency, last touch) |
| billing_cases.parquet | object x edge case | case, object, object_id |

Entity ids: P... people (CRM leads/contacts, billing and ERP customers of one person share it),
A... companies (CRM accounts), D... deals, S... subscriptions, I... invoices (the billing invoice
and its ERP mirror share it), L... invoice lines, R... refunds, C... credit notes, E:<evt id>
events, <platform>:<campaign>:<day> ad rows.

Duplication vectors (`vector`; `original` is the first record of an entity in its system):

| vector | where | what happened |
|---|---|---|
| sync_race | Stripe customers, Salesforce contacts, NetSuite customers | the integration created the record twice within seconds |
| mapping_error | Salesforce contacts/accounts, NetSuite customers | a transformation changed a value so the match failed: detail = case, whitespace, swap_names, phone_format, legal_suffix or typo |
| manual_entry | Salesforce leads, NetSuite customers | the same person typed in by hand (no UTM, no external id) |
| api_retry | Stripe customers (same idempotency key, new id), Stripe events (webhook redelivery, same event id), NetSuite invoices (connector retried, new internal id) | |
| batch_overlap | Salesforce lead batches, Google Ads and Meta monthly files | overlapping re-exports: the same row in two files |
| merged | Salesforce leads (IsDeleted, MasterRecordId), HubSpot contacts (archived; survivor's hs_merged_object_ids) | merged-away records still exported with merge pointers |

Billing rules of the truth (DESIGN.md): paid and open invoices count, void ones do not; a line's
net (amount - discount, tax excluded) is spread over its service days with the remainder on the
earliest days; refunds and credit notes are negative amounts spread over the credited line's
period; a refund paid out by a credit note counts once; void credit notes count for nothing;
each day converts at its ECB rate (last published rate on days without one; KWD from the treasury
file), reporting amounts rounded half-to-even to the cent once per row. Last touch = the person's
acquisition campaign (HubSpot UTM / click id); organic, direct and referral have no campaign id.
"""
