"""The contract compiler: each canonical type and each quarantine reason, by hand-made cases."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from romirecon.testing import stage_sample


def stage(tmp_path: Path, mapping: dict[str, Any], content: str | bytes, name: str = "x.csv",
          entity: str | None = None, fmt: dict[str, Any] | None = None):  # fmt: skip
    mp = tmp_path / "m.yaml"
    mp.write_text(yaml.safe_dump(mapping))
    sp = tmp_path / name
    sp.write_bytes(content if isinstance(content, bytes) else content.encode())
    return stage_sample(mp, sp, "billing", entity or mapping["entity"], fmt)


def rows(con, sql: str) -> list[tuple]:
    return con.execute(sql).fetchall()


LINE = {
    "entity": "invoice_line",
    "columns": {
        "source_id": {"from": "id", "required": True},
        "currency": {"from": "currency"},
        "amount": {"from": "amount", "unit": "major"},
    },
}


def test_money_major_units_use_the_currency_exponent(tmp_path: Path) -> None:
    # USD 19.99 -> 1999 cents; JPY 500 -> 500 yen (exponent 0); KWD 1.234 -> 1234 fils (3);
    # USD 0.125 -> 12.5 cents -> 12 (half-even); USD 0.135 -> 13.5 -> 14 (half-even)
    con, t, q = stage(tmp_path, LINE, "id,currency,amount\n1,usd,19.99\n2,JPY,500\n3,KWD,1.234\n"
                      "4,USD,0.125\n5,USD,0.135\n")  # fmt: skip
    assert q == []
    assert rows(con, f"SELECT source_id, currency, amount FROM {t} ORDER BY source_id") == [
        ("1", "USD", 1999), ("2", "JPY", 500), ("3", "KWD", 1234), ("4", "USD", 12), ("5", "USD", 14),
    ]  # fmt: skip


def test_money_micros_and_minor(tmp_path: Path) -> None:
    m = {"entity": "ad_spend", "currency": "USD",
         "columns": {"campaign_id": {"from": "c"}, "spend": {"from": "cost_micros", "unit": "micros"}}}  # fmt: skip
    # 12_345_678 micros = 12.345678 USD = 1234.5678 cents -> 1235; 5_000 micros = 0.5 cents -> 0 (even)
    # 15_000 micros = 1.5 cents -> 2 (half-even rounds to the even neighbour)
    con, t, q = stage(
        tmp_path, m, "c,cost_micros\na,12345678\nb,5000\nc,15000\n", entity="ad_spend"
    )
    assert q == []
    assert rows(con, f"SELECT campaign_id, spend, currency FROM {t} ORDER BY 1") == [
        ("a", 1235, "USD"), ("b", 0, "USD"), ("c", 2, "USD"),
    ]  # fmt: skip


def test_vendor_exponent_override(tmp_path: Path) -> None:
    m = {**LINE, "exponents": {"ISK": 2}}
    con, t, _ = stage(tmp_path, m, "id,currency,amount\n1,ISK,100\n")
    assert rows(con, f"SELECT amount FROM {t}") == [(10000,)]  # Stripe: ISK has two decimals


def test_unknown_currency_and_bad_amount_are_quarantined(tmp_path: Path) -> None:
    con, t, q = stage(
        tmp_path, LINE, "id,currency,amount\n1,USD,1.00\n2,XYZ,1.00\n3,USD,abc\n4,USD,NaN\n"
    )
    assert rows(con, f"SELECT source_id FROM {t}") == [("1",)]
    got = [(r["source_row"], r["reason"], r["column_name"], r["value"]) for r in q]
    assert got == [
        (2, "unknown-currency", "currency", "XYZ"),
        (3, "invalid-money", "amount", "abc"),
        (4, "invalid-money", "amount", "NaN"),
    ]
    assert '"amount":"abc"' in q[1]["record"]  # original values kept


def test_amount_without_currency_says_so(tmp_path: Path) -> None:
    _, _, q = stage(tmp_path, LINE, "id,currency,amount\n1,,1.00\n")
    assert [(r["reason"], r["column_name"]) for r in q] == [("missing-currency", "amount")]


def test_thousands_and_decimal_comma(tmp_path: Path) -> None:
    fmt = {"delimiter": ";", "decimal_separator": ",", "thousands_separator": "."}
    con, t, q = stage(tmp_path, LINE, "id;currency;amount\n1;EUR;1.234,56\n", fmt=fmt)
    assert q == [] and rows(con, f"SELECT amount FROM {t}") == [(123456,)]


def test_timestamps_zoned_naive_and_epoch(tmp_path: Path) -> None:
    m = {"entity": "invoice", "timezone": "America/New_York", "columns": {
        "source_id": {"from": "id"},
        "created_at": {"from": "created"},
        "period_start": {"from": "ps", "formats": ["epoch"]},
        "updated_at": {"from": "up", "formats": ["%d/%m/%Y %H:%M"]},
    }}  # fmt: skip
    content = (
        "id,created,ps,up\n"
        "a,2024-01-15T10:20:30.000Z,1704067200,15/01/2024 09:00\n"  # Z; epoch = 2024-01-01 UTC
        "b,2024-07-01 12:00:00,1704067200,01/07/2024 12:00\n"  # naive: New York summer = UTC-4
        "c,2024-01-01T00:00:00+02:00,,\n"  # offset: 2023-12-31 22:00 UTC
    )
    con, t, q = stage(tmp_path, m, content, entity="invoice")
    assert q == []
    assert rows(con, f"SELECT source_id, created_at, period_start, updated_at FROM {t} ORDER BY 1") == [
        ("a", dt.datetime(2024, 1, 15, 10, 20, 30), dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 15, 14, 0)),
        ("b", dt.datetime(2024, 7, 1, 16, 0), dt.datetime(2024, 1, 1), dt.datetime(2024, 7, 1, 16, 0)),
        ("c", dt.datetime(2023, 12, 31, 22, 0), None, None),
    ]  # fmt: skip


def test_bad_dates_quarantined(tmp_path: Path) -> None:
    m = {"entity": "fx_rate", "columns": {"date": {"from": "d", "formats": ["%Y-%m-%d"]},
                                          "rate": {"from": "r"}, "quote": {"from": "q"}}}  # fmt: skip
    con, t, q = stage(
        tmp_path, m, "d,r,q\n2024-02-30,1.1,USD\n2024-02-29,1.2,USD\n", entity="fx_rate"
    )
    assert rows(con, f"SELECT date, rate FROM {t}") == [(dt.date(2024, 2, 29), Decimal("1.2"))]
    assert [(r["reason"], r["value"]) for r in q] == [("invalid-date", "2024-02-30")]


def test_enum_pattern_range_required_boolean(tmp_path: Path) -> None:
    m = {"entity": "invoice", "columns": {
        "source_id": {"from": "id", "required": True, "pattern": "in_[0-9]+"},
        "status": {"from": "status", "enum": ["draft", "open", "paid", "void", "uncollectible"]},
        "currency": {"from": "cur"},
        "total": {"from": "total", "unit": "minor", "min": 0, "max": 100000000},
        "livemode": {"from": "live"},
    }}  # fmt: skip
    content = (
        "id,status,cur,total,live\n"
        "in_1,paid,usd,100,true\n"  # ok
        ",paid,usd,100,true\n"  # missing-required
        "xx_2,paid,usd,100,true\n"  # pattern-mismatch
        "in_3,sent,usd,100,true\n"  # not-in-enum
        "in_4,paid,usd,-5,true\n"  # out-of-range (min 0)
        "in_5,paid,usd,100,perhaps\n"  # invalid-boolean
        "in_6,open,usd,200,0\n"  # ok, livemode false
    )
    con, t, q = stage(tmp_path, m, content, entity="invoice")
    assert rows(con, f"SELECT source_id, total, livemode FROM {t} ORDER BY 1") == [
        ("in_1", 100, True), ("in_6", 200, False),
    ]  # fmt: skip
    assert [(r["source_row"], r["reason"]) for r in q] == [
        (2, "missing-required"), (3, "pattern-mismatch"), (4, "not-in-enum"),
        (5, "out-of-range"), (6, "invalid-boolean"),
    ]  # fmt: skip


def test_unique_key_keeps_first_and_quarantines_repeats(tmp_path: Path) -> None:
    m = {**LINE, "unique": [["source_id"]]}
    con, t, q = stage(tmp_path, m, "id,currency,amount\n1,USD,1\n2,USD,2\n1,USD,3\n1,USD,1\n")
    assert rows(con, f"SELECT source_id, amount FROM {t} ORDER BY source_row") == [
        ("1", 100),
        ("2", 200),
    ]
    assert [(r["source_row"], r["reason"], r["value"]) for r in q] == [
        (3, "duplicate-key", "1"), (4, "duplicate-key", "1"),
    ]  # fmt: skip


def test_json_quarantine_keeps_each_record_as_written_also_for_repeated_keys(
    tmp_path: Path,
) -> None:
    """A JSON row that fails a check, and one that passes every check but repeats a unique key
    (found only after the checks), both carry their record exactly as the file has it (spacing
    and number spelling included); rows 1 and 3 are staged."""
    lines = [
        '{"id": "1", "currency": "USD", "amount": 1.50}',
        '{"id":"2","currency":"USD","amount":"abc"}',
        '{"id":"3",  "currency":"USD", "amount":2}',
        '{"id":"1","currency":"USD","amount":3.0,"note":"again"}',
    ]
    m = {**LINE, "unique": [["source_id"]]}
    con, t, q = stage(tmp_path, m, "\n".join(lines) + "\n", name="x.jsonl")
    # 1.50 USD -> 150 cents; 2 USD -> 200 cents
    assert rows(con, f"SELECT source_id, amount FROM {t} ORDER BY source_row") == [
        ("1", 150), ("3", 200),
    ]  # fmt: skip
    assert [(r["source_row"], r["reason"], r["value"], r["record"]) for r in q] == [
        (2, "invalid-money", "abc", lines[1]), (4, "duplicate-key", "1", lines[3]),
    ]  # fmt: skip


def test_json_both_stripe_shapes_and_lists(tmp_path: Path) -> None:
    m = {"entity": "invoice_line", "format": {"type": "json", "json_path": "data"}, "columns": {
        "source_id": {"from": "id"},
        "proration": {"from": ["parent.subscription_item_details.proration", "proration"]},
        "subscription_item_id": {"from": ["parent.subscription_item_details.subscription_item",
                                          "subscription_item"]},
        "amount": {"from": "amount", "unit": "minor"},
        "currency": {"from": "currency"},
    }}  # fmt: skip
    doc = (
        '{"object":"list","data":['
        '{"id":"il_new","amount":-500,"currency":"usd","parent":{"type":"subscription_item_details",'
        '"subscription_item_details":{"proration":true,"subscription_item":"si_1"}}},'
        '{"id":"il_old","amount":1500,"currency":"usd","proration":false,"subscription_item":"si_2"}]}'
    )
    con, t, q = stage(tmp_path, m, doc, name="lines.json")
    assert q == []
    assert rows(con, f"SELECT source_id, proration, subscription_item_id, amount FROM {t} ORDER BY source_row") == [
        ("il_new", True, "si_1", -500), ("il_old", False, "si_2", 1500),
    ]  # fmt: skip


def test_list_column_split_and_json(tmp_path: Path) -> None:
    m = {"entity": "contact", "columns": {"source_id": {"from": "id"}, "merged_ids": {"from": "m"}}}
    con, t, _q = stage(
        tmp_path, m, 'id,m\n1,"101;102; 103"\n2,\n3,"[""7"",""8""]"\n', entity="contact"
    )
    assert rows(con, f"SELECT source_id, merged_ids FROM {t} ORDER BY 1") == [
        ("1", ["101", "102", "103"]), ("2", None), ("3", ["7", "8"]),
    ]  # fmt: skip


def test_unpivot_wide_ecb_file(tmp_path: Path) -> None:
    m = {"entity": "fx_rate", "unpivot": {"keep": ["Date"], "name_to": "quote", "value_to": "rate"},
         "filter": "\"rate\" <> 'N/A'",
         "columns": {"date": {"from": "Date"}, "base": {"const": "EUR"}, "quote": {"from": "quote"},
                     "rate": {"from": "rate", "required": True}}}  # fmt: skip
    # the real file: newest first, N/A for missing rates, a trailing comma on every line
    content = "Date,USD,JPY,CYP,\n2024-01-03,1.0956,158.47,N/A,\n2024-01-02,1.0919,155.94,N/A,\n"
    con, t, q = stage(tmp_path, m, content, entity="fx_rate")
    assert rows(con, f"SELECT date, base, quote, rate FROM {t} ORDER BY date, quote") == [
        (dt.date(2024, 1, 2), "EUR", "JPY", Decimal("155.94")),
        (dt.date(2024, 1, 2), "EUR", "USD", Decimal("1.0919")),
        (dt.date(2024, 1, 3), "EUR", "JPY", Decimal("158.47")),
        (dt.date(2024, 1, 3), "EUR", "USD", Decimal("1.0956")),
    ]
    # the two N/A cells: filtered (data gaps, not errors), still visible in the quarantine
    assert [(r["reason"], r["source_row"]) for r in q] == [("filtered-out", 1), ("filtered-out", 2)]
    assert all('"quote":"CYP"' in r["record"] for r in q)


def test_unpivot_repeated_line_names_each_repeated_key_with_its_own_record(
    tmp_path: Path,
) -> None:
    """A wide line exported twice repeats two keys (one per quote column): each quarantined row
    names the key of its own cell and carries that cell's record, not a neighbour's."""
    m = {"entity": "fx_rate", "unpivot": {"keep": ["Date"], "name_to": "quote", "value_to": "rate"},
         "unique": [["date", "base", "quote"]],
         "columns": {"date": {"from": "Date"}, "base": {"const": "EUR"}, "quote": {"from": "quote"},
                     "rate": {"from": "rate", "required": True}}}  # fmt: skip
    content = "Date,USD,JPY\n2024-01-03,1.0956,158.47\n2024-01-03,1.0956,158.47\n"
    con, t, q = stage(tmp_path, m, content, entity="fx_rate")
    # row 1's two cells are staged; row 2 repeats both keys
    assert rows(con, f"SELECT quote, rate FROM {t} ORDER BY quote") == [
        ("JPY", Decimal("158.47")), ("USD", Decimal("1.0956")),
    ]  # fmt: skip
    got = sorted((r["source_row"], r["reason"], r["value"], r["record"]) for r in q)
    assert got == [
        (2, "duplicate-key", "2024-01-03|EUR|JPY",
         '{"Date":"2024-01-03","quote":"JPY","rate":"158.47"}'),
        (2, "duplicate-key", "2024-01-03|EUR|USD",
         '{"Date":"2024-01-03","quote":"USD","rate":"1.0956"}'),
    ]  # fmt: skip


def test_malformed_rows_are_quarantined_with_line(tmp_path: Path) -> None:
    con, t, q = stage(tmp_path, LINE, "id,currency,amount\n1,USD,1\n2,USD,2,extra\n3,USD,3\n")
    assert rows(con, f"SELECT source_id FROM {t} ORDER BY 1") == [("1",), ("3",)]
    assert [(r["reason"], r["source_line"]) for r in q] == [("malformed-row", 3)]


@pytest.mark.parametrize(
    "encoding,data",
    [
        ("utf-8", "\ufeffid,currency,amount\n1,EUR,1\n".encode()),  # BOM
        ("latin-1", "id,currency,amount\ncafé,EUR,1\n".encode("latin-1")),
        ("utf-16", "id,currency,amount\ncafé,EUR,1\n".encode("utf-16")),
    ],
)
def test_encodings(tmp_path: Path, encoding: str, data: bytes) -> None:
    fmt = None if encoding == "utf-8" else {"encoding": encoding}
    con, t, q = stage(tmp_path, LINE, data, fmt=fmt)
    assert q == []
    assert len(rows(con, f"SELECT source_id FROM {t} WHERE amount = 100")) == 1
    if encoding != "utf-8":
        assert rows(con, f"SELECT source_id FROM {t}") == [("café",)]


def test_mixed_line_endings(tmp_path: Path) -> None:
    con, t, q = stage(tmp_path, LINE, b"id,currency,amount\r\n1,USD,1\n2,USD,2\r\n")
    assert q == [] and rows(con, f"SELECT count(*) FROM {t}") == [(2,)]


def test_staged_rows_stay_in_file_order_without_a_sort(tmp_path: Path) -> None:
    # the staged table is copied from the check table in storage order (no second sort): with a
    # money column (the currency exponent lookup), quarantined rows and duplicate keys in between,
    # and enough rows for several threads, the stored order must still be source_row order
    lines = ["id,currency,amount"]
    for i in range(1, 20001):
        cur = ["USD", "JPY", "EUR", "XYZ"][i % 4]  # every 4th row (i % 4 == 3) is unknown
        lines.append(f"{i if i % 1000 else 1},{cur},{i}.5")  # ids 1000, 2000, ... repeat id 1
    m = {**LINE, "unique": [["source_id"]]}
    con, _t, q = stage(tmp_path, m, "\n".join(lines) + "\n")
    stored = [r[0] for r in rows(con, "SELECT source_row FROM staged_sample ORDER BY rowid")]
    # rows 1..20000: unknown currency where i % 4 == 3 (5000 rows); of the rest, i % 1000 == 0
    # repeats id 1 (i = 1000, 2000, ..., 20000: 20 rows, none with i % 4 == 3) -> 20 duplicates
    expected = [i for i in range(1, 20001) if i % 4 != 3 and i % 1000 != 0]
    assert stored == expected
    assert len(q) == 5000 + 20
    assert [r["source_row"] for r in q] == sorted(r["source_row"] for r in q)
    # row 1 is JPY 1.5: no minor unit, half-even -> 2; row 2 is EUR 2.5 -> 250 cents
    assert rows(con, "SELECT source_row, amount FROM staged_sample WHERE source_row IN (1, 2)") == [
        (1, 2), (2, 250),
    ]  # fmt: skip


def test_in_key_order_detects_a_misordered_table() -> None:
    import duckdb

    from romirecon.stages.contract import in_key_order

    con = duckdb.connect()
    con.execute("CREATE TABLE ok AS SELECT * FROM (VALUES ('a', 1), ('a', 2), ('b', 1)) t(source_file, source_row)")  # fmt: skip
    con.execute("CREATE TABLE swapped AS SELECT * FROM (VALUES ('a', 2), ('a', 1)) t(source_file, source_row)")  # fmt: skip
    con.execute("CREATE TABLE files AS SELECT * FROM (VALUES ('b', 1), ('a', 2)) t(source_file, source_row)")  # fmt: skip
    con.execute("CREATE TABLE dup AS SELECT * FROM (VALUES ('a', 1), ('a', 1)) t(source_file, source_row)")  # fmt: skip
    assert in_key_order(con, "ok")
    assert not in_key_order(con, "swapped")
    assert not in_key_order(con, "files")
    assert not in_key_order(con, "dup")


def test_json_members_of_one_column_are_extracted_together(tmp_path: Path) -> None:
    from romirecon.stages.contract import JsonPaths, source_ref

    jp = JsonPaths()
    cols = {"id", "properties", "meta"}
    assert source_ref("properties.email", cols, jp) == '"_romirecon_jp0"[1]'
    assert source_ref("meta.a.b", cols, jp) == '"_romirecon_jp1"[1]'
    assert source_ref("properties.city", cols, jp) == '"_romirecon_jp0"[2]'
    assert source_ref("properties.email", cols, jp) == '"_romirecon_jp0"[1]'  # asked twice
    assert source_ref("id", cols, jp) == '"id"'
    assert jp.select_items() == [
        """json_extract_string("properties", ['$."email"', '$."city"']) AS "_romirecon_jp0\"""",
        """json_extract_string("meta", ['$."a"."b"']) AS "_romirecon_jp1\"""",
    ]
    # end to end: the values are those of the members (null member and missing member -> NULL)
    m = {"entity": "contact", "format": {"type": "json"}, "columns": {
        "source_id": {"from": "id"},
        "email": {"from": "properties.email"},
        "city": {"from": ["properties.city", "properties.town"]},
        "company": {"from": "properties.company"},
    }}  # fmt: skip
    doc = (
        '{"id":"1","properties":{"email":"a@x.io","city":null,"town":"Oslo","company":"Acme"}}\n'
        '{"id":"2","properties":{"email":" b@y.io ","city":"Rome"}}\n'
    )
    con, _t, q = stage(tmp_path, m, doc, name="c.jsonl", entity="contact")
    assert q == []
    assert rows(con, "SELECT source_id, email, city, company FROM staged_sample ORDER BY rowid") == [
        ("1", "a@x.io", "Oslo", "Acme"), ("2", "b@y.io", "Rome", None),
    ]  # fmt: skip


# A mapping reading the record text `_json` with literal paths, as the bundled Stripe mappings do
# (the discount and tax sums of an invoice line, the first item of a subscription)
JSON_CALLS = {"entity": "invoice_line", "filter": "json_extract_string(_json, '$.livemode') <> 'false'",
              "columns": {
    "source_id": {"from": "id"},
    "currency": {"from": "currency"},
    "amount": {"from": "amount", "unit": "minor"},
    "discount": {"expr": "coalesce(list_sum(CAST(json_extract(\"_json\", '$.discount_amounts[*].amount') AS BIGINT[])), 0)", "unit": "minor"},
    "tax": {"expr": "coalesce(list_sum(CAST(json_extract(\"_json\", '$.tax_amounts[*].amount') AS BIGINT[])), list_sum(CAST(json_extract(\"_json\", '$.taxes[*].amount') AS BIGINT[])), -1)", "unit": "minor"},
    "price_id": {"expr": "coalesce(json_extract_string(\"_json\", '$.items.data[0].price.id'), json_extract_string(\"_json\", '$.plan.id'))"},
    "coupon": {"expr": "len(json_extract(_json, '$.discount_amounts[*].amount'))"},
    "description": {"expr": "json_extract_string(_json, '$.meta') || '|' || json_extract(\"_JSON\", '$.meta') || '|' || 'json_extract(_json, ''$.x'')'"},
}}  # fmt: skip


def test_literal_json_paths_of_exprs_share_one_parse(tmp_path: Path) -> None:
    """Every `json_extract(_json, '$...')` / `json_extract_string(...)` call of the exprs and the
    filter reads one shared extraction instead of parsing the record again, and gives what the
    call gives. Expected values worked out from the records below: a wildcard over a missing
    member is the empty list (so its sum is NULL and the next alternative applies), over an
    empty array too; a string call unquotes a string and writes an object as JSON text; the
    text inside a string literal is left alone."""
    from romirecon.stages.contract import JsonPaths

    docs = [
        # discounts 100 + 25, old-style taxes, the price of the first item
        '{"id":"l1","currency":"usd","amount":1000,"livemode":true,"discount_amounts":[{"amount":100},{"amount":25}],'
        '"tax_amounts":[{"amount":7}],"items":{"data":[{"price":{"id":"p_1"}}]},"plan":{"id":"pl_1"},"meta":"m"}',
        # no discounts member, new-style taxes, no items: the plan's id; meta an object
        '{"id":"l2","currency":"usd","amount":2000,"livemode":true,"taxes":[{"amount":3},{"amount":4}],'
        '"plan":{"id":"pl_2"},"meta":{"k":[1,2]}}',
        # empty discounts, no tax member of either shape, meta null
        '{"id":"l3","currency":"eur","amount":0,"livemode":true,"discount_amounts":[],"meta":null}',
        # filtered out: livemode false
        '{"id":"l4","currency":"usd","amount":5,"livemode":false}',
    ]
    con, t, q = stage(tmp_path, JSON_CALLS, "\n".join(docs) + "\n", name="l.jsonl")
    assert rows(con, f"SELECT source_id, discount, tax, price_id, coupon, description FROM {t} ORDER BY source_id") == [
        ("l1", 125, 7, "p_1", "2", 'm|"m"|json_extract(_json, \'$.x\')'),
        ("l2", 0, 7, "pl_2", "0", '{"k":[1,2]}|{"k":[1,2]}|json_extract(_json, \'$.x\')'),
        ("l3", 0, -1, None, "0", None),
    ]  # fmt: skip
    assert [(r["source_row"], r["reason"]) for r in q] == [(4, "filtered-out")]

    # the planning: the record's text is extracted once, by json_extract (wildcards and JSON
    # calls among them), each path once; the call inside the string literal is not one
    jp = JsonPaths()
    sqls = [
        JSON_CALLS["filter"],
        *(c["expr"] for c in JSON_CALLS["columns"].values() if "expr" in c),
    ]
    jp.plan(sqls, {"_json", "id"})
    for sql in sqls:
        jp.rewrite(sql)
    assert jp.select_items() == [
        """json_extract("_json", ['$.livemode', '$.discount_amounts', '$.tax_amounts', '$.taxes', """
        """'$.items.data[0].price.id', '$.plan.id', '$.meta']) AS "_romirecon_jp0\""""
    ]
    # string calls only: one json_extract_string, its elements are the values; one call alone
    # is not rewritten
    jp = JsonPaths()
    jp.plan([JSON_CALLS["columns"]["price_id"]["expr"], "json_extract(id, '$.a')"], {"_json", "id"})
    assert jp.rewrite(JSON_CALLS["columns"]["price_id"]["expr"]) == (
        'coalesce("_romirecon_jp0"[1], "_romirecon_jp0"[2])'
    )
    assert jp.rewrite("json_extract(id, '$.a')") == "json_extract(id, '$.a')"
    assert jp.select_items() == [
        """json_extract_string("_json", ['$.items.data[0].price.id', '$.plan.id']) AS "_romirecon_jp0\""""
    ]


def _staged_project(
    tmp_path: Path, mapping: dict[str, Any], files: dict[str, list[str]], glob: str = "*.jsonl"
):
    """A project of one invoice source over `files` (name under exports/ -> lines; the source
    reads exports/<glob>), ingested and staged the way a run does it, DuckDB on four threads
    (an NDJSON export of a few tens of MB is read in parallel then)."""
    import duckdb

    from romirecon.config import load_project
    from romirecon.db import configure
    from romirecon.stages import contract, ingest
    from romirecon.stages.common import ensure_common_tables

    (tmp_path / "exports").mkdir()
    for name, lines in files.items():
        (tmp_path / "exports" / name).write_text("\n".join(lines) + "\n")
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(mapping))
    doc = {"version": 1, "reporting_currency": "USD", "sources": [
        {"name": "inv", "system": "billing", "entity": "invoice", "mapping": "m.yaml",
         "path": f"exports/{glob}"},
    ]}  # fmt: skip
    (tmp_path / "romirecon.yaml").write_text(yaml.safe_dump(doc))
    project = load_project(tmp_path)
    con = duckdb.connect()
    configure(con)
    con.execute("SET threads = 4")
    ensure_common_tables(con)
    contract.ensure_tables(con)
    res = ingest.ingest_source(con, project, project.sources[0], "t")
    contract.stage_source(con, project.sources[0], res, "t")
    return con, res


# an invoice's id must look like in_<digits>; `n` (the record's own number, written by the
# test) is staged as the invoice number
NUMBERED = {"entity": "invoice", "columns": {
    "source_id": {"from": "id", "required": True, "pattern": "^in_[0-9]+$"},
    "number": {"from": "n"},
}}  # fmt: skip


def test_large_ndjson_read_in_parallel_keeps_every_record_number(tmp_path: Path) -> None:
    """Two NDJSON files of 28 and 21 MB (large enough that DuckDB splits each across threads:
    with insertion order off, the same read comes back out of order) are read without record
    numbers and numbered from the staged order. Each record carries its own line number `n`,
    written by this test; every staged row's source_row must equal it, and the rows that fail
    the id pattern must be quarantined under exactly the lines this test broke."""
    pad = "x" * 100
    broken = {"a_1.jsonl": {1, 7, 99_999, 200_000}, "a_2.jsonl": {1, 65_537, 150_000}}
    files = {
        name: [
            f'{{"id":"{"bad" if i in broken[name] else "in_"}{i}","n":{i},"pad":"{pad}"}}'
            for i in range(1, n + 1)
        ]
        for name, n in (("a_1.jsonl", 200_000), ("a_2.jsonl", 150_000))
    }
    con, res = _staged_project(tmp_path, NUMBERED, files)
    assert res.unnumbered_view is not None  # the parallel read was taken
    assert res.json_file_rows == [("exports/a_1.jsonl", 200_000), ("exports/a_2.jsonl", 150_000)]
    staged = con.execute(
        "SELECT source_file, count(*), count(*) FILTER (WHERE CAST(number AS BIGINT) <> source_row),"
        " min(source_row), max(source_row) FROM staged_inv GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert staged == [("exports/a_1.jsonl", 200_000 - 4, 0, 2, 199_999),
                      ("exports/a_2.jsonl", 150_000 - 3, 0, 2, 149_999)]  # fmt: skip
    q = con.execute(
        "SELECT source_file, source_row, reason, value, record FROM quarantine "
        "ORDER BY source_file, source_row"
    ).fetchall()
    want = [(f, i, "pattern-mismatch", f"bad{i}", files[f.split("/")[1]][i - 1])
            for f in ("exports/a_1.jsonl", "exports/a_2.jsonl")
            for i in sorted(broken[f.split("/")[1]])]  # fmt: skip
    assert q == want


def test_a_mapping_that_reads_source_row_gets_it_from_the_numbered_read(tmp_path: Path) -> None:
    m = {"entity": "invoice", "columns": {
        "source_id": {"from": "id"},
        "number": {"expr": "'row ' || CAST(source_row AS VARCHAR)"},
    }}  # fmt: skip
    con, _res = _staged_project(tmp_path, m, {"a.jsonl": ['{"id":"x"}', '{"id":"y"}']})
    assert con.execute("SELECT source_id, number, source_row FROM staged_inv ORDER BY rowid").fetchall() == [
        ("x", "row 1", 1), ("y", "row 2", 2),
    ]  # fmt: skip


def test_number_rows_refuses_rows_that_are_not_where_the_counts_put_them() -> None:
    import duckdb

    from romirecon.stages.ingest import number_rows

    con = duckdb.connect()
    con.execute(
        "CREATE TABLE t AS SELECT * FROM (VALUES ('f1', NULL::BIGINT), ('f2', NULL), ('f1', NULL))"
        " v(source_file, source_row)"
    )
    # positions 0, 1, 2: f1's two rows belong at 0-1 and f2's at 2, so positions 1 and 2 are wrong
    with pytest.raises(RuntimeError, match="2 rows are not in their file's place"):
        number_rows(con, "t", [("f1", 2), ("f2", 1)])
    with pytest.raises(RuntimeError, match="3 rows written for 4 records read"):
        number_rows(con, "t", [("f1", 2), ("f2", 2)])
    con.execute(
        "CREATE OR REPLACE TABLE t AS SELECT * FROM (VALUES ('f1', NULL::BIGINT), ('f2', NULL), "
        "('f2', NULL)) v(source_file, source_row)"
    )
    number_rows(con, "t", [("f1", 1), ("f2", 2)])
    assert con.execute("SELECT * FROM t ORDER BY rowid").fetchall() == [
        ("f1", 1), ("f2", 1), ("f2", 2),
    ]  # fmt: skip


def test_large_csv_read_unnumbered_keeps_every_record_number(tmp_path: Path) -> None:
    """A 30 MB CSV is read without record numbers and without a sort, and numbered from its
    order in the table: each row's `n` column, written by this test, is its data row number,
    and the rows this test broke are quarantined under exactly those rows. (With the 64 MB
    max_line_size ingest allows, DuckDB 2.0 reads a CSV on one thread; were it to split the
    file, this is the test that says the order held.)"""
    pad = "x" * 100
    broken = {1, 4_097, 123_456, 250_000}
    lines = ["id,n,pad"] + [
        f"{'bad' if i in broken else 'in_'}{i},{i},{pad}" for i in range(1, 250_001)
    ]
    con, res = _staged_project(tmp_path, NUMBERED, {"a.csv": lines}, glob="a.csv")
    assert res.unnumbered_view is None  # not JSON: numbered as the part table is written
    assert con.execute(
        "SELECT count(*), count(*) FILTER (WHERE CAST(number AS BIGINT) <> source_row), "
        "min(source_row), max(source_row) FROM staged_inv"
    ).fetchone() == (250_000 - 4, 0, 2, 249_999)
    q = con.execute(
        "SELECT source_row, reason, value, record FROM quarantine ORDER BY source_row"
    ).fetchall()
    assert [(r, reason, value) for r, reason, value, _ in q] == [
        (i, "pattern-mismatch", f"bad{i}") for i in sorted(broken)
    ]
    assert all(f'"n":"{r}"' in record for r, _, _, record in q)  # each row's own values
