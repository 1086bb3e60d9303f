"""Dedup benchmark: `python -m benchmarks.dedup_bench [--sizes 10000,100000,1000000]`.

Generates person records with ground truth (deterministic, seeded, vectorized in numpy/polars),
runs `romirecon dedupe` on each size in a child process (so wall time and peak RSS are the
command's own), and scores pairwise and cluster precision/recall/F1 against the truth.
Writes benchmarks/dedup_results.md and benchmarks/dedup_results.json.

Records: first/last name (Zipf-distributed, synthetic syllable names), email, phone, date of
birth, street address, city, postcode, company. About 15% of records are duplicates of another
record with realistic damage: typos (substitution, deletion, insertion, transposition),
nickname-like first names, day/month swaps, abbreviated street types, changed email domains,
missing fields.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

HERE = Path(__file__).resolve().parent
SYL = np.array(
    [
        "ka",
        "lo",
        "mi",
        "ra",
        "na",
        "to",
        "be",
        "li",
        "sa",
        "ve",
        "do",
        "ri",
        "an",
        "el",
        "mar",
        "tin",
        "jo",
        "se",
        "la",
        "ne",
        "ch",
        "ar",
        "is",
        "ol",
        "ha",
        "de",
        "ro",
        "bi",
        "ta",
        "ke",
        "mo",
        "fa",
        "gu",
        "pe",
        "ly",
        "sta",
        "na",
        "ber",
        "wen",
        "tho",
        "rik",
        "ald",
        "ia",
        "ena",
        "ric",
        "ton",
        "son",
        "ley",
        "ard",
        "vin",
        "dra",
        "lu",
        "ce",
        "fi",
        "gor",
        "ham",
        "ell",
    ]
)
STREETS = np.array(["Street", "Road", "Avenue", "Lane", "Drive", "Court", "Place", "Way"])
STREET_ABBR = {
    "Street": "St",
    "Road": "Rd",
    "Avenue": "Ave",
    "Lane": "Ln",
    "Drive": "Dr",
    "Court": "Ct",
    "Place": "Pl",
    "Way": "Wy",
}
DOMAINS = np.array(
    [
        "gmail.com",
        "yahoo.com",
        "outlook.com",
        "hotmail.com",
        "icloud.com",
        "proton.me",
        "aol.com",
        "mail.com",
        "gmx.de",
        "web.de",
    ]
)
SUFFIXES = np.array(["Inc", "LLC", "Ltd", "GmbH", "Corp", "Group", "SA", "Co"])
ALPHA = np.array(list("abcdefghijklmnopqrstuvwxyz"))
DIGITS = np.array(list("0123456789"))


def _words(rng: np.random.Generator, count: int, lo: int, hi: int) -> np.ndarray:
    """`count` distinct synthetic words of lo..hi syllables, capitalised."""
    out: set[str] = set()
    result: list[str] = []
    while len(result) < count:
        k = rng.integers(lo, hi + 1, size=count)
        picks = rng.integers(0, SYL.size, size=(count, hi))
        batch = pl.DataFrame({f"s{j}": SYL[picks[:, j]] for j in range(hi)}).with_columns(
            k=pl.Series(k)
        )
        expr = pl.concat_str(
            [
                pl.when(pl.col("k") > j).then(pl.col(f"s{j}")).otherwise(pl.lit(""))
                for j in range(hi)
            ]
        ).str.to_titlecase()
        for w in batch.select(expr.alias("w"))["w"].to_list():  # setup vocab, not data rows
            if w not in out:
                out.add(w)
                result.append(w)
    return np.array(result[:count])


def _zipf_pick(rng: np.random.Generator, n: int, size: int, a: float = 1.05) -> np.ndarray:
    ranks = np.arange(1, size + 1, dtype=np.float64)
    p = ranks**-a
    p /= p.sum()
    return rng.choice(size, size=n, p=p)


def _typo(col: str, rng: np.random.Generator, n: int) -> pl.Expr:
    """One random edit per value: substitute, delete, insert or transpose (vectorized)."""
    op = pl.Series(rng.integers(0, 4, size=n))
    pos = pl.Series(rng.random(n))
    ch = pl.Series(ALPHA[rng.integers(0, 26, size=n)])
    c = pl.col(col)
    length = c.str.len_chars()
    p = (pl.lit(pos) * (length - 1).clip(lower_bound=0)).floor().cast(pl.Int64)
    head = c.str.slice(0, p)
    sub = pl.concat_str([head, pl.lit(ch), c.str.slice(p + 1)])
    dele = pl.concat_str([head, c.str.slice(p + 1)])
    ins = pl.concat_str([head, pl.lit(ch), c.str.slice(p)])
    p2 = pl.min_horizontal(p, (length - 2).clip(lower_bound=0))
    swap = pl.concat_str(
        [c.str.slice(0, p2), c.str.slice(p2 + 1, 1), c.str.slice(p2, 1), c.str.slice(p2 + 2)]
    )
    o = pl.lit(op)
    return (
        pl.when(length < 3)
        .then(c)
        .when(o == 0)
        .then(sub)
        .when(o == 1)
        .then(dele)
        .when(o == 2)
        .then(ins)
        .otherwise(swap)
    )


def generate(n: int, seed: int = 7, dup_rate: float = 0.15) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(records, truth): records have `id` and the fields; truth maps id -> entity."""
    rng = np.random.default_rng(seed)
    n_dup = round(n * dup_rate)
    n_orig = n - n_dup
    first_vocab = _words(rng, 3000, 2, 3)
    last_vocab = _words(rng, 40000, 2, 4)
    street_vocab = _words(rng, 5000, 2, 3)
    city_vocab = _words(rng, 3000, 2, 3)
    comp_vocab = _words(rng, 20000, 2, 3)
    # nickname-like variant of each first name: its first 3 letters + y/ie/o
    nick = (
        pl.DataFrame({"f": first_vocab})
        .select(
            pl.concat_str(
                [
                    pl.col("f").str.slice(0, 3),
                    pl.lit(
                        pl.Series(np.array(["y", "ie", "o"])[rng.integers(0, 3, first_vocab.size)])
                    ),
                ]
            )
        )
        .to_series()
        .to_numpy()
    )

    fi = _zipf_pick(rng, n_orig, first_vocab.size, 1.0)
    la = _zipf_pick(rng, n_orig, last_vocab.size, 0.9)
    first = first_vocab[fi]
    last = last_vocab[la]
    dob = np.datetime64("1940-01-01") + rng.integers(0, 65 * 365, n_orig).astype("timedelta64[D]")
    city_i = _zipf_pick(rng, n_orig, city_vocab.size, 1.0)
    orig = pl.DataFrame(
        {
            "entity": np.arange(n_orig, dtype=np.int64),
            "first_name": first,
            "last_name": last,
            "fi": fi,
            "dob": dob,
            "phone": rng.integers(2_000_000_000, 9_999_999_999, n_orig).astype(str),
            "num": rng.integers(1, 400, n_orig),
            "street_name": street_vocab[rng.integers(0, street_vocab.size, n_orig)],
            "street_type": STREETS[rng.integers(0, STREETS.size, n_orig)],
            "city": city_vocab[city_i],
            "postcode": (10000 + city_i * 7 % 89999).astype(str),
            "company": comp_vocab[_zipf_pick(rng, n_orig, comp_vocab.size, 0.8)],
            "suffix": SUFFIXES[rng.integers(0, SUFFIXES.size, n_orig)],
            "domain": DOMAINS[rng.integers(0, DOMAINS.size, n_orig)],
            "estyle": rng.integers(0, 3, n_orig),
            "enum": rng.integers(1, 1000, n_orig),
        }
    )
    orig = orig.with_columns(
        email=pl.when(pl.col("estyle") == 0)
        .then(
            pl.concat_str(
                [
                    pl.col("first_name"),
                    pl.lit("."),
                    pl.col("last_name"),
                    pl.col("enum").cast(pl.String),
                ]
            )
        )
        .when(pl.col("estyle") == 1)
        .then(
            pl.concat_str(
                [
                    pl.col("first_name").str.slice(0, 1),
                    pl.col("last_name"),
                    pl.col("enum").cast(pl.String),
                ]
            )
        )
        .otherwise(
            pl.concat_str(
                [
                    pl.col("last_name"),
                    pl.col("first_name").str.slice(0, 2),
                    pl.col("enum").cast(pl.String),
                ]
            )
        )
        .str.to_lowercase()
        + pl.lit("@")
        + pl.col("domain"),
    )
    # duplicates: copies of random originals (some get several), then damaged
    src = rng.integers(0, n_orig, n_dup)
    dup = orig[src]
    k = n_dup

    def mask(p: float) -> pl.Series:
        return pl.Series(rng.random(k) < p)

    dup = dup.with_columns(
        first_name=pl.when(mask(0.06))
        .then(pl.lit(pl.Series(nick[dup["fi"].to_numpy()])))
        .when(mask(0.12))
        .then(_typo("first_name", rng, k))
        .otherwise(pl.col("first_name")),
        last_name=pl.when(mask(0.12))
        .then(_typo("last_name", rng, k))
        .otherwise(pl.col("last_name")),
        email=pl.when(mask(0.10))
        .then(_typo("email", rng, k))
        .when(mask(0.10))
        .then(pl.col("email").str.replace(r"@.*$", "@" + "work.example"))
        .when(mask(0.08))
        .then(pl.lit(None, dtype=pl.String))
        .otherwise(pl.col("email")),
        phone=pl.when(mask(0.08))
        .then(_typo_digits("phone", rng, k))
        .when(mask(0.12))
        .then(pl.lit(None, dtype=pl.String))
        .otherwise(pl.col("phone")),
        dob=pl.when(mask(0.05) & (pl.col("dob").dt.day() <= 12))
        .then(pl.date(pl.col("dob").dt.year(), pl.col("dob").dt.day(), pl.col("dob").dt.month()))
        .when(mask(0.05))
        .then(pl.col("dob") + pl.duration(days=pl.lit(pl.Series(rng.choice([-10, -1, 1, 10], k)))))
        .otherwise(pl.col("dob")),
        street_type=pl.when(mask(0.3))
        .then(pl.col("street_type").replace(STREET_ABBR))
        .otherwise(pl.col("street_type")),
        street_name=pl.when(mask(0.08))
        .then(_typo("street_name", rng, k))
        .otherwise(pl.col("street_name")),
        city=pl.when(mask(0.04)).then(_typo("city", rng, k)).otherwise(pl.col("city")),
        suffix=pl.when(mask(0.3))
        .then(pl.lit(pl.Series(SUFFIXES[rng.integers(0, SUFFIXES.size, k)])))
        .otherwise(pl.col("suffix")),
    )
    both = pl.concat([orig, dup])
    n_all = both.height
    # missing values everywhere (originals too)
    rng2 = np.random.default_rng(seed + 1)

    def blank(col: str, p: float) -> pl.Expr:
        return (
            pl.when(pl.Series(rng2.random(n_all) < p)).then(None).otherwise(pl.col(col)).alias(col)
        )

    both = both.with_columns(
        address=pl.concat_str(
            [pl.col("num").cast(pl.String), pl.col("street_name"), pl.col("street_type")],
            separator=" ",
        ),
        company=pl.concat_str([pl.col("company"), pl.col("suffix")], separator=" "),
        phone=pl.concat_str(
            [
                pl.lit("+1 ("),
                pl.col("phone").str.slice(0, 3),
                pl.lit(") "),
                pl.col("phone").str.slice(3, 3),
                pl.lit("-"),
                pl.col("phone").str.slice(6),
            ]
        ),
        dob=pl.col("dob").dt.strftime("%Y-%m-%d"),
    ).with_columns(
        blank("first_name", 0.01),
        blank("email", 0.05),
        blank("phone", 0.15),
        blank("dob", 0.05),
        blank("address", 0.05),
        blank("city", 0.02),
        blank("postcode", 0.03),
        blank("company", 0.2),
    )
    # shuffle so duplicates are not adjacent; ids are shuffled positions
    perm = rng.permutation(n_all)
    both = both[perm].with_columns(id=pl.Series(np.arange(1, n_all + 1, dtype=np.int64)))
    records = both.select(
        "id",
        "first_name",
        "last_name",
        "email",
        "phone",
        "dob",
        "address",
        "city",
        "postcode",
        "company",
    )
    truth = both.select("id", "entity")
    return records, truth


def _typo_digits(col: str, rng: np.random.Generator, n: int) -> pl.Expr:
    pos = pl.Series(rng.integers(0, 9, n))
    ch = pl.Series(DIGITS[rng.integers(0, 10, n)])
    swap = pl.Series(rng.random(n) < 0.5)
    c = pl.col(col)
    p = pl.lit(pos)
    sub = pl.concat_str([c.str.slice(0, p), pl.lit(ch), c.str.slice(p + 1)])
    tr = pl.concat_str(
        [c.str.slice(0, p), c.str.slice(p + 1, 1), c.str.slice(p, 1), c.str.slice(p + 2)]
    )
    return pl.when(pl.lit(swap)).then(tr).otherwise(sub)


FIELDS = [
    "first_name:name",
    "last_name:name",
    "email:email",
    "phone:phone",
    "dob:date",
    "address:address",
    "city:name",
    "postcode:exact",
    "company:text",
]


def score(out_dir: Path, truth_path: Path, threshold: float) -> dict[str, float]:
    """Pairwise (scored pairs >= threshold) and cluster (pairs implied by clusters) P/R/F1."""
    import duckdb

    con = duckdb.connect()
    t = str(truth_path).replace("'", "''")
    pairs = str(out_dir / "pairs.parquet").replace("'", "''")
    clusters = str(out_dir / "clusters.parquet").replace("'", "''")
    con.execute(f"CREATE TABLE truth AS SELECT * FROM read_parquet('{t}')")
    true_pairs = con.execute(
        "SELECT sum(n * (n - 1) / 2) FROM (SELECT count(*) n FROM truth GROUP BY entity)"
    ).fetchall()[0][0]
    pred, tp = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE a.entity = b.entity) FROM read_parquet('{pairs}') p "
        "JOIN truth a ON a.id = p.left_id JOIN truth b ON b.id = p.right_id "
        "WHERE p.match_probability >= ?",
        [threshold],
    ).fetchall()[0]
    cpred = con.execute(
        f"SELECT sum(n * (n - 1) / 2) FROM (SELECT count(*) n FROM read_parquet('{clusters}') GROUP BY cluster_id)"
    ).fetchall()[0][0]
    ctp = con.execute(
        f"SELECT sum(n * (n - 1) / 2) FROM (SELECT count(*) n FROM read_parquet('{clusters}') c "
        "JOIN truth t ON t.id = c.id GROUP BY c.cluster_id, t.entity)"
    ).fetchall()[0][0]

    def prf(tp_: float, pred_: float, true_: float) -> tuple[float, float, float]:
        p = tp_ / pred_ if pred_ else 1.0
        r = tp_ / true_ if true_ else 1.0
        return p, r, (2 * p * r / (p + r) if p + r else 0.0)

    p, r, f = prf(tp, pred, true_pairs)
    cp, cr, cf = prf(ctp, cpred, true_pairs)
    return {
        "true_pairs": float(true_pairs),
        "pairwise_precision": p,
        "pairwise_recall": r,
        "pairwise_f1": f,
        "cluster_precision": cp,
        "cluster_recall": cr,
        "cluster_f1": cf,
    }


def run_one(n: int, work: Path, threshold: float, threads: int | None) -> dict[str, object]:
    t0 = time.perf_counter()
    records, truth = generate(n)
    data = work / f"people_{n}.parquet"
    truth_path = work / f"truth_{n}.parquet"
    records.write_parquet(data)
    truth.write_parquet(truth_path)
    gen_s = time.perf_counter() - t0
    out = work / f"out_{n}"
    cmd = [
        sys.executable,
        "-m",
        "romirecon",
        "dedupe",
        str(data),
        "--id",
        "id",
        "--out",
        str(out),
        "--threshold",
        str(threshold),
    ]
    for f in FIELDS:
        cmd += ["--field", f]
    if threads:
        cmd += ["--threads", str(threads)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t1 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t1
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        raise SystemExit(f"dedupe failed ({proc.returncode}): {proc.stderr.strip()}")
    meta = json.loads((out / "model.json").read_text())
    res: dict[str, object] = {
        "records": n,
        "generate_s": round(gen_s, 2),
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(peak_kb / 1024, 1) if peak_kb > before else None,
        "candidate_pairs": meta["candidate_pairs"],
        "blocking_rules": meta["blocking_rules"],
        "timings_s": meta["timings_s"],
        "em_iterations": meta["model"]["em_iterations"],
        "stdout": proc.stdout.strip(),
    }
    res.update({k: round(v, 4) for k, v in score(out, truth_path, threshold).items()})
    return res


def write_results(results: list[dict[str, object]], path_md: Path, path_json: Path) -> None:
    path_json.write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Dedup benchmark (`python -m benchmarks.dedup_bench`)",
        "",
        f"Machine: {os.cpu_count()} cores. `romirecon dedupe` on generated person records "
        "(~15% duplicates with typos, nickname variants, day/month swaps, missing fields), "
        "training included. Pairwise = scored pairs at p >= threshold vs true pairs; cluster = "
        "pairs implied by the clusters vs true pairs.",
        "",
        "| records | wall s | peak RSS MB | candidate pairs | pairwise P | pairwise R | pairwise F1 | cluster P | cluster R | cluster F1 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['records']:,} | {r['wall_s']} | {r['peak_rss_mb']} | {r['candidate_pairs']:,} | "
            f"{r['pairwise_precision']} | {r['pairwise_recall']} | {r['pairwise_f1']} | "
            f"{r['cluster_precision']} | {r['cluster_recall']} | {r['cluster_f1']} |"
        )
    lines += ["", "Stage timings (s):", ""]
    for r in results:
        lines.append(
            f"- {r['records']:,}: " + ", ".join(f"{k} {v}" for k, v in r["timings_s"].items())
        )
    path_md.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--work", type=Path, default=None, help="folder for data and outputs (default: a temp dir)"
    )
    ap.add_argument("--out", type=Path, default=HERE, help="folder for dedup_results.md/.json")
    a = ap.parse_args(argv)
    sizes = [int(s) for s in a.sizes.split(",") if s]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = a.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for n in sizes:  # one subprocess per size: RSS is per child, run in increasing size
            r = run_one(n, work, a.threshold, a.threads)
            print(
                json.dumps({k: v for k, v in r.items() if k not in ("blocking_rules", "stdout")}),
                flush=True,
            )
            results.append(r)
    write_results(results, a.out / "dedup_results.md", a.out / "dedup_results.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
