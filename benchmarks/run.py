"""`make bench`: the whole `romirecon run` on generated estates of growing size.

For each size: generate an estate (cached by size and seed under benchmarks/cache/), time a bare
DuckDB read of the same input files (the floor: nothing can be faster than reading the inputs
once; the faster of two passes, so a cold page cache does not flatter the ratio), run `romirecon run` in a child process with JSON logs, and collect wall time and peak RSS
per stage and in total, rows per second, the ratio to the bare read, and dedup precision/recall
against the generator's truth. Writes benchmarks/results.md and benchmarks/results.json.

    python -m benchmarks.run [--sizes 10000,100000,1000000] [--seed 7] [--merge] [--refloor]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import duckdb

HERE = Path(__file__).resolve().parent
# API-list exports one record per line (.jsonl), as bulk extract tools write them: a Stripe list
# document for a 1M-customer estate would be one 1.8 GB JSON value, past DuckDB's 2 GB-per-object
# reader limit with the next size up, and no real extract of that size is one API page
JSON_LAYOUT = "ndjson"
CACHE = HERE / "cache"


def _code_key() -> str:
    """Estates are cached by size and seed, and by the generator and mappings that wrote them."""
    import hashlib

    root = HERE.parent
    h = hashlib.sha256()
    for p in sorted(
        [*(root / "mappings").glob("*.yaml"), *(root / "romirecon" / "generate").glob("*.py")]
    ):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:8]


def estate(size: int, seed: int) -> Path:
    """A generated estate, reused across benchmark runs (same size and seed: same files)."""
    from romirecon.generate import generate_estate

    d = CACHE / f"estate-{size}-seed{seed}-{JSON_LAYOUT}-{_code_key()}"
    if (d / "truth" / "manifest.json").exists():
        return d
    shutil.rmtree(d, ignore_errors=True)
    t = time.perf_counter()
    generate_estate(d, customers=size, seed=seed, json_layout=JSON_LAYOUT)
    print(f"  generated {size:,} customers in {time.perf_counter() - t:.1f} s", flush=True)
    return d


def _commit() -> str:
    """The checkout's commit (and whether it had local changes) the run measured."""
    git = ["git", "-C", str(HERE.parent)]
    try:
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "romirecon"],
                               capture_output=True, text=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def bare_read(project_dir: Path, passes: int = 2) -> tuple[float, int, float]:
    """Seconds to read every input file once with DuckDB's readers (the fastest of `passes`
    reads: the first may come from disk, later ones from the page cache, as the run's own reads
    mostly do), the rows read, and the first (cold) pass's seconds."""
    times = []
    for _ in range(passes):
        seconds, rows = _read_all(project_dir)
        times.append(seconds)
    return min(times), rows, times[0]


def _read_all(project_dir: Path) -> tuple[float, int]:
    from romirecon.config import load_project
    from romirecon.stages import ingest

    project = load_project(project_dir)
    con = duckdb.connect()
    rows = 0
    t = time.perf_counter()
    for source in project.sources:
        for f in ingest.resolve_files(project, source):
            kind = ingest.detect_type(source, f.path)
            if kind in ("json", "ndjson"):
                sql = ingest.json_records_sql(kind, f.path, source.format)
            elif kind == "xlsx":
                rows += ingest._xlsx_arrow(f.path, source.format).num_rows
                continue
            else:
                sql = ingest._read_file_sql(kind, f.path, source.format, None)
            rows += con.execute(f"SELECT count(*) FROM ({sql})").fetchone()[0]
    return time.perf_counter() - t, rows


def load_floor(project_dir: Path) -> float:
    """Seconds for DuckDB to load every input file into a table with its own readers and type
    detection (`read_csv` / `read_json`, every field parsed into a column), one pass after the
    bare read warmed the page cache. A second floor next to the bare read, which counts records
    without parsing their fields: this one is what "load the exports into DuckDB" costs before
    any checking, matching or reconciling. In a scratch database with the run's 4 GB limit."""
    import tempfile

    from romirecon.config import load_project
    from romirecon.sqlutil import literal
    from romirecon.stages import ingest

    project = load_project(project_dir)
    with tempfile.TemporaryDirectory(prefix="romirecon-floor-") as tmp:
        con = duckdb.connect()
        con.execute("SET memory_limit = '4GB'")
        con.execute(f"SET temp_directory = {literal(tmp)}")
        t = time.perf_counter()
        for source in project.sources:
            for f in ingest.resolve_files(project, source):
                kind = ingest.detect_type(source, f.path)
                if kind == "xlsx":
                    ingest._xlsx_arrow(f.path, source.format)
                    continue
                if kind in ("json", "ndjson"):
                    fmt = ", format = 'newline_delimited'" if kind == "ndjson" else ""
                    sql = f"SELECT * FROM read_json({literal(str(f.path))}{fmt})"
                else:
                    sql = ingest._read_file_sql(kind, f.path, source.format, None)
                try:
                    con.execute(f"CREATE OR REPLACE TEMP TABLE _floor AS {sql}")
                except duckdb.ConversionException:  # a late record's type: detect on all
                    sql = sql[:-1] + ", sample_size = -1)" if kind in ("json", "ndjson") else sql
                    con.execute(f"CREATE OR REPLACE TEMP TABLE _floor AS {sql}")
        seconds = time.perf_counter() - t
        con.close()
    return seconds


def keep_xref(project_dir: Path) -> None:
    """Ask the run to keep `entity_xref` in the state database (`state.keep_tables`): the
    dedup precision/recall reads each record's golden id from it. The copy is logged as its own
    stage, `keep_tables`; the wall time reported is the run's without it."""
    import yaml

    path = project_dir / "romirecon.yaml"
    doc = yaml.safe_load(path.read_text())
    state = doc.get("state") or {}
    if state.get("keep_tables") != ["entity_xref"]:
        doc["state"] = {**state, "keep_tables": ["entity_xref"]}
        path.write_text(yaml.safe_dump(doc, sort_keys=False))


def run_once(project_dir: Path, out_dir: Path) -> dict[str, Any]:
    """`romirecon run` in a child: wall time, the child's peak RSS, per-stage spans."""
    keep_xref(project_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    shutil.rmtree(project_dir / ".romirecon", ignore_errors=True)
    exe = Path(sys.executable).parent / "romirecon"
    cmd = [
        str(exe),
        "run",
        "--project",
        str(project_dir),
        "--out",
        str(out_dir),
        "--log-format",
        "json",
    ]
    load_before = os.getloadavg()[0]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    spill = _SpillWatch(project_dir / ".romirecon" / "tmp")
    spill.start()
    lines = []
    # read the log as it comes, so the spill sampler knows which stage is running
    for line in proc.stderr or []:
        lines.append(line)
        if '"stage.start"' in line:
            with contextlib.suppress(ValueError):
                spill.stage = json.loads(line).get("stage") or spill.stage
    stderr = "".join(lines)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    spill.stop()
    proc.returncode = os.waitstatus_to_exitcode(status)
    stages = []
    for line in stderr.splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("event") == "stage.end":
            stages.append(
                {
                    "stage": ev["stage"],
                    "seconds": ev["duration_ms"] / 1000,
                    "peak_rss_mb": (ev.get("peak_rss_bytes") or 0) / 2**20,
                    "peak_temp_mb": spill.by_stage.get(ev["stage"], 0) / 2**20,
                    "rows_in": ev.get("rows_in"),
                    "rows_out": ev.get("rows_out"),
                }
            )
    # the entity_xref copy is the benchmark's own request (keep_xref), not part of the job
    keep = sum(s["seconds"] for s in stages if s["stage"] == "keep_tables")
    return {
        "exit_code": proc.returncode,
        "wall_seconds": wall - keep,
        "keep_tables_seconds": keep,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # Linux: KiB
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "stages": stages,
        # DuckDB's spill files in state.temp_dir (sampled every 0.5 s): memory_limit at work
        "peak_temp_mb": spill.peak / 2**20,
        "state_db_mb": _size(project_dir / ".romirecon" / "romirecon.duckdb") / 2**20,
        "load_average_before": load_before,
        "stderr_tail": stderr.splitlines()[-3:] if proc.returncode > 1 else [],
    }


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, f)).st_size
    return total


class _SpillWatch(threading.Thread):
    """The largest size the temp folder reached while the run was going."""

    def __init__(self, folder: Path) -> None:
        super().__init__(daemon=True)
        self.folder, self.peak, self._stop_event = folder, 0, threading.Event()
        self.stage = "start"
        self.by_stage: dict[str, int] = {}

    def run(self) -> None:
        while not self._stop_event.wait(0.5):
            size = _size(self.folder)
            self.peak = max(self.peak, size)
            self.by_stage[self.stage] = max(self.by_stage.get(self.stage, 0), size)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def dedup_quality(project_dir: Path) -> dict[str, Any]:
    """Pairwise precision/recall of the golden ids against the true entity ids, over the party
    records (contacts/accounts) the run clustered, and recall per duplication vector."""
    state = project_dir / ".romirecon" / "romirecon.duckdb"
    con = duckdb.connect(str(state), read_only=True)
    con.execute(
        f"CREATE TEMP TABLE t AS SELECT source, source_file, source_row, entity_id, vector "
        f"FROM read_parquet('{project_dir / 'truth' / 'records.parquet'}')"
    )
    con.execute(
        """CREATE TEMP TABLE j AS
        SELECT x.entity, x.golden_id, t.entity_id, t.vector, x.source_name, x.source_row
        FROM entity_xref x JOIN t ON t.source = x.source_name AND t.source_file = x.source_file
            AND t.source_row = x.source_row"""
    )
    q = con.execute(
        """
        WITH pred AS (SELECT count(*) AS n FROM j a JOIN j b ON a.entity = b.entity
                AND a.golden_id = b.golden_id AND (a.source_name, a.source_row) < (b.source_name, b.source_row)),
             truth AS (SELECT count(*) AS n FROM j a JOIN j b ON a.entity = b.entity
                AND a.entity_id = b.entity_id AND (a.source_name, a.source_row) < (b.source_name, b.source_row)),
             both_ AS (SELECT count(*) AS n FROM j a JOIN j b ON a.entity = b.entity
                AND a.entity_id = b.entity_id AND a.golden_id = b.golden_id
                AND (a.source_name, a.source_row) < (b.source_name, b.source_row))
        SELECT (SELECT n FROM pred), (SELECT n FROM truth), (SELECT n FROM both_), (SELECT count(*) FROM j)
        """
    ).fetchone()
    pred, truth, both, records = q
    per_vector = con.execute(
        """
        SELECT b.vector, count(*) AS true_pairs, count(*) FILTER (WHERE a.golden_id = b.golden_id) AS found
        FROM j a JOIN j b ON a.entity = b.entity AND a.entity_id = b.entity_id
            AND (a.source_name, a.source_row) <> (b.source_name, b.source_row)
        WHERE b.vector <> 'original'
        GROUP BY 1 ORDER BY 1
        """
    ).fetchall()
    p = both / pred if pred else 1.0
    r = both / truth if truth else 1.0
    return {
        "records": records,
        "predicted_pairs": pred,
        "true_pairs": truth,
        "precision": p,
        "recall": r,
        "f1": 2 * p * r / (p + r) if p + r else 0.0,
        "recall_by_vector": {v: (f / n if n else 1.0) for v, n, f in per_vector},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=os.environ.get("BENCH_SIZES", "10000,100000,1000000"))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--merge",
        action="store_true",
        help="keep the other sizes' rows of the previous results.json (same code only)",
    )
    ap.add_argument(
        "--refloor",
        action="store_true",
        help="re-measure only the bare reads of the sizes in results.json and rewrite the ratios",
    )
    args = ap.parse_args(argv)
    if args.refloor:
        results = json.loads((HERE / "results.json").read_text())["results"]
        for r in results:
            floor, _, cold = bare_read(estate(r["customers"], args.seed))
            print(f"{r['customers']:,}: bare read {floor:.2f} s (first pass {cold:.2f} s)")
            load = load_floor(estate(r["customers"], args.seed))
            print(f"{r['customers']:,}: load into DuckDB {load:.2f} s")
            r.update(bare_read_seconds=floor, bare_read_cold_seconds=cold, load_seconds=load)
            r["ratio_to_bare_read"] = r["wall_seconds"] / floor if floor else None
        write_results(results)
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    results = []
    for n in sizes:
        print(f"estate of {n:,} customers", flush=True)
        d = estate(n, args.seed)
        floor, rows, cold = bare_read(d)
        print(f"  bare read: {rows:,} rows in {floor:.2f} s (first pass {cold:.2f} s)", flush=True)
        load = load_floor(d)
        print(f"  load into DuckDB: {load:.2f} s", flush=True)
        res = run_once(d, CACHE / f"out-{n}")
        res.update(
            customers=n,
            input_rows=rows,
            bare_read_seconds=floor,
            bare_read_cold_seconds=cold,
            load_seconds=load,
            commit=_commit(),
        )
        res["rows_per_second"] = rows / res["wall_seconds"]
        res["ratio_to_bare_read"] = res["wall_seconds"] / floor if floor else None
        if res["exit_code"] in (0, 1):
            res["dedup"] = dedup_quality(d)
        print(
            f"  run: exit {res['exit_code']}, {res['wall_seconds']:.1f} s wall, "
            f"{res['peak_rss_mb']:.0f} MB peak RSS, {res['ratio_to_bare_read'] or 0:.1f}x bare read",
            flush=True,
        )
        results.append(res)
    if args.merge and (HERE / "results.json").exists():
        ran = {r["customers"] for r in results}
        old = json.loads((HERE / "results.json").read_text())["results"]
        results = sorted(
            [r for r in old if r["customers"] not in ran] + results, key=lambda r: r["customers"]
        )
    write_results(results)
    return 0


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def write_results(results: list[dict[str, Any]]) -> None:
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, DuckDB {duckdb.__version__}"
    lines = [
        "# Benchmark: `romirecon run` on generated estates",
        "",
        f"Machine: {machine}. Generated with `python -m benchmarks.run` (`make bench`).",
        "",
        "Wall time is the run's without its `keep_tables` stage: the copy of `entity_xref` into "
        "the state database that this benchmark asks for to measure dedup precision/recall "
        "(shown with the stages).",
        "",
        "| customers | input rows | wall s | peak RSS MB | rows/s | bare read s | first read s | x bare read | DuckDB load s | x DuckDB load | s per n·log n (×1e6) | peak spill MB | dedup P | dedup R | dedup F1 | exit | load avg | commit |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        n = r["input_rows"] or 1
        nlogn = r["wall_seconds"] / (n * math.log(n)) * 1e6
        dd = r.get("dedup") or {}
        lines.append(
            f"| {r['customers']:,} | {r['input_rows']:,} | {r['wall_seconds']:.1f} | {r['peak_rss_mb']:.0f} "
            f"| {r['rows_per_second']:,.0f} | {r['bare_read_seconds']:.2f} "
            f"| {r.get('bare_read_cold_seconds', float('nan')):.2f} | {r['ratio_to_bare_read'] or 0:.1f} "
            f"| {_fmt(r.get('load_seconds'), '.1f')} "
            f"| {_fmt(r['wall_seconds'] / r['load_seconds'] if r.get('load_seconds') else None, '.1f')} "
            f"| {nlogn:.2f} | {r.get('peak_temp_mb', float('nan')):.0f} "
            f"| {dd.get('precision', float('nan')):.4f} | {dd.get('recall', float('nan')):.4f} "
            f"| {dd.get('f1', float('nan')):.4f} | {r['exit_code']} "
            f"| {r.get('load_average_before', float('nan')):.1f} | {r.get('commit', '')} |"
        )
    if len(results) > 1:
        lines += [
            "",
            "Growth between sizes (cost no worse than n·log n means the wall-time factor stays at "
            "or below the n·log n factor):",
            "",
            "| from → to | input rows × | wall time × | n·log n × | exponent k (time ∝ n^k) |",
            "|---|---:|---:|---:|---:|",
        ]
        for a, b in itertools.pairwise(results):
            na, nb = a["input_rows"] or 1, b["input_rows"] or 1
            rows_x = nb / na
            wall_x = b["wall_seconds"] / a["wall_seconds"]
            nlogn_x = (nb * math.log(nb)) / (na * math.log(na))
            k = math.log(wall_x) / math.log(rows_x) if rows_x > 1 else float("nan")
            lines.append(
                f"| {a['customers']:,} → {b['customers']:,} | {rows_x:.1f} | {wall_x:.1f} "
                f"| {nlogn_x:.1f} | {k:.2f} |"
            )
    lines += ["", "Per stage (seconds / peak RSS MB so far / peak spill MB in the stage):", ""]
    stage_names = sorted({s["stage"] for r in results for s in r["stages"]}, key=_stage_order)
    lines.append("| customers | " + " | ".join(stage_names) + " |")
    lines.append("|---:|" + "---:|" * len(stage_names))
    for r in results:
        by = {s["stage"]: s for s in r["stages"]}
        cells = [
            f"{by[s]['seconds']:.1f} / {by[s]['peak_rss_mb']:.0f}"
            + (f" / {by[s]['peak_temp_mb']:.0f}" if "peak_temp_mb" in by[s] else "")
            if s in by
            else ""
            for s in stage_names
        ]
        lines.append(f"| {r['customers']:,} | " + " | ".join(cells) + " |")
    recalls = sorted(
        {v for r in results for v in (r.get("dedup") or {}).get("recall_by_vector", {})}
    )
    if recalls:
        lines += ["", "Dedup recall per duplication vector:", ""]
        lines.append("| customers | " + " | ".join(recalls) + " |")
        lines.append("|---:|" + "---:|" * len(recalls))
        for r in results:
            rv = (r.get("dedup") or {}).get("recall_by_vector", {})
            lines.append(
                f"| {r['customers']:,} | "
                + " | ".join(f"{rv[v]:.3f}" if v in rv else "" for v in recalls)
                + " |"
            )
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    (HERE / "results.json").write_text(
        json.dumps({"machine": machine, "results": results}, indent=2) + "\n"
    )
    print("\n".join(lines))


def _stage_order(name: str) -> int:
    order = [
        "ingest",
        "contract",
        "normalize",
        "dedup",
        "billing",
        "reconcile",
        "attribution",
        "romi",
        "publish",
    ]
    return order.index(name) if name in order else len(order)


if __name__ == "__main__":
    raise SystemExit(main())
