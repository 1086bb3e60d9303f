"""Currency exponents (ISO 4217 minor units) and vendor overrides.

Money is stored as whole minor units. The exponent says how many minor units make one major unit:
10**exponent. Vendors disagree with ISO in places (Stripe treats ISK as two-decimal, and charges
in some ISO two-decimal currencies as zero-decimal), so a mapping may override exponents.
"""

from __future__ import annotations

from romirecon.sqlutil import literal

# ISO 4217 exponents that differ from 2. Every other active code has exponent 2.
ISO_EXPONENT_EXCEPTIONS: dict[str, int] = {
    # zero-decimal
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0, "PYG": 0,
    "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    # three-decimal
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
    # four-decimal
    "CLF": 4, "UYW": 4,
}  # fmt: skip

# Active ISO 4217 alphabetic codes (funds and precious metals excluded).
ISO_CODES: frozenset[str] = frozenset(
    [
        "AED",
        "AFN",
        "ALL",
        "AMD",
        "ANG",
        "AOA",
        "ARS",
        "AUD",
        "AWG",
        "AZN",
        "BAM",
        "BBD",
        "BDT",
        "BGN",
        "BHD",
        "BIF",
        "BMD",
        "BND",
        "BOB",
        "BRL",
        "BSD",
        "BTN",
        "BWP",
        "BYN",
        "BZD",
        "CAD",
        "CDF",
        "CHF",
        "CLF",
        "CLP",
        "CNY",
        "COP",
        "CRC",
        "CUP",
        "CVE",
        "CZK",
        "DJF",
        "DKK",
        "DOP",
        "DZD",
        "EGP",
        "ERN",
        "ETB",
        "EUR",
        "FJD",
        "FKP",
        "GBP",
        "GEL",
        "GHS",
        "GIP",
        "GMD",
        "GNF",
        "GTQ",
        "GYD",
        "HKD",
        "HNL",
        "HTG",
        "HUF",
        "IDR",
        "ILS",
        "INR",
        "IQD",
        "IRR",
        "ISK",
        "JMD",
        "JOD",
        "JPY",
        "KES",
        "KGS",
        "KHR",
        "KMF",
        "KPW",
        "KRW",
        "KWD",
        "KYD",
        "KZT",
        "LAK",
        "LBP",
        "LKR",
        "LRD",
        "LSL",
        "LYD",
        "MAD",
        "MDL",
        "MGA",
        "MKD",
        "MMK",
        "MNT",
        "MOP",
        "MRU",
        "MUR",
        "MVR",
        "MWK",
        "MXN",
        "MYR",
        "MZN",
        "NAD",
        "NGN",
        "NIO",
        "NOK",
        "NPR",
        "NZD",
        "OMR",
        "PAB",
        "PEN",
        "PGK",
        "PHP",
        "PKR",
        "PLN",
        "PYG",
        "QAR",
        "RON",
        "RSD",
        "RUB",
        "RWF",
        "SAR",
        "SBD",
        "SCR",
        "SDG",
        "SEK",
        "SGD",
        "SHP",
        "SLE",
        "SOS",
        "SRD",
        "SSP",
        "STN",
        "SVC",
        "SYP",
        "SZL",
        "THB",
        "TJS",
        "TMT",
        "TND",
        "TOP",
        "TRY",
        "TTD",
        "TWD",
        "TZS",
        "UAH",
        "UGX",
        "USD",
        "UYI",
        "UYU",
        "UYW",
        "UZS",
        "VES",
        "VND",
        "VUV",
        "WST",
        "XAF",
        "XCD",
        "XCG",
        "XOF",
        "XPF",
        "YER",
        "ZAR",
        "ZMW",
        "ZWG",
    ]
)

# Per-vendor departures from ISO, as documented by the vendor.
VENDOR_EXPONENTS: dict[str, dict[str, int]] = {
    # Stripe: ISK is a two-decimal currency in the API (amounts must be divisible by 100);
    # UGX likewise. Zero-decimal list otherwise matches ISO.
    "stripe": {"ISK": 2, "UGX": 2},
}


def exponent(code: str, overrides: dict[str, int] | None = None) -> int:
    code = code.upper()
    if overrides and code in overrides:
        return overrides[code]
    return ISO_EXPONENT_EXCEPTIONS.get(code, 2)


def exponent_table(overrides: dict[str, int] | None = None) -> list[tuple[str, int]]:
    """(code, exponent) for every ISO code, overrides applied: loaded into DuckDB as a join table."""
    return sorted((c, exponent(c, overrides)) for c in ISO_CODES | set(overrides or {}))


def exponent_map_sql(overrides: dict[str, int] | None = None) -> str:
    """`exponent_table` as a DuckDB MAP literal (code -> exponent), for `map_extract_value`: a
    constant lookup instead of a join, which keeps the rows' order and costs no hash table."""
    pairs = ", ".join(f"{literal(c)}: {int(e)}" for c, e in exponent_table(overrides))
    return "MAP {" + pairs + "}"
