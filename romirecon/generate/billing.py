"""Subscriptions, invoices, lines, refunds and credit notes drawn from the world model.

The billing model is monthly plans with the anchor-day rule (a subscription anchored on the 31st
bills on the last day of shorter months), trials, coupons, mid-period plan changes (Stripe's
default `create_prorations`: the unused-time credit and the remaining-time charge appear on the
next cycle invoice), voids with a re-issued invoice, open invoices, refunds (some with a credit
note that paid them out), and credit notes to the customer balance (some voided).

Every frame here is one row per true object; the vendor writers format them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from romirecon.generate.world import World

# monthly price (minor units in the billing vendor's convention) per tier, per currency.
# Stripe: JPY zero-decimal, KWD three-decimal (amounts end in 0), ISK two-decimal in Stripe.
PRICES: dict[str, list[int]] = {
    "USD": [2900, 9900, 29900], "EUR": [2900, 8900, 27900], "GBP": [2500, 7900, 24900],
    "CAD": [3900, 12900, 39900], "AUD": [4500, 14900, 44900], "JPY": [3900, 12900, 39900],
    "KWD": [9000, 30000, 90000], "ISK": [390000, 1290000, 3990000],
}  # fmt: skip
# smallest chargeable step in minor units (Stripe: KWD multiples of 10, ISK multiples of 100)
STEP: dict[str, int] = {"KWD": 10, "ISK": 100}
TAX_RATE_BP: dict[str, int] = {"GB": 2000, "DE": 1900, "FR": 2000, "NL": 2100}  # basis points
PLANS = ["starter", "growth", "scale"]
COUPONS = {"SPRING25": (2500, 3), "PARTNER10": (1000, 99)}  # percent (bp), paid cycles
MAX_CYCLES = 14


@dataclass(frozen=True)
class Billing:
    subscriptions: pl.DataFrame
    invoices: pl.DataFrame
    lines: pl.DataFrame
    refunds: pl.DataFrame
    credit_notes: pl.DataFrame


def _month_start_day(months: np.ndarray) -> np.ndarray:
    """Day number of the first day of a month given as months since 1970-01."""
    return months.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)


def _add_months(anchor_day: np.ndarray, k: np.ndarray) -> np.ndarray:
    """anchor + k months, keeping the anchor's day of month, clamped to the month's last day."""
    d = anchor_day.astype("datetime64[D]")
    m = d.astype("datetime64[M]")
    dom = (d - m.astype("datetime64[D]")).astype(np.int64)  # 0-based
    target = m.astype(np.int64) + k
    first = _month_start_day(target)
    dim = _month_start_day(target + 1) - first
    return first + np.minimum(dom, dim - 1)


def _round_step(amount: np.ndarray, currency: np.ndarray) -> np.ndarray:
    step = np.ones(amount.shape, dtype=np.int64)
    for cur, s in STEP.items():
        step[currency == cur] = s
    return (np.rint(amount / step) * step).astype(np.int64)


def build_billing(rng: np.random.Generator, world: World) -> tuple[pl.DataFrame, Billing]:
    """Decide who converts and when, and draw every billing object. Returns (people, billing)."""
    p = world.people
    n = p.height
    as_of = world.as_of_day
    lead_day = p["lead_ts"].to_numpy() // 86400
    conv_day = lead_day + rng.integers(1, 40, size=n)
    close_day = conv_day + rng.integers(0, 21, size=n)
    converted = (rng.random(n) < 0.6) & (close_day < as_of - 2)
    cur = p["currency"].to_numpy()
    # some USD/EUR/GBP customers bill through Chargebee, the rest through Stripe
    chargebee = converted & np.isin(cur, ["USD", "EUR", "GBP"]) & (rng.random(n) < 0.18)
    p = p.with_columns(
        converted=pl.Series(converted),
        conv_ts=pl.Series(conv_day * 86400 + rng.integers(9 * 3600, 18 * 3600, size=n)),
        close_day=pl.Series(close_day),
        billing=pl.Series(np.where(converted, np.where(chargebee, "chargebee", "stripe"), "")),
    )

    # ---------------------------------------------------------------- subscriptions
    s = p.filter(pl.col("converted"))
    m = s.height
    sidx = np.arange(m, dtype=np.int64)
    scur = s["currency"].to_numpy()
    tier = rng.choice(3, size=m, p=[0.5, 0.35, 0.15])
    qty = np.where(s["b2b"].to_numpy(), rng.integers(1, 11, size=m), 1)
    start_day = s["close_day"].to_numpy()
    start_sec = rng.integers(8 * 3600, 20 * 3600, size=m)
    trial = rng.random(m) < 0.3
    trial_converts = trial & (rng.random(m) < 0.7)
    trial_end = np.where(trial, start_day + 14, start_day)
    anchor = trial_end
    # cycles invoiced before as_of
    k = np.arange(MAX_CYCLES + 2)
    starts = _add_months(np.repeat(anchor, k.size), np.tile(k, m)).reshape(m, k.size)
    n_cycles = (starts[:, :-1] < as_of).sum(axis=1)
    n_cycles = np.where(trial & ~trial_converts, 0, n_cycles)
    cancel_after = np.where(rng.random(m) < 0.12, rng.integers(1, 9, size=m), MAX_CYCLES + 1)
    canceled = (cancel_after < n_cycles) | (trial & ~trial_converts)
    n_cycles = np.minimum(n_cycles, cancel_after)
    # plan change: in cycle c (1-based paid cycle) at a day inside it; needs cycle c+1 invoiced
    is_cb = s["billing"].to_numpy() == "chargebee"
    # plan changes are modelled on Stripe's proration lines (Chargebee prorates by credit notes)
    change = (rng.random(m) < 0.10) & (n_cycles >= 2) & ~is_cb
    change_cycle = np.where(change, rng.integers(0, np.maximum(n_cycles - 1, 1)), -1)
    up = rng.random(m) < 0.6
    new_tier = np.clip(np.where(up, tier + 1, tier - 1), 0, 2)
    new_tier = np.where(new_tier == tier, np.where(tier == 0, 1, tier - 1), new_tier)
    coupon = np.where(
        rng.random(m) < 0.15, np.where(rng.random(m) < 0.6, "SPRING25", "PARTNER10"), ""
    )
    price_tbl = {c: np.array(v) for c, v in PRICES.items()}
    price_old = np.zeros(m, dtype=np.int64)
    price_new = np.zeros(m, dtype=np.int64)
    for c, v in price_tbl.items():  # loop over currencies
        sel = scur == c
        price_old[sel] = v[tier[sel]] * qty[sel]
        price_new[sel] = v[new_tier[sel]] * qty[sel]
    canceled_day = np.where(
        trial & ~trial_converts, trial_end,
        np.where(canceled, starts[np.arange(m), np.minimum(n_cycles, k.size - 1)], -1),
    )  # fmt: skip
    subs = s.select(
        "entity_id",
        "person_idx",
        "billing",
        "currency",
        "country",
        "channel",
        "platform",
        "campaign_id",
    ).with_columns(
        sub_idx=pl.Series(sidx),
        plan=pl.Series(np.array(PLANS)[tier]),
        new_plan=pl.Series(np.where(change, np.array(PLANS)[new_tier], "")),
        quantity=pl.Series(qty),
        price=pl.Series(price_old),
        new_price=pl.Series(np.where(change, price_new, price_old)),
        start_ts=pl.Series(start_day * 86400 + start_sec),
        start_sec=pl.Series(start_sec),
        trial=pl.Series(trial),
        trial_converts=pl.Series(trial_converts),
        trial_end_day=pl.Series(trial_end),
        anchor_day=pl.Series(anchor),
        n_cycles=pl.Series(n_cycles),
        canceled_day=pl.Series(canceled_day),
        change_cycle=pl.Series(change_cycle),
        coupon=pl.Series(coupon),
    )

    # ---------------------------------------------------------------- invoices (one per cycle)
    rep = n_cycles
    inv_sub = np.repeat(sidx, rep)
    first_of_sub = np.repeat(np.cumsum(rep) - rep, rep)
    cyc = np.arange(inv_sub.size, dtype=np.int64) - first_of_sub  # 0..n_cycles-1 per sub
    ps = starts[inv_sub, cyc]
    pe = starts[inv_sub, cyc + 1]
    cb, cn = COUPONS["SPRING25"], COUPONS["PARTNER10"]
    cpn = coupon[inv_sub]
    pct = np.where(
        (cpn == "SPRING25") & (cyc < cb[1]), cb[0], np.where(cpn == "PARTNER10", cn[0], 0)
    )
    cycle_inv = pl.DataFrame(
        {
            "sub_idx": inv_sub,
            "cycle": cyc,
            "kind": np.full(inv_sub.size, "cycle"),
            "period_start_day": ps,
            "period_end_day": pe,
            "discount_bp": pct,
        }
    )
    # trial invoices ($0, billing_reason subscription_create); Chargebee invoices no trial
    t_sub = sidx[trial & ~is_cb]
    trial_inv = pl.DataFrame(
        {
            "sub_idx": t_sub,
            "cycle": np.full(t_sub.size, -1),
            "kind": np.full(t_sub.size, "trial"),
            "period_start_day": start_day[trial & ~is_cb],
            "period_end_day": trial_end[trial & ~is_cb],
            "discount_bp": np.zeros(t_sub.size, dtype=np.int64),
        }
    )
    inv = pl.concat([trial_inv, cycle_inv]).sort("sub_idx", "cycle")
    ni = inv.height
    inv_sub_all = inv["sub_idx"].to_numpy()
    # status: a few voided (re-issued as a new invoice), the newest cycle sometimes open
    is_cycle = inv["kind"].to_numpy() == "cycle"
    last_cycle = is_cycle & (inv["cycle"].to_numpy() == n_cycles[inv_sub_all] - 1)
    status = np.where(last_cycle & (rng.random(ni) < 0.12), "open", "paid")
    voided = is_cycle & (rng.random(ni) < 0.02)
    inv = inv.with_columns(
        status=pl.Series(status),
        voided=pl.Series(voided),
        created_ts=pl.Series(
            inv["period_start_day"].to_numpy() * 86400 + subs["start_sec"].to_numpy()[inv_sub_all]
        ),
    )
    # a voided invoice is replaced by a new one for the same period (the original row stays, void)
    reissue = inv.filter(pl.col("voided")).with_columns(
        voided=pl.lit(False), kind=pl.lit("reissue"), created_ts=pl.col("created_ts") + 3600
    )
    inv = (
        pl.concat([inv, reissue])
        .sort("sub_idx", "cycle", "created_ts")
        .with_columns(status=pl.when(pl.col("voided")).then(pl.lit("void")).otherwise("status"))
        .with_row_index("inv_idx")
        .with_columns(pl.col("inv_idx").cast(pl.Int64))
    )

    # ---------------------------------------------------------------- lines
    inv_np = {c: inv[c].to_numpy() for c in inv.columns}
    isub = inv_np["sub_idx"]
    scur[isub]
    kind = inv_np["kind"]
    cyc = inv_np["cycle"]
    after_change = (change_cycle[isub] >= 0) & (cyc > change_cycle[isub])
    amount = np.where(kind == "trial", 0, np.where(after_change, price_new[isub], price_old[isub]))
    main = pl.DataFrame(
        {
            "inv_idx": inv_np["inv_idx"],
            "sub_idx": isub,
            "line_kind": np.where(kind == "trial", "trial", "plan"),
            "amount": amount.astype(np.int64),
            "proration": np.zeros(isub.size, dtype=bool),
            "plan": np.where(
                after_change, np.array(PLANS)[new_tier][isub], np.array(PLANS)[tier][isub]
            ),
            "period_start_day": inv_np["period_start_day"],
            "period_end_day": inv_np["period_end_day"],
        }
    )
    # proration lines on the invoice of the cycle right after the change
    pr = np.nonzero(
        (kind != "trial") & (change_cycle[isub] >= 0) & (cyc == change_cycle[isub] + 1)
    )[0]
    psub = isub[pr]
    c_ps = starts[psub, change_cycle[psub]]
    c_pe = starts[psub, change_cycle[psub] + 1]
    c_len = c_pe - c_ps
    c_day = c_ps + 1 + (rng.random(pr.size) * (c_len - 1)).astype(np.int64)  # strictly inside
    frac = (c_pe - c_day) / c_len
    pcur = scur[psub]
    unused = -_round_step(price_old[psub] * frac, pcur)
    remaining = _round_step(price_new[psub] * frac, pcur)
    prorations = pl.DataFrame(
        {
            "inv_idx": np.concatenate([inv_np["inv_idx"][pr]] * 2),
            "sub_idx": np.concatenate([psub, psub]),
            "line_kind": np.concatenate(
                [np.full(pr.size, "unused"), np.full(pr.size, "remaining")]
            ),
            "amount": np.concatenate([unused, remaining]),
            "proration": np.ones(2 * pr.size, dtype=bool),
            "plan": np.concatenate([np.array(PLANS)[tier][psub], np.array(PLANS)[new_tier][psub]]),
            "period_start_day": np.concatenate([c_day, c_day]),
            "period_end_day": np.concatenate([c_pe, c_pe]),
        }
    )
    order = {"unused": 0, "remaining": 1, "plan": 2, "trial": 2}
    lines = (
        pl.concat([main, prorations])
        .with_columns(_o=pl.col("line_kind").replace_strict(order, return_dtype=pl.Int8))
        .sort("inv_idx", "_o")
        .drop("_o")
        .with_row_index("line_idx")
        .with_columns(pl.col("line_idx").cast(pl.Int64))
    )
    lsub = lines["sub_idx"].to_numpy()
    lcur = scur[lsub]
    lamt = lines["amount"].to_numpy()
    lpct = inv["discount_bp"].to_numpy()[lines["inv_idx"].to_numpy()]
    ldisc = _round_step(lamt * lpct / 10000, lcur)
    country = subs["country"].to_numpy()[lsub]
    tax_bp = np.zeros(lsub.size, dtype=np.int64)
    for c, bp in TAX_RATE_BP.items():
        tax_bp[country == c] = bp
    ltax = np.rint((lamt - ldisc) * tax_bp / 10000).astype(np.int64)
    lines = lines.with_columns(
        currency=pl.Series(lcur),
        discount=pl.Series(ldisc),
        tax=pl.Series(ltax),
        net=pl.Series(lamt - ldisc),
    )
    totals = lines.group_by("inv_idx").agg(
        subtotal=pl.col("amount").sum(),
        discount=pl.col("discount").sum(),
        tax=pl.col("tax").sum(),
        n_lines=pl.len(),
    )
    inv = (
        inv.join(totals, on="inv_idx", how="left")
        .with_columns(
            currency=pl.Series(scur[inv["sub_idx"].to_numpy()]),
            total=pl.col("subtotal") - pl.col("discount") + pl.col("tax"),
        )
        .with_columns(
            amount_paid=pl.when(pl.col("status") == "paid")
            .then(pl.max_horizontal(pl.col("total"), pl.lit(0)))
            .otherwise(0),
        )
        .sort("inv_idx")
    )

    # ---------------------------------------------------------------- refunds and credit notes
    eligible = inv.filter(
        (pl.col("status") == "paid") & (pl.col("n_lines") == 1) & (pl.col("tax") == 0)
        & (pl.col("total") > 0) & (pl.col("kind") != "trial")
        & (pl.col("created_ts") < (as_of - 21) * 86400)
    ).join(subs.select("sub_idx", "billing"), on="sub_idx").filter(pl.col("billing") == "stripe")  # fmt: skip
    u = rng.random(eligible.height)
    e_total = eligible["total"].to_numpy()
    e_cur = eligible["currency"].to_numpy()
    refund_sel = u < 0.03
    cn_only_sel = (u >= 0.03) & (u < 0.05)
    r = eligible.filter(pl.Series(refund_sel))
    r_total = e_total[refund_sel]
    partial = rng.random(r.height) < 0.4
    r_amt = np.where(partial, _round_step(r_total / 2, e_cur[refund_sel]), r_total)
    with_cn = rng.random(r.height) < 0.5
    refunds = (
        r.select("inv_idx", "sub_idx", "currency", "created_ts")
        .with_columns(
            amount=pl.Series(r_amt, dtype=pl.Int64),
            refund_ts=pl.col("created_ts")
            + pl.Series(rng.integers(86400, 20 * 86400, size=r.height)),
            with_credit_note=pl.Series(with_cn),
        )
        .with_row_index("refund_idx")
        .with_columns(pl.col("refund_idx").cast(pl.Int64))
    )
    c = eligible.filter(pl.Series(cn_only_sel))
    c_amt = _round_step(e_total[cn_only_sel] / 4, e_cur[cn_only_sel])
    cn_plain = c.select("inv_idx", "sub_idx", "currency", "created_ts").with_columns(
        amount=pl.Series(c_amt, dtype=pl.Int64),
        cn_ts=pl.col("created_ts") + pl.Series(rng.integers(86400, 20 * 86400, size=c.height)),
        void=pl.Series(rng.random(c.height) < 0.2),
        refund_idx=pl.lit(None, dtype=pl.Int64),
    )
    cn_refund = refunds.filter(pl.col("with_credit_note")).select(
        "inv_idx", "sub_idx", "currency", "created_ts", "amount",
        cn_ts=pl.col("refund_ts"), void=pl.lit(False), refund_idx="refund_idx",
    )  # fmt: skip
    credit_notes = (
        pl.concat([cn_plain, cn_refund])
        .sort("inv_idx", "cn_ts")
        .with_row_index("cn_idx")
        .with_columns(pl.col("cn_idx").cast(pl.Int64))
    )
    billing = Billing(subs, inv, lines, refunds, credit_notes)
    return p, billing
