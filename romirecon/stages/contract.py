"""Contract: compile a mapping into SQL over `src_<source>`; good rows to `staged_<source>`, the rest
to `quarantine` with a reason code, the column, the offending value and the original record.

Everything is one set-based pass per source: each canonical column becomes a text expression
(`from` / `expr` / `const`, then trim, lower, map), a typed expression (`TRY_CAST`, `try_strptime`,
currency exponents for money) and a list of checks; a row's failed checks are collected into a
list, and the first one is its primary reason. Nothing is parsed in Python.

Reason codes (stable; the SLA report and users' scripts key on them):
`missing-required`, `invalid-integer`, `invalid-number`, `invalid-boolean`, `invalid-date`,
`invalid-timestamp`, `invalid-money`, `unknown-currency`, `missing-currency`, `not-in-enum`, `pattern-mismatch`,
`out-of-range`, `filtered-out`, `duplicate-key`, `malformed-row` (the CSV reader could not split
the line into the header's columns).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import duckdb

from romirecon.config import ColumnSpec, Mapping, Source, did_you_mean
from romirecon.exitcodes import ConfigError, InputError
from romirecon.model import ENTITIES, PROVENANCE, TYPES
from romirecon.money import exponent_map_sql
from romirecon.sqlutil import ident, literal, table_name
from romirecon.stages.ingest import (
    IngestResult,
    json_key,
    number_rows,
    rejects_table,
    src_view,
)

QUARANTINE_DDL = """
CREATE OR REPLACE TABLE quarantine (
    run_id VARCHAR, source_name VARCHAR, entity VARCHAR, source_file VARCHAR, source_row BIGINT,
    source_line BIGINT, reason VARCHAR, column_name VARCHAR, value VARCHAR, message VARCHAR,
    reasons VARCHAR[], record VARCHAR
)"""

INGEST_STATS_DDL = """
CREATE OR REPLACE TABLE ingest_stats (
    source_name VARCHAR, entity VARCHAR, system VARCHAR, file VARCHAR, file_sha256 VARCHAR,
    rows_read BIGINT, rows_staged BIGINT, rows_quarantined BIGINT
)"""

DEFAULT_TRUE = ["true", "t", "1", "yes", "y"]
DEFAULT_FALSE = ["false", "f", "0", "no", "n"]

MESSAGES = {
    "missing-required": "is required but empty",
    "invalid-integer": "is not a whole number",
    "invalid-number": "is not a number",
    "invalid-boolean": "is not a boolean",
    "invalid-date": "is not a date in the expected format",
    "invalid-timestamp": "is not a timestamp in the expected format",
    "invalid-money": "is not an amount",
    "unknown-currency": "is not an ISO 4217 currency code",
    "missing-currency": "has no currency to interpret it in",
    "not-in-enum": "is not one of the allowed values",
    "pattern-mismatch": "does not match the required pattern",
    "out-of-range": "is outside the allowed range",
    "filtered-out": "row excluded by the mapping's filter",
    "duplicate-key": "repeats a unique key already seen",
}


def stg_table(source: str) -> str:
    """The staged table of one source (entity-wide views are `stg_<entity>`)."""
    return table_name("staged", source)


@dataclass
class ContractResult:
    source: str
    rows_in: int = 0
    rows_staged: int = 0
    rows_quarantined: int = 0
    missing_optional: list[str] = field(default_factory=list)


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(QUARANTINE_DDL)
    con.execute(INGEST_STATS_DDL)


# --- text expressions ---------------------------------------------------------------------------


class JsonPaths:
    """The JSON paths a mapping reads out of each JSON-text column, extracted together.

    `json_extract_string(col, path)` parses `col` on every call: a HubSpot mapping reads 26
    `properties.*` members, which parsed each record's `properties` 26 times (most of the
    contract's time on that source). Collected here, each column is parsed once per row by
    `json_extract_string(col, [path, ...])` (see `select_items`) and every member is an element
    of that list.

    The same goes for the `json_extract(col, '$...')` / `json_extract_string(col, '$...')` calls
    a mapping's `expr` and `filter` make with a literal path (`plan`, then `rewrite`): each such
    call parsed the whole record once more (three times per Stripe invoice line, eight per
    subscription). They share one `json_extract(col, [paths])` per column instead; a string
    call reads its element with `json_extract_string(element, '$')`, which parses only that
    small value. DuckDB takes no wildcard in a list of paths, so a wildcard path extracts the
    part before its first `[*]` and applies the rest to that element; a record without that
    part gives the empty list, as the single call does."""

    PREFIX = "_romirecon_jp"
    # f(col, 'path') with f json_extract or json_extract_string, col a column, path a literal
    CALL = re.compile(
        r"""\b(json_extract_string|json_extract)\s*\(\s*("(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_]*)"""
        r"""\s*,\s*'((?:[^']|'')*)'\s*\)""",
        re.IGNORECASE,
    )

    def __init__(self) -> None:
        # (function, column) -> paths, in first-use order
        self.paths: dict[tuple[str, str], list[str]] = {}
        self._planned: dict[str, str] = {}  # column -> the function of its shared extraction

    def ref(self, head: str, path: str, func: str = "json_extract_string") -> str:
        key = (func, head)
        paths = self.paths.setdefault(key, [])
        if path not in paths:
            paths.append(path)
        col = f"{self.PREFIX}{list(self.paths).index(key)}"
        return f"{ident(col)}[{paths.index(path) + 1}]"

    def select_items(self) -> list[str]:
        """`json_extract_string(col, [paths]) AS _romirecon_jp<i>` (or `json_extract`), one per
        column and function."""
        return [
            f"{func}({ident(head)}, [{', '.join(literal(p) for p in paths)}]) "
            f"AS {ident(f'{self.PREFIX}{i}')}"
            for i, ((func, head), paths) in enumerate(self.paths.items())
        ]

    def _calls(self, sql: str, columns: set[str]) -> list[tuple[re.Match[str], str, str]]:
        """The calls of `sql` that can share a parse: (match, column, path). Left alone: a call
        inside a string literal, a path that does not start at the root (`$`), and a wildcard
        path other than `[*]` after plain members (a quoted member could hide a `[*]`, and a
        `.*` cannot be split off)."""
        by_lower = {c.lower(): c for c in columns}
        out = []
        for m in self.CALL.finditer(sql):
            if sql.count("'", 0, m.start()) % 2:
                continue  # inside a string literal
            raw = m.group(2)
            name = raw[1:-1].replace('""', '"') if raw.startswith('"') else raw
            column = by_lower.get(name.lower())
            path = m.group(3).replace("''", "'")
            if column is None or not path.startswith("$"):
                continue
            if "*" in path and ('"' in path or "[*]" not in path or "*" in path.split("[*]")[0]):
                continue
            out.append((m, column, path))
        return out

    def plan(self, sqls: list[str], columns: set[str]) -> None:
        """Choose the columns whose literal-path calls in `sqls` (every expr and the filter of a
        mapping) `rewrite` folds into one extraction: those read by two calls or more. Their
        extraction is `json_extract_string` when every call is a string call without a
        wildcard (its elements are the values), else `json_extract`."""
        calls: dict[str, list[tuple[str, str]]] = {}
        for sql in sqls:
            for m, column, path in self._calls(sql, columns):
                calls.setdefault(column, []).append((m.group(1).lower(), path))
        self._planned = {
            column: (
                "json_extract_string"
                if all(f == "json_extract_string" and "*" not in p for f, p in found)
                else "json_extract"
            )
            for column, found in calls.items()
            if len(found) > 1
        }

    def rewrite(self, sql: str) -> str:
        """`sql` with each planned call replaced by its element of the shared extraction."""
        if not self._planned:
            return sql
        out, pos = [], 0
        for m, column, path in self._calls(sql, set(self._planned)):
            func, group = m.group(1).lower(), self._planned[column]
            head, _, rest = path.partition("[*]")
            if "*" in path:
                elem = self.ref(column, head, group)
                typ = "JSON" if func == "json_extract" else "VARCHAR"
                repl = (
                    f"(CASE WHEN {ident(column)} IS NOT NULL THEN coalesce({func}({elem}, "
                    f"{literal('$[*]' + rest)}), CAST([] AS {typ}[])) END)"
                )
            elif func == group:
                repl = self.ref(column, path, group)
            else:  # a string call reading an element of the JSON extraction
                repl = f"json_extract_string({self.ref(column, path, group)}, '$')"
            out += [sql[pos : m.start()], repl]
            pos = m.end()
        return "".join(out) + sql[pos:]


def source_ref(name: str, columns: set[str], json_paths: JsonPaths | None = None) -> str | None:
    """SQL for a `from` name: an exact column, or a dotted path into a JSON-text column (an
    element of the column's extracted list when `json_paths` collects them)."""
    if name in columns:
        return ident(name)
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:cut])
        if head in columns:
            path = "$." + ".".join(json_key(p) for p in parts[cut:])
            if json_paths is not None:
                return json_paths.ref(head, path)
            return f"json_extract_string({ident(head)}, {literal(path)})"
    return None


def text_expr(
    spec: ColumnSpec, columns: set[str], json_paths: JsonPaths | None = None
) -> tuple[str, list[str]]:
    """The column's value as trimmed text, and the `from` names absent from the export."""
    missing: list[str] = []
    if spec.expr is not None:
        sql = json_paths.rewrite(spec.expr) if json_paths is not None else spec.expr
        expr = f"CAST(({sql}) AS VARCHAR)"
    elif spec.const is not None:
        c = spec.const
        expr = literal(str(c).lower() if isinstance(c, bool) else str(c))
    else:
        refs = []
        for name in spec.source:
            ref = source_ref(name, columns, json_paths)
            if ref is None:
                missing.append(name)
            else:
                refs.append(ref)
        if not refs:
            return "CAST(NULL AS VARCHAR)", missing
        # first present and non-empty alternative
        items = [f"nullif(trim({r}), '')" if spec.trim else r for r in refs]
        expr = items[0] if len(items) == 1 else f"coalesce({', '.join(items)})"
    if spec.trim and spec.source == []:
        expr = f"nullif(trim({expr}), '')"
    if spec.lower:
        expr = f"lower({expr})"
    if spec.name in ("currency", "base", "quote"):
        expr = f"upper({expr})"
    if spec.map:
        whens = " ".join(
            f"WHEN {literal(str(k))} THEN "
            + ("CAST(NULL AS VARCHAR)" if v is None else literal(str(v)))
            for k, v in spec.map.items()
        )
        expr = f"(CASE {expr} {whens} ELSE {expr} END)"
    return expr, missing


# --- typed expressions --------------------------------------------------------------------------


def number_text(v: str, fmt: dict[str, Any]) -> str:
    """Normalise thousands and decimal separators so DuckDB's cast reads the number."""
    thousands = fmt.get("thousands_separator")
    decimal = fmt.get("decimal_separator", ".")
    if thousands:
        v = f"replace({v}, {literal(thousands)}, '')"
    if decimal == ",":
        v = f"replace({v}, ',', '.')"
    return v


def _fmt_list(formats: list[str]) -> str:
    return "[" + ", ".join(literal(f) for f in formats) + "]::VARCHAR[]"


def timestamp_expr(v: str, spec: ColumnSpec, tz: str) -> str:
    """Text -> naive UTC TIMESTAMP. Zoned text keeps its offset; naive text is read in `tz`."""
    formats = spec.formats or []
    if "epoch" in formats or "epoch_ms" in formats:
        # seconds (or ms) since 1970 in UTC; beyond year ~5000 is not a timestamp but garbage
        per_s = 1 if "epoch" in formats else 1000
        secs = f"(TRY_CAST({v} AS DOUBLE) / {per_s})"
        return (
            f"CASE WHEN abs({secs}) < 1e11 THEN "
            f"make_timestamp(CAST(round({secs} * 1000000) AS BIGINT)) END"
        )
    zoned = [f for f in formats if "%z" in f or "%Z" in f]
    naive = [f for f in formats if f not in zoned]
    local = f"timezone('UTC', timezone({literal(tz)}, {{}}))"
    if not formats:
        has_zone = f"regexp_matches({v}, '(Z|[+-][0-9]{{2}}(:?[0-9]{{2}})?)$')"
        return (
            f"CASE WHEN {has_zone} THEN timezone('UTC', TRY_CAST({v} AS TIMESTAMPTZ)) "
            f"ELSE {local.format(f'TRY_CAST({v} AS TIMESTAMP)')} END"
        )
    parts = []
    if zoned:
        parts.append(f"timezone('UTC', try_strptime({v}, {_fmt_list(zoned)}))")
    if naive:
        parts.append(local.format(f"try_strptime({v}, {_fmt_list(naive)})"))
    return parts[0] if len(parts) == 1 else f"coalesce({', '.join(parts)})"


def date_expr(v: str, spec: ColumnSpec) -> str:
    if spec.formats:
        return f"CAST(try_strptime({v}, {_fmt_list(spec.formats)}) AS DATE)"
    return f"TRY_CAST({v} AS DATE)"


def typed_expr(spec: ColumnSpec, v: str, fmt: dict[str, Any], tz: str, exp_col: str | None) -> str:
    t = spec.type
    if t == "string":
        return v
    if t == "integer":
        return f"TRY_CAST({number_text(v, fmt)} AS BIGINT)"
    if t == "decimal":
        return f"TRY_CAST({number_text(v, fmt)} AS DECIMAL(38,10))"
    if t == "boolean":
        tv = [s.lower() for s in (spec.true_values or DEFAULT_TRUE)]
        fv = [s.lower() for s in (spec.false_values or DEFAULT_FALSE)]
        # list_position, not IN / list_contains: DuckDB plans a list of six or more constants
        # as a join, which loses the row order the staged table relies on (see stage_source)
        return (
            f"CASE WHEN list_position([{', '.join(map(literal, tv))}], lower({v})) IS NOT NULL "
            f"THEN true WHEN list_position([{', '.join(map(literal, fv))}], lower({v})) "
            "IS NOT NULL THEN false END"
        )
    if t == "date":
        return date_expr(v, spec)
    if t == "timestamp":
        return timestamp_expr(v, spec, spec.timezone or tz)
    if t == "list":
        sep = literal(spec.separator)
        return (
            f"CASE WHEN starts_with({v}, '[') THEN CAST(json_extract_string({v}, '$[*]') AS VARCHAR[]) "
            f"ELSE list_filter(list_transform(string_split({v}, {sep}), lambda x: trim(x)), "
            f"lambda x: x <> '') END"
        )
    if t == "money":
        d = f"TRY_CAST({number_text(v, fmt)} AS DECIMAL(38,10))"
        assert exp_col is not None
        scale = f"CAST(power(10, {exp_col}) AS BIGINT)"
        if spec.unit == "minor":
            return f"CAST(round_even({d}, 0) AS BIGINT)"
        if spec.unit == "micros":
            return (
                f"CAST(round_even({d} * {scale} * CAST('0.000001' AS DECIMAL(38,10)), 0) AS BIGINT)"
            )
        return f"CAST(round_even({d} * {scale}, 0) AS BIGINT)"
    raise AssertionError(t)


def _cmp_literal(value: Any, ctype: str) -> str:
    sqltype = TYPES["decimal" if ctype == "money" else ctype]
    return f"CAST({literal(str(value))} AS {sqltype})"


def checks_for(
    spec: ColumnSpec, v: str, t: str, currency_known: str | None
) -> list[tuple[str, str]]:
    """(reason, SQL condition that is TRUE when the row fails) for one column, in priority order."""
    out: list[tuple[str, str]] = []
    if spec.required:
        out.append(("missing-required", f"{v} IS NULL"))
    type_reason = {
        "integer": "invalid-integer",
        "decimal": "invalid-number",
        "boolean": "invalid-boolean",
        "date": "invalid-date",
        "timestamp": "invalid-timestamp",
        "money": "invalid-money",
    }.get(spec.type)
    if type_reason:
        out.append((type_reason, f"{v} IS NOT NULL AND {t} IS NULL"))
    if currency_known is not None:
        out.insert(0, ("unknown-currency", f"{v} IS NOT NULL AND NOT {currency_known}"))
    if spec.enum:
        allowed = ", ".join(
            literal(str(x).lower() if isinstance(x, bool) else str(x)) for x in spec.enum
        )
        # list_position, not NOT IN: see typed_expr (boolean)
        out.append(("not-in-enum", f"{v} IS NOT NULL AND list_position([{allowed}], {v}) IS NULL"))
    if spec.pattern:
        out.append(
            (
                "pattern-mismatch",
                f"{v} IS NOT NULL AND NOT regexp_full_match({v}, {literal(spec.pattern)})",
            )
        )
    if spec.min is not None:
        out.append(("out-of-range", f"{t} < {_cmp_literal(spec.min, spec.type)}"))
    if spec.max is not None:
        out.append(("out-of-range", f"{t} > {_cmp_literal(spec.max, spec.type)}"))
    return out


# --- the whole contract -------------------------------------------------------------------------


def _base_relation(
    con: duckdb.DuckDBPyConnection, source: Source, columns: list[str]
) -> tuple[str, list[str]]:
    """FROM clause (maybe unpivoted) and the columns it offers."""
    view = ident(src_view(source.name))
    up = source.mapping.unpivot
    if not up:
        return view, columns
    keep = up["keep"]
    absent = [k for k in keep if k not in columns]
    if absent:
        raise InputError(
            f"source '{source.name}': unpivot keeps {absent} but the export has no such column"
            f"{did_you_mean(absent[0], columns)}"
        )
    skip = {*keep, "_json", "source_file", "source_row", "file_sha256"}
    wide = [c for c in columns if c not in skip]
    if not wide:
        raise InputError(f"source '{source.name}': nothing to unpivot besides {keep}")
    on = ", ".join(ident(c) for c in wide)
    rel = (
        f"(UNPIVOT (SELECT * FROM {view}) ON {on} INTO NAME {ident(up['name_to'])} "
        f"VALUE {ident(up['value_to'])})"
    )
    return rel, [*keep, up["name_to"], up["value_to"]]


def stage_source(
    con: duckdb.DuckDBPyConnection,
    source: Source,
    ingest: IngestResult,
    run_id: str,
    project_tz: str = "UTC",
) -> ContractResult:
    """Apply the source's mapping: write `staged_<source>`, append failures to `quarantine`."""
    mapping: Mapping = source.mapping
    fmt = source.format
    tz = mapping.timezone or project_tz
    rel, columns = _base_relation(con, source, ingest.columns)
    colset = set(columns)
    res = ContractResult(source=source.name)
    first_file = ingest.files[0].display if ingest.files else source.name

    # 1. text values
    texts: dict[str, str] = {}
    json_paths = JsonPaths()
    # an expr may read the record's JSON text `_json` (not a mapped column) with literal paths
    json_paths.plan(
        [x for x in [mapping.filter, *(spec.expr for spec in mapping.columns.values())] if x],
        colset | ({"_json"} if ingest.is_json and not mapping.unpivot else set()),
    )
    for name, spec in mapping.columns.items():
        expr, missing = text_expr(spec, colset, json_paths)
        if missing and len(missing) == len(spec.source) and ingest.rows_read > 0:
            hint = did_you_mean(missing[0], columns)
            if spec.required:
                raise InputError(
                    f"{first_file}: column '{missing[0]}' (mapped to {name}) is not in the export"
                    f"{hint}; the file has: {', '.join(columns[:12])}{' ...' if len(columns) > 12 else ''}"
                )
            res.missing_optional.append(f"{missing[0]}{hint}")
        texts[name] = expr
    if mapping.currency and "currency" in ENTITIES[mapping.entity] and "currency" not in texts:
        texts["currency"] = literal(mapping.currency)

    # 2. currency exponents for money columns and currency checks: a lookup in a constant MAP,
    # not a join with an exponent table. A join does not keep the rows' order, and the staged
    # table relies on the check table being in the raw (source_file, source_row) order (step 5).
    exponents = exponent_map_sql(mapping.exponents)
    currency_cols = sorted(
        {spec.currency for spec in mapping.columns.values() if spec.type == "money"}
        | ({"currency"} & set(texts))
        | ({"base", "quote"} & set(texts))
    )
    lookups = []
    exp_ref: dict[str, str] = {}
    for i, cc in enumerate(currency_cols):
        alias = f"_e{i}"
        code = f"_t.{ident('_v_' + cc)}" if cc in texts else literal(mapping.currency or "")
        lookups.append(f"map_extract_value({exponents}, {code}) AS {alias}")
        exp_ref[cc] = f"_t.{alias}"

    # 3. typed values and checks
    typed: dict[str, str] = {}
    checks: list[tuple[str, str, str]] = []  # (reason, column, condition)
    for name, spec in mapping.columns.items():
        v = f"_t.{ident('_v_' + name)}"
        exp_col = exp_ref.get(spec.currency) if spec.type == "money" else None
        if spec.type == "money" and exp_col is None:
            exp_col = "2"
        t = typed_expr(spec, v, fmt, tz, exp_col)
        typed[name] = t
        known = f"({exp_ref[name]} IS NOT NULL)" if name in exp_ref else None
        found = checks_for(spec, v, t, known)
        if spec.type == "money" and spec.currency in texts:
            # an amount whose currency is unknown or missing cannot become minor units: say that
            # instead of calling the amount invalid
            cur_v = f"_t.{ident('_v_' + spec.currency)}"
            found = [("missing-currency", f"{v} IS NOT NULL AND {cur_v} IS NULL")] + [
                (r, f"{c} AND {exp_col} IS NOT NULL" if r == "invalid-money" else c)
                for r, c in found
            ]
        for reason, cond in found:
            checks.append((reason, name, cond))
    # currency problems first: they explain every money failure on the row
    checks.sort(key=lambda c: 0 if c[0] in ("missing-required", "unknown-currency") else 1)
    if "currency" in texts and "currency" not in mapping.columns:
        typed["currency"] = "_t._v_currency"
        checks.append(("unknown-currency", "currency", f"({exp_ref['currency']} IS NULL)"))

    reason_items = [
        f"CASE WHEN {cond} THEN {{'reason': {literal(r)}, 'column_name': {literal(c)}, "
        f"'value': CAST({('_t.' + ident('_v_' + c)) if c in texts else 'NULL'} AS VARCHAR)}} END"
        for r, c, cond in checks
    ]
    if mapping.filter:  # a row outside the filter is not a data error: say that first
        reason_items.insert(
            0,
            "CASE WHEN NOT coalesce(_t._filter, false) THEN "
            "{'reason': 'filtered-out', 'column_name': NULL, 'value': NULL} END",
        )
    reasons = (
        f"list_filter([{', '.join(reason_items)}], lambda x: x IS NOT NULL)"
        if reason_items
        else "[]::STRUCT(reason VARCHAR, column_name VARCHAR, value VARCHAR)[]"
    )
    src_cols = [c for c in columns if c not in ("source_file", "source_row", "file_sha256")]

    def record_expr(alias: str) -> str:
        """The original values of a row (the quarantine's `record`), as JSON text."""
        if ingest.is_json and not mapping.unpivot:
            return f"{alias}._json"
        return (
            "to_json(struct_pack("
            + ", ".join(f"{ident(c)} := {alias}.{ident(c)}" for c in src_cols if c != "_json")
            + "))"
        )

    # the original record is only needed for quarantined rows: it is looked up by (source_file,
    # source_row) then, instead of copying every row's text through the check table. An
    # unpivoted export has several rows per source row, so there it rides along. A JSON record
    # is kept for the rows that fail a check as the check table is written: `raw` is a view
    # over the files there (see ingest._json_view), and a lookup would read them again.
    carry_record = bool(mapping.unpivot)
    json_record = ingest.is_json and not carry_record
    keeps_record = carry_record or json_record
    text_sel = ", ".join(f"{e} AS {ident('_v_' + n)}" for n, e in texts.items())
    filter_sel = f", ({json_paths.rewrite(mapping.filter)}) AS _filter" if mapping.filter else ""
    record_sel = f", {record_expr('_s')} AS _record" if keeps_record else ""
    extracted = json_paths.select_items()
    # NDJSON: the rows are read without record numbers (on every thread) and numbered from
    # their order in the staged table afterwards (`number_rows`). Not for an unpivoted export
    # (several rows per record) or a mapping whose SQL reads source_row itself.
    renumber = bool(
        ingest.unnumbered_view
        and not mapping.unpivot
        and not any(
            re.search(r"\bsource_row\b", x or "", re.IGNORECASE)
            for x in [mapping.filter, *(spec.expr for spec in mapping.columns.values())]
        )
    )
    read_from = ident(ingest.unnumbered_view) if renumber else rel
    base = f"(SELECT *, {', '.join(extracted)} FROM {read_from})" if extracted else read_from
    inner = (
        f"SELECT {text_sel}{', ' if text_sel else ''}source_file, source_row, file_sha256"
        f"{record_sel}{filter_sel} FROM {base} _s"
    )
    checked_from = (
        f"(SELECT _t.*, {', '.join(lookups)} FROM ({inner}) _t)" if lookups else f"({inner})"
    )
    typed_sel = ", ".join(f"{e} AS {ident(n)}" for n, e in typed.items())
    checked = table_name("chk", source.name)
    select = (
        f"SELECT {typed_sel}, _t.source_file, _t.source_row, _t.file_sha256"
        f"{', _t._record' if keeps_record else ''}, "
        f"{reasons} AS _reasons FROM {checked_from} _t"
    )
    if json_record:
        select = (
            "SELECT * REPLACE (CASE WHEN len(_reasons) > 0 THEN _record END AS _record) "
            f"FROM ({select})"
        )
    # 4. staged rows, every canonical column in model order, written straight from the checks
    # with the rows' reasons (and kept records) alongside: the rows that fail move to the check
    # table below and the extra columns are dropped. Writing every row to a check table first
    # and copying the good ones cost a second full write and read of the rows (spilled at 1M).
    # A typed value already has its canonical type (config gives a column the entity's type),
    # so the unique keys compare the same values the check table held.
    canon = ENTITIES[mapping.entity]
    stg_cols = []
    for name, col in canon.items():
        if name in typed:
            stg_cols.append(f"CAST({ident(name)} AS {TYPES[col.type]}) AS {ident(name)}")
        else:
            stg_cols.append(f"CAST(NULL AS {TYPES[col.type]}) AS {ident(name)}")
    prov_vals = {
        "source_name": literal(source.name),
        "source_system": literal(source.system),
        "source_vendor": literal(mapping.vendor),
        "source_file": "source_file",
        "source_row": "source_row",
        "file_sha256": "file_sha256",
        "run_id": literal(run_id),
    }
    stg_cols += [f"CAST({prov_vals[n]} AS {t}) AS {ident(n)}" for n, t in PROVENANCE.items()]
    extra = ["_reasons", *(["_record"] if keeps_record else [])]
    stg = stg_table(source.name)
    try:
        con.execute(
            f"CREATE OR REPLACE TABLE {ident(stg)} AS SELECT {', '.join(stg_cols)}, "
            f"{', '.join(extra)} FROM ({select})"
        )
    except duckdb.OutOfMemoryException:
        raise  # not the file's fault: pipeline.resource_errors names the setting
    except duckdb.Error as e:
        msg = str(e).strip().splitlines()[0]
        raise ConfigError(
            f"{mapping.path}: the mapping does not compile against source '{source.name}': {msg}"
        ) from None

    if renumber:
        number_rows(con, stg, ingest.json_file_rows)

    # 5. unique keys among otherwise-valid rows
    duplicates = 0
    for key in mapping.unique:
        parts = ", ".join(ident(k) for k in key)
        nonnull = " AND ".join(f"{ident(k)} IS NOT NULL" for k in key)
        duplicates += con.execute(
            f"""
            UPDATE {ident(stg)} c SET _reasons = [{{'reason': 'duplicate-key',
                'column_name': {literal(",".join(key))}, 'value': CAST(d._keytext AS VARCHAR)}}]
            FROM (
                SELECT _rid, _keytext FROM (
                    SELECT rowid AS _rid, concat_ws('|', {parts}) AS _keytext,
                        row_number() OVER (PARTITION BY {parts}
                            ORDER BY source_file, source_row, rowid) AS rn
                    FROM {ident(stg)} WHERE len(_reasons) = 0 AND {nonnull}
                ) WHERE rn > 1
            ) d
            WHERE c.rowid = d._rid
            """
        ).fetchone()[0]
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {ident(checked)} AS SELECT source_file, source_row, "
        f"{', '.join(extra)} FROM {ident(stg)} WHERE len(_reasons) > 0"
    )
    failures = con.execute(f"SELECT count(*) FROM {ident(checked)}").fetchone()[0]
    if failures:
        con.execute(f"DELETE FROM {ident(stg)} WHERE len(_reasons) > 0")
    for col in extra:
        con.execute(f"ALTER TABLE {ident(stg)} DROP COLUMN {ident(col)}")
    if json_record and duplicates:
        # a row that passed every check but repeats a key has no record kept: look it up
        con.execute(
            f"UPDATE {ident(checked)} c SET _record = {record_expr('_s')} FROM {rel} _s "
            "WHERE c._record IS NULL "
            "AND _s.source_file = c.source_file AND _s.source_row = c.source_row"
        )
    # The staged rows are in (source_file, source_row) order. The raw rows are read in that order
    # and the staged table is a filter + projection of them, so it is written without sorting
    # the wide rows again (the costliest contract statement at 1M customers). The order is
    # verified (a narrow pass); an unpivoted export (several rows per source row) or a plan that
    # did not keep the order is sorted as before.
    # Rows numbered from their storage order are in that order by construction, when the files
    # (appended in list order) are in name order too.
    numbered_in_order = renumber and [f for f, _ in ingest.json_file_rows] == sorted(
        f for f, _ in ingest.json_file_rows
    )
    if mapping.unpivot or not (numbered_in_order or in_key_order(con, stg)):
        sorted_stg = table_name("sorted", source.name)
        con.execute(
            f"CREATE OR REPLACE TABLE {ident(sorted_stg)} AS SELECT * FROM {ident(stg)} "
            "ORDER BY source_file, source_row"
        )
        con.execute(f"DROP TABLE {ident(stg)}")
        con.execute(f"ALTER TABLE {ident(sorted_stg)} RENAME TO {ident(stg)}")

    # 6. quarantine: contract failures, then lines the reader rejected
    msg_case = (
        "CASE r.reason "
        + " ".join(f"WHEN {literal(k)} THEN {literal(m)}" for k, m in MESSAGES.items())
        + " ELSE r.reason END"
    )
    failed = f"SELECT *, _reasons[1] AS r FROM {ident(checked)} WHERE len(_reasons) > 0"
    # an unpivoted source row is several rows: its record (name and value included) orders them
    tiebreak = ", _record" if mapping.unpivot else ""
    quarantined = (
        failed
        if keeps_record
        else f"SELECT c.*, {record_expr('_s')} AS _record FROM ({failed}) c JOIN {rel} _s "
        "ON _s.source_file = c.source_file AND _s.source_row = c.source_row"
    )
    con.execute(
        f"""
        INSERT INTO quarantine
        SELECT ?, ?, ?, source_file, source_row, NULL, r.reason, r.column_name, r.value,
            concat_ws(' ', r.column_name, CASE WHEN r.value IS NOT NULL THEN '''' || left(r.value, 80) || '''' END, {msg_case}),
            list_transform(_reasons, lambda x: x.reason || coalesce(':' || x.column_name, '')),
            _record
        FROM ({quarantined})
        ORDER BY source_file, source_row{tiebreak}
        """,
        [run_id, source.name, mapping.entity],
    )
    con.execute(
        f"""
        INSERT INTO quarantine
        SELECT ?, ?, ?, source_file, NULL, line, 'malformed-row', NULL, left(raw_line, 200),
            'line ' || line || ': ' || error, ['malformed-row'], to_json({{'line': raw_line}})
        FROM {ident(rejects_table(source.name))} ORDER BY source_file, line
        """,
        [run_id, source.name, mapping.entity],
    )
    res.rows_staged = con.execute(f"SELECT count(*) FROM {ident(stg)}").fetchone()[0]
    res.rows_in = res.rows_staged + failures + ingest.rows_rejected
    res.rows_quarantined = con.execute(
        "SELECT count(*) FROM quarantine WHERE source_name = ?", [source.name]
    ).fetchone()[0]
    con.execute(
        f"""
        INSERT INTO ingest_stats
        SELECT ?, ?, ?, f.file, f.sha, coalesce(s.n, 0) + coalesce(c.n, 0) + coalesce(rj.n, 0),
               coalesce(s.n, 0), coalesce(q.n, 0)
        FROM (SELECT unnest(?::VARCHAR[]) AS file, unnest(?::VARCHAR[]) AS sha) f
        LEFT JOIN (SELECT source_file, count(*) n FROM {ident(checked)} GROUP BY ALL) c
            ON c.source_file = f.file
        LEFT JOIN (SELECT source_file, count(*) n FROM {ident(rejects_table(source.name))} GROUP BY ALL) rj
            ON rj.source_file = f.file
        LEFT JOIN (SELECT source_file, count(*) n FROM {ident(stg)} GROUP BY ALL) s ON s.source_file = f.file
        LEFT JOIN (SELECT source_file, count(*) n FROM quarantine WHERE source_name = ? GROUP BY ALL) q
            ON q.source_file = f.file
        ORDER BY f.file
        """,
        [
            source.name,
            mapping.entity,
            source.system,
            [f.display for f in ingest.files],
            [f.sha256 for f in ingest.files],
            source.name,
        ],
    )
    con.execute(f"DROP TABLE {ident(checked)}")
    return res


def in_key_order(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether `table`'s rows are stored in strictly increasing (source_file, source_row)
    order: `rowid` is the storage position, each row is compared with the one before it."""
    bad = con.execute(
        f"""
        SELECT count(*) FROM (
            SELECT source_file, source_row, lag(source_file) OVER w AS prev_file,
                lag(source_row) OVER w AS prev_row
            FROM {ident(table)} WINDOW w AS (ORDER BY rowid)
        ) WHERE prev_file > source_file OR (prev_file = source_file AND prev_row >= source_row)
        """
    ).fetchone()[0]
    return bad == 0


def create_entity_views(con: duckdb.DuckDBPyConnection, sources: list[Source]) -> None:
    """`stg_<entity>`: every source of the entity, UNION ALL BY NAME (empty table when none)."""
    from romirecon.stages.common import drop_relation, ensure_entity_views, record_view_name

    by_entity: dict[str, list[Source]] = {}
    for s in sources:
        by_entity.setdefault(s.entity, []).append(s)
    for entity in ENTITIES:
        drop_relation(con, f"stg_{entity}")
        drop_relation(con, record_view_name(entity))
    for entity, members in sorted(by_entity.items()):
        tables = [stg_table(s.name) for s in members]
        union = " UNION ALL BY NAME ".join(f"SELECT * FROM {ident(t)}" for t in tables)
        con.execute(f"CREATE VIEW {ident('stg_' + entity)} AS {union}")
        numbered = record_numbers_sql(con, members)
        if numbered is not None:
            con.execute(f"CREATE TEMP VIEW {ident(record_view_name(entity))} AS {numbered}")
    ensure_entity_views(con)


def record_numbers_sql(con: duckdb.DuckDBPyConnection, sources: list[Source]) -> str | None:
    """The staged rows of `sources` (one entity) with `rid`, their record number: 0..n-1 in
    (source_name, source_file, source_row) order, as an integer surrogate key for the stages
    that would otherwise number the rows with a window over those three strings and join
    them back on all three (dedup's record table, the normalized keys, the golden table).

    Free to compute: every staged table is stored in strictly increasing (source_file,
    source_row) order (step 5 of `stage_source`), so a row's number is its source's offset
    (the row counts of the sources named before it) plus its `rowid`. None, and the callers
    number rows as before, when that does not hold: an unpivoted source (several rows per
    file row), or a table whose rowids are not 0..count-1."""
    if any(s.mapping.unpivot for s in sources):
        return None
    parts, offset = [], 0
    for s in sorted(sources, key=lambda s: s.name.encode()):
        t = ident(stg_table(s.name))
        n, top = con.execute(f"SELECT count(*), max(rowid) FROM {t}").fetchall()[0]
        if n and top != n - 1:
            return None
        parts.append(f"SELECT CAST(rowid + {offset} AS INTEGER) AS rid, * FROM {t}")
        offset += n
    if offset >= 2**31:
        return None
    return " UNION ALL BY NAME ".join(parts)
