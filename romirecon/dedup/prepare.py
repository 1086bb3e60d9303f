"""SQL that turns any table with an id column into the engine's record table.

The record table `<out>` has `rid INTEGER` (0..n-1 in id order: the dense index every numpy array
uses), `id` (the input id, its type kept) and one normalized VARCHAR column per compared field
(`f0, f1, ...`) and per extra blocking column (`b0, b1, ...`). Empty strings become NULL.
"""

from __future__ import annotations

from romirecon.dedup.spec import FieldSpec
from romirecon.sqlutil import ident

_PUNCT = r"[\pP\pS]+"


def _squash(expr: str) -> str:
    return f"nullif(trim(regexp_replace({expr}, '\\s+', ' ', 'g')), '')"


def norm_expr(kind: str, col: str) -> str:
    """A DuckDB expression normalizing column `col` (already quoted) for comparison kind `kind`."""
    v = f"CAST({col} AS VARCHAR)"
    if kind == "name":
        # case, accents, punctuation folded; apostrophes and dots dropped (O'Brien = OBrien)
        inner = f"regexp_replace(lower(strip_accents({v})), '[''’.]', '', 'g')"
        return _squash(f"regexp_replace({inner}, '{_PUNCT}', ' ', 'g')")
    if kind in ("text", "address"):
        inner = f"regexp_replace(lower(strip_accents({v})), '[''’]', '', 'g')"
        return _squash(f"regexp_replace({inner}, '{_PUNCT}', ' ', 'g')")
    if kind == "email":
        return f"nullif(lower(trim({v})), '')"
    if kind == "phone":
        return f"nullif(regexp_replace({v}, '[^0-9]', '', 'g'), '')"
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
) -> str:
    """CREATE the record table `out` from relation `source` (both names unquoted)."""
    cols = [
        f"(row_number() OVER (ORDER BY {ident(id_column)}) - 1)::INTEGER AS rid",
        f"{ident(id_column)} AS id",
    ]
    cols += [f"{norm_expr(f.kind, ident(f.column))} AS f{i}" for i, f in enumerate(fields)]
    cols += [f"{block_column_expr(ident(c))} AS b{i}" for i, c in enumerate(extra_block_columns)]
    return (
        f"CREATE OR REPLACE TEMP TABLE {ident(out)} AS SELECT {', '.join(cols)} "
        f"FROM {ident(source)} ORDER BY rid"
    )


def id_check_sql(source: str, id_column: str) -> str:
    """(NULL ids, surplus copies of repeated ids): both must be 0."""
    i = ident(id_column)
    return f"SELECT count(*) - count({i}), count({i}) - count(DISTINCT {i}) FROM {ident(source)}"
