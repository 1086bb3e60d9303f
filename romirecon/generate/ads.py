"""Daily ad spend per campaign in each ad account's currency and timezone, and its exports."""

from __future__ import annotations

import numpy as np
import polars as pl

from romirecon.generate.estate import Estate, _orig
from romirecon.generate.util import write_csv, write_json_records
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
        .join(
            world.people.group_by("campaign_idx", day=pl.col("lead_ts") // 86400).agg(
                conversions=pl.len()
            ),
            on=["campaign_idx", "day"],
            how="left",
        )
        .with_columns(
            conversions=pl.col("conversions").fill_null(0).cast(pl.Int64),
            # platform-reported value: what the pixel was told, not revenue
            conversion_value=pl.col("conversions").fill_null(0).cast(pl.Float64) * 100.0,
        )
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

    # Google Ads: GoogleAdsService.Search responses (REST JSON, camelCase), per account and month
    g = s.filter(pl.col("platform") == "google_ads")
    for acct in g["account_id"].unique().sort().to_list():
        for tag, part in monthly(g.filter(pl.col("account_id") == acct)):
            part = part.sort("day", "campaign_id")
            out = part.select(
                customer=pl.struct(
                    resourceName=pl.lit("customers/") + pl.col("account_id"), id="account_id",
                    descriptiveName="account_name", currencyCode="currency", timeZone="timezone",
                ),
                campaign=pl.struct(
                    resourceName=pl.lit("customers/") + pl.col("account_id") + "/campaigns/" + pl.col("campaign_id"),
                    id="campaign_id", name="campaign_name",
                ),
                metrics=pl.struct(
                    clicks=pl.col("clicks").cast(pl.String),
                    conversions=pl.col("conversions").cast(pl.Float64),
                    conversionsValue=pl.col("conversion_value"),
                    costMicros=(pl.col("spend") * 10_000).cast(pl.String),
                    impressions=pl.col("impressions").cast(pl.String),
                ),
                segments=pl.struct(date=_date()),
            )  # fmt: skip
            rel = f"exports/ads/google_ads/{acct}_{tag}.json"
            write_json_records(out, est.path(rel), "results", after={"fieldMask": GOOGLE_FIELDS})
            est.record("google_ads", rel, part, "rid")

    # Meta: Insights API pages (level=campaign, time_increment=1), numbers as strings
    m = s.filter(pl.col("platform") == "meta_ads")
    for tag, part in monthly(m):
        part = part.sort("day", "campaign_id")
        out = part.select(
            account_id=pl.col("account_id").str.strip_prefix("act_"), account_name="account_name",
            account_currency="currency", campaign_id="campaign_id", campaign_name="campaign_name",
            date_start=_date(), date_stop=_date(), spend=_money("spend"),
            impressions=pl.col("impressions").cast(pl.String), clicks=pl.col("clicks").cast(pl.String),
        )  # fmt: skip
        rel = f"exports/ads/meta_ads/insights_{tag}.json"
        write_json_records(out, est.path(rel), "data", after={"paging": {"cursors": {}}})
        est.record("meta_ads", rel, part, "rid")

    # LinkedIn: adAnalytics (q=statistics, pivots ACCOUNT, CAMPAIGN_GROUP, CAMPAIGN; DAILY)
    li = s.filter(pl.col("platform") == "linkedin_ads").sort("day", "campaign_id")
    d = pl.from_epoch(pl.col("day"), time_unit="d")
    ymd = pl.struct(
        year=d.dt.year().cast(pl.Int64),
        month=d.dt.month().cast(pl.Int64),
        day=d.dt.day().cast(pl.Int64),
    )
    out = li.select(
        pivotValues=pl.concat_list(
            pl.lit("urn:li:sponsoredAccount:") + pl.col("account_id"),
            pl.lit("urn:li:sponsoredCampaignGroup:") + pl.lit(LINKEDIN_GROUP),
            pl.lit("urn:li:sponsoredCampaign:") + pl.col("campaign_id"),
        ),
        dateRange=pl.struct(start=ymd, end=ymd),
        costInLocalCurrency=_money("spend"),
        externalWebsiteConversions="conversions",
        impressions="impressions", clicks="clicks",
    )  # fmt: skip
    rel = "exports/ads/linkedin_ads/ad_analytics.json"
    write_json_records(
        out,
        est.path(rel),
        "elements",
        before={"paging": {"start": 0, "count": li.height, "links": []}},
    )
    est.record("linkedin_ads", rel, li, "rid")

    # Microsoft Advertising: CampaignPerformanceReport CSV, daily, header and footer excluded
    ms = s.filter(pl.col("platform") == "microsoft_ads").sort("day", "campaign_id")
    out = ms.select(
        TimePeriod=_date(), AccountId="account_id", AccountName="account_name",
        CampaignId="campaign_id", CampaignName="campaign_name", CurrencyCode="currency",
        Spend=_money("spend"), Impressions="impressions", Clicks="clicks",
        Conversions=pl.col("conversions").cast(pl.Float64).round(2).cast(pl.String),
        Revenue=pl.col("conversion_value").round(2).cast(pl.String),
    )  # fmt: skip
    rel = "exports/ads/microsoft_ads/campaign_performance.csv"
    write_csv(out, est.path(rel), quote_style="always")
    est.record("microsoft_ads", rel, ms, "rid")
    del world


GOOGLE_FIELDS = (
    "customer.id,customer.descriptiveName,customer.currencyCode,customer.timeZone,campaign.id,"
    "campaign.name,metrics.clicks,metrics.costMicros,metrics.impressions,segments.date"
)
LINKEDIN_GROUP = "612004411"
