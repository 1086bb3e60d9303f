"""`romirecon dedupe` and `romirecon explain` end to end, through click."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pytest
from click.testing import CliRunner, Result

from benchmarks.dedup_bench import generate
from romirecon.cli import main

FIELDS = [
    "first_name:name",
    "last_name:name",
    "email:email",
    "phone:phone",
    "dob:date",
    "address:address",
    "city",
    "postcode:exact",
    "company:text",
]


def invoke(args: list[str], code: int = 0) -> Result:
    res = CliRunner().invoke(main, args)
    assert res.exit_code == code, (res.output, res.exception)
    return res


def dedupe_args(path: Path, out: Path) -> list[str]:
    args = ["dedupe", str(path), "--id", "id", "--out", str(out)]
    for f in FIELDS:
        args += ["--field", f]
    return args


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, pl.DataFrame]:
    d = tmp_path_factory.mktemp("dedupe")
    recs, truth = generate(2000, seed=5)
    path = d / "people.csv"
    recs.write_csv(path)
    out = d / "out"
    invoke(dedupe_args(path, out))
    return path, out, truth


def test_outputs_and_accuracy(run: tuple[Path, Path, pl.DataFrame]) -> None:
    _path, out, truth = run
    con = duckdb.connect()
    con.register("truth", truth.to_arrow())
    clusters = f"read_parquet('{out / 'clusters.parquet'}')"
    n, distinct = con.execute(f"SELECT count(*), count(DISTINCT id) FROM {clusters}").fetchall()[0]
    assert n == distinct == 2000  # one row per input record
    cols = [
        r[0]
        for r in con.execute(
            f"DESCRIBE SELECT * FROM read_parquet('{out / 'pairs.parquet'}')"
        ).fetchall()
    ]
    assert cols[:3] == ["left_id", "right_id", "match_probability"]
    assert "level_first_name" in cols and "level_dob" in cols
    # cluster-implied pairs against the truth, counted independently of the program
    tp, pred = con.execute(
        f"SELECT count(*) FILTER (WHERE ta.entity = tb.entity), count(*) FROM {clusters} a "
        f"JOIN {clusters} b ON a.cluster_id = b.cluster_id AND a.id < b.id "
        "JOIN truth ta ON ta.id = a.id JOIN truth tb ON tb.id = b.id"
    ).fetchall()[0]
    true_pairs = con.execute(
        "SELECT sum(n * (n - 1) / 2) FROM (SELECT count(*) AS n FROM truth GROUP BY entity)"
    ).fetchall()[0][0]
    assert tp / pred > 0.97 and tp / true_pairs > 0.95
    # cluster_id is the smallest id of the cluster
    bad = con.execute(
        f"SELECT count(*) FROM (SELECT cluster_id, min(id) AS m FROM {clusters} GROUP BY 1) "
        "WHERE m <> cluster_id"
    ).fetchall()[0][0]
    assert bad == 0


def test_explain_matches_scored_pair(run: tuple[Path, Path, pl.DataFrame]) -> None:
    _, out, _ = run
    con = duckdb.connect()
    left, right, prob = con.execute(
        f"SELECT left_id, right_id, match_probability FROM read_parquet('{out / 'pairs.parquet'}') "
        "WHERE match_probability >= 0.9 ORDER BY left_id, right_id LIMIT 1"
    ).fetchall()[0]
    res = invoke(["explain", str(out), str(left), str(right)])
    for f in FIELDS:
        assert f.split(":")[0] in res.output
    assert "MATCH" in res.output and "same cluster" in res.output
    # explain recomputes one pair; the vectorized run scored all: the two must agree
    shown = float(res.output.split("match probability")[1].split()[0])
    assert shown == pytest.approx(prob, abs=1e-6)


def test_explain_unscored_pair(run: tuple[Path, Path, pl.DataFrame]) -> None:
    _, out, _ = run
    con = duckdb.connect()
    # two records in different clusters, not among the written pairs
    a, b = con.execute(
        f"SELECT a.id, b.id FROM read_parquet('{out / 'clusters.parquet'}') a, "
        f"read_parquet('{out / 'clusters.parquet'}') b WHERE a.cluster_id <> b.cluster_id "
        "ORDER BY a.id, b.id LIMIT 1"
    ).fetchall()[0]
    res = invoke(["explain", str(out), str(a), str(b)])
    assert "no match" in res.output and "different clusters" in res.output


def test_deterministic_and_stable_when_a_record_is_added(
    run: tuple[Path, Path, pl.DataFrame], tmp_path: Path
) -> None:
    path, out, _ = run
    again = tmp_path / "again"
    invoke(dedupe_args(path, again))
    for name in ("pairs.parquet", "clusters.parquet"):
        assert (again / name).read_bytes() == (out / name).read_bytes()
    # one more record (a copy of record 1 with a new, larger id): old cluster ids stay
    recs = pl.read_csv(path)
    extra = recs.filter(pl.col("id") == 1).with_columns(
        pl.lit(99999, dtype=recs["id"].dtype).alias("id")
    )
    bigger = tmp_path / "bigger.csv"
    pl.concat([recs, extra]).write_csv(bigger)
    out2 = tmp_path / "out2"
    invoke(dedupe_args(bigger, out2))
    before = pl.read_parquet(out / "clusters.parquet")
    after = pl.read_parquet(out2 / "clusters.parquet")
    joined = before.join(after, on="id", suffix="_after")
    assert joined.height == 2000
    assert (joined["cluster_id"] == joined["cluster_id_after"]).all()
    # CSV ids are read as text (leading zeros survive), so ids compare as strings
    c1 = before.filter(pl.col("id") == "1")["cluster_id"][0]
    assert after.filter(pl.col("id") == "99999")["cluster_id"][0] == c1


def test_user_errors_exit_codes(run: tuple[Path, Path, pl.DataFrame], tmp_path: Path) -> None:
    path, _, _ = run
    res = invoke(["dedupe", str(path), "--id", "id", "--field", "nope", "--out", str(tmp_path)], 2)
    assert "unknown column(s) 'nope'" in res.output
    res = invoke(
        ["dedupe", str(path), "--id", "id", "--field", "email:emial", "--out", str(tmp_path)], 2
    )
    assert "did you mean 'email'" in res.output
    res = invoke(["dedupe", str(tmp_path / "missing.csv"), "--id", "id", "--out", str(tmp_path)], 4)
    assert "no such file" in res.output
    dup = tmp_path / "dup.csv"
    dup.write_text("id,name\n1,ann\n1,bob\n2,cy\n")
    res = invoke(["dedupe", str(dup), "--id", "id", "--out", str(tmp_path)], 3)
    assert "repeats ids" in res.output
    res = invoke(["explain", str(tmp_path / "nothing"), "1", "2"], 4)
    assert "model.json" in res.output


def test_every_command_has_help() -> None:
    for cmd in ("dedupe", "explain"):
        assert "Usage" in invoke([cmd, "--help"]).output
