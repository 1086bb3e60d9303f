"""Per-statement profile of one `romirecon run`: which SQL statements (and which Python frames
issued them) take the time. A diagnostic for issue #8, not a timed test.

    python -m benchmarks.profile_sql PROJECT_DIR [--out DIR] [--top 40]

Wraps the state connection in a proxy that times every execute()/sql() call (wall and the
process's CPU time), then prints the slowest statements with the stage function that issued
them, and the slow statements that kept about one core busy: on a 2-core machine those are where
DuckDB ran a plan on one thread (WITH ORDINALITY, an unpartitioned window, a serial sink).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import time
import traceback
from collections import defaultdict
from pathlib import Path
from typing import Any

import romirecon.db as db
import romirecon.pipeline as pipeline

RECORDS: list[tuple[float, str, str, float]] = []  # (wall, call site, SQL, CPU)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class TimedConnection:
    def __init__(self, con: Any) -> None:
        self._con = con

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)

    def _timed(self, fn: Any, sql: Any, *args: Any, **kw: Any) -> Any:
        t, c = time.perf_counter(), _cpu()
        res = fn(sql, *args, **kw)
        dt, cpu = time.perf_counter() - t, _cpu() - c
        frames = [
            f"{Path(fr.filename).stem}:{fr.lineno}:{fr.name}"
            for fr in traceback.extract_stack()[:-2]
            if "/romirecon/" in fr.filename
        ]
        site = frames[-1] if frames else "?"
        RECORDS.append((dt, site, " ".join(str(sql).split())[:160], cpu))
        return res

    def execute(self, sql: Any, *args: Any, **kw: Any) -> Any:
        return self._timed(self._con.execute, sql, *args, **kw)

    def sql(self, sql: Any, *args: Any, **kw: Any) -> Any:
        return self._timed(self._con.sql, sql, *args, **kw)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("project", type=Path)
    ap.add_argument("--out", type=Path, default=Path("/tmp/romirecon-profile-out"))
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args(argv)
    shutil.rmtree(args.project / ".romirecon", ignore_errors=True)
    shutil.rmtree(args.out, ignore_errors=True)
    real_open = db.open_state

    def open_state(project: Any) -> Any:
        return TimedConnection(real_open(project))

    pipeline.open_state = open_state  # type: ignore[assignment]
    from romirecon import api

    t = time.perf_counter()
    res = api.run(args.project, out_dir=args.out, quiet=True)
    wall = time.perf_counter() - t
    total = sum(r[0] for r in RECORDS)
    print(
        f"wall {wall:.1f} s, {len(RECORDS)} statements, {total:.1f} s in SQL, exit {res.exit_code}"
    )
    by_site: dict[str, float] = defaultdict(float)
    for dt, site, _, _ in RECORDS:
        by_site[site] += dt
    print("\nby call site:")
    for site, dt in sorted(by_site.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"{dt:8.2f}  {site}")
    print("\nslowest statements (wall s, CPU s):")
    for dt, site, sql, cpu in sorted(RECORDS, key=lambda r: -r[0])[: args.top]:
        print(f"{dt:8.2f} {cpu:8.2f}  {site}  {sql}")
    serial = [r for r in RECORDS if r[0] >= 1.0 and r[3] < 1.25 * r[0]]
    print(
        f"\non about one core (wall >= 1 s, CPU < 1.25 x wall): {sum(r[0] for r in serial):.1f} s"
    )
    for dt, site, sql, cpu in sorted(serial, key=lambda r: -r[0])[: args.top]:
        print(f"{dt:8.2f} {cpu:8.2f}  {site}  {sql}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
