"""True recognized revenue and ROMI, computed from the world model (never from the exports).

Billing rules (DESIGN.md): count paid and open invoices, never void ones; each line's net amount
(amount - discount, tax excluded) is spread over its service days with a largest-remainder split
(remainder units go to the earliest days; negative amounts split like their absolute value);
refunds and credit notes are negative adjustments against the credited line, spread the same way;
a refund paid out through a credit note counts once; void credit notes count for nothing. Each
service day converts at that day's rate (last published rate on days without one); amounts in
the reporting currency are rounded half-to-even to cents once, per output row.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from romirecon.money import exponent


def month_start(days: np.ndarray) -> np.ndarray:
    return (
        days.astype("datetime64[D]")
        .astype("datetime64[M]")
        .astype("datetime64[D]")
        .astype(np.int64)
    )


def next_month_start(days: np.ndarray) -> np.ndarray:
    m = days.astype("datetime64[D]").astype("datetime64[M]") + 1
    return m.astype("datetime64[D]").astype(np.int64)


def spread_by_month(
    amount: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    currency: np.ndarray,
    factors: dict[str, np.ndarray],
    factor_first_day: int,
    exponents: np.ndarray,
) -> pl.DataFrame:
    """Split each amount over its days [start, end) and sum per calendar month.

    Returns one row per (input row, month touched): row, month (day number of the month's first
    day), amount_minor (exact integer share), amount_reporting (unrounded float). A period spans
    at most two calendar months here (monthly plans), and the sums are done in closed form from
    prefix sums of the daily factors, so the cost is O(rows), not O(rows x days).
    """
    amount = np.asarray(amount, dtype=np.int64)
    ndays = end - start
    if (ndays <= 0).any():
        raise ValueError("a spread period must be at least one day long")
    if ((end - start) > 62).any() or (next_month_start(next_month_start(start)) < end).any():
        raise ValueError("a spread period may touch at most two calendar months")
    sign = np.sign(amount)
    mag = np.abs(amount)
    base = mag // ndays
    rem = mag % ndays
    boundary = next_month_start(start)
    seg_a_end = np.minimum(end, boundary)
    rows = []
    # cumulative factors per currency: F[d] = sum of factors of days < d
    cum = {c: np.concatenate([[0.0], np.cumsum(f)]) for c, f in factors.items()}
    for seg, (a, b) in enumerate(((start, seg_a_end), (boundary, end))):
        keep = b > a
        if not keep.any():
            continue
        idx = np.nonzero(keep)[0]
        a_, b_, s_ = a[idx], b[idx], start[idx]
        length = b_ - a_
        extra_end = np.minimum(b_, s_ + rem[idx])
        extra = np.maximum(0, extra_end - a_)
        minor = sign[idx] * (base[idx] * length + extra)
        rep = np.zeros(idx.size)
        for c in np.unique(currency[idx]):  # loop over currencies
            m = currency[idx] == c
            cf = cum[c]
            ia = a_[m] - factor_first_day
            ib = b_[m] - factor_first_day
            ie = np.maximum(ia, extra_end[m] - factor_first_day)
            if (ia < 0).any() or (ib >= cf.size).any():
                raise ValueError(f"no conversion factors for {c} over the whole period")
            full = cf[ib] - cf[ia]
            ext = cf[ie] - cf[ia]
            rep[m] = sign[idx][m] * (base[idx][m] * full + ext) / (10.0 ** exponents[idx][m])
        rows.append(
            pl.DataFrame(
                {
                    "row": idx.astype(np.int64),
                    "seg": np.full(idx.size, seg, dtype=np.int8),
                    "month": month_start(a_),
                    "amount_minor": minor.astype(np.int64),
                    "amount_reporting": rep,
                }
            )
        )
    return pl.concat(rows).sort("row", "seg").drop("seg")


def vendor_exponents(billing: np.ndarray, currency: np.ndarray) -> np.ndarray:
    """Minor-unit exponent of each row's currency as its billing vendor defines it."""
    from romirecon.money import VENDOR_EXPONENTS

    frame = pl.DataFrame({"billing": billing, "currency": currency})
    pairs = frame.unique().sort("billing", "currency")
    table = pairs.with_columns(
        exponent=pl.Series(
            [exponent(c, VENDOR_EXPONENTS.get(b)) for b, c in pairs.iter_rows()],  # distinct pairs
            dtype=pl.Int64,
        )
    )
    return frame.join(table, on=["billing", "currency"], how="left", maintain_order="left")[
        "exponent"
    ].to_numpy()


def revenue_items(billing_model, subs_ids: pl.DataFrame) -> pl.DataFrame:  # type: ignore[no-untyped-def]
    """Every amount that counts, with its spread period: lines of counted invoices, and negative
    adjustments (refunds, issued credit notes not paying out a refund) against the credited line.

    subs_ids: sub_idx -> customer_id (the billing system's id), billing (vendor).
    """
    b = billing_model
    inv = b.invoices.select("inv_idx", "status")
    lines = (
        b.lines.join(inv, on="inv_idx")
        .filter(pl.col("status").is_in(["paid", "open"]) & (pl.col("net") != 0))
        .select(
            "sub_idx", "inv_idx", "currency", "period_start_day", "period_end_day",
            amount=pl.col("net"), kind=pl.col("line_kind"),
        )
    )  # fmt: skip
    # the credited line of a single-line invoice is that line
    credited = b.lines.select("inv_idx", "period_start_day", "period_end_day").unique(
        "inv_idx", keep="first"
    )
    refunds = b.refunds.join(credited, on="inv_idx").select(
        "sub_idx", "inv_idx", "currency", "period_start_day", "period_end_day",
        amount=-pl.col("amount"), kind=pl.lit("refund"),
    )  # fmt: skip
    cns = (
        b.credit_notes.filter(~pl.col("void") & pl.col("refund_idx").is_null())
        .join(credited, on="inv_idx")
        .select(
            "sub_idx", "inv_idx", "currency", "period_start_day", "period_end_day",
            amount=-pl.col("amount"), kind=pl.lit("credit_note"),
        )
    )  # fmt: skip
    items = pl.concat([lines, refunds, cns]).join(subs_ids, on="sub_idx", how="left")
    return items.sort("sub_idx", "inv_idx", "kind", "period_start_day", "amount")


def revenue_by_month(
    items: pl.DataFrame, factors: dict[str, np.ndarray], first_day: int
) -> pl.DataFrame:
    """Spread the items and sum per (sub, month); the reporting amount stays unrounded here."""
    cur = items["currency"].to_numpy()
    spread = spread_by_month(
        items["amount"].to_numpy(),
        items["period_start_day"].to_numpy(),
        items["period_end_day"].to_numpy(),
        cur,
        factors,
        first_day,
        vendor_exponents(items["billing"].to_numpy(), cur),
    )
    keyed = items.with_row_index("row").with_columns(pl.col("row").cast(pl.Int64))
    return spread.join(keyed.select("row", "sub_idx", "customer_id", "currency"), on="row")


def round_half_even(x: pl.Expr, decimals: int = 2) -> pl.Expr:
    """Round half to even at `decimals` places (banker's rounding, as the pipeline's round_even)."""
    scaled = x * (10**decimals)
    # snap away float noise at 1e-6 of a cent so exact halves are detected as halves
    snapped = (scaled * 1_000_000).round(0) / 1_000_000
    floor = snapped.floor()
    diff = snapped - floor
    even = (floor % 2) == 0
    r = (
        pl.when(diff > 0.5)
        .then(floor + 1)
        .when(diff < 0.5)
        .then(floor)
        .when(even)
        .then(floor)
        .otherwise(floor + 1)
    )
    return r / (10**decimals)
