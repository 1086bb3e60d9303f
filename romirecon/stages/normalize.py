"""Normalize stage: match keys for the party entities (`stg_contact`, `stg_account`).

Writes `norm_<entity>` keyed by (source_name, source_file, source_row) with:

- `email_norm` (trim, lower; optionally gmail dots and +tags dropped), `email_domain`;
- `phone_e164` from Google's libphonenumber, run on DISTINCT (phone, region) pairs only and
  joined back; the region is the record's `country` when it is a 2-letter code, else the
  configured default;
- `company_norm` without legal suffixes (Inc, LLC, Ltd, GmbH, S.A., ...);
- `domain`: the registrable domain of `website` (scheme, www., path and port dropped);
- `first_name_norm`, `last_name_norm`, `full_name_norm`: case, accents and whitespace folded
  (first/last taken from `full_name` when the export has no split);
- `street_norm`, `city_norm`, `postal_norm`, `country_norm`.

Everything is SQL except libphonenumber, which sees each distinct value once.
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
    folded = fold(col)
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


def norm_select_sql(entity: str, default_region: str, gmail_canonical: bool) -> str:
    """SELECT of the normalized keys (phone_raw/region: phonenumbers runs afterwards)."""
    first_from_full = f"split_part({fold('full_name')}, ' ', 1)"
    last_from_full = (
        f"CASE WHEN contains({fold('full_name')}, ' ') THEN "
        f"regexp_extract({fold('full_name')}, '([^ ]+)$', 1) END"
    )
    cols = [
        *(ident(k) for k in KEY),
        "source_id",
        f"{email_expr('email', gmail_canonical)} AS email_norm",
        f"split_part({email_expr('email', gmail_canonical)}, '@', 2) AS email_domain",
        "nullif(trim(CAST(phone AS VARCHAR)), '') AS phone_raw",
        f"{region_expr('country', default_region)} AS region",
        f"{company_expr('company')} AS company_norm",
        f"{domain_expr('website')} AS domain",
        f"coalesce({fold('first_name')}, {first_from_full}) AS first_name_norm",
        f"coalesce({fold('last_name')}, {last_from_full}) AS last_name_norm",
        f"coalesce({fold('full_name')}, nullif(trim(concat_ws(' ', {fold('first_name')}, "
        f"{fold('last_name')})), '')) AS full_name_norm",
        f"{fold('street')} AS street_norm",
        f"{fold('city')} AS city_norm",
        "nullif(upper(regexp_replace(CAST(postal_code AS VARCHAR), '[^A-Za-z0-9]', '', 'g')), '') "
        "AS postal_norm",
        "nullif(upper(trim(CAST(country AS VARCHAR))), '') AS country_norm",
    ]
    return f"SELECT {', '.join(cols)} FROM {ident('stg_' + entity)}"


def e164(pairs: list[tuple[str, str]]) -> list[str | None]:
    """E.164 for distinct (raw phone, region) pairs; None when libphonenumber finds no possible
    number."""
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


def normalize_entity(
    con: duckdb.DuckDBPyConnection,
    entity: str,
    default_region: str = "US",
    gmail_canonical: bool = False,
) -> str:
    """Build `norm_<entity>`; returns its name."""
    import pyarrow as pa

    if not default_region.isalpha() or len(default_region) != 2:
        from romirecon.exitcodes import ConfigError

        raise ConfigError(f"default phone region {default_region!r} is not a 2-letter country code")
    tmp = f"_norm_{entity}"
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {ident(tmp)} AS "
        f"{norm_select_sql(entity, default_region.upper(), gmail_canonical)}"
    )
    distinct = con.execute(
        f"SELECT DISTINCT phone_raw, region FROM {ident(tmp)} WHERE phone_raw IS NOT NULL "
        "ORDER BY phone_raw, region"
    ).fetchall()
    phones = pa.table(
        {
            "phone_raw": pa.array([d[0] for d in distinct], pa.string()),
            "region": pa.array([d[1] for d in distinct], pa.string()),
            "phone_e164": pa.array(e164(distinct), pa.string()),
        }
    )
    con.register("_norm_phones", phones)
    out = f"norm_{entity}"
    con.execute(
        f"CREATE OR REPLACE TABLE {ident(out)} AS SELECT n.* EXCLUDE (phone_raw, region), "
        f"p.phone_e164 FROM {ident(tmp)} n LEFT JOIN _norm_phones p "
        "ON p.phone_raw = n.phone_raw AND p.region = n.region "
        "ORDER BY n.source_name, n.source_file, n.source_row"
    )
    con.unregister("_norm_phones")
    con.execute(f"DROP TABLE {ident(tmp)}")
    return out


def run(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    *,
    default_region: str = "US",
    gmail_canonical: bool = False,
) -> None:
    """Write `norm_contact` and `norm_account` (and a `metric` row with each entity's phones
    that libphonenumber could not read)."""
    from romirecon.stages.common import add_metric, ensure_common_tables, ensure_entity_views

    ensure_common_tables(con)
    ensure_entity_views(con)
    for entity in PARTY_ENTITIES:
        out = normalize_entity(con, entity, default_region, gmail_canonical)
        row = con.execute(
            f"SELECT count(*) FILTER (WHERE phone_e164 IS NULL AND phone IS NOT NULL), "
            f"count(phone) FROM {ident(out)} n JOIN {ident('stg_' + entity)} s "
            "USING (source_name, source_file, source_row)"
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
