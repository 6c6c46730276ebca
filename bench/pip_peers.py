#!/usr/bin/env python3
"""Point-in-polygon assignment by the peers cityward is compared with, on the files that
`pip-bench` writes (polygons.csv: id,wkt; points.csv: id,lon,lat):

  * shapely 2 STRtree: STRtree(points).query(polygons, predicate="contains"), and the other
    direction, STRtree(polygons).query(points, predicate="within");
  * DuckDB + spatial extension (loaded from the duckdb-extension-spatial wheel by file path,
    no network): JOIN ... ON ST_Contains, 1 and 2 threads;
  * PostgreSQL + PostGIS (local server): GiST indexes, JOIN ... ON ST_Contains, serial and
    with parallel workers.

Every tool's result is turned into the same (point_id, polygon_id) pairs; the script prints
the pair count and the checksum pip-bench prints (wrapping 64-bit sum of
splitmix64-finaliser(point_id << 32 | polygon_id)), checks that all pair sets are exactly
equal (to cityward's, when --cityward-pairs is given), and lists differing pairs if not.
Timings are of the query alone (the join / tree query and collecting its result), with
loading, geometry construction and index building reported separately.

  python3 bench/pip_peers.py --data DIR --out peers.json \\
      [--cityward c1.json c2.json] [--cityward-pairs pairs.csv] [--repeat 3]
"""

import argparse
import csv
import glob
import json
import os
import statistics
import sys
import time

import numpy as np

MASK = (1 << 64) - 1


def mix_pairs(pt, poly):
    """splitmix64 finaliser of point_id << 32 | polygon_id, as uint64 array."""
    z = (pt.astype(np.uint64) << np.uint64(32)) | poly.astype(np.uint64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def checksum(pt, poly):
    if len(pt) == 0:
        return 0
    with np.errstate(over="ignore"):
        return int(mix_pairs(pt, poly).sum(dtype=np.uint64)) & MASK


def pair_keys(pt, poly):
    """Sorted unique uint64 keys point_id << 32 | polygon_id, plus the duplicate count."""
    keys = (pt.astype(np.uint64) << np.uint64(32)) | poly.astype(np.uint64)
    uniq = np.unique(keys)
    return uniq, len(keys) - len(uniq)


# A measurement stops repeating once its runs have taken this long (PostGIS's slow plans
# take ~20 s a run; their median matters less than the other figures).
TIME_BUDGET_S = 15.0


def timed(fn, repeat):
    """Runs fn() up to `repeat` times (fewer past TIME_BUDGET_S); returns (median seconds,
    all seconds, last result)."""
    runs, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        runs.append(time.perf_counter() - t)
        if sum(runs) > TIME_BUDGET_S:
            break
    return statistics.median(runs), runs, result


def record(tool, how, threads, n_points, build_s, runs, pt, poly, **extra):
    median = statistics.median(runs)
    r = {
        "tool": tool,
        "how": how,
        "threads": threads,
        "points": n_points,
        "build_s": build_s,
        "query_s": median,
        "query_runs_s": runs,
        "points_per_s": n_points / median,
        "points_per_s_best": n_points / min(runs),
        "pairs": int(len(pt)),
        "checksum": f"{checksum(pt, poly):016x}",
        "finished_at": time.strftime("%H:%M:%S"),
    }
    r.update(extra)
    print(
        f"  {r['finished_at']} {tool:<8} {how:<58} {median:8.3f} s ({len(runs)} runs)  "
        f"{n_points / median:>12,.0f} points/s  {len(pt):>9,} pairs  {r['checksum']}",
        flush=True,
    )
    return r, (pt, poly)


# --------------------------------------------------------------------------------------
# data


def read_points(path):
    a = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
    ids = a[:, 0].astype(np.int64)
    return ids, a[:, 1].copy(), a[:, 2].copy()


def read_polygons(path):
    ids, wkts = [], []
    with open(path, newline="") as f:
        rd = csv.reader(f)
        next(rd)
        for row in rd:
            ids.append(int(row[0]))
            wkts.append(row[1])
    return np.array(ids, dtype=np.int64), wkts


def read_pairs_csv(path):
    a = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)
    if a.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return a[:, 0], a[:, 1]


# --------------------------------------------------------------------------------------
# shapely


def run_shapely(data, repeat):
    import shapely

    out = []
    poly_ids, wkts = read_polygons(os.path.join(data, "polygons.csv"))
    pt_ids, lon, lat = read_points(os.path.join(data, "points.csv"))
    n = len(pt_ids)
    polys = shapely.from_wkt(wkts)
    points = shapely.points(lon, lat)
    far = shapely.points(0.0, 0.0)
    ver = f"shapely {shapely.__version__} (GEOS {'.'.join(map(str, shapely.geos_version))})"

    # Points in the tree, polygons as the queries (each query polygon is prepared).
    t = time.perf_counter()
    tree = shapely.STRtree(points)
    tree.query(far)  # make sure the tree is built before the clock starts
    shapely.prepare(polys)
    build = time.perf_counter() - t
    _, runs, res = timed(lambda: tree.query(polys, predicate="contains"), repeat)
    out.append(
        record(
            "shapely",
            'STRtree(points).query(polygons, "contains")',
            1,
            n,
            build,
            runs,
            pt_ids[res[1]],
            poly_ids[res[0]],
            version=ver,
        )
    )
    del tree, res
    shapely.destroy_prepared(polys)

    # Polygons in the tree, points as the queries.
    t = time.perf_counter()
    tree = shapely.STRtree(polys)
    tree.query(far)
    build = time.perf_counter() - t
    _, runs, res = timed(lambda: tree.query(points, predicate="within"), repeat)
    out.append(
        record(
            "shapely",
            'STRtree(polygons).query(points, "within")',
            1,
            n,
            build,
            runs,
            pt_ids[res[0]],
            poly_ids[res[1]],
            version=ver,
        )
    )
    return out


# --------------------------------------------------------------------------------------
# DuckDB


def spatial_extension_path():
    import duckdb

    import duckdb_extension_spatial

    root = os.path.dirname(duckdb_extension_spatial.__file__)
    found = glob.glob(os.path.join(root, "**", "spatial.duckdb_extension"), recursive=True)
    want = f"v{duckdb.__version__}"
    for p in found:
        if want in p.split(os.sep):
            return p
    if found:
        return found[0]
    sys.exit(f"spatial.duckdb_extension not found under {root}")


def run_duckdb(data, repeat, thread_counts):
    import duckdb

    out = []
    ext = spatial_extension_path()
    con = duckdb.connect(config={"autoinstall_known_extensions": False,
                                 "autoload_known_extensions": False})
    con.execute(f"LOAD '{ext}'")
    ver = con.execute("SELECT version()").fetchone()[0]
    t = time.perf_counter()
    con.execute(
        f"""CREATE TABLE polys AS SELECT id, ST_GeomFromText(wkt) AS geom
            FROM read_csv('{data}/polygons.csv', header = true,
                          columns = {{'id': 'INTEGER', 'wkt': 'VARCHAR'}})"""
    )
    con.execute(
        f"""CREATE TABLE pts AS SELECT id, ST_Point(lon, lat) AS geom
            FROM read_csv('{data}/points.csv', header = true,
                          columns = {{'id': 'INTEGER', 'lon': 'DOUBLE', 'lat': 'DOUBLE'}})"""
    )
    load = time.perf_counter() - t
    n = con.execute("SELECT count(*) FROM pts").fetchone()[0]
    q = "SELECT pts.id AS pt, polys.id AS poly FROM pts JOIN polys ON ST_Contains(polys.geom, pts.geom)"
    plan = "\n".join(r[1] for r in con.execute("EXPLAIN " + q).fetchall())
    join_op = next(
        (op for op in ("SPATIAL_JOIN", "PIECEWISE_MERGE_JOIN", "NESTED_LOOP_JOIN", "BLOCKWISE_NL_JOIN",
                       "HASH_JOIN") if op in plan),
        "?",
    )
    for threads in thread_counts:
        con.execute(f"SET threads = {threads}")
        _, runs, res = timed(lambda: con.execute(q).fetchnumpy(), repeat)
        out.append(
            record(
                "duckdb",
                f"JOIN ON ST_Contains ({join_op}), {threads} thread(s)",
                threads,
                n,
                None,
                runs,
                np.asarray(res["pt"], dtype=np.int64),
                np.asarray(res["poly"], dtype=np.int64),
                version=f"DuckDB {ver} + spatial ({os.path.basename(os.path.dirname(ext))})",
                load_s=load,
                plan_join=join_op,
            )
        )
    con.close()
    return out


# --------------------------------------------------------------------------------------
# PostGIS


def run_postgis(data, repeat, worker_counts, dsn):
    import psycopg

    out = []
    conn = psycopg.connect(dsn, autocommit=True)
    cur = conn.cursor()
    cur.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    cur.execute("SELECT version(), postgis_full_version()")
    pg_ver, postgis_ver = cur.fetchone()
    for t in ("pip_polys_raw", "pip_pts_raw", "pip_polys", "pip_pts", "pip_res"):
        cur.execute(f"DROP TABLE IF EXISTS {t}")
    t0 = time.perf_counter()
    cur.execute("CREATE UNLOGGED TABLE pip_polys_raw (id int, wkt text)")
    cur.execute("CREATE UNLOGGED TABLE pip_pts_raw (id int, lon float8, lat float8)")
    for table, name in (("pip_polys_raw", "polygons.csv"), ("pip_pts_raw", "points.csv")):
        with open(os.path.join(data, name), "rb") as f, cur.copy(
            f"COPY {table} FROM STDIN (FORMAT csv, HEADER true)"
        ) as cp:
            while chunk := f.read(1 << 20):
                cp.write(chunk)
    cur.execute(
        "CREATE TABLE pip_polys AS SELECT id, ST_GeomFromText(wkt, 0) AS geom FROM pip_polys_raw"
    )
    cur.execute(
        "CREATE TABLE pip_pts AS SELECT id, ST_SetSRID(ST_MakePoint(lon, lat), 0) AS geom FROM pip_pts_raw"
    )
    cur.execute("DROP TABLE pip_polys_raw")
    cur.execute("DROP TABLE pip_pts_raw")
    load = time.perf_counter() - t0
    index_s = {}
    for table, name in (("pip_polys", "pip_polys_geom"), ("pip_pts", "pip_pts_geom")):
        t0 = time.perf_counter()
        cur.execute(f"CREATE INDEX {name} ON {table} USING gist (geom)")
        index_s[table] = time.perf_counter() - t0
        cur.execute(f"VACUUM ANALYZE {table}")
    cur.execute("SELECT count(*) FROM pip_pts")
    n = cur.fetchone()[0]
    cur.execute("SHOW jit")
    jit = cur.fetchone()[0]

    q = ("SELECT pt.id AS pt, pg.id AS poly FROM pip_pts pt "
         "JOIN pip_polys pg ON ST_Contains(pg.geom, pt.geom)")
    pg_version = pg_ver.split(" on ")[0]
    postgis_version = postgis_ver.split()[0].split("=")[1].strip('"')

    def measure(indexes, workers):
        cur.execute(f"SET max_parallel_workers_per_gather = {workers}")
        cur.execute("EXPLAIN " + q)
        plan = "\n".join(r[0] for r in cur.fetchall())
        planned = 0
        for line in plan.splitlines():
            if "Workers Planned:" in line:
                planned = int(line.split(":")[1])
        if "Scan on pip_polys" in plan and "pip_pts_geom" in plan:
            shape = "polygons outer, points' GiST probed per polygon"
        elif "Scan on pip_pts" in plan and "pip_polys_geom" in plan:
            shape = "points outer, polygons' GiST probed per point"
        else:
            shape = "other plan"

        def query():
            cur.execute("DROP TABLE IF EXISTS pip_res")
            cur.execute("CREATE UNLOGGED TABLE pip_res AS " + q)

        _, runs, _ = timed(query, repeat)
        rows = []
        with cur.copy("COPY pip_res TO STDOUT") as cp:
            for row in cp.rows():
                rows.append((int(row[0]), int(row[1])))
        a = np.array(rows, dtype=np.int64).reshape(-1, 2)
        return record(
            "postgis",
            f"GiST on {indexes}, workers={workers} ({planned} planned): {shape}",
            1 + planned,
            n,
            index_s["pip_pts"] + (index_s["pip_polys"] if indexes == "both tables" else 0.0),
            runs,
            a[:, 0],
            a[:, 1],
            version=f"{pg_version}, PostGIS {postgis_version}",
            load_s=load,
            indexes=indexes,
            workers_setting=workers,
            workers_planned=planned,
            plan_shape=shape,
            jit=jit,
            plan=plan,
        )

    # Both tables indexed: the planner's choice. Then only the points indexed, which leaves
    # the planner one sensible plan: each polygon probes the points' index, so PostGIS can
    # reuse its prepared-geometry cache for the polygon across all its candidate points.
    for workers in worker_counts:
        out.append(measure("both tables", workers))
    cur.execute("DROP INDEX pip_polys_geom")
    for workers in worker_counts:
        out.append(measure("points only", workers))
    for t in ("pip_polys", "pip_pts", "pip_res"):
        cur.execute(f"DROP TABLE IF EXISTS {t}")
    conn.close()
    return out


# --------------------------------------------------------------------------------------


def compare(results, pairs, reference_name):
    """Marks every result as agreeing or not with the reference pair set; returns True when all agree."""
    ref_pt, ref_poly = pairs[reference_name]
    ref, ref_dups = pair_keys(ref_pt, ref_poly)
    all_same = True
    for name, (pt, poly) in pairs.items():
        keys, dups = pair_keys(pt, poly)
        same = dups == 0 and np.array_equal(keys, ref)
        results[name]["same_pairs_as_reference"] = bool(same)
        if not same:
            all_same = False
            only_here = np.setdiff1d(keys, ref, assume_unique=True)
            only_ref = np.setdiff1d(ref, keys, assume_unique=True)
            fmt = lambda ks: [[int(k >> np.uint64(32)), int(k & np.uint64(0xFFFFFFFF))] for k in ks[:50]]
            results[name]["only_here"] = fmt(only_here)
            results[name]["only_in_reference"] = fmt(only_ref)
            results[name]["duplicate_pairs"] = int(dups)
            print(
                f"  DIFFERENT: {name}: {len(only_here)} pairs not in {reference_name}, "
                f"{len(only_ref)} pairs missing, {dups} duplicates"
            )
            for label, ks in (("extra", only_here), ("missing", only_ref)):
                for p in fmt(ks)[:20]:
                    print(f"    {label} (point {p[0]}, polygon {p[1]})")
    return all_same


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="directory with polygons.csv and points.csv")
    ap.add_argument("--out", default="pip-peers.json")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per measurement (median reported)")
    ap.add_argument("--postgis-repeat", type=int, default=None, help="timed runs for PostGIS (default --repeat)")
    ap.add_argument("--tools", default="shapely,duckdb,postgis")
    ap.add_argument("--duckdb-threads", default="1,2")
    ap.add_argument("--postgis-workers", default="0,1,2",
                    help="max_parallel_workers_per_gather settings to run")
    ap.add_argument("--dsn", default="host=127.0.0.1 port=5432 user=postgres dbname=test")
    ap.add_argument("--cityward", nargs="*", default=[], help="pip-bench result JSON files")
    ap.add_argument("--cityward-pairs", help="pairs CSV written by pip-bench --pairs (the reference)")
    args = ap.parse_args()
    data = os.path.abspath(args.data)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]

    results, pairs = {}, {}

    def add(items):
        for r, p in items:
            name = f"{r['tool']}: {r['how']}"
            results[name] = r
            pairs[name] = p

    reference = None
    if args.cityward_pairs:
        reference = "cityward (pairs written by pip-bench)"
        pt, poly = read_pairs_csv(args.cityward_pairs)
        pairs[reference] = (pt, poly)
        results[reference] = {"tool": "cityward", "how": "pairs file", "pairs": int(len(pt)),
                              "checksum": f"{checksum(pt, poly):016x}"}

    print(f"peers on {data}:")
    if "shapely" in tools:
        add(run_shapely(data, args.repeat))
    if "duckdb" in tools:
        add(run_duckdb(data, args.repeat, [int(x) for x in args.duckdb_threads.split(",")]))
    if "postgis" in tools:
        add(run_postgis(data, args.postgis_repeat or args.repeat,
                        [int(x) for x in args.postgis_workers.split(",")], args.dsn))

    agree = None
    if pairs:
        reference = reference or next(iter(pairs))
        agree = compare(results, pairs, reference)
        print(f"assignments {'AGREE' if agree else 'DIFFER'}: every pair set compared with {reference}")

    cityward = []
    for path in args.cityward:
        with open(path) as f:
            cityward.append(json.load(f))
    for c in cityward:
        ref = results.get(reference, {})
        c["same_pairs_as_reference"] = (c["pairs"] == ref.get("pairs") and c["checksum"] == ref.get("checksum"))
        if not c["same_pairs_as_reference"]:
            agree = False

    peers = [r for name, r in results.items() if name != "cityward (pairs written by pip-bench)"]
    table = combined_table(cityward, peers)
    print()
    print(table)
    with open(args.out, "w") as f:
        json.dump({"cityward": cityward, "peers": peers, "reference": reference,
                   "all_assignments_agree": agree, "table_markdown": table}, f, indent=2)
    print(f"\nresults written to {args.out}")
    return 0 if agree in (True, None) else 1


def combined_table(cityward, peers):
    """Markdown table. Ratios (of medians): cityward points/s at the peer's thread count (the
    most cityward was run with, when the peer used more) ÷ the peer's points/s; first for
    per-point lookups in input order, then, when measured, for the batch API (`mode`)."""
    by_mode = {}
    for c in cityward:
        by_mode.setdefault(c.get("mode", "input"), {})[c["threads"]] = c
    modes = [m for m in ("input", "batch") if m in by_mode]
    head = ("| tool | how | threads | build s | query s (median) | points/s (median) | points/s (best run) "
            "| pairs | checksum | same pairs |")
    rule = "|---|---|---|---|---|---|---|---|---|---|"
    for m in modes:
        head += " cityward ÷ peer |" if m == "input" else " cityward batch ÷ peer |"
        rule += "---|"
    lines = [head, rule]
    fmt_s = lambda v: "–" if v is None else f"{v:.3f}"
    for r in cityward + peers:
        row = (
            f"| {r['tool']} | {r['how']} | {r['threads']} | {fmt_s(r.get('build_s'))} | "
            f"{fmt_s(r['query_s'])} | {r['points_per_s']:,.0f} | {r.get('points_per_s_best', 0):,.0f} | "
            f"{r['pairs']:,} | {r['checksum']} | "
            f"{'yes' if r.get('same_pairs_as_reference') else 'NO'} |"
        )
        for m in modes:
            runs = by_mode[m]
            c = runs.get(r["threads"]) or runs[max(t for t in runs if t <= r["threads"])] \
                if any(t <= r["threads"] for t in runs) else None
            if r["tool"] == "cityward" or c is None:
                row += " – |"
            else:
                row += f" {c['points_per_s'] / r['points_per_s']:.1f} |"
        lines.append(row)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
