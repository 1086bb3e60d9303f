"""Daily ad spend per campaign in each ad account's currency and timezone, and its exports."""

from __future__ import annotations

import numpy as np
import polars as pl

from romirecon.generate.estate import Estate, _orig
from romirecon.generate.util import write_csv, write_ndjson
from romirecon.generate.world import World

# cost per lead in the account currency's major units, per platform
CPL = {"google_ads": 60.0, "meta_ads": 35.0, "linkedin_ads": 140.0, "microsoft_ads": 45.0}


def draw_spend(rng: np.random.Generator, world: World) -> pl.DataFrame:
    """One row per campaign and account-local day: spend in minor units, impressions, clicks."""
    camps = world.campaigns
    leads = world.people.group_by("campaign_idx").agg(n=pl.len())
    camps = camps.join(leads, on="campaign_idx", how="left").with_columns(pl.col("n").fill_null(0))
    days = np.arange(world.start_day, world.as_of_day + 1, dtype=np.int64)
    nc, nd = camps.height, days.size
    cpl = np.array([CPL[p] for p in camps["platform"].to_list()])
    daily = (camps["n"].to_numpy() + 1) * cpl * 100 / nd  # minor units (all accounts are 2-decimal)
    noise = rng.lognormal(0.0, 0.35, size=(nc, nd))
    spend = np.rint(daily[:, None] * noise).astype(np.int64)
    impressions = np.rint(spend / 100 * rng.uniform(80, 160, size=(nc, nd))).astype(np.int64)
    clicks = np.rint(impressions * rng.uniform(0.01, 0.05, size=(nc, nd))).astype(np.int64)
    return (
        pl.DataFrame(
            {
                "campaign_idx": np.repeat(camps["campaign_idx"].to_numpy(), nd),
                "day": np.tile(days, nc),
                "spend": spend.reshape(-1),
                "impressions": impressions.reshape(-1),
                "clicks": clicks.reshape(-1),
            }
        )
        .join(camps.drop("n"), on="campaign_idx")
        .sort("campaign_idx", "day")
    )


def _date(fmt: str = "%Y-%m-%d") -> pl.Expr:
    return pl.from_epoch(pl.col("day"), time_unit="d").dt.strftime(fmt)


def _money(col: str) -> pl.Expr:
    return (
        (pl.col(col) // 100).cast(pl.String)
        + "."
        + (pl.col(col) % 100).cast(pl.String).str.zfill(2)
    )


def write_ads(est: Estate, spend: pl.DataFrame, world: World, dup_rate: float) -> None:
    s = _orig(spend.with_columns(
        _entity=pl.col("platform") + ":" + pl.col("campaign_id") + ":" + _date(),
        rid=pl.col("campaign_id") + ":" + _date(),
        month=pl.from_epoch(pl.col("day"), time_unit="d").dt.truncate("1mo"),
    ))  # fmt: skip
    overlap = round(dup_rate * 60)  # days re-exported in the next month's file
    months = s["month"].unique().sort().to_list()

    def monthly(frame: pl.DataFrame) -> list[tuple[str, pl.DataFrame]]:
        out = []
        for k, m in enumerate(months):  # loop over ~13 months, each file vectorised
            cur = frame.filter(pl.col("month") == m)
            if k + 1 < len(months) and overlap:
                nxt = frame.filter(pl.col("month") == months[k + 1])
                extra = nxt.filter(pl.col("day") < nxt["day"].min() + overlap).with_columns(
                    _vector=pl.lit("batch_overlap"), _detail=pl.lit("overlapping re-export")
                )
                cur = pl.concat([cur, extra])
            out.append((m.strftime("%Y-%m"), cur))
        return out

    # Google Ads: GAQL campaign report per account and month (cost in micros)
    g = s.filter(pl.col("platform") == "google_ads")
    for acct in g["account_id"].unique().sort().to_list():
        for tag, part in monthly(g.filter(pl.col("account_id") == acct)):
            part = part.sort("day", "campaign_id")
            out = part.select(**{
                "customer.id": "account_id", "customer.descriptive_name": "account_name",
                "customer.currency_code": "currency", "customer.time_zone": "timezone",
                "campaign.id": "campaign_id", "campaign.name": "campaign_name",
                "segments.date": _date(), "metrics.cost_micros": pl.col("spend") * 10_000,
                "metrics.impressions": "impressions", "metrics.clicks": "clicks",
            })  # fmt: skip
            rel = f"exports/ads/google_ads/{acct}_{tag}.csv"
            write_csv(out, est.path(rel))
            est.record("google_ads", rel, part, "rid")

    # Meta: Insights API rows (level=campaign, time_increment=1), numbers as strings
    m = s.filter(pl.col("platform") == "meta_ads")
    for tag, part in monthly(m):
        part = part.sort("day", "campaign_id")
        out = part.select(
            account_id=pl.col("account_id").str.strip_prefix("act_"), account_name="account_name",
            account_currency="currency", campaign_id="campaign_id", campaign_name="campaign_name",
            date_start=_date(), date_stop=_date(), spend=_money("spend"),
            impressions=pl.col("impressions").cast(pl.String), clicks=pl.col("clicks").cast(pl.String),
        )  # fmt: skip
        rel = f"exports/ads/meta_ads/insights_{tag}.jsonl"
        write_ndjson(out, est.path(rel))
        est.record("meta_ads", rel, part, "rid")

    # LinkedIn: Campaign Manager campaign performance CSV (report preamble, then the table)
    li = s.filter(pl.col("platform") == "linkedin_ads").sort("day", "campaign_id")
    out = li.select(**{
        "Start Date (in UTC)": _date("%m/%d/%Y"), "Account Name": "account_name",
        "Currency": "currency", "Campaign Group ID": pl.lit("612004411"),
        "Campaign ID": "campaign_id", "Campaign Name": "campaign_name",
        "Total Spent": _money("spend"), "Impressions": "impressions", "Clicks": "clicks",
    })  # fmt: skip
    first = li["day"].min()
    last = li["day"].max()
    rng_txt = pl.select(a=pl.from_epoch(pl.lit(first), time_unit="d").dt.strftime("%m/%d/%Y"),
                        b=pl.from_epoch(pl.lit(last), time_unit="d").dt.strftime("%m/%d/%Y")).row(0)  # fmt: skip
    rel = "exports/ads/linkedin_ads/campaign_performance.csv"
    write_csv(out, est.path(rel), header_lines=[
        "Campaign Performance Report (in UTC)",
        f"Report Start: {rng_txt[0]}, Report End: {rng_txt[1]}",
        f"Account: {li['account_id'][0]}",
        "",
    ])  # fmt: skip
    est.record("linkedin_ads", rel, li, "rid")

    # Microsoft Advertising: CampaignPerformanceReport, daily, header and footer excluded
    ms = s.filter(pl.col("platform") == "microsoft_ads").sort("day", "campaign_id")
    out = ms.select(
        TimePeriod=_date(), AccountId="account_id", AccountName="account_name",
        CampaignId="campaign_id", CampaignName="campaign_name", CurrencyCode="currency",
        Spend=_money("spend"), Impressions="impressions", Clicks="clicks",
    )  # fmt: skip
    rel = "exports/ads/microsoft_ads/campaign_performance.csv"
    write_csv(out, est.path(rel))
    est.record("microsoft_ads", rel, ms, "rid")
    del world
