"""SQL that turns any table with an id column into the engine's record table.

The record table `<out>` has `rid INTEGER` (0..n-1 in id order: the dense index every numpy array
uses), `id` (the input id, its type kept) and one normalized VARCHAR column per compared field
(`f0, f1, ...`) and per extra blocking column (`b0, b1, ...`). Empty strings become NULL.
"""

from __future__ import annotations

from romirecon.dedup.spec import FieldSpec
from romirecon.sqlutil import ident, literal

_PUNCT = r"[\pP\pS\s]+"


def _fold(v: str, drop: str) -> str:
    """lower + accents stripped, the `drop` characters deleted, every run of punctuation,
    symbols and whitespace one space (a single regex pass), trimmed, '' -> NULL."""
    x = f"lower(strip_accents({v}))"
    for ch in drop:
        x = f"replace({x}, {literal(ch)}, '')"
    return f"nullif(trim(regexp_replace({x}, '{_PUNCT}', ' ', 'g')), '')"


# USPS-style abbreviations: "12 High Street" and "12 High St" are one address
ADDRESS_WORDS: dict[str, str] = {
    "street": "st",
    "road": "rd",
    "avenue": "ave",
    "av": "ave",
    "lane": "ln",
    "drive": "dr",
    "court": "ct",
    "place": "pl",
    "boulevard": "blvd",
    "highway": "hwy",
    "parkway": "pkwy",
    "square": "sq",
    "terrace": "ter",
    "circle": "cir",
    "way": "wy",
    "north": "n",
    "south": "s",
    "east": "e",
    "west": "w",
    "apartment": "apt",
    "suite": "ste",
    "floor": "fl",
    "strasse": "str",
    "straße": "str",
}


def _abbreviate(expr: str) -> str:
    """Each word of a folded address replaced by its abbreviation when it has one."""
    keys = ", ".join(literal(k) for k in ADDRESS_WORDS)
    vals = ", ".join(literal(v) for v in ADDRESS_WORDS.values())
    lookup = f"MAP([{keys}], [{vals}])"
    return (
        f"array_to_string(list_transform(string_split({expr}, ' '), "
        f"lambda w: coalesce({lookup}[w], w)), ' ')"
    )


def norm_expr(kind: str, col: str) -> str:
    """A DuckDB expression normalizing column `col` (already quoted) for comparison kind `kind`."""
    v = f"CAST({col} AS VARCHAR)"
    if kind == "name":
        # case, accents, punctuation folded; apostrophes and dots dropped (O'Brien = OBrien)
        return _fold(v, "'’.")
    if kind == "address":
        return _abbreviate(_fold(v, "'’"))
    if kind == "text":
        return _fold(v, "'’")
    if kind == "email":
        return f"nullif(lower(trim({v})), '')"
    if kind == "phone":
        return f"nullif(regexp_replace({v}, '[^0-9]+', '', 'g'), '')"
    if kind == "date":
        return f"coalesce(strftime(try_cast({col} AS DATE), '%Y-%m-%d'), nullif(trim({v}), ''))"
    return f"nullif(trim({v}), '')"


def block_column_expr(col: str) -> str:
    return f"nullif(lower(trim(CAST({col} AS VARCHAR))), '')"


def record_table_sql(
    source: str,
    id_column: str,
    fields: list[FieldSpec],
    extra_block_columns: list[str],
    out: str,
    dense_ids: bool = False,
) -> str:
    """CREATE the record table `out` from relation `source` (both names unquoted).

    `dense_ids`: the ids are the integers 0..n-1, one each (the dedup stage passes its record
    numbers), so they are the record numbers: no window numbering the rows in id order (a
    sort of every row with its normalized fields), only the sort that writes the table in rid
    order."""
    rid = (
        f"CAST({ident(id_column)} AS INTEGER)"
        if dense_ids
        else f"(row_number() OVER (ORDER BY {ident(id_column)}) - 1)::INTEGER"
    )
    cols = [f"{rid} AS rid", f"{ident(id_column)} AS id"]
    cols += [f"{norm_expr(f.kind, ident(f.column))} AS f{i}" for i, f in enumerate(fields)]
    cols += [f"{block_column_expr(ident(c))} AS b{i}" for i, c in enumerate(extra_block_columns)]
    return (
        f"CREATE OR REPLACE TEMP TABLE {ident(out)} AS SELECT {', '.join(cols)} "
        f"FROM {ident(source)} ORDER BY rid"
    )


def id_check_sql(source: str, id_column: str) -> str:
    """(NULL ids, surplus copies of repeated ids, least id, greatest id, rows): the first two
    must be 0; integer ids from 0 to rows - 1 are then the record numbers themselves."""
    i = ident(id_column)
    return (
        f"SELECT count(*) - count({i}), count({i}) - count(DISTINCT {i}), min({i}), max({i}), "
        f"count(*) FROM {ident(source)}"
    )
