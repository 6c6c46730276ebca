#!/usr/bin/env bash
# Point-in-polygon assignment: cityward's PolygonIndex against shapely 2 STRtree, DuckDB +
# spatial and PostgreSQL + PostGIS, on the same generated files, in one run, checking that
# every tool finds exactly the same (point, polygon) pairs.
#
#   bash bench/pip.sh
#
# Settings (environment): POLYGONS=10000 POINTS=1000000 VERTICES=50 SEED=7
# REPEAT=5 (timed runs per measurement; medians and best runs are reported) PG_REPEAT=3
# DATA=/tmp/cityward-pip-data (generated files are reused when their parameters match)
# OUT=$DATA/results  PG_DSN="host=127.0.0.1 port=5432 user=postgres dbname=test"
#
# Installs what is missing: Python packages with pip (shapely 2, numpy, DuckDB and the
# spatial extension wheel of the same version, psycopg), Debian's PostGIS package for the
# running PostgreSQL server (needs root). PostGIS is skipped when no server answers.
set -euo pipefail
cd "$(dirname "$0")/.."

POLYGONS=${POLYGONS:-10000}
POINTS=${POINTS:-1000000}
VERTICES=${VERTICES:-50}
SEED=${SEED:-7}
REPEAT=${REPEAT:-5}
PG_REPEAT=${PG_REPEAT:-3}   # PostGIS's slow plans take ~20 s a run
DATA=${DATA:-/tmp/cityward-pip-data}
OUT=${OUT:-$DATA/results}
PG_DSN=${PG_DSN:-"host=127.0.0.1 port=5432 user=postgres dbname=test"}
DUCKDB_VERSION=1.5.5   # duckdb-extension-spatial must be built for the same DuckDB version
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/cityward-target}

# --- Python packages -------------------------------------------------------------------
if ! python3 - <<PY 2>/dev/null
import duckdb, duckdb_extension_spatial, numpy, psycopg, shapely
assert shapely.__version__.startswith("2.")
assert duckdb.__version__ == "$DUCKDB_VERSION"
PY
then
  echo "installing Python packages…"
  python3 -m pip install -q "shapely>=2,<3" numpy "duckdb==$DUCKDB_VERSION" \
    "duckdb-extension-spatial==$DUCKDB_VERSION" "psycopg[binary]"
fi

# --- PostGIS ----------------------------------------------------------------------------
tools=shapely,duckdb
psql_args=(-X -At -h 127.0.0.1 -U postgres -d test)
if pg_major=$(psql "${psql_args[@]}" -c "SELECT current_setting('server_version_num')::int / 10000" 2>/dev/null); then
  if [ "$(psql "${psql_args[@]}" -c "SELECT count(*) FROM pg_available_extensions WHERE name = 'postgis'")" = 0 ]; then
    echo "installing PostGIS for PostgreSQL $pg_major…"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "postgresql-$pg_major-postgis-3" >/dev/null
  fi
  tools=$tools,postgis
else
  echo "warning: no PostgreSQL server at 127.0.0.1:5432; PostGIS is skipped" >&2
fi

# --- cityward ---------------------------------------------------------------------------
cargo build --release -q -p cityward-bench --bin pip-bench
bin=$CARGO_TARGET_DIR/release/pip-bench
mkdir -p "$OUT"
common=(--polygons "$POLYGONS" --points "$POINTS" --vertices "$VERTICES" --seed "$SEED"
        --data "$DATA" --repeat "$REPEAT")

echo "== machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(free -g | awk '/Mem:/ {print $2}') GiB;" \
  "load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews every figure)"
echo "== cityward $(git rev-parse --short HEAD 2>/dev/null || echo '?'); crates/model/src/geo.rs last changed in" \
  "$(git log -1 --format=%h -- crates/model/src/geo.rs 2>/dev/null || echo '?')$(git diff --quiet HEAD -- crates/model 2>/dev/null || echo ', with uncommitted changes in crates/model')"
echo -n "$(date +%T) "; "$bin" "${common[@]}" --threads 1 --out "$OUT/cityward-t1.json" --pairs "$OUT/cityward-pairs.csv"
echo -n "$(date +%T) "; "$bin" "${common[@]}" --threads 2 --out "$OUT/cityward-t2.json"
# The batch API, PolygonIndex::assign, one call per thread (its bucketing of the points timed).
echo -n "$(date +%T) "; "$bin" "${common[@]}" --threads 1 --mode batch --out "$OUT/cityward-batch-t1.json"
echo -n "$(date +%T) "; "$bin" "${common[@]}" --threads 2 --mode batch --out "$OUT/cityward-batch-t2.json"

echo "== peers"
python3 bench/pip_peers.py --data "$DATA" --out "$OUT/pip-results.json" --repeat "$REPEAT" \
  --postgis-repeat "$PG_REPEAT" --tools "$tools" --dsn "$PG_DSN" \
  --cityward "$OUT/cityward-t1.json" "$OUT/cityward-t2.json" \
             "$OUT/cityward-batch-t1.json" "$OUT/cityward-batch-t2.json" \
  --cityward-pairs "$OUT/cityward-pairs.csv"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
