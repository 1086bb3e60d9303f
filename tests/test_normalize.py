"""Normalize stage: match keys computed in SQL (+ libphonenumber on distinct values)."""

from __future__ import annotations

from typing import Any

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from romirecon.exitcodes import ConfigError
from romirecon.stages import normalize
from romirecon.stages.common import entity_table_ddl

COLS = [
    "email",
    "first_name",
    "last_name",
    "full_name",
    "phone",
    "company",
    "website",
    "country",
    "city",
    "postal_code",
]


def norm(rows: list[dict[str, Any]], **kw: Any) -> list[dict[str, Any]]:
    con = duckdb.connect()
    con.execute(entity_table_ddl("contact"))
    for i, r in enumerate(rows, 1):
        vals = [r.get(c) for c in COLS]
        con.execute(
            f"INSERT INTO stg_contact (source_name, source_file, source_row, source_id, "
            f"{', '.join(COLS)}) VALUES ('s', 'f.csv', ?, ?, {', '.join('?' * len(COLS))})",
            [i, str(i), *vals],
        )
    normalize.run(con, "r1", **kw)
    cur = con.execute("SELECT * FROM norm_contact ORDER BY source_row")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def test_email() -> None:
    got = norm(
        [{"email": "  Ann.Lee+promo@GMail.com "}, {"email": "not-an-email"}, {"email": "x@acme.io"}]
    )
    assert [g["email_norm"] for g in got] == ["ann.lee+promo@gmail.com", None, "x@acme.io"]
    assert got[2]["email_domain"] == "acme.io"
    canon = norm(
        [{"email": "Ann.Lee+promo@googlemail.com"}, {"email": "a.b+c@acme.io"}],
        gmail_canonical=True,
    )
    # gmail ignores dots and +tags; other providers keep them
    assert [g["email_norm"] for g in canon] == ["annlee@gmail.com", "a.b+c@acme.io"]


def test_phone_e164_uses_country_then_default() -> None:
    got = norm(
        [
            {"phone": "(415) 555-2671"},  # no country: default region US -> +1
            {
                "phone": "020 7946 0958",
                "country": "GB",
            },  # UK national format -> +44, leading 0 dropped
            {"phone": "020 7946 0958", "country": "gb "},  # same, country folded
            {"phone": "+44 20 7946 0958", "country": "US"},  # explicit +44 wins over the region
            {"phone": "12"},  # not a possible number
        ]
    )
    assert [g["phone_e164"] for g in got] == [
        "+14155552671",
        "+442079460958",
        "+442079460958",
        "+442079460958",
        None,
    ]
    de = norm([{"phone": "030 123456"}], default_region="DE")
    assert de[0]["phone_e164"] == "+4930123456"


def test_bad_default_region() -> None:
    with pytest.raises(ConfigError, match="2-letter"):
        norm([{"phone": "1"}], default_region="USA")


def test_company_legal_suffixes() -> None:
    got = norm(
        [
            {"company": "Acme, Inc."},
            {"company": "Société Générale S.A."},
            {"company": "Müller GmbH & Co. KG"},
            {"company": "Widgets Co Ltd"},
            {"company": "Company"},
            {"company": "Incognito Labs"},
        ]
    )
    assert [g["company_norm"] for g in got] == [
        "acme",
        "societe generale",
        "muller",
        "widgets",
        "company",
        "incognito labs",
    ]


def test_website_registrable_domain() -> None:
    got = norm(
        [
            {"website": "https://www.Shop.Example.co.uk/path?q=1"},
            {"website": "example.com"},
            {"website": "http://sub.foo.com:8080/x"},
            {"website": "not a url"},
            {"website": "mailto:bob@corp.io"},
        ]
    )
    assert [g["domain"] for g in got] == [
        "example.co.uk",
        "example.com",
        "foo.com",
        None,
        "corp.io",
    ]


def test_names_folded() -> None:
    got = norm(
        [
            {"first_name": "  ZOË ", "last_name": "O'Brien-Smith"},
            {"full_name": " Jean   Dupont "},
            {"first_name": "Ann", "full_name": "Ann Lee"},
        ]
    )
    assert (got[0]["first_name_norm"], got[0]["last_name_norm"]) == ("zoe", "obrien smith")
    assert got[0]["full_name_norm"] == "zoe obrien smith"
    # no first/last split: taken from the full name
    assert (got[1]["first_name_norm"], got[1]["last_name_norm"]) == ("jean", "dupont")
    assert (got[2]["first_name_norm"], got[2]["last_name_norm"]) == ("ann", "lee")


def test_unparseable_phone_metric() -> None:
    con = duckdb.connect()
    con.execute(entity_table_ddl("contact"))
    con.execute(
        "INSERT INTO stg_contact (source_name, source_file, source_row, phone) VALUES "
        "('s', 'f', 1, '(415) 555-2671'), ('s', 'f', 2, '12'), ('s', 'f', 3, NULL), "
        "('s', 'f', 4, '12')"
    )
    normalize.run(con, "r1")
    row = con.execute(
        "SELECT value, numerator, denominator FROM metric WHERE entity = 'contact' "
        "AND name = 'unparseable_phone_rate'"
    ).fetchall()[0]
    # 3 phones given, 2 unreadable ('12' twice; looked up once)
    assert row == (pytest.approx(2 / 3), 2.0, 3.0)


PHONE_CASES = [
    "(206) 200-5754",
    "206-200-5754",
    "206.200.5754",
    "+1 (206) 200-5754",
    "+44 20 7946 0958",
    "+44 (0)20 7946 0958",
    "0044 20 7946 0958",
    "011 44 20 7946 0958",
    "+39 06 1234 5678",
    "+49 030 123456",
    "+81 3-1234-5678",
    "200-5754",
    "12",
    "1 2",
    "+1",
    "+",
    "(((",
    "+-1-206-200-5754",
    "1-800-FLOWERS",
    "206 200 5754 ext. 12",
    "206/200 5754",
]
REGIONS = ["US", "GB", "DE", "IT", "JP", "AU", "IS", "KW", "BR", "IN", "ZZ"]


def _phone_keys(raws: list[str]) -> list[str]:
    if not raws:
        return []
    con = duckdb.connect()
    con.execute("CREATE TABLE p (i INTEGER, raw VARCHAR)")
    con.executemany("INSERT INTO p VALUES (?, ?)", list(enumerate(raws)))
    return [
        r[0]
        for r in con.execute(
            f"SELECT {normalize.phone_key_expr('raw')} FROM p ORDER BY i"
        ).fetchall()
    ]


def test_phone_key_parses_like_the_raw_value() -> None:
    """libphonenumber runs on phone_key instead of the raw value: same E.164 for every case."""
    keys = _phone_keys(PHONE_CASES)
    # punctuation dropped only where the value is digits/spaces/()/./- (+ first) with 3+ digits
    assert keys[:4] == ["2062005754", "2062005754", "2062005754", "+12062005754"]
    assert keys[12] == "12" and keys[13] == "1 2"  # fewer than 3 digits: as it is
    assert keys[18:] == PHONE_CASES[18:]  # letters, 'ext', '/': as they are
    for region in REGIONS:
        raw = [(p, region) for p in PHONE_CASES]
        assert normalize.e164(raw) == normalize.e164([(k, region) for k in keys]), region


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text(alphabet="+0123456789 ().-", min_size=1, max_size=22), max_size=12),
    st.sampled_from(REGIONS),
)
def test_phone_key_parses_like_the_raw_value_property(raws: list[str], region: str) -> None:
    raws = [r.strip() for r in raws if r.strip()]
    keys = _phone_keys(raws)
    assert normalize.e164([(r, region) for r in raws]) == normalize.e164(
        [(k, region) for k in keys]
    )


def test_norm_tables_are_temporary_and_replace_an_old_persistent_copy() -> None:
    con = duckdb.connect()
    con.execute(entity_table_ddl("contact"))
    con.execute(
        "INSERT INTO stg_contact (source_name, source_file, source_row) VALUES ('s', 'f', 1)"
    )
    # a state database from before kept norm_contact as a table: stale, it must not be read
    con.execute("CREATE TABLE norm_contact AS SELECT 'stale' AS source_name")
    normalize.run(con, "r1")
    rows = con.execute(
        "SELECT table_name, temporary FROM duckdb_tables() WHERE table_name LIKE 'norm_%' "
        "ORDER BY 1"
    ).fetchall()
    assert rows == [("norm_account", True), ("norm_contact", True)]
    assert con.execute("SELECT source_name FROM norm_contact").fetchall() == [("s",)]


def test_phones_in_parallel_give_the_same_list_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above PARALLEL_PHONES the work is spread over processes; the answer is the same list,
    element for element, as one process gives."""
    from romirecon.stages import normalize

    base = [("+1 415 555 0123", "US"), ("020 7946 0958", "GB"), ("12", "US"), ("abc", "DE")]
    pairs = [(f"{p}{i % 7}" if i % 3 else p, r) for i in range(60) for p, r in base]
    monkeypatch.setattr(normalize, "PARALLEL_PHONES", 10)
    monkeypatch.setattr(normalize, "PROCESS_POOL", True)
    assert normalize.e164_all(pairs) == normalize.e164(pairs)
    assert normalize.e164_all(pairs[:5]) == normalize.e164(pairs[:5])


INTERNATIONAL_CASES = ["+3100000", "+003100000", "+0", "+1", "+999123456", "+8081234567"]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.text(alphabet="0123456789", min_size=1, max_size=16), min_size=1, max_size=8),
    st.sampled_from(REGIONS),
)
def test_international_key_parses_alike_without_region(digits: list[str], region: str) -> None:
    """A key the stage parses with region NULL must get the same answer from libphonenumber
    with any default region (checked against the library itself); '+0...' and unknown codes
    are parsed with their region."""
    keys = ["+" + d for d in digits] + INTERNATIONAL_CASES
    con = duckdb.connect()
    con.execute("CREATE TABLE k (phone_key VARCHAR, region VARCHAR)")
    con.executemany("INSERT INTO k VALUES (?, ?)", [(k, region) for k in keys])
    parsed = con.execute(f"SELECT phone_key, {normalize.parse_region_sql()} FROM k").fetchall()
    for key, parse_region in parsed:
        if parse_region is None:
            assert normalize.e164([(key, None)]) == normalize.e164([(key, region)]), key
        else:
            assert parse_region == region
    kept = {k for k, r in parsed if r is not None}
    assert {"+003100000", "+0"} <= kept  # no country code after +: the region decides
    assert "+3100000" not in kept and "+1" not in kept


def test_international_number_parsed_once_national_number_per_region() -> None:
    got = norm(
        [
            {"phone": "+44 20 7946 0958", "country": "US"},
            {"phone": "+442079460958", "country": "DE"},
            {"phone": "+44 (20) 7946-0958"},  # no country: default region
            {"phone": "020 7946 0958", "country": "GB"},  # national: the region decides
            {"phone": "020 7946 0958", "country": "DE"},
        ]
    )
    # the three international spellings share a key and one parse; +44 20 7946 0958 is
    # +442079460958. National 020 7946 0958: GB drops the trunk 0 -> +44 2079460958; DE drops
    # its trunk 0 too -> +49 2079460958 (a possible length for DE)
    assert [g["phone_e164"] for g in got] == [
        "+442079460958",
        "+442079460958",
        "+442079460958",
        "+442079460958",
        "+492079460958",
    ]


def test_phones_parsed_on_an_earlier_night_are_not_parsed_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """libphonenumber's answers stay in `phone_e164_cache`: the next run parses only the pairs
    it has not seen, gets the same phone_e164 for the others, and the cache keeps exactly the
    pairs of the latest run. Another library version parses everything again."""
    seen: list[list[tuple[str, str]]] = []
    real = normalize.e164_all

    def counting(pairs: list[tuple[str, str]]) -> list[str | None]:
        seen.append(list(pairs))
        return real(pairs)

    monkeypatch.setattr(normalize, "e164_all", counting)
    con = duckdb.connect()
    con.execute(entity_table_ddl("contact"))

    def night(phones: list[tuple[str, str | None]]) -> list[tuple[int, str | None]]:
        con.execute("DELETE FROM stg_contact")
        for i, (phone, country) in enumerate(phones, 1):
            con.execute(
                "INSERT INTO stg_contact (source_name, source_file, source_row, phone, country) "
                "VALUES ('s', 'f', ?, ?, ?)",
                [i, phone, country],
            )
        seen.clear()
        normalize.run(con, "r")
        return con.execute("SELECT source_row, phone_e164 FROM norm_contact ORDER BY 1").fetchall()

    first = night([("(415) 555-0123", "US"), ("020 7946 0958", "GB"), ("12", None)])
    # by hand: US and GB national numbers in E.164; "12" is no possible number
    assert first == [(1, "+14155550123"), (2, "+442079460958"), (3, None)]
    # the keys are the digits (a leading + kept), the region the country else the default
    assert sorted(seen[0]) == [("02079460958", "GB"), ("12", "US"), ("4155550123", "US")]
    # the next night: one phone is gone, one is new; only the new one is parsed
    second = night([("020 7946 0958", "GB"), ("12", None), ("030 123456", "DE")])
    assert second == [(1, "+442079460958"), (2, None), (3, "+4930123456")]
    assert seen[0] == [("030123456", "DE")]
    cached = con.execute(
        "SELECT phone_key, region, phone_e164 FROM phone_e164_cache WHERE entity = 'contact' "
        "ORDER BY 1"
    ).fetchall()
    assert cached == [
        ("02079460958", "GB", "+442079460958"),
        ("030123456", "DE", "+4930123456"),
        ("12", "US", None),
    ]
    # answers of another libphonenumber version are not trusted
    con.execute("UPDATE phone_e164_cache SET library = 'old'")
    assert night([("020 7946 0958", "GB")]) == [(1, "+442079460958")]
    assert seen[0] == [("02079460958", "GB")]
