"""ECB reference rates for the modelled year, and the day-by-day conversion factors of the truth.

ECB publishes one rate per TARGET business day (no weekends, no TARGET holidays) as
"1 EUR = rate quote", rounded to a fixed number of decimals per currency. Days without a rate use
the last published one. KWD is not an ECB currency: a treasury file gives EUR/KWD.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl

from romirecon.generate.util import EPOCH, day_number

# currency -> (rate around the modelled year, decimals ECB publishes)
ECB: dict[str, tuple[float, int]] = {
    "USD": (1.09, 4), "JPY": (163.0, 2), "BGN": (1.9558, 4), "CZK": (25.1, 3), "DKK": (7.46, 4),
    "GBP": (0.852, 5), "HUF": (395.0, 2), "PLN": (4.28, 4), "RON": (4.977, 4), "SEK": (11.3, 4),
    "CHF": (0.94, 4), "ISK": (150.2, 2), "NOK": (11.6, 4), "TRY": (38.0, 4), "AUD": (1.66, 4),
    "BRL": (6.1, 4), "CAD": (1.49, 4), "CNY": (7.8, 4), "HKD": (8.5, 4), "IDR": (17500.0, 2),
    "ILS": (4.0, 4), "INR": (92.0, 4), "KRW": (1480.0, 2), "MXN": (20.5, 4), "MYR": (4.9, 4),
    "NZD": (1.82, 4), "PHP": (62.0, 3), "SGD": (1.45, 4), "THB": (37.5, 3), "ZAR": (20.1, 4),
}  # fmt: skip
# the historical file's column order, discontinued currencies included (always N/A here)
ECB_COLUMNS = [
    "USD",
    "JPY",
    "BGN",
    "CYP",
    "CZK",
    "DKK",
    "EEK",
    "GBP",
    "HUF",
    "LTL",
    "LVL",
    "MTL",
    "PLN",
    "ROL",
    "RON",
    "SEK",
    "SIT",
    "SKK",
    "CHF",
    "ISK",
    "NOK",
    "HRK",
    "RUB",
    "TRL",
    "TRY",
    "AUD",
    "BRL",
    "CAD",
    "CNY",
    "HKD",
    "IDR",
    "ILS",
    "INR",
    "KRW",
    "MXN",
    "MYR",
    "NZD",
    "PHP",
    "SGD",
    "THB",
    "ZAR",
]
KWD_RATE = (0.334, 4)  # EUR/KWD, from the treasury file
BGN_LAST = date(2025, 12, 31)  # Bulgaria adopts the euro on 2026-01-01: no BGN rate after


def _easter(year: int) -> date:
    """Gregorian Easter Sunday (anonymous Gregorian algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = b // 4, b % 4
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = c // 4, c % 4
    x = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * x) // 451
    month = (h + x - 7 * m + 114) // 31
    day = (h + x - 7 * m + 114) % 31 + 1
    return date(year, month, day)


def target_holidays(first: date, last: date) -> set[int]:
    out: set[int] = set()
    for y in range(first.year, last.year + 1):
        e = _easter(y)
        for d in (date(y, 1, 1), e - timedelta(days=2), e + timedelta(days=1), date(y, 5, 1),
                  date(y, 12, 25), date(y, 12, 26)):  # fmt: skip
            out.add(day_number(d))
    return out


def business_days(first_day: int, last_day: int) -> np.ndarray:
    days = np.arange(first_day, last_day + 1, dtype=np.int64)
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday: Monday = 0
    first = EPOCH + timedelta(days=first_day)
    last = EPOCH + timedelta(days=last_day)
    hol = np.array(sorted(target_holidays(first, last)), dtype=np.int64)
    return days[(weekday < 5) & ~np.isin(days, hol)]


def draw_rates(rng: np.random.Generator, first_day: int, last_day: int) -> pl.DataFrame:
    """Published rates: one row per business day and currency (long form), rounded as published."""
    days = business_days(first_day, last_day)
    ccys = [*ECB, "KWD"]
    base = np.array([ECB[c][0] for c in ECB] + [KWD_RATE[0]])
    decimals = np.array([ECB[c][1] for c in ECB] + [KWD_RATE[1]])
    steps = rng.normal(0.0, 0.0035, size=(days.size, len(ccys)))
    steps[:, ccys.index("BGN")] = 0.0  # pegged
    level = base * np.exp(np.cumsum(steps, axis=0))
    rounded = np.stack([np.round(level[:, j], decimals[j]) for j in range(len(ccys))], axis=1)
    df = pl.DataFrame(
        {
            "day": np.repeat(days, len(ccys)),
            "quote": np.tile(np.array(ccys), days.size),
            "rate": rounded.reshape(-1),
            "decimals": np.tile(decimals, days.size),
        }
    )
    return df.filter(~((pl.col("quote") == "BGN") & (pl.col("day") > day_number(BGN_LAST))))


def factor_table(rates: pl.DataFrame, currencies: list[str], reporting: str, first_day: int,
                 last_day: int) -> tuple[dict[str, np.ndarray], int]:  # fmt: skip
    """reporting-currency units per one major unit of each currency, for every calendar day.

    Each day uses that day's published rates, else the last published ones (weekends, holidays,
    days after the newest file row). Returns ({currency: factors}, first_day).
    """
    n = last_day - first_day + 1
    out: dict[str, np.ndarray] = {}

    def per_eur(code: str) -> np.ndarray:
        if code == "EUR":
            return np.ones(n)
        r = rates.filter(pl.col("quote") == code).sort("day")
        d = r["day"].to_numpy()
        v = r["rate"].to_numpy()
        pos = np.searchsorted(d, np.arange(first_day, last_day + 1), side="right") - 1
        if (pos < 0).any():
            raise ValueError(f"no {code} rate on or before day {first_day}")
        return v[pos]

    rep = per_eur(reporting)
    for c in currencies:
        out[c] = rep / per_eur(c)
    return out, first_day


def ecb_wide(rates: pl.DataFrame) -> pl.DataFrame:
    """The ECB historical CSV: Date + one column per currency, newest first, N/A where none."""
    # ECB prints a fixed number of decimals per currency
    ecb = rates.filter(pl.col("quote") != "KWD").with_columns(
        text=_fixed(pl.col("rate"), pl.col("decimals"))
    )
    wide = ecb.pivot(on="quote", index="day", values="text").sort("day", descending=True)
    cols = [pl.from_epoch(pl.col("day"), time_unit="d").dt.strftime("%Y-%m-%d").alias("Date")]
    for c in ECB_COLUMNS:
        cols.append(pl.col(c).fill_null("N/A") if c in wide.columns else pl.lit("N/A").alias(c))
    cols.append(pl.lit(None, dtype=pl.String).alias(""))  # the real file ends every line in ","
    return wide.select(cols)


def _fixed(value: pl.Expr, decimals: pl.Expr) -> pl.Expr:
    """Fixed-point text with `decimals` places (integer arithmetic, no float formatting drift)."""
    scaled = (value * pl.lit(10).pow(decimals)).round(0).cast(pl.Int64)
    div = pl.lit(10).pow(decimals).cast(pl.Int64)
    whole = (scaled // div).cast(pl.String)
    frac = (scaled % div).cast(pl.String).str.zfill(decimals.cast(pl.Int64))
    return whole + pl.lit(".") + frac


def treasury_kwd(rates: pl.DataFrame) -> pl.DataFrame:
    """Treasury rates file for currencies ECB does not publish: date, base, quote, rate."""
    r = rates.filter(pl.col("quote") == "KWD").sort("day")
    return r.select(
        date=pl.from_epoch(pl.col("day"), time_unit="d").dt.strftime("%Y-%m-%d"),
        base=pl.lit("EUR"),
        quote=pl.col("quote"),
        rate=_fixed(pl.col("rate"), pl.col("decimals")),
    )
