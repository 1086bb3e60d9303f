"""Attribution and ROMI rules one at a time: channel classification, the lead-source rule,
promo codes and the mapping table, unattributed conversions, period grains, closed-won basis,
contribution margin, missing FX, determinism, and the exact-sum property of credits."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from romirecon.exitcodes import ConfigError
from romirecon.stages import attribution, romi
from tests.test_attribution_cases import run_case


def one_invoice(cus: str, day: str, cents: int, days: int = 1, **kw: Any) -> dict[str, Any]:
    """A paid USD invoice with one line over `days` days from `day` (rows for a case)."""
    end = dt.datetime.fromisoformat(day) + dt.timedelta(days=days)
    return {
        "invoice": [
            {"source_id": f"in_{cus}", "customer_id": cus, "status": "paid", "currency": "usd",
             "subtotal": cents, "discount": 0, "tax": 0, "total": cents, "amount_paid": cents,
             "created_at": f"{day} 09:00:00", **kw}
        ],
        "invoice_line": [
            {"source_id": f"il_{cus}", "invoice_id": f"in_{cus}", "currency": "usd",
             "amount": cents, "discount": 0, "proration": False,
             "period_start": f"{day} 00:00:00",
             "period_end": end, "line_type": "subscription"}
        ],
    }  # fmt: skip


def merge(*parts: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for p in parts:
        for k, v in p.items():
            out.setdefault(k, []).extend(v)
    return out


GOOGLE_SPEND = {
    "ad_spend": [
        {"platform": "google_ads", "account_id": "1", "campaign_id": "111",
         "campaign_name": "Brand Search US", "date": "2024-02-05", "currency": "USD",
         "spend": 10000},
    ]
}  # fmt: skip


def credits(con: duckdb.DuckDBPyConnection, model: str = "last_touch") -> list[tuple[Any, ...]]:
    return con.execute(
        "SELECT c.first_customer_id, k.channel, k.platform, k.campaign_id, k.credit "
        "FROM attribution_credit k JOIN attribution_conversion c USING (conversion_id) "
        "WHERE k.model = ? ORDER BY 1, k.position",
        [model],
    ).fetchall()


@pytest.mark.parametrize(
    ("fields", "platform", "channel"),
    [
        ({"gclid": "Cj0"}, "google_ads", "paid_search"),
        ({"msclkid": "m1", "utm_source": "google"}, "microsoft_ads", "paid_search"),
        ({"li_fat_id": "x"}, "linkedin_ads", "paid_social"),
        ({"utm_source": "Facebook", "utm_medium": "paid_social"}, "meta_ads", "paid_social"),
        ({"utm_source": "google", "utm_medium": "organic"}, None, "organic_search"),
        ({"utm_source": "linkedin", "utm_medium": "social"}, None, "organic_social"),
        ({"utm_source": "newsletter", "utm_medium": "email"}, None, "email"),
        ({"utm_source": "partner_site", "utm_medium": "referral"}, None, "referral"),
        ({"utm_source": "someblog"}, None, "referral"),
        ({"lead_source": "Trade Show"}, None, "event"),
        ({"lead_source": "DIRECT_TRAFFIC"}, None, "direct"),
        ({"lead_source": "Web"}, None, "direct"),
        ({"lead_source": "PAID_SOCIAL"}, None, "paid_social"),
        ({"lead_source": "Carrier pigeon"}, None, "other"),
    ],
)
def test_channel_classification(fields: dict[str, str], platform: str | None, channel: str) -> None:
    case = {
        "input": merge(
            {"contact": [{"source_id": "L", "created_at": "2024-02-01 10:00:00",
                          "external_ref": "cus_1", **fields}]},
            one_invoice("cus_1", "2024-02-02", 1000),
        )
    }  # fmt: skip
    con = run_case(case)
    assert credits(con) == [("cus_1", channel, platform, None, Decimal(1))]


def test_later_duplicate_with_other_lead_source_is_not_a_touch() -> None:
    # The lead L1 arrived from Google Ads; a duplicate typed in by hand 10 days later says
    # "Trade Show" and has no UTM fields. Lead source is the person's original source: only the
    # earliest record's counts, so last touch stays with the ad campaign.
    case = {
        "input": merge(
            {
                "contact": [
                    {"source_id": "L1", "created_at": "2024-02-01 10:00:00", "utm_source": "google",
                     "utm_medium": "cpc", "utm_campaign": "brand search us", "lead_source": "Advertisement"},
                    {"source_id": "L1m", "created_at": "2024-02-11 10:00:00", "lead_source": "Trade Show"},
                    {"source_id": "C1", "created_at": "2024-02-12 10:00:00", "lead_source": "Advertisement",
                     "external_ref": "cus_1"},
                ],
                "entity_xref": [{"source_id": s, "golden_id": "g"} for s in ("L1", "L1m", "C1")],
            },
            one_invoice("cus_1", "2024-02-15", 1000),
            GOOGLE_SPEND,
        )
    }  # fmt: skip
    con = run_case(case)
    assert credits(con) == [("cus_1", "paid_search", "google_ads", "111", Decimal(1))]
    n = con.execute("SELECT count(*) FROM touchpoint WHERE touch_type = 'lead_source'").fetchone()
    assert n == (0,)


def test_unattributed_conversion_keeps_its_revenue() -> None:
    case = {"input": merge(one_invoice("cus_9", "2024-02-01", 5000), GOOGLE_SPEND)}
    con = run_case(case)
    for m in attribution.MODELS:
        assert credits(con, m) == [("cus_9", "unattributed", None, None, Decimal(1))]
    rows = con.execute(
        "SELECT model, channel, revenue, new_customers FROM romi WHERE channel = 'unattributed' "
        "ORDER BY model"
    ).fetchall()
    assert {r[0] for r in rows} == set(attribution.MODELS)
    assert {(r[1], r[2], r[3]) for r in rows} == {("unattributed", Decimal("50.00"), Decimal(1))}


def test_revenue_of_no_customer_is_kept_unattributed() -> None:
    # a $5.00 refund billing cannot tie to any invoice or customer (booked on its own date) still
    # belongs in every model's total: one unattributed row per model, and a finding
    case = {
        "input": merge(
            {"contact": [{"source_id": "L", "created_at": "2024-02-01 10:00:00",
                          "gclid": "g1", "external_ref": "cus_1"}]},
            one_invoice("cus_1", "2024-02-02", 1000),
            {"refund": [{"source_id": "re_1", "amount": 500, "currency": "usd",
                         "status": "succeeded", "created_at": "2024-02-03 10:00:00"}]},
        )
    }  # fmt: skip
    con = run_case(case)
    rows = con.execute(
        "SELECT model, channel, revenue, new_customers FROM romi ORDER BY model, channel"
    ).fetchall()
    assert rows == [
        (m, ch, rev, n)
        for m in sorted(attribution.MODELS)
        for ch, rev, n in (
            ("paid_search", Decimal("10.00"), Decimal(1)),
            ("unattributed", Decimal("-5.00"), Decimal(0)),
        )
    ]
    codes = con.execute("SELECT code FROM finding WHERE stage = 'romi'").fetchall()
    assert ("revenue-unattributable",) in codes


def test_promo_codes_and_mapping_table(tmp_path: Path) -> None:
    # SPRING25 is mapped to the Google campaign; PARTNER10 is not. Each customer's only CRM touch
    # is an organic visit the day before; the promo code is redeemed on the conversion day.
    mapping = tmp_path / "campaign_map.csv"
    mapping.write_text(
        "match,value,platform,campaign_id,channel,campaign_name\n"
        "promo_code,spring25,google_ads,111,,\n"
        "utm_campaign,Summer Webinar,,,event,Summer webinar\n"
    )
    case = {
        "input": merge(
            {
                "contact": [
                    {"source_id": "A", "created_at": "2024-02-01 10:00:00", "utm_source": "google",
                     "utm_medium": "organic", "external_ref": "cus_A"},
                    {"source_id": "B", "created_at": "2024-02-01 10:00:00", "utm_source": "google",
                     "utm_medium": "organic", "external_ref": "cus_B"},
                    {"source_id": "W", "created_at": "2024-02-01 10:00:00", "utm_source": "hubspot",
                     "utm_medium": "webinar", "utm_campaign": "summer-webinar", "external_ref": "cus_W"},
                ]
            },
            one_invoice("cus_A", "2024-02-02", 1000, coupon="SPRING25"),
            one_invoice("cus_B", "2024-02-02", 1000, coupon="PARTNER10"),
            one_invoice("cus_W", "2024-02-02", 1000),
            GOOGLE_SPEND,
        ),
        "settings": {"campaign_mapping": str(mapping), "models": ["last_touch", "first_touch"]},
    }  # fmt: skip
    con = run_case(case)
    assert credits(con) == [
        ("cus_A", "paid_search", "google_ads", "111", Decimal(1)),  # mapped promo code, last
        ("cus_B", "organic_search", None, None, Decimal(1)),  # unmapped code: not a touch
        ("cus_W", "event", None, None, Decimal(1)),  # mapping table sets the channel
    ]
    assert credits(con, "first_touch")[0][1] == "organic_search"
    f = con.execute(
        "SELECT code, other_id FROM finding WHERE stage = 'attribution' ORDER BY code"
    ).fetchall()
    assert f == [("promo-code-unmapped", "PARTNER10")]
    # with promo_codes: none, cus_A's last touch is the organic visit
    case["settings"]["promo_codes"] = "none"
    con = run_case(case)
    assert credits(con)[0][1] == "organic_search"


def test_campaign_members_deal_campaign_and_crm_campaign_mapping(tmp_path: Path) -> None:
    # Salesforce campaign 701A (a webinar) is mapped to channel "event"; campaign 701G is the
    # Salesforce mirror of Google Ads campaign 111. Contact C responded to 701A on 02-01 (a
    # member that did not respond to 701X is no touch), and its deal names 701G as primary
    # campaign, created 02-03. Conversion 02-05: first touch = webinar, last = Google 111.
    mapping = tmp_path / "map.csv"
    mapping.write_text(
        "match,value,platform,campaign_id,channel\n"
        "crm_campaign_id,701A,,,event\n"
        "crm_campaign_id,701G,google_ads,111,\n"
    )
    case = {
        "input": merge(
            {
                "contact": [{"source_id": "C", "created_at": "2024-01-20 10:00:00",
                             "external_ref": "cus_1"}],
                "campaign_member": [
                    {"source_id": "m1", "campaign_id": "701A", "contact_id": "C",
                     "has_responded": True, "responded_at": "2024-02-01 00:00:00",
                     "created_at": "2024-01-25 00:00:00"},
                    {"source_id": "m2", "campaign_id": "701X", "contact_id": "C",
                     "has_responded": False, "created_at": "2024-01-26 00:00:00"},
                ],
                "deal": [{"source_id": "D", "contact_id": "C", "campaign_id": "701G",
                          "created_at": "2024-02-03 00:00:00", "is_won": True,
                          "close_date": "2024-02-04"}],
            },
            one_invoice("cus_1", "2024-02-05", 1000),
            GOOGLE_SPEND,
        ),
        "settings": {"campaign_mapping": str(mapping)},
    }  # fmt: skip
    con = run_case(case)
    assert credits(con, "first_touch") == [("cus_1", "event", None, None, Decimal(1))]
    assert credits(con, "last_touch") == [("cus_1", "paid_search", "google_ads", "111", Decimal(1))]
    types = con.execute("SELECT touch_type, source_id FROM touchpoint ORDER BY touch_at").fetchall()
    assert types == [("campaign_member", "m1"), ("deal_campaign", "D")]


def test_ambiguous_campaign_name_is_left_unmatched() -> None:
    case = {
        "input": merge(
            {
                "contact": [{"source_id": "A", "created_at": "2024-02-01 10:00:00",
                             "utm_campaign": "brand", "external_ref": "cus_A"}],
                "ad_spend": [
                    {"platform": "google_ads", "account_id": "1", "campaign_id": "1",
                     "campaign_name": "Brand", "date": "2024-02-01", "currency": "USD", "spend": 1},
                    {"platform": "meta_ads", "account_id": "2", "campaign_id": "2",
                     "campaign_name": "BRAND", "date": "2024-02-01", "currency": "USD", "spend": 1},
                ],
            },
            one_invoice("cus_A", "2024-02-02", 1000),
        )
    }  # fmt: skip
    con = run_case(case)
    assert con.execute("SELECT match_method, campaign_id FROM touchpoint").fetchall() == [
        ("ambiguous", None)
    ]
    codes = con.execute("SELECT code FROM finding WHERE stage = 'attribution'").fetchall()
    assert codes == [("campaign-ambiguous",)]


def _two_month_case(**settings_: Any) -> dict[str, Any]:
    # USD 62.00 over [2024-01-30, 2024-02-03) = 4 days of 15.50: Jan 30, 31 | Feb 1, 2
    return {
        "input": merge(
            {"contact": [{"source_id": "A", "created_at": "2024-01-29 10:00:00",
                          "utm_campaign": "111", "utm_source": "google", "external_ref": "cus_A"}]},
            one_invoice("cus_A", "2024-01-30", 6200, days=4),
            GOOGLE_SPEND,
        ),
        "settings": {"models": ["last_touch"], **settings_},
    }  # fmt: skip


def test_period_grains() -> None:
    def rows(con: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
        return con.execute(
            f"SELECT period, spend, revenue, new_customers FROM ({romi.romi_output_query()})"
        ).fetchall()

    month = rows(run_case(_two_month_case()))
    assert [(str(p), s, r, n) for p, s, r, n in month] == [
        ("2024-01-01", Decimal("0.00"), Decimal("31.00"), Decimal(1)),
        ("2024-02-01", Decimal("100.00"), Decimal("31.00"), Decimal(0)),
    ]
    # ISO weeks start on Monday: 2024-01-29 holds Jan 30 - Feb 2; spend day Feb 5 is a Monday
    week = rows(run_case(_two_month_case(period="week")))
    assert [(str(p), s, r) for p, s, r, _ in week] == [
        ("2024-01-29", Decimal("0.00"), Decimal("62.00")),
        ("2024-02-05", Decimal("100.00"), Decimal("0.00")),
    ]
    day = rows(run_case(_two_month_case(period="day")))
    assert [str(p) for p, *_ in day] == [
        "2024-01-30", "2024-01-31", "2024-02-01", "2024-02-02", "2024-02-05",
    ]  # fmt: skip


def test_contribution_margin_and_label() -> None:
    con = run_case(_two_month_case(contribution_margin=0.5))
    rows = con.execute("SELECT DISTINCT romi_label, contribution_margin FROM romi").fetchall()
    assert rows == [("contribution_romi", Decimal("0.5"))]
    con = run_case(_two_month_case())
    rows = con.execute("SELECT DISTINCT romi_label, contribution_margin FROM romi").fetchall()
    assert rows == [("revenue_romi", Decimal(1))]


def test_contribution_margin_romi_value() -> None:
    # spend and revenue in one month: revenue 31.00 (Feb 1, 2 of the line), spend 100.00;
    # margin 0.5: ROMI = (31 x 0.5 - 100) / 100 = -0.845; ROAS stays 0.31
    con = run_case(_two_month_case(contribution_margin=0.5))
    row = con.execute("SELECT roas, romi FROM romi WHERE period = DATE '2024-02-01'").fetchone()
    assert row == (Decimal("0.310000"), Decimal("-0.845000"))


def test_closed_won_basis() -> None:
    # the deal's USD 1,200.00 is revenue on its close date (2024-02-10), whatever billing says
    case = _two_month_case(revenue_basis="closed_won")
    case["input"]["contact"].append({"source_id": "C", "created_at": "2024-02-01 00:00:00"})
    case["input"]["entity_xref"] = [
        {"source_id": "A", "golden_id": "g"},
        {"source_id": "C", "golden_id": "g"},
    ]
    case["input"]["deal"] = [
        {"source_id": "D", "contact_id": "C", "is_won": True, "close_date": "2024-02-10",
         "amount": 120000, "currency": "USD", "created_at": "2024-02-01 00:00:00"}
    ]  # fmt: skip
    con = run_case(case)
    rows = con.execute(
        f"SELECT period, revenue, new_customers, revenue_basis FROM ({romi.romi_output_query()})"
    ).fetchall()
    assert rows == [(rows[0][0], Decimal("1200.00"), Decimal(1), "closed_won")]
    assert str(rows[0][0]) == "2024-02-01"


def test_missing_spend_rate_is_null_never_one() -> None:
    case = _two_month_case()
    case["input"]["ad_spend"] = [dict(GOOGLE_SPEND["ad_spend"][0], currency="EUR")]
    con = run_case(case)
    row = con.execute("SELECT spend, roas FROM romi WHERE period = DATE '2024-02-01'").fetchone()
    assert row == (None, None)
    f = con.execute("SELECT code, record_id, other_id FROM finding WHERE stage = 'romi'").fetchall()
    assert f == [("fx-rate-missing", "EUR", "2024-02-05")]


def test_shuffled_input_gives_identical_output() -> None:
    import yaml

    base = yaml.safe_load(
        (Path(__file__).parent / "cases/attribution/six_models_four_touches.yml").read_text()
    )

    def out(case: dict[str, Any]) -> tuple[list[Any], list[Any]]:
        con = run_case(case)
        return (
            con.execute(romi.romi_output_query()).fetchall(),
            con.execute(
                "SELECT * EXCLUDE (source_file, source_row) FROM ("
                + romi.romi_lineage_output_query()
                + ")"
            ).fetchall(),
        )

    # give every row its provenance row number so that it travels with the row when shuffled
    for k, rows in base["input"].items():
        for i, r in enumerate(rows, start=1):
            if k != "entity_xref":
                r.setdefault("source_row", i)
    first = out(base)
    rng = random.Random(7)
    for _ in range(3):
        shuffled = {**base, "input": {k: rng.sample(v, len(v)) for k, v in base["input"].items()}}
        assert out(shuffled) == first


def _credit_units(ages: list[int], half_life: int = 7) -> dict[str, list[int]]:
    """credit units per model, in touch order, for one conversion on 2024-06-30 whose touches
    happened `ages` days before (every third touch, from the first, is direct)."""
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE attribution_conversion AS SELECT 'c' AS conversion_id, 'e' AS entity_id, "
        "DATE '2024-06-30' AS converted_on"
    )
    con.execute(
        "CREATE TABLE touchpoint (touchpoint_id VARCHAR, entity_id VARCHAR, touch_at TIMESTAMP, "
        "is_direct BOOLEAN, eligible BOOLEAN)"
    )
    for i, a in enumerate(ages):
        con.execute(
            "INSERT INTO touchpoint VALUES (?, 'e', DATE '2024-06-30' - CAST(? AS INTEGER) + "
            "INTERVAL 12 HOUR, ?, true)",
            [f"t{i:02d}", a, i % 3 == 0],
        )
    con.execute(
        "CREATE TABLE _at_weight AS "
        + attribution.weights_sql(attribution.MODELS, 90, Decimal(half_life)),
        {"lookback": 90},
    )
    out: dict[str, list[int]] = {m: [] for m in attribution.MODELS}
    for model, units in con.execute(
        f"SELECT model, credit_units FROM ({attribution.credits_sql()}) ORDER BY model, pos"
    ).fetchall():
        out[model].append(units)
    return out


def test_three_touches_by_hand() -> None:
    # touches 20, 10 and 0 days before; the first is direct (i % 3 == 0)
    u = _credit_units([20, 10, 0], half_life=10)
    # linear: 10^10 / 3 = 3333333333 each, 1 unit left: it goes to the latest touch
    assert u["linear"] == [3333333333, 3333333333, 3333333334]
    # position-based, 3 touches: weights 2, 1, 2 of 5 -> 0.4, 0.2, 0.4
    assert u["position_based"] == [4 * 10**9, 2 * 10**9, 4 * 10**9]
    # time decay, half-life 10: 1/4, 1/2, 1 of 7/4 -> 1/7, 2/7, 4/7 of 10^10 =
    # 1428571428.57, 2857142857.14, 5714285714.29: floors leave 1 unit -> the .57 remainder
    assert u["time_decay"] == [1428571429, 2857142857, 5714285714]
    assert u["first_touch"] == [10**10] and u["last_touch"] == [10**10]
    # last non-direct: the last touch (index 2) is not direct -> it takes the credit
    assert u["last_non_direct"] == [10**10]
    # all direct: last non-direct falls back to the last touch
    assert _credit_units([5])["last_non_direct"] == [10**10]


@settings(max_examples=40, deadline=None)
@given(
    ages=st.lists(st.integers(min_value=0, max_value=89), min_size=1, max_size=9),
    half_life=st.sampled_from([1, 3, 7, 30]),
)
def test_credits_sum_to_exactly_one(ages: list[int], half_life: int) -> None:
    """Any number of touches at any ages: every model's credits are non-negative and add up to
    exactly 10^10 units (= 1 at DECIMAL(38,10)), summed in Python."""
    units = _credit_units(ages, half_life)
    for model, parts in units.items():
        assert all(p >= 0 for p in parts), model
        assert sum(parts) == 10**10, model


@pytest.mark.parametrize(
    ("settings_", "fragment"),
    [
        ({"models": ["last_click"]}, "did you mean 'last_touch'"),
        ({"half_life_days": 0}, "attribution.half_life_days"),
        ({"period": "quarter"}, "attribution.period"),
        ({"contribution_margin": 1.5}, "attribution.contribution_margin"),
        ({"campaign_mapping": "nope.csv"}, "file not found"),
        ({"lookback": 30}, "did you mean 'lookback_days'"),
    ],
)
def test_bad_settings(settings_: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        attribution.parse_settings(settings_)
    assert any(fragment in d for d in e.value.details), e.value.details


def test_unmatched_paid_campaign_is_reported() -> None:
    case = {
        "input": merge(
            {"contact": [{"source_id": "L", "created_at": "2024-02-01 10:00:00",
                          "utm_source": "google", "utm_medium": "cpc",
                          "utm_campaign": "mystery", "external_ref": "cus_1"}]},
            one_invoice("cus_1", "2024-02-02", 1000),
            GOOGLE_SPEND,
        )
    }  # fmt: skip
    con = run_case(case)
    # the revenue still counts for Google Ads, under the UTM name, without a campaign id
    assert credits(con) == [("cus_1", "paid_search", "google_ads", None, Decimal(1))]
    f = con.execute(
        "SELECT code, other_id FROM finding WHERE stage = 'attribution' ORDER BY code"
    ).fetchall()
    assert f == [("campaign-unmatched", "mystery")]


def test_a_record_in_two_overlapping_exports_is_one_touch() -> None:
    # the same Salesforce lead (same id, same click) in Lead_1.csv and Lead_2.csv: one
    # touchpoint, and its conversion's last-touch credit is exactly 1, not 2
    from romirecon.stages.attribution import touchpoint_sql

    con = duckdb.connect()
    con.execute(
        "CREATE TABLE _at_class AS SELECT * FROM (VALUES "
        "('E1', TIMESTAMP '2026-05-02 17:30:15', 'click_id', 'paid_social', 'linkedin_ads', 'c1', "
        " 'abm', 'id', 'linkedin', 'paid_social', 'abm', NULL, NULL, 'li1', 'linkedin_ads', 'Ads', "
        " NULL, NULL, NULL, 'salesforce_lead', 'crm', '00Q1', 'Lead_1.csv', 167), "
        "('E1', TIMESTAMP '2026-05-02 17:30:15', 'click_id', 'paid_social', 'linkedin_ads', 'c1', "
        " 'abm', 'id', 'linkedin', 'paid_social', 'abm', NULL, NULL, 'li1', 'linkedin_ads', 'Ads', "
        " NULL, NULL, NULL, 'salesforce_lead', 'crm', '00Q1', 'Lead_2.csv', 11)"
        ") v(entity_id, touch_at, touch_type, channel, platform, campaign_id, campaign_name, "
        "match_method, utm_source, utm_medium, utm_campaign, utm_term, utm_content, click_id, "
        "click_platform, lead_source, crm_campaign_id, crm_campaign_name, promo_code, source_name, "
        "source_system, source_id, source_file, source_row)"
    )
    rows = con.execute(
        f"SELECT touchpoint_id, source_file, eligible FROM ({touchpoint_sql('mapped')})"
    ).fetchall()
    assert len(rows) == 1
    assert rows[0][1:] == ("Lead_1.csv", True)


def test_one_name_per_ad_campaign_in_the_lineage() -> None:
    # spend rows of a LinkedIn campaign carry no name (its API has none), credits the mapped
    # name: both must land in one ROMI row, under the one known name
    from romirecon.stages.romi import campaign_names_sql, canonical_name_sql, names_join_sql

    rows = (
        "SELECT * FROM (VALUES ('linkedin_ads', '310464002', NULL, 'spend'), "
        "('linkedin_ads', '310464002', 'lead_gen_forms', 'credit'), "
        "(NULL, NULL, NULL, 'credit')) v(platform, campaign_id, campaign_name, kind)"
    )
    con = duckdb.connect()
    con.execute(f"CREATE TEMP TABLE _rm_names AS {campaign_names_sql(rows)}")
    got = con.execute(
        f"SELECT v.kind, {canonical_name_sql('v', 'v.campaign_name')} AS name FROM ({rows}) v "
        f"{names_join_sql('v')} ORDER BY kind, name"
    ).fetchall()
    assert got == [("credit", "lead_gen_forms"), ("credit", None), ("spend", "lead_gen_forms")]
