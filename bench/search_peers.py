#!/usr/bin/env python3
"""The plate searches of `search-bench`, run by DuckDB on the same Parquet files.

Reads DIR/queries.json (the plates and prefixes search-bench timed, the plate conditions
cityward's search made of them, and the start of the 30 days), then runs, for each, the
query cityward's search runs, with the same plate condition — the first page of 500,
newest first — over read_parquet('DIR/lake/kind=*/day=*/*.parquet') with DuckDB (all
cores of the machine, like cityward), after one warm-up query. Prints and writes the
p50, p90 and the rows found, to compare with search-bench's figures.

  python3 bench/search_peers.py --data /tmp/cityward-search --out duckdb.json
"""

import argparse
import json
import statistics
import time

import duckdb


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/tmp/cityward-search")
    ap.add_argument("--out")
    args = ap.parse_args()
    queries = json.load(open(f"{args.data}/queries.json"))
    con = duckdb.connect()
    files = f"{args.data}/lake/kind=*/day=*/*.parquet"
    con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet('{files}', hive_partitioning = true, union_by_name = true)")
    since = queries["since"].replace("Z", "+00:00")
    columns = "id, source, kind, time, lon, lat, grid, unit, attrs"

    def page(condition):
        sql = f"SELECT {columns} FROM events WHERE {condition} AND time >= ?::TIMESTAMPTZ ORDER BY time DESC, id DESC LIMIT 501"
        return con.execute(sql, [since]).fetchall()

    def timed(conditions):
        times, rows = [], 0
        for condition in conditions:
            began = time.perf_counter()
            rows += len(page(condition))
            times.append((time.perf_counter() - began) * 1e3)
        times.sort()
        return {
            "queries": len(times),
            "rows": rows,
            "p50_ms": statistics.median(times),
            "p90_ms": times[round((len(times) - 1) * 0.9)],
            "max_ms": times[-1],
        }

    page(queries["exact_conditions"][0])  # warm-up: metadata cached, as for cityward
    result = {
        "tool": f"DuckDB {duckdb.__version__}",
        "exact": timed(queries["exact_conditions"]),
        "partial": timed(queries["partial_conditions"]),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        json.dump(result, open(args.out, "w"))


if __name__ == "__main__":
    main()
