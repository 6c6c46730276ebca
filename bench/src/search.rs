//! Plate search over a large lake: the query `POST /api/v1/search` runs for a whole plate
//! (an equality) and for a partial one (a `LIKE` narrowed by ranges of its prefix), on a lake of
//! generated plate reads, timed on the node's own SQL engine; `bench/search_peers.py` runs
//! the same queries with DuckDB on the same Parquet files.
//!
//! The lake is generated once per `--data` directory (a `params.json` records what it
//! holds): `--reads` plate reads spread evenly over `--days` days ending today, each of a
//! plate drawn uniformly from `--plates` distinct plates at one of `--readers` read points,
//! written through the lake's own writer (day partitions, plate reads sorted by plate and
//! time, Bloom filters on `plate`) and merged to one file per day, as a running node's
//! merges leave them. The queries go to `DIR/queries.json` for the peer script.
//!
//! ```text
//! search-bench --reads 100000000 --days 30 --data /tmp/cityward-search --out results.json
//! python3 bench/search_peers.py --data /tmp/cityward-search --out duckdb.json
//! ```
//!
//! With `SEARCH_BENCH_EXPLAIN=1` it also prints DataFusion's `EXPLAIN ANALYZE` of one whole
//! and one partial search (what was pruned, what was read).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use chrono::{DateTime, Duration, Utc};
use cityward_bench::SplitMix64;
use cityward_model::{format_time, Event, KindRegistry};
use cityward_server::plate_condition;
use cityward_store::{Lake, LakeOptions, SqlEngine};
use clap::Parser;
use serde_json::{json, Value};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// Plate reads in the lake.
    #[arg(long, default_value_t = 100_000_000)]
    reads: u64,
    /// Days they span (ending today).
    #[arg(long, default_value_t = 30)]
    days: u64,
    /// Distinct plates.
    #[arg(long, default_value_t = 5_000_000)]
    plates: u64,
    /// Read points.
    #[arg(long, default_value_t = 2_000)]
    readers: u64,
    /// Seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Where the lake is (generated when absent or generated with other parameters).
    #[arg(long, default_value = "/tmp/cityward-search")]
    data: PathBuf,
    /// Whole-plate searches to time.
    #[arg(long, default_value_t = 30)]
    exact: usize,
    /// Partial-plate searches to time.
    #[arg(long, default_value_t = 10)]
    partial: usize,
    /// Results as JSON.
    #[arg(long)]
    out: Option<PathBuf>,
}

const PROVINCES: [char; 8] = ['粤', '沪', '京', '浙', '苏', '鲁', '川', '鄂'];
const ALNUM: &[u8] = b"0123456789ABCDEFGHJKLMNPQRSTUVWXYZ";

/// Plate number `i`: a province, a letter and five letters or digits.
fn plate(i: u64) -> String {
    let mut s = String::new();
    s.push(PROVINCES[(i % 8) as usize]);
    let mut rest = i / 8;
    s.push((b'A' + (rest % 20) as u8) as char);
    rest /= 20;
    for _ in 0..5 {
        s.push(ALNUM[(rest % ALNUM.len() as u64) as usize] as char);
        rest /= ALNUM.len() as u64;
    }
    s
}

fn generate(args: &Args, lake: &Lake, end: DateTime<Utc>) -> Result<()> {
    let mut rng = SplitMix64(args.seed);
    let per_day = args.reads / args.days;
    let start = end - Duration::days(args.days as i64);
    let readers: Vec<(String, f64, f64)> = (0..args.readers)
        .map(|r| (format!("anpr-{r:05}"), 121.3 + (r % 50) as f64 * 0.004, 31.1 + (r / 50) as f64 * 0.004))
        .collect();
    let chunk = 1_000_000u64;
    let mut seq = 1u64;
    let began = Instant::now();
    for day in 0..args.days {
        let day_start = start + Duration::days(day as i64);
        let mut left = per_day;
        while left > 0 {
            let n = left.min(chunk);
            let events: Vec<Event> = (0..n)
                .map(|k| {
                    let (source, lon, lat) = &readers[rng.below(args.readers) as usize];
                    let time = day_start + Duration::milliseconds(rng.below(86_400_000) as i64);
                    let mut e = Event::new(source.clone(), "plate_read", time);
                    e.id = format!("r{:011}", seq + k);
                    e.lon = Some(*lon);
                    e.lat = Some(*lat);
                    e.attrs.insert("plate".into(), json!(plate(rng.below(args.plates))));
                    e
                })
                .collect();
            lake.write_segment(seq, &events)?;
            seq += n;
            left -= n;
        }
        eprintln!("day {} of {}: {} reads written, {:.0} reads/s", day + 1, args.days, seq - 1, (seq - 1) as f64 / began.elapsed().as_secs_f64());
    }
    Ok(())
}

/// The SQL `POST /api/v1/search` runs for a first page (500) of reads matching `condition`
/// since `since`.
fn search_sql(condition: &str, since: DateTime<Utc>) -> String {
    format!(
        "SELECT id, source, kind, time, lon, lat, grid, unit, attrs FROM events WHERE {condition} AND time >= TIMESTAMP '{}' ORDER BY time DESC, id DESC LIMIT 501",
        format_time(&since)
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let params = json!({"reads": args.reads, "days": args.days, "plates": args.plates, "readers": args.readers, "seed": args.seed, "merged": true});
    let lake_dir = args.data.join("lake");
    let marker = args.data.join("params.json");
    let end = Utc::now().date_naive().and_hms_opt(0, 0, 0).expect("midnight").and_utc() + Duration::days(1);
    let fresh = std::fs::read_to_string(&marker).ok().and_then(|t| serde_json::from_str::<Value>(&t).ok()).is_some_and(|p| p["params"] == params);
    let kinds = KindRegistry::builtin();
    if !fresh {
        let _ = std::fs::remove_dir_all(&args.data);
        std::fs::create_dir_all(&args.data)?;
        let lake = Lake::open(&lake_dir, &kinds)?;
        let began = Instant::now();
        generate(&args, &lake, end)?;
        eprintln!("generated {} reads in {:.0} s", args.reads, began.elapsed().as_secs_f64());
        // A running node compacts every minute and merges the small files of a day into
        // files of up to 4 M rows: one file per day here, as it would leave them.
        let merging = Lake::open_with(&lake_dir, &kinds, LakeOptions { merge_min_files: 2, ..LakeOptions::default() })?;
        let merged = merging.merge_small_files().await?;
        eprintln!("merged {} days into one file each in {:.0} s", merged.merges.len(), began.elapsed().as_secs_f64());
        std::fs::write(&marker, json!({"params": params, "end": format_time(&end)}).to_string())?;
    }
    let end = std::fs::read_to_string(&marker)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["end"].as_str().and_then(cityward_model::parse_time))
        .context("params.json has no end time")?;
    let lake = Lake::open(&lake_dir, &kinds)?;
    let bytes: u64 = lake.files()?.iter().map(|f| f.bytes).sum();
    let engine = SqlEngine::new(&lake)?;
    let since = end - Duration::days(args.days as i64);

    // The queries: plates that were read (drawn like the reads), and prefixes of them.
    let mut rng = SplitMix64(args.seed ^ 0x5EA2C4);
    let exact: Vec<String> = (0..args.exact).map(|_| plate(rng.below(args.plates))).collect();
    let partial: Vec<String> = (0..args.partial).map(|_| plate(rng.below(args.plates)).chars().take(5).collect()).collect();
    let condition = |plate: &str| plate_condition(plate, false).map_err(|e| anyhow::anyhow!("{e}"));
    let exact_conditions: Vec<String> = exact.iter().map(|p| condition(p)).collect::<Result<_>>()?;
    let partial_conditions: Vec<String> = partial.iter().map(|p| condition(&format!("{p}*"))).collect::<Result<_>>()?;
    let exact_sql: Vec<String> = exact_conditions.iter().map(|c| search_sql(c, since)).collect();
    let partial_sql: Vec<String> = partial_conditions.iter().map(|c| search_sql(c, since)).collect();
    // The peer script runs the very same conditions.
    std::fs::write(
        args.data.join("queries.json"),
        json!({
            "exact": exact, "partial": partial, "since": format_time(&since),
            "exact_conditions": exact_conditions, "partial_conditions": partial_conditions,
        })
        .to_string(),
    )?;

    let run = |sqls: &[String]| -> Result<(Vec<f64>, u64)> {
        let mut times = Vec::new();
        let mut rows = 0;
        for sql in sqls {
            let began = Instant::now();
            let result = futures_block(engine.query(sql, Vec::new(), 501))?;
            times.push(began.elapsed().as_secs_f64() * 1e3);
            rows += result.rows.len() as u64;
        }
        Ok((times, rows))
    };
    // One query first so that the footer cache is warm, as on a running node.
    run(&exact_sql[..1])?;
    if std::env::var_os("SEARCH_BENCH_EXPLAIN").is_some() {
        for sql in [&exact_sql[1], &partial_sql[0]] {
            let plan = futures_block(engine.query(&format!("EXPLAIN ANALYZE {sql}"), Vec::new(), 100))?;
            for row in plan.rows {
                eprintln!("{}", row.iter().map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())).collect::<Vec<_>>().join("\n"));
            }
        }
    }
    let (mut exact_ms, exact_rows) = run(&exact_sql)?;
    let (mut partial_ms, partial_rows) = run(&partial_sql)?;
    let (cache_bytes, cache_files) = engine.metadata_cache_used();
    eprintln!("footers and page indexes kept: {:.1} MiB of {cache_files} files", cache_bytes as f64 / (1 << 20) as f64);
    exact_ms.sort_by(f64::total_cmp);
    partial_ms.sort_by(f64::total_cmp);
    let result = json!({
        "tool": "cityward (DataFusion over the lake)",
        "reads": args.reads, "days": args.days, "plates": args.plates, "lake_bytes": bytes,
        "exact": {"queries": exact_ms.len(), "rows": exact_rows, "p50_ms": percentile(&exact_ms, 0.5), "p90_ms": percentile(&exact_ms, 0.9), "max_ms": exact_ms.last()},
        "metadata_cache_bytes": cache_bytes,
        "partial": {"queries": partial_ms.len(), "rows": partial_rows, "p50_ms": percentile(&partial_ms, 0.5), "p90_ms": percentile(&partial_ms, 0.9), "max_ms": partial_ms.last()},
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    if let Some(out) = &args.out {
        std::fs::write(out, result.to_string())?;
    }
    Ok(())
}

/// Runs a future to completion from the benchmark's loop (already inside the runtime).
fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}
