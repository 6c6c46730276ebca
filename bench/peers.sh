#!/usr/bin/env bash
# Bulk intake of one NDJSON file by cityward and by the peers a user would otherwise
# reach for, in the same run on the same machine: `cityward ingest` into a running node
# (durable, fsync'd WAL), DuckDB read_json into a table (in memory, and into a database
# file with CHECKPOINT), and PostgreSQL COPY of the same records as CSV (the local server).
#
#   bash bench/peers.sh [EVENTS]      # default 10,000,000
#
# Needs: a release build (cargo build --release -p cityward-cli -p cityward-bench),
# python3 with duckdb (pip install duckdb), psql reaching PostgreSQL on 127.0.0.1:5432.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000000}
work=$(mktemp -d /tmp/cityward-peers-XXXX)
trap 'kill $node 2>/dev/null || true; rm -rf "$work"' EXIT
bin=target/release

$bin/intake-bench --write-file "$n" --out "$work/events.ndjson"
bytes=$(stat -c %s "$work/events.ndjson")
echo "file: $n events, $bytes bytes"

port=18090
cat > "$work/cityward.toml" <<TOML
[node]
data_dir = "$work/data"
listen = "127.0.0.1:$port"
[auth]
open_ingest = true
[ingest]
reject_outside_city = false
TOML
CITYWARD_LOG=warn $bin/cityward serve --config "$work/cityward.toml" & node=$!
until (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; do sleep 0.1; done
start=$(date +%s.%N)
$bin/cityward ingest --quiet --to "http://127.0.0.1:$port" --batch ${BATCH:-5000} --concurrency ${CONCURRENCY:-4} "$work/events.ndjson"
end=$(date +%s.%N)
rss=$(awk '/VmHWM/ {print int($2/1024)}' /proc/$node/status)
kill $node; wait $node 2>/dev/null || true
echo "cityward ingest: $(python3 -c "print(f'{$n/($end-$start):,.0f}')") events/s, node peak RSS ${rss} MiB"

python3 - "$work" "$n" <<'PY'
import sys, time, duckdb
work, n = sys.argv[1], int(sys.argv[2])
con = duckdb.connect()
t = time.time()
con.execute(f"CREATE TABLE events AS SELECT * FROM read_json('{work}/events.ndjson', format='newline_delimited')")
print(f"duckdb read_json (memory): {n/(time.time()-t):,.0f} events/s")
con.close()
con = duckdb.connect(f"{work}/peer.duckdb")
t = time.time()
con.execute(f"CREATE TABLE events AS SELECT * FROM read_json('{work}/events.ndjson', format='newline_delimited')")
con.execute("CHECKPOINT")
print(f"duckdb read_json (file, checkpoint): {n/(time.time()-t):,.0f} events/s")
con.close()
# The same records as CSV for PostgreSQL COPY (conversion not timed).
con = duckdb.connect()
con.execute(f"COPY (SELECT id, source, kind, time, lon, lat, attrs.speed_kmh, attrs.heading, attrs.class FROM read_json('{work}/events.ndjson', format='newline_delimited')) TO '{work}/events.csv' (HEADER false)")
PY

psql -h 127.0.0.1 -U postgres -d test -q -c "DROP TABLE IF EXISTS bench_events; CREATE TABLE bench_events (id text, source text, kind text, time timestamptz, lon float8, lat float8, speed_kmh float8, heading float8, class text);"
start=$(date +%s.%N)
psql -h 127.0.0.1 -U postgres -d test -q -c "\\copy bench_events FROM '$work/events.csv' WITH (FORMAT csv)"
end=$(date +%s.%N)
echo "postgresql COPY (csv, fsync on): $(python3 -c "print(f'{$n/($end-$start):,.0f}')") events/s"
psql -h 127.0.0.1 -U postgres -d test -q -c "DROP TABLE bench_events;"
