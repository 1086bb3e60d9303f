"""Vectorised helpers: vendor-shaped ids, timestamps, deterministic writers.

Everything here works on whole numpy arrays / polars frames; nothing loops over records.
"""

from __future__ import annotations

import io
import json
import os
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

B62 = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", dtype="S1")
_B62_CODES = np.frombuffer(B62.tobytes(), dtype=np.uint8)
_SF_SUFFIX = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345", dtype="S1")
EPOCH = date(1970, 1, 1)


def day_number(d: date) -> int:
    """Days since 1970-01-01."""
    return (d - EPOCH).days


def _b62_chars(values: np.ndarray, width: int) -> np.ndarray:
    """(n, width) matrix of base-62 digit characters (bytes), most significant first."""
    v = np.asarray(values, dtype=np.uint64).astype(np.int64)  # ids stay below 62**10 < 2**63
    codes = np.empty((v.size, width), dtype=np.uint8)
    for pos in range(width - 1, -1, -1):  # loop over digit positions, not records
        v, digit = np.divmod(v, 62)
        codes[:, pos] = _B62_CODES[digit]
    return codes.view("S1")


def _to_strings(chars: np.ndarray) -> pl.Series:
    """(n, k) ASCII byte matrix -> polars String series, through one Arrow buffer."""
    n, k = chars.shape
    buf = pa.py_buffer(np.ascontiguousarray(chars).tobytes())
    arr = pa.FixedSizeBinaryArray.from_buffers(pa.binary(k), n, [None, buf])
    return pl.Series(pl.from_arrow(arr)).cast(pl.String)


def base62(values: np.ndarray, width: int) -> pl.Series:
    """Fixed-width base-62 strings of non-negative integers (most significant digit first)."""
    return _to_strings(_b62_chars(values, width))


def scrambled(index: np.ndarray, salt: int, width: int) -> np.ndarray:
    """A bijective scramble of 0..n-1 into [0, 62**width): distinct inputs give distinct ids."""
    modulus = 62**width
    mult = 1_000_000_007  # prime, coprime with 62**width
    idx = np.asarray(index, dtype=np.uint64)  # n * mult stays far below 2**64 for n < 1e9
    return (idx * np.uint64(mult) + np.uint64(salt * 7919 + 12345)) % np.uint64(modulus)


def vendor_ids(prefix: str, index: np.ndarray, salt: int, width: int = 14) -> pl.Series:
    """Stripe-style ids: prefix + fixed-width base-62 body, unique per index."""
    body = _b62_chars(scrambled(index, salt, min(width, 10)), min(width, 10))
    if width > 10:  # pad with a salt-derived constant so ids have the vendor's length
        pad = _b62_chars(np.array([salt * 104729 % (62 ** (width - 10))]), width - 10)[0]
        body = np.concatenate([np.broadcast_to(pad, (body.shape[0], pad.size)), body], axis=1)
    head = np.frombuffer(prefix.encode(), dtype="S1")
    return _to_strings(
        np.concatenate([np.broadcast_to(head, (body.shape[0], head.size)), body], axis=1)
    )


def salesforce_ids(key_prefix: str, index: np.ndarray, org_pod: str = "5g0000") -> pl.Series:
    """18-character Salesforce ids: 3-char key prefix + pod + base-62 counter + checksum suffix.

    The 3-character suffix encodes, for each 5-character chunk of the 15-character id, which
    characters are upper-case letters (Salesforce's case-insensitive id algorithm).
    """
    counter = _b62_chars(
        np.asarray(index, dtype=np.uint64) + np.uint64(1000), 15 - 3 - len(org_pod)
    )
    head = np.frombuffer((key_prefix + org_pod).encode(), dtype="S1")
    chars = np.concatenate([np.broadcast_to(head, (counter.shape[0], head.size)), counter], axis=1)
    upper = (chars >= b"A") & (chars <= b"Z")
    weights = np.array([1, 2, 4, 8, 16])
    suffix = _SF_SUFFIX[(upper.reshape(-1, 3, 5) * weights).sum(axis=2)]
    return _to_strings(np.concatenate([chars, suffix], axis=1))


def numeric_ids(start: int, index: np.ndarray, step: int = 1) -> np.ndarray:
    return (start + np.asarray(index, dtype=np.int64) * step).astype(str)


def pick(
    rng: np.random.Generator, values: list[str], n: int, p: list[float] | None = None
) -> np.ndarray:
    arr = np.array(values)
    if p is not None:
        w = np.asarray(p, dtype=float)
        return arr[rng.choice(len(arr), size=n, p=w / w.sum())]
    return arr[rng.integers(0, len(arr), size=n)]


# ---------------------------------------------------------------- writers (deterministic)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_csv(
    df: pl.DataFrame,
    path: Path,
    *,
    header_lines: list[str] | None = None,
    footer_lines: list[str] | None = None,
    separator: str = ",",
    bom: bool = False,
    line_terminator: str = "\n",
    skip_header: bool = False,
    quote_style: str = "necessary",
) -> None:
    buf = io.BytesIO()
    df.write_csv(
        buf,
        separator=separator,
        line_terminator=line_terminator,
        quote_style=quote_style,
        include_header=not skip_header,
    )  # type: ignore[arg-type]
    body = buf.getvalue()
    head = "".join(h + line_terminator for h in header_lines or []).encode()
    foot = "".join(f + line_terminator for f in footer_lines or []).encode()
    _atomic_write_bytes(path, (b"\xef\xbb\xbf" if bom else b"") + head + body + foot)


def write_ndjson(records: pl.DataFrame, path: Path) -> None:
    """One JSON object per line; struct columns become nested objects, nulls are kept."""
    buf = io.BytesIO()
    records.write_ndjson(buf)
    _atomic_write_bytes(path, buf.getvalue())


def write_json_records(
    records: pl.DataFrame,
    path: Path,
    key: str,
    before: dict[str, object] | None = None,
    after: dict[str, object] | None = None,
) -> None:
    """One JSON document holding the records as an array under `key`, as REST APIs page them.

    `before` / `after` are the envelope's other members (written before / after the array).
    A `.jsonl` path gets the records alone, one per line (the estate's "ndjson" layout).
    """
    if path.suffix == ".jsonl":
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        records.write_ndjson(tmp)
        os.replace(tmp, path)
        return
    buf = io.BytesIO()
    records.write_ndjson(buf)
    # JSON text never holds a raw newline inside a value, so each line is one record
    body = buf.getvalue().rstrip(b"\n").replace(b"\n", b",\n")

    def members(d: dict[str, object] | None) -> bytes:
        return b"".join(
            json.dumps(k).encode() + b":" + json.dumps(v).encode() + b","
            for k, v in (d or {}).items()
        )

    head = b"{" + members(before) + json.dumps(key).encode() + b":[\n"
    tail = b"\n]" + (b"," + members(after)[:-1] if after else b"") + b"}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(head)
        f.write(body)
        f.write(tail)
    os.replace(tmp, path)


def write_api_list(records: pl.DataFrame, path: Path, url: str) -> None:
    """A Stripe list document: {"object": "list", "data": [...], "has_more": false, "url": ...}."""
    write_json_records(records, path, "data", {"object": "list"}, {"has_more": False, "url": url})


def write_parquet(df: pl.DataFrame, path: Path) -> None:
    """Parquet with fixed settings so equal frames give byte-identical files."""
    table = df.to_arrow()
    table = table.replace_schema_metadata(None)
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        compression="zstd",
        compression_level=3,
        use_dictionary=True,
        write_statistics=True,
        row_group_size=1_000_000,
        store_schema=False,
        version="2.6",
    )
    _atomic_write_bytes(path, sink.getvalue().to_pybytes())


def write_json(obj: object, path: Path) -> None:
    _atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def epoch_to_str(seconds: pl.Expr, fmt: str) -> pl.Expr:
    """Format epoch seconds (UTC) with strftime."""
    return pl.from_epoch(seconds, time_unit="s").dt.strftime(fmt)
