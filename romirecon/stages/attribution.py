"""Attribution: touchpoints, conversions, and each conversion's credit per model.

Reads `stg_contact` (CRM leads/contacts: lead source, HubSpot latest source, UTM fields, click
ids), `stg_campaign_member`, `stg_deal` (primary campaign), `stg_ad_spend` (the ad-platform
campaigns to match), billing's `conversion` (first paid invoice per billing customer, its coupon),
`revenue_item` (customers with revenue), and writes `entity_link` afresh (the reconcile stage's
linking, see `romirecon.stages.reconcile`). Writes

| table | grain |
|---|---|
| `ad_campaign` | one ad-platform campaign (platform, campaign_id) with its latest name |
| `touchpoint` | one touch of a golden entity: time, type, channel, platform, matched campaign, the raw fields, provenance, and whether it is eligible (a duplicate or an unmapped promo code is not) |
| `attribution_conversion` | one converting golden entity: the day it converted, whether it became a paying customer |
| `attribution_credit` | conversion x touchpoint x model: `credit DECIMAL(38,10)`; the credits of a conversion sum to exactly 1 in every model |

## Touchpoints
- A CRM record with UTM fields or a click id is one touch at its `created_at` (the form fill or
  visit that created it). Click ids name the platform (gclid: Google Ads, msclkid: Microsoft
  Advertising, fbclid: Meta, li_fat_id: LinkedIn); otherwise `utm_source`/`utm_medium` decide.
- `lead_source` (Salesforce LeadSource, HubSpot original source) describes how the *person* first
  arrived, so a record carrying only a lead source is a touch only when it is its entity's
  earliest CRM record: a duplicate typed in later with another lead source is not a new visit.
- HubSpot `latest_source` (when it differs from the original) is a touch at `updated_at`.
- Campaign members (responded, or response unknown) are touches at `responded_at`, else
  `created_at`; a deal's primary campaign is a touch at the deal's `created_at`.
- Promo codes (the coupon on the first paid invoice) are touches at the end of the conversion day
  when `promo_codes` is `mapped` (default) and the mapping table names the code, or always with
  `all`; an unmapped code is kept with `eligible = false`.
- The same touch reported by several records of one entity (merged copies, overlapping exports,
  sync races: same channel, platform, campaign, UTM fields, click id and lead source) counts once,
  at its earliest time.

Campaigns are matched to ad-platform campaigns by id (CRM campaign id or `utm_campaign` equal to
an ad campaign id), then by normalized UTM value (lower case, runs of other characters folded to
`_`) equal to the normalized ad campaign name, then by the optional mapping table; a touch whose
platform is known only matches campaigns of that platform, and a value matching two campaigns is
left unmatched (`match_method = 'ambiguous'`, finding `campaign-ambiguous`); a paid touch whose
campaign matches nothing keeps its platform and UTM name without a campaign id (finding
`campaign-unmatched`: add it to the mapping table). A touch matched to an ad campaign takes the
platform's channel (`paid_search` for Google/Microsoft, `paid_social` for Meta/LinkedIn).

Mapping table (CSV, header required): `match, value, platform, campaign_id, channel,
campaign_name` where `match` is one of `utm_campaign`, `crm_campaign_id`, `crm_campaign_name`,
`promo_code`, `lead_source`; `value` is compared normalized; empty `platform`/`campaign_id` with a
`channel` sets only the channel.

## Models (touches of the entity from `lookback_days` before the conversion day to its end)
`first_touch`, `last_touch`, `last_non_direct` (the last touch whose channel is not `direct`; the
last touch when all are direct), `linear`, `time_decay` (weight 2^(-days/half_life), days = whole
days from the touch's day to the conversion day), `position_based` (40% first, 40% last, 20%
spread over the middle; two touches 50/50). Weights are integers (time decay: 2^(-d/h) x 10^12
rounded) and each conversion's 10^10 credit units are split exactly by largest remainder (ties to
the later touch), so credits are exact decimals summing to 1. A conversion without any touch gets
one `unattributed` credit of 1 in every model.

## Settings (`attribution:` section of romirecon.yaml)
| key | default | meaning |
|---|---|---|
| `models` | all six | which models to compute |
| `lookback_days` | 90 | touches older than this before the conversion day are ignored |
| `half_life_days` | 7 | time-decay half-life |
| `campaign_mapping` | none | path of the mapping table CSV (relative to the project folder) |
| `promo_codes` | `mapped` | `mapped`, `all` or `none` |
| `period` | `month` | ROMI period grain: `month`, `week` (ISO, Monday) or `day` |
| `revenue_basis` | `recognized` | `recognized` (revenue recognized in the period) or `closed_won` (closed-won deal amount in its close period) |
| `contribution_margin` | 1 | ROMI = (revenue x margin - spend) / spend; 1 is labelled revenue ROMI |
| `fx_max_fallback_days` | 7 | last-published-rate fallback for spend and deal amounts |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from romirecon.exitcodes import ConfigError, InputError
from romirecon.sqlutil import ident, literal
from romirecon.stages import fx
from romirecon.stages.common import exec_sql as _exec
from romirecon.stages.common import table_exists as _table_exists

STAGE = "attribution"
MODELS = (
    "first_touch",
    "last_touch",
    "last_non_direct",
    "linear",
    "time_decay",
    "position_based",
)
PERIODS = ("month", "week", "day")
BASES = ("recognized", "closed_won")
PROMO_MODES = ("mapped", "all", "none")
MAPPING_KINDS = (
    "utm_campaign",
    "crm_campaign_id",
    "crm_campaign_name",
    "promo_code",
    "lead_source",
)
CREDIT_UNITS = 10**10  # credit scale: DECIMAL(38,10)
DECAY_SCALE = 10**12

# ad platform -> (channel, click id column)
PLATFORMS: dict[str, tuple[str, str]] = {
    "google_ads": ("paid_search", "gclid"),
    "microsoft_ads": ("paid_search", "msclkid"),
    "meta_ads": ("paid_social", "fbclid"),
    "linkedin_ads": ("paid_social", "li_fat_id"),
}
# normalized utm_source -> platform
UTM_SOURCE_PLATFORM: dict[str, str] = {
    "google": "google_ads", "adwords": "google_ads", "googleads": "google_ads",
    "google_ads": "google_ads",
    "bing": "microsoft_ads", "microsoft": "microsoft_ads", "msads": "microsoft_ads",
    "microsoft_ads": "microsoft_ads",
    "facebook": "meta_ads", "fb": "meta_ads", "instagram": "meta_ads", "ig": "meta_ads",
    "meta": "meta_ads", "meta_ads": "meta_ads",
    "linkedin": "linkedin_ads", "li": "linkedin_ads", "linkedin_ads": "linkedin_ads",
}  # fmt: skip
PAID_MEDIA = ("cpc", "ppc", "paid", "paid_search", "paidsearch", "sem", "paid_social",
              "paidsocial", "social_paid", "cpm", "cpv", "display", "ad", "ads")  # fmt: skip
# normalized utm_medium -> channel (when no ad platform decides)
UTM_MEDIUM_CHANNEL: dict[str, str] = {
    "email": "email", "e_mail": "email", "newsletter": "email",
    "referral": "referral", "partner": "referral", "affiliate": "affiliate",
    "organic": "organic_search", "seo": "organic_search",
    "social": "organic_social", "organic_social": "organic_social",
    "display": "display", "cpc": "paid_search", "ppc": "paid_search", "sem": "paid_search",
    "paid_search": "paid_search", "paid_social": "paid_social", "paidsocial": "paid_social",
    "cpm": "display", "event": "event", "offline": "offline", "none": "direct",
}  # fmt: skip
# normalized lead source (Salesforce LeadSource picklist, HubSpot hs_analytics_source) -> channel
LEAD_SOURCE_CHANNEL: dict[str, str] = {
    "web": "direct", "direct": "direct", "direct_traffic": "direct",
    "advertisement": "paid_other", "paid_search": "paid_search", "paid_social": "paid_social",
    "organic_search": "organic_search", "social_media": "organic_social",
    "email_marketing": "email", "email": "email",
    "referrals": "referral", "ai_referrals": "referral", "partner": "referral",
    "partner_referral": "referral", "external_referral": "referral",
    "employee_referral": "referral", "word_of_mouth": "referral",
    "trade_show": "event", "seminar": "event", "seminar_internal": "event",
    "seminar_partner": "event", "webinar": "event", "conference": "event", "event": "event",
    "phone_inquiry": "offline", "offline": "offline",
    "purchased_list": "other", "other": "other", "other_campaigns": "other",
}  # fmt: skip


@dataclass(frozen=True)
class AttributionSettings:
    models: tuple[str, ...] = MODELS
    lookback_days: int = 90
    half_life_days: Decimal = Decimal(7)
    campaign_mapping: Path | None = None
    promo_codes: str = "mapped"
    period: str = "month"
    revenue_basis: str = "recognized"
    contribution_margin: Decimal = Decimal(1)
    fx_max_fallback_days: int = fx.DEFAULT_MAX_FALLBACK_DAYS


_KNOWN = {
    "models", "lookback_days", "half_life_days", "campaign_mapping", "promo_codes", "period",
    "revenue_basis", "contribution_margin", "fx_max_fallback_days",
}  # fmt: skip


def _decimal(v: Any) -> Decimal | None:
    if isinstance(v, bool) or not isinstance(v, int | float | str | Decimal):
        return None
    try:
        d = Decimal(str(v))
    except ArithmeticError:
        return None
    return d if d.is_finite() else None


def parse_settings(
    settings: Mapping[str, Any] | None, base_dir: Path | None = None
) -> AttributionSettings:
    """Validate the `attribution:` section; raise ConfigError listing every problem at once.
    A relative `campaign_mapping` resolves against `base_dir` (the project folder)."""
    from romirecon.config import did_you_mean

    s = dict(settings or {})
    problems: list[str] = []
    for key in sorted(set(s) - _KNOWN):
        problems.append(f"attribution.{key}: unknown key{did_you_mean(key, _KNOWN)}")
    models = s.get("models", list(MODELS))
    if isinstance(models, str):
        models = [models]
    if not isinstance(models, list) or not models:
        problems.append("attribution.models: expected a non-empty list of model names")
        models = list(MODELS)
    for m in models:
        if m not in MODELS:
            problems.append(
                f"attribution.models: '{m}' is not one of: {', '.join(MODELS)}"
                f"{did_you_mean(str(m), MODELS)}"
            )
    ints: dict[str, int] = {}
    for key, minimum in (("lookback_days", 0), ("fx_max_fallback_days", 0)):
        if key in s:
            v = s[key]
            if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
                problems.append(f"attribution.{key}: {v!r} is not a whole number of days >= 0")
            else:
                ints[key] = v
    half = _decimal(s.get("half_life_days", 7))
    if half is None or half <= 0:
        problems.append(
            f"attribution.half_life_days: {s.get('half_life_days')!r} must be a number > 0"
        )
        half = Decimal(7)
    margin = _decimal(s.get("contribution_margin", 1))
    if margin is None or margin <= 0 or margin > 1:
        problems.append(
            f"attribution.contribution_margin: {s.get('contribution_margin')!r} must be in (0, 1]"
        )
        margin = Decimal(1)
    for key, options in (
        ("period", PERIODS),
        ("revenue_basis", BASES),
        ("promo_codes", PROMO_MODES),
    ):
        if key in s and s[key] not in options:
            problems.append(f"attribution.{key}: {s[key]!r} is not one of: {', '.join(options)}")
    mapping = s.get("campaign_mapping")
    mpath: Path | None = None
    if mapping is not None:
        if not isinstance(mapping, str) or not mapping:
            problems.append("attribution.campaign_mapping: expected a file path")
        else:
            mpath = Path(mapping).expanduser()
            if not mpath.is_absolute() and base_dir is not None:
                mpath = base_dir / mpath
            if not mpath.is_file():
                problems.append(f"attribution.campaign_mapping: file not found: {mapping}")
    if problems:
        raise ConfigError(
            f"attribution settings: {len(problems)} problem(s) found", details=problems
        )
    return AttributionSettings(
        models=tuple(m for m in MODELS if m in models),
        half_life_days=half,
        campaign_mapping=mpath,
        promo_codes=s.get("promo_codes", "mapped"),
        period=s.get("period", "month"),
        revenue_basis=s.get("revenue_basis", "recognized"),
        contribution_margin=margin,
        **ints,
    )


# ---------------------------------------------------------------------------------------------
# SQL builders (pure)


def norm_sql(expr: str) -> str:
    """Normalized text: lower case, runs of other characters folded to '_', trimmed of '_';
    NULL when nothing is left."""
    return (
        f"nullif(trim(regexp_replace(lower(trim(CAST({expr} AS VARCHAR))), '[^a-z0-9]+', '_', 'g'),"
        " '_'), '')"
    )


def _case_map(expr: str, mapping: Mapping[str, str]) -> str:
    whens = " ".join(f"WHEN {literal(k)} THEN {literal(v)}" for k, v in sorted(mapping.items()))
    return f"(CASE {expr} {whens} END)"


def platform_channel_sql(platform: str) -> str:
    """The channel of an ad platform's campaigns."""
    return _case_map(platform, {p: c for p, (c, _) in PLATFORMS.items()})


def click_platform_sql(alias: str) -> str:
    """The platform a record's click id names (first non-empty in PLATFORMS order)."""
    whens = " ".join(
        f"WHEN nullif(trim({alias}.{ident(col)}), '') IS NOT NULL THEN {literal(p)}"
        for p, (_, col) in PLATFORMS.items()
    )
    return f"(CASE {whens} END)"


def click_id_sql(alias: str) -> str:
    return (
        "coalesce("
        + ", ".join(f"nullif(trim({alias}.{ident(col)}), '')" for _, col in PLATFORMS.values())
        + ")"
    )


def classify_sql(
    click_platform: str, utm_source: str, utm_medium: str, lead_source: str
) -> tuple[str, str]:
    """(platform, channel) SQL for a touch from its click platform and normalized UTM source,
    medium and lead source (all SQL expressions)."""
    src_platform = _case_map(utm_source, UTM_SOURCE_PLATFORM)
    paid = (
        f"({utm_medium} IS NULL OR {utm_medium} IN ({', '.join(literal(m) for m in PAID_MEDIA)}))"
    )
    platform = f"coalesce({click_platform}, CASE WHEN {paid} THEN {src_platform} END)"
    organic_src = (
        f"CASE WHEN {src_platform} IN ('meta_ads', 'linkedin_ads') THEN 'organic_social' "
        f"WHEN {src_platform} IS NOT NULL THEN 'organic_search' END"
    )
    channel = f"""coalesce(
        {platform_channel_sql(platform)},
        CASE WHEN {utm_medium} IN ('organic', 'seo', 'social', 'organic_social') THEN
             coalesce({organic_src}, {_case_map(utm_medium, UTM_MEDIUM_CHANNEL)}) END,
        {_case_map(utm_medium, UTM_MEDIUM_CHANNEL)},
        CASE WHEN {utm_source} IS NOT NULL THEN 'referral' END,
        {_case_map(lead_source, LEAD_SOURCE_CHANNEL)},
        CASE WHEN {lead_source} IS NOT NULL THEN 'other' END)"""
    return platform, channel


def _entity_join(alias: str, vendor: str, source_id: str) -> str:
    """LEFT JOIN binding `<alias>.entity_id` of a contact id (see `_entity_expr`)."""
    from romirecon.stages.reconcile import entity_join_sql

    return entity_join_sql(alias, "'contact'", vendor, source_id)


def _entity_expr(alias: str, vendor: str, source_id: str) -> str:
    """A contact's golden entity: its `entity_link` id joined by `_entity_join(alias, ...)`, else
    a stand-in `R:<vendor>:<id>` (a customer no party record knows)."""
    return f"coalesce({alias}.entity_id, 'R:' || {vendor} || ':' || CAST({source_id} AS VARCHAR))"


def raw_touches_sql() -> str:
    """Every candidate touch with its raw fields, entity and provenance (not yet classified), and
    `touch_key`, a row number that identifies the touch while it is classified. Any unique
    number does (it never reaches an output), so it is numbered as the rows come: ranking the
    wide touch rows by their provenance for it was most of the classification's time."""
    from romirecon.stages.reconcile import vendor_sql

    v = vendor_sql("c")
    rec = f"""
SELECT c.*, {v} AS vendor, {_entity_expr("el", v, "c.source_id")} AS entity_id,
       {click_platform_sql("c")} AS click_platform, {click_id_sql("c")} AS click_id
FROM stg_contact c {_entity_join("el", v, "c.source_id")} WHERE c.source_system = 'crm' AND c.source_id IS NOT NULL"""
    has_visit = (
        "(click_id IS NOT NULL OR coalesce(nullif(trim(utm_source), ''), nullif(trim(utm_medium), ''),"
        " nullif(trim(utm_campaign), ''), nullif(trim(utm_term), ''), nullif(trim(utm_content), '')) IS NOT NULL)"
    )
    common = """source_name, source_system, CAST(source_id AS VARCHAR) AS source_id, source_file,
       source_row"""
    vm = vendor_sql("m")
    vd = vendor_sql("d")
    return f"""
SELECT *, row_number() OVER () AS touch_key FROM (
WITH rec AS ({rec}),
ranked AS (
    SELECT *, row_number() OVER (PARTITION BY entity_id
        ORDER BY created_at NULLS LAST, source_name, source_file, source_row) AS entity_rank
    FROM rec
)
SELECT entity_id, created_at AS touch_at,
       CASE WHEN click_id IS NOT NULL THEN 'click_id' ELSE 'utm' END AS touch_type,
       click_platform, click_id, utm_source, utm_medium, utm_campaign, utm_term, utm_content,
       lead_source, CAST(NULL AS VARCHAR) AS crm_campaign_id,
       CAST(NULL AS VARCHAR) AS crm_campaign_name, CAST(NULL AS VARCHAR) AS promo_code, {common}
FROM ranked WHERE {has_visit} AND created_at IS NOT NULL
UNION ALL
SELECT entity_id, created_at, 'lead_source', NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       lead_source, NULL, NULL, NULL, {common}
FROM ranked WHERE NOT {has_visit} AND nullif(trim(lead_source), '') IS NOT NULL
  AND entity_rank = 1 AND created_at IS NOT NULL
UNION ALL
SELECT entity_id, coalesce(updated_at, created_at), 'latest_source', NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, latest_source, NULL, NULL, NULL, {common}
FROM ranked WHERE nullif(trim(latest_source), '') IS NOT NULL
  AND {norm_sql("latest_source")} IS DISTINCT FROM {norm_sql("lead_source")}
  AND coalesce(updated_at, created_at) IS NOT NULL
UNION ALL
SELECT {_entity_expr("el", vm, "m.contact_id")}, coalesce(m.responded_at, m.created_at),
       'campaign_member', NULL, NULL, m.utm_source, m.utm_medium, m.utm_campaign, NULL, NULL, NULL,
       m.campaign_id, m.campaign_name, NULL, m.source_name, m.source_system,
       CAST(m.source_id AS VARCHAR), m.source_file, m.source_row
FROM stg_campaign_member m {_entity_join("el", vm, "m.contact_id")}
WHERE m.contact_id IS NOT NULL AND m.is_deleted IS DISTINCT FROM true
  AND m.has_responded IS DISTINCT FROM false AND coalesce(m.responded_at, m.created_at) IS NOT NULL
UNION ALL
SELECT {_entity_expr("el", vd, "d.contact_id")}, d.created_at, 'deal_campaign',
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, d.campaign_id, NULL, NULL, d.source_name,
       d.source_system, CAST(d.source_id AS VARCHAR), d.source_file, d.source_row
FROM stg_deal d {_entity_join("el", vd, "d.contact_id")}
WHERE nullif(trim(d.campaign_id), '') IS NOT NULL AND d.is_deleted IS DISTINCT FROM true
  AND d.created_at IS NOT NULL AND d.contact_id IS NOT NULL
UNION ALL
SELECT c.entity_id, CAST(c.converted_on AS TIMESTAMP) + INTERVAL 1 DAY - INTERVAL 1 SECOND,
       'promo_code', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, c.coupon,
       'billing', 'billing', c.first_customer_id, NULL, NULL
FROM attribution_conversion c WHERE c.coupon IS NOT NULL
)"""


def ad_campaigns_sql() -> str:
    """One row per ad-platform campaign with its latest name (by day, then file order)."""
    return f"""
SELECT platform, campaign_id, campaign_name, {norm_sql("campaign_name")} AS norm_name,
       {norm_sql("campaign_id")} AS norm_id, {platform_channel_sql("platform")} AS channel
FROM (
    SELECT lower(trim(platform)) AS platform, CAST(campaign_id AS VARCHAR) AS campaign_id,
           campaign_name,
           row_number() OVER (PARTITION BY lower(trim(platform)), CAST(campaign_id AS VARCHAR)
               ORDER BY date DESC NULLS LAST, source_file DESC, source_row DESC) AS rn
    FROM stg_ad_spend WHERE campaign_id IS NOT NULL AND platform IS NOT NULL
) WHERE rn = 1"""


def classified_touches_sql(has_mapping: bool) -> str:
    """Raw touches (`_at_raw`) with platform, channel and the matched ad campaign."""
    platform, channel = classify_sql(
        "r.click_platform",
        norm_sql("r.utm_source"),
        norm_sql("r.utm_medium"),
        norm_sql("r.lead_source"),
    )
    mp = (
        "_at_mapping"
        if has_mapping
        else (
            "(SELECT NULL::VARCHAR AS match, NULL::VARCHAR AS value, NULL::VARCHAR AS platform, "
            "NULL::VARCHAR AS campaign_id, NULL::VARCHAR AS channel, NULL::VARCHAR AS campaign_name "
            "WHERE false)"
        )
    )
    return f"""
WITH t AS (
    SELECT r.*, {platform} AS platform0, {channel} AS channel0,
           {norm_sql("r.utm_campaign")} AS n_utm, {norm_sql("r.crm_campaign_id")} AS n_cid,
           {norm_sql("r.crm_campaign_name")} AS n_cname, {norm_sql("r.promo_code")} AS n_promo,
           {norm_sql("r.lead_source")} AS n_lead
    FROM _at_raw r
), id_hits AS (  -- equi-joins only: an OR join is a nested loop over touches x campaigns
    SELECT t.touch_key, a.platform, a.campaign_id FROM t JOIN ad_campaign a ON a.norm_id = t.n_cid
    WHERE t.platform0 IS NULL OR t.platform0 = a.platform
    UNION
    SELECT t.touch_key, a.platform, a.campaign_id FROM t JOIN ad_campaign a ON a.norm_id = t.n_utm
    WHERE t.platform0 IS NULL OR t.platform0 = a.platform
), by_id AS (
    SELECT *, count(*) OVER (PARTITION BY touch_key) AS n FROM id_hits
), utm_hits AS (
    SELECT t.touch_key, a.platform, a.campaign_id FROM t JOIN ad_campaign a ON a.norm_name = t.n_utm
    WHERE t.platform0 IS NULL OR t.platform0 = a.platform
    UNION
    SELECT t.touch_key, a.platform, a.campaign_id FROM t JOIN ad_campaign a ON a.norm_name = t.n_cname
    WHERE t.platform0 IS NULL OR t.platform0 = a.platform
), by_utm AS (
    SELECT *, count(*) OVER (PARTITION BY touch_key) AS n FROM utm_hits
), by_map AS (
    SELECT t.touch_key, m.platform, m.campaign_id, m.channel, m.campaign_name,
           count(*) OVER (PARTITION BY t.touch_key) AS n
    FROM t JOIN {mp} m ON
         (m.match = 'utm_campaign' AND m.value = t.n_utm)
      OR (m.match = 'crm_campaign_id' AND m.value = t.n_cid)
      OR (m.match = 'crm_campaign_name' AND m.value = t.n_cname)
      OR (m.match = 'promo_code' AND m.value = t.n_promo)
      OR (m.match = 'lead_source' AND m.value = t.n_lead AND t.touch_type IN ('lead_source', 'latest_source'))
), pick AS (
    SELECT t.touch_key,
           CASE WHEN i.n = 1 THEN 'id' WHEN u.n = 1 THEN 'utm' WHEN m.n = 1 THEN 'mapping'
                WHEN coalesce(i.n, u.n, m.n) > 1 THEN 'ambiguous' ELSE 'none' END AS match_method,
           CASE WHEN i.n = 1 THEN i.platform WHEN u.n = 1 THEN u.platform
                WHEN m.n = 1 THEN nullif(lower(trim(m.platform)), '') END AS m_platform,
           CASE WHEN i.n = 1 THEN i.campaign_id WHEN u.n = 1 THEN u.campaign_id
                WHEN m.n = 1 THEN nullif(trim(m.campaign_id), '') END AS m_campaign_id,
           CASE WHEN i.n IS NULL AND u.n IS NULL AND m.n = 1 THEN nullif(trim(m.channel), '') END AS m_channel,
           CASE WHEN i.n IS NULL AND u.n IS NULL AND m.n = 1 THEN nullif(trim(m.campaign_name), '') END AS m_campaign_name
    FROM t
    LEFT JOIN (SELECT DISTINCT ON (touch_key) * FROM by_id ORDER BY touch_key, platform, campaign_id) i
           ON i.touch_key = t.touch_key
    LEFT JOIN (SELECT DISTINCT ON (touch_key) * FROM by_utm ORDER BY touch_key, platform, campaign_id) u
           ON u.touch_key = t.touch_key
    LEFT JOIN (SELECT DISTINCT ON (touch_key) * FROM by_map ORDER BY touch_key, platform, campaign_id) m
           ON m.touch_key = t.touch_key
)
SELECT t.* EXCLUDE (platform0, channel0),
       p.match_method,
       coalesce(p.m_platform, t.platform0) AS platform,
       p.m_campaign_id AS campaign_id,
       coalesce(a.campaign_name, p.m_campaign_name, t.crm_campaign_name, t.utm_campaign,
                t.crm_campaign_id, CASE WHEN t.touch_type = 'promo_code' THEN t.promo_code END)
           AS campaign_name,
       coalesce({platform_channel_sql("coalesce(p.m_platform, t.platform0)")}, p.m_channel,
                t.channel0, CASE WHEN t.touch_type = 'promo_code' THEN 'promo' END,
                'other') AS channel
FROM t JOIN pick p USING (touch_key)
LEFT JOIN ad_campaign a ON a.platform = p.m_platform AND a.campaign_id = p.m_campaign_id"""


def touchpoint_sql(promo_mode: str) -> str:
    """The published touchpoint table from `_at_class`: eligibility (promo codes by mode,
    duplicates of the same touch within an entity) and a stable id."""
    promo_ok = {
        "all": "true",
        "none": "false",
        "mapped": "match_method IN ('id', 'utm', 'mapping')",
    }[promo_mode]
    same = (
        "entity_id, channel, platform, campaign_id, campaign_name, utm_source, utm_medium, "
        "utm_campaign, utm_term, utm_content, click_id, lead_source, promo_code, crm_campaign_id"
    )
    return f"""
WITH c0 AS (
    SELECT *, 'T:' || substr(sha256(concat_ws('|', source_system, source_name, source_id,
                                              touch_type, CAST(touch_at AS VARCHAR))), 1, 16)
              AS touchpoint_id,
           CASE WHEN touch_type = 'promo_code' AND NOT ({promo_ok}) THEN 'promo-code-unmapped' END
              AS why_not
    FROM _at_class
), c AS (
    -- one record exported twice (overlapping batch exports) is one touch, not two: keep the
    -- first copy (dedup records the other as a duplicate)
    SELECT * FROM c0
    QUALIFY row_number() OVER (PARTITION BY touchpoint_id
                               ORDER BY source_file NULLS LAST, source_row NULLS LAST) = 1
), d AS (
    SELECT *, first_value(touchpoint_id) OVER (PARTITION BY {same}
                  ORDER BY touch_at, source_name, source_file NULLS LAST, source_row NULLS LAST,
                           touchpoint_id) AS first_id
    FROM c WHERE why_not IS NULL
)
SELECT c.touchpoint_id, c.entity_id, c.touch_at, c.touch_type, c.channel, c.platform,
       c.campaign_id, c.campaign_name, c.match_method, c.channel = 'direct' AS is_direct,
       c.utm_source, c.utm_medium, c.utm_campaign, c.utm_term, c.utm_content, c.click_id,
       c.click_platform AS click_id_platform, c.lead_source, c.crm_campaign_id,
       c.crm_campaign_name, c.promo_code,
       coalesce(c.why_not, CASE WHEN d.first_id <> c.touchpoint_id THEN 'duplicate-of:' || d.first_id END)
           AS ineligible_reason,
       coalesce(c.why_not, CASE WHEN d.first_id <> c.touchpoint_id THEN 'x' END) IS NULL AS eligible,
       c.source_name, c.source_system, c.source_id, c.source_file, c.source_row
FROM c LEFT JOIN d USING (touchpoint_id)
ORDER BY c.entity_id, c.touch_at, c.touchpoint_id"""


def conversions_sql(basis: str) -> str:
    """One row per converting golden entity. recognized: the first paid invoice day over all the
    entity's billing customers (is_paying), else the first day with recognized revenue (not a new
    paying customer); closed_won: the first closed-won deal's close date."""
    from romirecon.stages.reconcile import vendor_sql

    if basis == "closed_won":
        vd = vendor_sql("d")
        return f"""
SELECT entity_id AS conversion_id, entity_id, min(close_date) AS converted_on, true AS is_paying,
       arg_min(source_id, (close_date, source_id)) AS first_customer_id,
       CAST(NULL AS VARCHAR) AS first_invoice_id, CAST(NULL AS VARCHAR) AS coupon
FROM (SELECT d.*, {_entity_expr("el", vd, "d.contact_id")} AS entity_id
      FROM stg_deal d {_entity_join("el", vd, "d.contact_id")} WHERE d.is_won IS true AND d.is_deleted IS DISTINCT FROM true
      AND d.close_date IS NOT NULL AND d.contact_id IS NOT NULL)
GROUP BY entity_id"""
    cv = "lower(coalesce(nullif(trim(c.source_vendor), ''), 'billing'))"
    rv = vendor_sql("r")
    return f"""
WITH paid AS (
    SELECT {_entity_expr("el", cv, "c.customer_id")} AS entity_id, c.customer_id,
           c.first_paid_date AS day, c.first_paid_invoice_id AS invoice_id, c.coupon
    FROM conversion c {_entity_join("el", cv, "c.customer_id")} WHERE c.first_paid_date IS NOT NULL
), rev AS (
    -- first day with revenue per billing customer, then its entity (one lookup per customer):
    -- an item's first day has a positive amount exactly when its total is positive (the
    -- largest-remainder spread puts the leftover units on the earliest days)
    SELECT {_entity_expr("el", "r.vendor", "r.customer_id")} AS entity_id, r.customer_id,
           min(r.day) AS day
    FROM (SELECT {rv} AS vendor, r.customer_id, min(r.start_day) AS day
          FROM revenue_item r WHERE r.total > 0 AND r.end_day > r.start_day GROUP BY ALL) r
    {_entity_join("el", "r.vendor", "r.customer_id")}
    GROUP BY ALL
), p AS (
    SELECT entity_id, min(day) AS converted_on,
           arg_min(customer_id, (day, customer_id)) AS first_customer_id,
           arg_min(invoice_id, (day, customer_id)) AS first_invoice_id,
           arg_min(coupon, (day, customer_id)) AS coupon
    FROM paid GROUP BY entity_id
)
SELECT entity_id AS conversion_id, entity_id, converted_on, true AS is_paying, first_customer_id,
       first_invoice_id, coupon FROM p
UNION ALL
SELECT entity_id, entity_id, min(day), false, arg_min(customer_id, (day, customer_id)), NULL, NULL
FROM rev WHERE entity_id NOT IN (SELECT entity_id FROM p) GROUP BY entity_id"""


def weights_sql(models: tuple[str, ...], lookback_days: int, half_life: Decimal) -> str:
    """conversion x eligible touch x model with an integer weight (touches inside the lookback
    window: from `lookback_days` before the conversion day to the end of that day)."""
    decay = (
        f"greatest(1, CAST(round(pow(2.0, -CAST(age_days AS DOUBLE) / {float(half_life)!r})"
        f" * {DECAY_SCALE}) AS BIGINT))"
    )
    w = {
        "first_touch": "CASE WHEN pos = 1 THEN 1 ELSE 0 END",
        "last_touch": "CASE WHEN pos = n THEN 1 ELSE 0 END",
        "last_non_direct": (
            "CASE WHEN (n_non_direct > 0 AND nd_rank = 1 AND NOT is_direct) "
            "OR (n_non_direct = 0 AND pos = n) THEN 1 ELSE 0 END"
        ),
        "linear": "1",
        "time_decay": decay,
        "position_based": (
            "CASE WHEN n <= 2 THEN 1 WHEN pos = 1 OR pos = n THEN 2 * (n - 2) ELSE 1 END"
        ),
    }
    model_rows = " UNION ALL ".join(
        f"SELECT {literal(m)} AS model, {i} AS model_order" for i, m in enumerate(models)
    )
    cases = " ".join(f"WHEN {literal(m)} THEN {w[m]}" for m in models)
    return f"""
WITH win AS (
    SELECT c.conversion_id, c.entity_id, c.converted_on, t.touchpoint_id, t.touch_at, t.is_direct,
           date_diff('day', CAST(t.touch_at AS DATE), c.converted_on) AS age_days
    FROM attribution_conversion c JOIN touchpoint t
      ON t.entity_id = c.entity_id AND t.eligible
     AND t.touch_at < CAST(c.converted_on AS TIMESTAMP) + INTERVAL 1 DAY
     AND t.touch_at >= CAST(c.converted_on AS TIMESTAMP) - INTERVAL (CAST($lookback AS INTEGER)) DAY
), ord AS (
    SELECT *, row_number() OVER (PARTITION BY conversion_id ORDER BY touch_at, touchpoint_id) AS pos,
           count(*) OVER (PARTITION BY conversion_id) AS n,
           count(*) FILTER (WHERE NOT is_direct) OVER (PARTITION BY conversion_id) AS n_non_direct,
           row_number() OVER (PARTITION BY conversion_id, is_direct
                              ORDER BY touch_at DESC, touchpoint_id DESC) AS nd_rank
    FROM win
)
SELECT o.*, m.model, m.model_order, CAST(CASE m.model {cases} END AS HUGEINT) AS weight
FROM ord o CROSS JOIN ({model_rows}) m"""


def credits_sql() -> str:
    """Largest-remainder split of CREDIT_UNITS over the weights of each (conversion, model):
    floor(U*w/W) each, the units left over one each to the largest remainders (ties: the later
    touch). Exact HUGEINT arithmetic; credit = units / 10^10 as DECIMAL(38,10)."""
    u = CREDIT_UNITS
    return f"""
WITH w AS (
    SELECT *, sum(weight) OVER (PARTITION BY conversion_id, model) AS wsum FROM _at_weight
    WHERE weight > 0
), f AS (
    SELECT *, ({u} * weight) // wsum AS fl, ({u} * weight) % wsum AS rem FROM w
), r AS (
    SELECT *, {u} - sum(fl) OVER (PARTITION BY conversion_id, model) AS lft,
           row_number() OVER (PARTITION BY conversion_id, model
                              ORDER BY rem DESC, pos DESC) AS rk
    FROM f
)
SELECT conversion_id, entity_id, converted_on, model, model_order, touchpoint_id, touch_at, pos,
       n AS touches, CAST(weight AS BIGINT) AS weight,
       CAST(fl + CASE WHEN rk <= lft THEN 1 ELSE 0 END AS BIGINT) AS credit_units
FROM r"""


def credit_table_sql(models: tuple[str, ...]) -> str:
    """attribution_credit: the split credits, plus one `unattributed` credit of 1 per model for a
    conversion with no touch in its window."""
    model_rows = " UNION ALL ".join(
        f"SELECT {literal(m)} AS model, {i} AS model_order" for i, m in enumerate(models)
    )
    return f"""
SELECT k.conversion_id, k.entity_id, k.converted_on, k.model, k.touchpoint_id, k.touch_at,
       k.pos AS position, k.touches, k.weight,
       CAST(CAST(k.credit_units AS DECIMAL(38,0)) * CAST(0.0000000001 AS DECIMAL(11,10)) AS DECIMAL(38,10)) AS credit,
       t.channel, t.platform, t.campaign_id, t.campaign_name, k.model_order
FROM _at_credit k JOIN touchpoint t USING (touchpoint_id)
UNION ALL
SELECT c.conversion_id, c.entity_id, c.converted_on, m.model, NULL, NULL, 0, 0, 1,
       CAST(1 AS DECIMAL(38,10)), 'unattributed', NULL, NULL, NULL, m.model_order
FROM attribution_conversion c CROSS JOIN ({model_rows}) m
WHERE NOT EXISTS (SELECT 1 FROM _at_credit k WHERE k.conversion_id = c.conversion_id)"""


# the published order of attribution_credit (total: one position per conversion x model, and
# the one unattributed row of a conversion without touches has position 0)
CREDIT_ORDER = "conversion_id, model_order, position, touchpoint_id NULLS FIRST"


def attribution_credit_output_query() -> str:
    """The SELECT the publisher writes to attribution_credit.parquet / .csv: a plain scan, because
    `run` creates the table from one sorted stream (`CREATE TABLE ... ORDER BY CREDIT_ORDER`) and
    the connection keeps insertion order; sorting it again before publishing redid that sort."""
    return "SELECT * EXCLUDE (model_order) FROM attribution_credit"


# ---------------------------------------------------------------------------------------------
# steps


def ensure_billing_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Empty `conversion` / `revenue_item` / `revenue_fx_day` / `revenue_daily` when the billing
    stage did not run, with the columns this stage and romi read."""
    if not _table_exists(con, "conversion"):
        _exec(
            con,
            "CREATE TEMP TABLE conversion (source_vendor VARCHAR, customer_id VARCHAR, "
            "entity_id VARCHAR, first_paid_invoice_id VARCHAR, first_paid_date DATE, "
            "coupon VARCHAR)",
        )
    if not _table_exists(con, "revenue_daily"):
        _exec(
            con,
            "CREATE TEMP TABLE revenue_daily (item_id VARCHAR, kind VARCHAR, event_id VARCHAR, "
            "adjustment_id VARCHAR, source_name VARCHAR, source_vendor VARCHAR, "
            "customer_id VARCHAR, entity_id VARCHAR, currency VARCHAR, exponent INTEGER, "
            "day DATE, amount_minor BIGINT, fx_rate DECIMAL(38,10), "
            "amount_reporting DECIMAL(38,10))",
        )
    if not _table_exists(con, "revenue_item"):
        _exec(
            con,
            "CREATE TEMP TABLE revenue_item (item_no BIGINT, item_id VARCHAR, kind VARCHAR, "
            "event_id VARCHAR, adjustment_id VARCHAR, source_name VARCHAR, "
            "source_vendor VARCHAR, customer_id VARCHAR, entity_id VARCHAR, currency VARCHAR, "
            "exponent INTEGER, total BIGINT, start_day DATE, end_day DATE)",
        )
    if not _table_exists(con, "revenue_fx_day"):
        _exec(
            con,
            "CREATE TEMP TABLE revenue_fx_day (currency VARCHAR, day DATE, "
            "fx_rate DECIMAL(38,10), fx_rate_date DATE, fx_method VARCHAR, last_published DATE)",
        )


def load_mapping(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Read the campaign mapping CSV into `_at_mapping` (values normalized); a bad file is a
    ConfigError naming the file and the problem."""
    try:
        _exec(
            con,
            "CREATE OR REPLACE TEMP TABLE _at_mapping_raw AS SELECT * FROM read_csv("
            f"{literal(str(path))}, header = true, all_varchar = true)",
        )
    except duckdb.Error as e:
        raise InputError(f"{path}: cannot read the campaign mapping: {e}") from None
    cols = {r[0] for r in con.execute("DESCRIBE _at_mapping_raw").fetchall()}
    missing = {"match", "value"} - cols
    if missing:
        raise ConfigError(
            f"{path}: campaign mapping needs columns match, value (missing: {', '.join(sorted(missing))})"
        )
    opt = {
        c: (ident(c) if c in cols else "NULL")
        for c in ("platform", "campaign_id", "channel", "campaign_name")
    }
    bad = con.execute(
        "SELECT DISTINCT match FROM _at_mapping_raw WHERE lower(trim(match)) NOT IN "
        f"({', '.join(literal(k) for k in MAPPING_KINDS)}) OR match IS NULL ORDER BY 1 LIMIT 5"
    ).fetchall()
    if bad:
        raise ConfigError(f"{path}: match {bad[0][0]!r} is not one of: {', '.join(MAPPING_KINDS)}")
    _exec(
        con,
        f"""CREATE OR REPLACE TEMP TABLE _at_mapping AS
SELECT DISTINCT lower(trim(match)) AS match, {norm_sql("value")} AS value,
       CAST({opt["platform"]} AS VARCHAR) AS platform, CAST({opt["campaign_id"]} AS VARCHAR) AS campaign_id,
       CAST({opt["channel"]} AS VARCHAR) AS channel, CAST({opt["campaign_name"]} AS VARCHAR) AS campaign_name
FROM _at_mapping_raw WHERE {norm_sql("value")} IS NOT NULL""",
    )
    _exec(con, "DROP TABLE _at_mapping_raw")


def run(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    settings: Mapping[str, Any] | None = None,
    *,
    base_dir: Path | None = None,
) -> None:
    """Build `ad_campaign`, `touchpoint`, `attribution_conversion` and `attribution_credit`
    (plus `finding`/`metric` rows of stage 'attribution')."""
    from romirecon.stages.common import ensure_common_tables, ensure_entity_views
    from romirecon.stages.reconcile import build_entity_link, entity_link_built

    st = parse_settings(settings, base_dir)
    ensure_common_tables(con)
    ensure_entity_views(con)
    ensure_billing_tables(con)
    _exec(con, "DELETE FROM metric WHERE run_id = ? AND stage = ?", [run_id, STAGE])
    _exec(con, "DELETE FROM finding WHERE run_id = ? AND stage = ?", [run_id, STAGE])
    if not entity_link_built(con, run_id):
        # always this run's links (a state database keeps last night's), built once per run:
        # the reconcile stage of this run already did when it ran on this connection
        build_entity_link(con, run_id)
    _exec(
        con,
        f"CREATE OR REPLACE TEMP TABLE ad_campaign AS {ad_campaigns_sql()} ORDER BY platform, campaign_id",
    )
    _exec(
        con,
        f"CREATE OR REPLACE TEMP TABLE attribution_conversion AS {conversions_sql(st.revenue_basis)} "
        "ORDER BY conversion_id",
    )
    has_mapping = st.campaign_mapping is not None
    if st.campaign_mapping is not None:
        load_mapping(con, st.campaign_mapping)
    _exec(con, f"CREATE OR REPLACE TEMP TABLE _at_raw AS {raw_touches_sql()}")
    _exec(
        con,
        f"CREATE OR REPLACE TEMP TABLE _at_class AS {classified_touches_sql(has_mapping)}",
    )
    _exec(con, f"CREATE OR REPLACE TEMP TABLE touchpoint AS {touchpoint_sql(st.promo_codes)}")
    _exec(
        con,
        "CREATE OR REPLACE TEMP TABLE _at_weight AS "
        + weights_sql(st.models, st.lookback_days, st.half_life_days),
        {"lookback": st.lookback_days},
    )
    _exec(con, f"CREATE OR REPLACE TEMP TABLE _at_credit AS {credits_sql()}")
    _exec(
        con,
        f"CREATE OR REPLACE TEMP TABLE attribution_credit AS {credit_table_sql(st.models)} "
        f"ORDER BY {CREDIT_ORDER}",
    )
    _findings_and_metrics(con, run_id)
    for t in ("_at_raw", "_at_class", "_at_weight", "_at_credit", "_at_mapping"):
        _exec(con, f"DROP TABLE IF EXISTS {ident(t)}")


def _findings_and_metrics(con: duckdb.DuckDBPyConnection, run_id: str) -> None:
    _exec(
        con,
        f"""INSERT INTO finding
SELECT ?, '{STAGE}', 'campaign-ambiguous', 'warn', source_name, 'touchpoint', touchpoint_id,
       coalesce(utm_campaign, crm_campaign_id, crm_campaign_name),
       'campaign ' || coalesce(utm_campaign, crm_campaign_id, crm_campaign_name)
           || ' matches more than one ad campaign: add it to the campaign mapping table', NULL
FROM touchpoint WHERE match_method = 'ambiguous' ORDER BY touchpoint_id""",
        [run_id],
    )
    _exec(
        con,
        f"""INSERT INTO finding
SELECT ?, '{STAGE}', 'campaign-unmatched', 'info', any_value(source_name), 'touchpoint',
       any_value(touchpoint_id), label,
       count(*) || ' ' || platform || ' touches name campaign ' || label
           || ' which matches no ' || platform || ' campaign by id or name: add it to the '
           || 'campaign mapping table', NULL
FROM (SELECT *, coalesce(utm_campaign, crm_campaign_id, crm_campaign_name) AS label
      FROM touchpoint WHERE eligible AND platform IS NOT NULL AND campaign_id IS NULL
        AND match_method = 'none')
WHERE label IS NOT NULL
GROUP BY platform, label ORDER BY platform, label""",
        [run_id],
    )
    _exec(
        con,
        f"""INSERT INTO finding
SELECT ?, '{STAGE}', 'promo-code-unmapped', 'info', NULL, 'touchpoint', min(touchpoint_id),
       promo_code, 'promo code ' || promo_code || ' is in no campaign mapping: not a touch ('
           || count(*) || ' conversions)', NULL
FROM touchpoint WHERE ineligible_reason = 'promo-code-unmapped' GROUP BY promo_code
ORDER BY promo_code""",
        [run_id],
    )
    _exec(
        con,
        f"""INSERT INTO metric
SELECT ?, '{STAGE}', NULL, 'touchpoint', name, value, num, den, unit FROM (
    SELECT 'touchpoint' AS name, CAST(count(*) FILTER (WHERE eligible) AS DOUBLE) AS value,
           NULL::DOUBLE AS num, NULL::DOUBLE AS den, 'touches' AS unit, 1 AS o FROM touchpoint
    UNION ALL
    SELECT 'campaign_match_rate', CASE WHEN count(*) = 0 THEN 0 ELSE
               count(*) FILTER (WHERE campaign_id IS NOT NULL) / count(*) END,
           count(*) FILTER (WHERE campaign_id IS NOT NULL), count(*), 'ratio', 2
    FROM touchpoint WHERE eligible AND platform IS NOT NULL
    UNION ALL
    SELECT 'unattributed_conversion_rate',
           CASE WHEN (SELECT count(*) FROM attribution_conversion) = 0 THEN 0 ELSE
               count(DISTINCT conversion_id) / (SELECT count(*) FROM attribution_conversion) END,
           count(DISTINCT conversion_id), (SELECT count(*) FROM attribution_conversion), 'ratio', 3
    FROM attribution_credit WHERE channel = 'unattributed'
) ORDER BY o""",
        [run_id],
    )
