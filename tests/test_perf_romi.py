"""The ROMI / lineage / publish SQL rewritten for issue #8 gives what the straightforward
formulations give (answers by hand, or by the slow, obvious query)."""

from __future__ import annotations

from decimal import Decimal

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from romirecon.stages import romi

LINEAGE_DDL = """CREATE TABLE lin (kind VARCHAR, period DATE, model VARCHAR, channel VARCHAR,
    platform VARCHAR, campaign_id VARCHAR, campaign_name VARCHAR, entity_id VARCHAR,
    credit DECIMAL(38,10), amount DECIMAL(38,14))"""

# the obvious formulation: the product of every pair, cast to 20 decimals, summed
OBVIOUS_SQL = """
SELECT r.period, k.model, k.channel, k.platform, k.campaign_id, k.campaign_name,
       sum(CAST(r.amount * k.credit AS DECIMAL(38,20))) AS revenue_x
FROM (SELECT * FROM lin WHERE kind = 'revenue') r
JOIN (SELECT * FROM lin WHERE kind = 'credit') k ON k.entity_id IS NOT DISTINCT FROM r.entity_id
GROUP BY ALL"""


def _load(con: duckdb.DuckDBPyConnection, revenue: list[tuple], credits: list[tuple]) -> None:
    con.execute(LINEAGE_DDL)
    con.executemany(
        "INSERT INTO lin VALUES ('revenue', ?, NULL, NULL, NULL, NULL, NULL, ?, NULL, ?)",
        revenue,
    )
    con.executemany(
        "INSERT INTO lin VALUES ('credit', NULL, ?, ?, NULL, ?, NULL, ?, ?, NULL)", credits
    )


def _attributed(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple]:
    return con.execute(f"SELECT * FROM ({sql}) ORDER BY ALL").fetchall()


def test_attributed_revenue_rounds_each_pair_half_away_from_zero() -> None:
    con = duckdb.connect()
    p = "2024-01-01"
    _load(
        con,
        # entity a: 1.00000000005 (h = 1, l = 5000); entity b: two rows of 0.00000000004999
        # (h = 0, l = 4999 each); entity c: -1.00000000005
        [(p, "a", Decimal("1.00000000005")), (p, "b", Decimal("0.00000000004999")),
         (p, "b", Decimal("0.00000000004999")), (p, "c", Decimal("-1.00000000005"))],
        [("m", "x", "1", "a", Decimal("0.0000000001")),
         ("m", "y", "2", "b", Decimal("0.0000000001")),
         ("m", "z", "3", "c", Decimal("0.0000000001"))],
    )  # fmt: skip
    got = _attributed(con, romi.attributed_revenue_sql("lin"))
    day = got[0][0]
    assert got == [
        # 1.00000000005 x 10^-10 = 0.000000000100000000005: the 21st decimal 5 rounds up
        (day, "m", "x", None, "1", None, Decimal("0.00000000010000000001")),
        # 0.00000000004999 x 10^-10 = 4.999 x 10^-21 rounds to 0, per row: 0 + 0 (the sum of
        # the two amounts first would give 9.998 x 10^-21 -> 1 x 10^-20)
        (day, "m", "y", None, "2", None, Decimal("0E-20")),
        # negative: away from zero
        (day, "m", "z", None, "3", None, Decimal("-0.00000000010000000001")),
    ]
    assert got == _attributed(con, OBVIOUS_SQL)


_amount = st.decimals(
    min_value=Decimal("-100000"), max_value=Decimal("100000"), places=14, allow_nan=False
)
_credit = st.integers(min_value=0, max_value=10**10).map(lambda u: Decimal(u).scaleb(-10))


@settings(max_examples=60, deadline=None)
@given(
    revenue=st.lists(
        st.tuples(st.sampled_from(["2024-01-01", "2024-02-01"]),
                  st.sampled_from(["a", "b", None]), _amount),
        min_size=1, max_size=12,
    ),
    credits=st.lists(
        st.tuples(st.sampled_from(["linear", "first_touch"]), st.sampled_from(["x", "y"]),
                  st.sampled_from(["1", None]), st.sampled_from(["a", "b", None]), _credit),
        min_size=1, max_size=12,
    ),
)  # fmt: skip
def test_attributed_revenue_equals_the_sum_of_rounded_products(
    revenue: list[tuple], credits: list[tuple]
) -> None:
    con = duckdb.connect()
    _load(con, revenue, credits)
    assert _attributed(con, romi.attributed_revenue_sql("lin")) == _attributed(con, OBVIOUS_SQL)


@pytest.mark.parametrize("amount", ["0.00000000000001", "-0.00000000000001", "123.45"])
def test_attributed_revenue_is_decimal_38_20(amount: str) -> None:
    # the romi table's ratios and rounding read revenue_x as DECIMAL(38,20), as before
    con = duckdb.connect()
    _load(con, [("2024-01-01", "a", Decimal(amount))], [("m", "x", "1", "a", Decimal(1))])
    t = con.execute(f"SELECT typeof(revenue_x) FROM ({romi.attributed_revenue_sql('lin')})")
    assert t.fetchone()[0] == "DECIMAL(38,20)"
