"""Normalize stage: match keys for the party entities (`stg_contact`, `stg_account`).

Writes the temp table `norm_<entity>` (an intermediate of the run, not kept in the state
database) keyed by (source_name, source_file, source_row) with:

- `email_norm` (trim, lower; optionally gmail dots and +tags dropped), `email_domain`;
- `phone_e164` from Google's libphonenumber, run on DISTINCT (phone, region) pairs only and
  joined back; the region is the record's `country` when it is a 2-letter code, else the
  configured default;
- `company_norm` without legal suffixes (Inc, LLC, Ltd, GmbH, S.A., ...);
- `domain`: the registrable domain of `website` (scheme, www., path and port dropped);
- `first_name_norm`, `last_name_norm`, `full_name_norm`: case, accents and whitespace folded
  (first/last taken from `full_name` when the export has no split);
- `street_norm`, `city_norm`, `postal_norm`, `country_norm`.

Everything is SQL except libphonenumber, which sees each distinct value once, and a value only
once across nights: its answers are kept in the state database (`phone_e164_cache`, per entity
and library version; each run keeps the pairs its exports still have).
"""

from __future__ import annotations

import duckdb

from romirecon.sqlutil import ident

PARTY_ENTITIES = ("contact", "account")
KEY = ("source_name", "source_file", "source_row")

LEGAL_SUFFIXES = (
    "inc",
    "incorporated",
    "llc",
    "llp",
    "lp",
    "ltd",
    "limited",
    "plc",
    "corp",
    "corporation",
    "co",
    "company",
    "gmbh",
    "ag",
    "kg",
    "ug",
    "se",
    "sa",
    "sas",
    "sarl",
    "srl",
    "spa",
    "bv",
    "nv",
    "oy",
    "ab",
    "as",
    "asa",
    "aps",
    "pty",
    "pte",
    "kk",
    "sl",
    "sro",
    "zoo",
    "doo",
    "pvt",
    "group",
    "holding",
    "holdings",
)

# second-level labels under which registrations happen one level deeper (example.co.uk)
SECOND_LEVEL = (
    "co",
    "com",
    "net",
    "org",
    "gov",
    "ac",
    "edu",
    "ltd",
    "plc",
    "ne",
    "or",
    "gob",
    "nic",
)


def fold(expr: str) -> str:
    """Case, accents, punctuation and whitespace folded; '' becomes NULL."""
    inner = f"regexp_replace(lower(strip_accents(CAST({expr} AS VARCHAR))), '[''’.]', '', 'g')"
    spaced = f"regexp_replace({inner}, '[\\pP\\pS]+', ' ', 'g')"
    return f"nullif(trim(regexp_replace({spaced}, '\\s+', ' ', 'g')), '')"


def email_expr(col: str, gmail_canonical: bool) -> str:
    e = f"lower(trim(CAST({col} AS VARCHAR)))"
    valid = f"CASE WHEN regexp_full_match({e}, '[^@\\s]+@[^@\\s]+\\.[^@\\s]+') THEN {e} END"
    if not gmail_canonical:
        return valid
    local = f"split_part({valid}, '@', 1)"
    dom = f"split_part({valid}, '@', 2)"
    canon = f"replace(split_part({local}, '+', 1), '.', '') || '@gmail.com'"
    return f"CASE WHEN {dom} IN ('gmail.com', 'googlemail.com') THEN {canon} ELSE {valid} END"


def company_expr(col: str) -> str:
    """Company name folded, legal suffixes stripped from the end (repeatedly: 'Acme Co Ltd')."""
    return company_from_folded(fold(col))


def company_from_folded(folded: str) -> str:
    """`company_expr` over an already folded value (a column holding `fold(company)`)."""
    alts = "|".join(LEGAL_SUFFIXES)
    stripped = f"regexp_replace({folded}, '(\\s+({alts}))+$', '')"
    # a name that is only a suffix ("Company") keeps itself
    return f"nullif(coalesce(nullif(trim({stripped}), ''), {folded}), '')"


def domain_expr(col: str) -> str:
    """Registrable domain of a website/URL/email-ish value."""
    v = f"lower(trim(CAST({col} AS VARCHAR)))"
    host = f"regexp_extract({v}, '^(?:[a-z][a-z0-9+.-]*://)?(?:[^@/]*@)?([^/:?#]+)', 1)"
    host = f"regexp_replace(trim({host}, '.'), '^www[0-9]*\\.', '')"
    labels = f"string_split({host}, '.')"
    n = f"len({labels})"
    sl = ", ".join(f"'{s}'" for s in SECOND_LEVEL)
    two = f"array_to_string({labels}[{n} - 1:], '.')"
    three = f"array_to_string({labels}[{n} - 2:], '.')"
    return (
        f"CASE WHEN {host} = '' OR {n} < 2 OR NOT regexp_full_match({host}, '[a-z0-9.-]+') "
        f"THEN NULL WHEN {n} >= 3 AND len({labels}[{n}]) = 2 AND {labels}[{n} - 1] IN ({sl}) "
        f"THEN {three} ELSE {two} END"
    )


def region_expr(country: str, default_region: str) -> str:
    c = f"upper(trim(CAST({country} AS VARCHAR)))"
    return f"CASE WHEN regexp_full_match({c}, '[A-Z]{{2}}') THEN {c} ELSE '{default_region}' END"


def phone_key_expr(col: str) -> str:
    """What libphonenumber is run on: for a phone made only of digits, spaces, parentheses,
    dots and hyphens (with an optional leading +) and at least 3 digits, the + and the digits;
    any other value as it is. libphonenumber drops that punctuation before it reads the
    digits, so both forms parse alike (tests check this against the library), and '(206)
    200-5754' and '206-200-5754' are parsed once instead of twice."""
    digits = f"regexp_replace({col}, '[^0-9]', '', 'g')"
    return (
        f"CASE WHEN length({col}) <= 250 AND regexp_full_match({col}, '[+]?[0-9 ().-]*') "
        f"AND length({digits}) >= 3 THEN (CASE WHEN starts_with({col}, '+') THEN '+' "
        f"ELSE '' END) || {digits} ELSE {col} END"
    )


def parse_region_sql() -> str:
    """The region a phone key is parsed with: NULL for a key libphonenumber reads with its own
    country code whatever the default region: + and digits whose first one to three digits are
    a country code. (After + and an unknown code, e.g. +0031..., it retries the digits as
    dialled from the region, through its international prefix: there the region counts.)"""
    import phonenumbers

    codes = (
        "[" + ", ".join(f"'{c}'" for c in sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)) + "]"
    )
    known = " OR ".join(f"list_contains({codes}, substr(phone_key, 2, {n}))" for n in (1, 2, 3))
    return (
        f"CASE WHEN regexp_full_match(phone_key, '[+][1-9][0-9]*') AND ({known}) "
        "THEN NULL ELSE region END"
    )


def norm_select_sql(
    entity: str, default_region: str, gmail_canonical: bool, records: str | None = None
) -> str:
    """SELECT of the normalized keys (phone_key/region: phonenumbers runs afterwards; region is
    NULL where the key's own country code decides, see `parse_region_sql`).

    Two levels: the inner one folds each source column once; the outer one derives the keys
    that reuse a folded value (first/last/full name, company, email domain).

    `records`: the entity's record-number view (`common.record_view`): read instead of
    `stg_<entity>`, and its `rid` carried, so dedup joins the keys on one integer."""
    key = [*KEY, "rid"] if records else list(KEY)
    inner = [
        *(ident(k) for k in key),
        "source_id",
        f"{email_expr('email', gmail_canonical)} AS email_norm",
        "nullif(trim(CAST(phone AS VARCHAR)), '') AS phone_raw",
        f"{region_expr('country', default_region)} AS region",
        f"{fold('company')} AS _company",
        f"{domain_expr('website')} AS domain",
        f"{fold('first_name')} AS _first",
        f"{fold('last_name')} AS _last",
        f"{fold('full_name')} AS _full",
        f"{fold('street')} AS street_norm",
        f"{fold('city')} AS city_norm",
        "nullif(upper(regexp_replace(CAST(postal_code AS VARCHAR), '[^A-Za-z0-9]', '', 'g')), '') "
        "AS postal_norm",
        "nullif(upper(trim(CAST(country AS VARCHAR))), '') AS country_norm",
    ]
    outer = [
        *(ident(k) for k in key),
        "source_id",
        "email_norm",
        "split_part(email_norm, '@', 2) AS email_domain",
        "phone_raw",
        "region",
        f"{company_from_folded('_company')} AS company_norm",
        "domain",
        "coalesce(_first, split_part(_full, ' ', 1)) AS first_name_norm",
        "coalesce(_last, CASE WHEN contains(_full, ' ') THEN "
        "regexp_extract(_full, '([^ ]+)$', 1) END) AS last_name_norm",
        "coalesce(_full, nullif(trim(concat_ws(' ', _first, _last)), '')) AS full_name_norm",
        "street_norm",
        "city_norm",
        "postal_norm",
        "country_norm",
        f"{phone_key_expr('phone_raw')} AS phone_key",
    ]
    keys = (
        f"SELECT {', '.join(outer)} FROM (SELECT {', '.join(inner)} "
        f"FROM {ident(records or 'stg_' + entity)})"
    )
    # the region phonenumbers parses the key with, decided once per row (see parse_region_sql)
    return f"SELECT * REPLACE ({parse_region_sql()} AS region) FROM ({keys})"


def e164(pairs: list[tuple[str, str]]) -> list[str | None]:
    """E.164 for distinct (raw phone, region) pairs; None when libphonenumber finds no possible
    number. The region may be None for a number in international form."""
    import phonenumbers

    out: list[str | None] = []
    for raw, region in pairs:  # distinct values only, never one call per record
        try:
            num = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException:
            out.append(None)
            continue
        if phonenumbers.is_possible_number(num):
            out.append(phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164))
        else:
            out.append(None)
    return out


# below this many distinct phones one process is quicker than starting helpers
PARALLEL_PHONES = 50_000
# helper processes are started with "spawn", which re-imports the caller's main module: safe for
# the `romirecon` command (cli.main turns this on), not for an arbitrary script calling the API
# without an `if __name__ == "__main__":` guard, so library callers opt in
PROCESS_POOL = False


def allow_process_pool(allowed: bool = True) -> None:
    """Let `e164_all` use helper processes (the CLI does; see PROCESS_POOL)."""
    global PROCESS_POOL
    PROCESS_POOL = allowed


def e164_all(pairs: list[tuple[str, str]]) -> list[str | None]:
    """`e164` over every core for large inputs. libphonenumber is pure Python (it holds the
    GIL), and while it runs DuckDB has nothing to do: at 1M customers this was 35 s of one core
    with the other idle. Chunks keep their order, so the result is the same list."""
    import os

    workers = min(os.cpu_count() or 1, 8)
    if not PROCESS_POOL or workers < 2 or len(pairs) < PARALLEL_PHONES:
        return e164(pairs)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    size = -(-len(pairs) // (workers * 4))
    chunks = [pairs[i : i + size] for i in range(0, len(pairs), size)]
    # spawn, not fork: the parent holds DuckDB's threads and locks
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        return [x for part in pool.map(e164, chunks) for x in part]


def normalize_entity(
    con: duckdb.DuckDBPyConnection,
    entity: str,
    default_region: str = "US",
    gmail_canonical: bool = False,
) -> str:
    """Build `norm_<entity>`; returns its name."""
    if not default_region.isalpha() or len(default_region) != 2:
        from romirecon.exitcodes import ConfigError

        raise ConfigError(f"default phone region {default_region!r} is not a 2-letter country code")
    from romirecon.stages.common import record_view

    tmp = f"_norm_{entity}"
    records = record_view(con, entity)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {ident(tmp)} AS "
        f"{norm_select_sql(entity, default_region.upper(), gmail_canonical, records)}"
    )
    _phones(con, tmp, entity)
    out = f"norm_{entity}"
    # an intermediate of this run (dedup joins it on provenance): a temp table, not written to
    # the state database (that write was a third of the stage); an older state database's
    # persistent copy is dropped so it cannot be read stale
    for db, schema in con.execute(
        "SELECT database_name, schema_name FROM duckdb_tables() WHERE table_name = ? "
        "AND NOT temporary",
        [out],
    ).fetchall():
        con.execute(f"DROP TABLE {ident(db)}.{ident(schema)}.{ident(out)}")
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {ident(out)} AS SELECT n.* EXCLUDE (phone_raw, region, "
        f"phone_key), p.phone_e164 FROM {ident(tmp)} n LEFT JOIN _norm_phones p "
        "ON p.phone_key = n.phone_key AND p.region IS NOT DISTINCT FROM n.region"
    )
    con.execute("DROP TABLE _norm_phones")
    con.execute(f"DROP TABLE {ident(tmp)}")
    return out


# libphonenumber's answers of earlier runs, per entity: (phone_key, region) -> phone_e164, with
# the library version that gave them. Kept in the state database; each run keeps exactly the
# pairs its exports still have. Parsing is the one step of the stage in Python (about 1.5M
# distinct pairs at 1M customers, both cores for about 10 s); most of a night's phones were
# there the night before.
PHONE_CACHE = "phone_e164_cache"


def _phones(con: duckdb.DuckDBPyConnection, tmp: str, entity: str) -> None:
    """Create the temp table `_norm_phones` (phone_key, region, phone_e164): every distinct
    pair of `tmp`, parsed by libphonenumber unless the cache holds its answer from the same
    library version; then replace the entity's cache rows by this run's pairs."""
    import phonenumbers
    import pyarrow as pa

    lib = phonenumbers.__version__
    cache = f"main.{ident(PHONE_CACHE)}"
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {cache} (entity VARCHAR, phone_key VARCHAR, "
        "region VARCHAR, phone_e164 VARCHAR, library VARCHAR)"
    )
    # a key in international form carries its own country code: its region is NULL in `tmp`
    # (norm_select_sql), so it is parsed once, not once per region it appears with (that halved
    # the distinct pairs of a 100k estate: 285k -> 142k)
    pairs = f"SELECT DISTINCT phone_key, region FROM {ident(tmp)} WHERE phone_key IS NOT NULL"
    # one pass over the run's pairs, each with the cached answer when there is one
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _norm_pairs AS SELECT p.phone_key, p.region, "
        f"k.phone_e164, k.phone_key IS NOT NULL AS cached FROM ({pairs}) p "
        f"LEFT JOIN (SELECT * FROM {cache} WHERE entity = ? AND library = ?) k "
        "ON k.phone_key = p.phone_key AND k.region IS NOT DISTINCT FROM p.region",
        [entity, lib],
    )
    new = con.execute(
        "SELECT phone_key, region FROM _norm_pairs WHERE NOT cached "
        "ORDER BY phone_key, region NULLS FIRST"
    ).fetchall()
    parsed = pa.table(
        {
            "phone_key": pa.array([d[0] for d in new], pa.string()),
            "region": pa.array([d[1] for d in new], pa.string()),
            "phone_e164": pa.array(e164_all(new), pa.string()),
        }
    )
    con.register("_norm_parsed", parsed)
    try:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _norm_phones AS SELECT phone_key, region, phone_e164 "
            "FROM _norm_pairs WHERE cached "
            "UNION ALL SELECT phone_key, region, phone_e164 FROM _norm_parsed"
        )
    finally:
        con.unregister("_norm_parsed")
    con.execute("DROP TABLE _norm_pairs")
    con.execute(f"DELETE FROM {cache} WHERE entity = ?", [entity])
    con.execute(
        f"INSERT INTO {cache} SELECT ?, phone_key, region, phone_e164, ? FROM _norm_phones "
        "ORDER BY phone_key, region NULLS FIRST",
        [entity, lib],
    )


def run(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    *,
    default_region: str = "US",
    gmail_canonical: bool = False,
) -> None:
    """Write `norm_contact` and `norm_account` (and a `metric` row with each entity's phones
    that libphonenumber could not read)."""
    from romirecon.stages.common import (
        add_metric,
        ensure_common_tables,
        ensure_entity_views,
        record_view,
    )

    ensure_common_tables(con)
    ensure_entity_views(con)
    for entity in PARTY_ENTITIES:
        out = normalize_entity(con, entity, default_region, gmail_canonical)
        records = record_view(con, entity)
        on = "USING (rid)" if records else "USING (source_name, source_file, source_row)"
        row = con.execute(
            f"SELECT count(*) FILTER (WHERE phone_e164 IS NULL AND phone IS NOT NULL), "
            f"count(phone) FROM {ident(out)} n JOIN {ident(records or 'stg_' + entity)} s {on}"
        ).fetchall()[0]
        bad, total = row or (0, 0)
        add_metric(
            con,
            run_id,
            "normalize",
            "unparseable_phone_rate",
            (bad / total) if total else 0.0,
            entity=entity,
            numerator=bad,
            denominator=total,
            unit="ratio",
        )
