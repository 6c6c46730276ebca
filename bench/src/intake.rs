//! Durable HTTP intake benchmark: starts `cityward serve` (release build) on a fresh data
//! directory, posts NDJSON batches of GPS events (~200 bytes each) from several client
//! threads for a fixed time, and reports events/s, request latency p50/p99 and the node's
//! peak resident memory. Also writes an NDJSON file of N events for `cityward ingest` and
//! for the peers (DuckDB, PostgreSQL COPY) run by `bench/peers.sh`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Path of the `cityward` binary to measure.
    #[arg(long, default_value = "target/release/cityward")]
    cityward: PathBuf,
    /// Seconds of sustained load.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Events per request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Client threads.
    #[arg(long, default_value_t = 6)]
    clients: usize,
    /// Extra TOML appended to the node's configuration (e.g. to change `[wal]` settings).
    #[arg(long, default_value = "")]
    extra_config: String,
    /// Instead of the HTTP run, write this many events as NDJSON to --out and exit.
    #[arg(long)]
    write_file: Option<u64>,
    /// Output file for --write-file.
    #[arg(long, default_value = "bench-events.ndjson")]
    out: PathBuf,
}

fn event_line(i: u64, t: &str) -> String {
    let truck = i % 5000;
    let lon = 121.45 + (i % 997) as f64 * 0.0002;
    let lat = 29.80 + (i % 991) as f64 * 0.00015;
    format!(
        r#"{{"id":"b-{i:012}","source":"truck-{truck:05}","kind":"gps","time":"{t}","lon":{lon:.6},"lat":{lat:.6},"attrs":{{"speed_kmh":{:.1},"heading":{},"class":"hazmat"}}}}"#,
        30.0 + (i % 50) as f64,
        i % 360
    )
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(n) = args.write_file {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&args.out)?);
        let base = chrono::Utc::now() - chrono::Duration::hours(2);
        let mut bytes = 0;
        for i in 0..n {
            let t = cityward_time(base + chrono::Duration::milliseconds((i / 100) as i64));
            let line = event_line(i, &t);
            bytes += line.len() + 1;
            writeln!(out, "{line}")?;
        }
        out.flush()?;
        println!(
            "wrote {n} events ({:.0} bytes each) to {}",
            bytes as f64 / n as f64,
            args.out.display()
        );
        return Ok(());
    }

    let dir = std::env::temp_dir().join(format!("cityward-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = dir.join("cityward.toml");
    std::fs::write(&config, format!(
        "[node]\ndata_dir = {:?}\nlisten = \"127.0.0.1:{port}\"\n[auth]\nopen_ingest = true\n[lake]\ncompact_every = \"5s\"\n[ingest]\nreject_outside_city = false\n{}\n",
        dir.join("data").display().to_string(), args.extra_config.replace("\\n", "\n")
    ))?;
    let mut node = Command::new(&args.cityward)
        .args(["serve", "--config"])
        .arg(&config)
        .env("CITYWARD_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("http://127.0.0.1:{port}/api/v1/events");
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let latencies: Arc<Mutex<Vec<u32>>> = Arc::default();
    let started = Instant::now();
    let threads: Vec<_> = (0..args.clients)
        .map(|_| {
            let (stop, counter, accepted, latencies, url) = (
                stop.clone(),
                counter.clone(),
                accepted.clone(),
                latencies.clone(),
                url.clone(),
            );
            let batch = args.batch as u64;
            std::thread::spawn(move || {
                let agent = ureq::Agent::new_with_config(
                    ureq::config::Config::builder()
                        .http_status_as_error(false)
                        .build(),
                );
                let mut local = Vec::new();
                // Bodies are built before the clock matters and reused: without ids the node
                // assigns them, so a repeated body is new events, not duplicates.
                let t = cityward_time(chrono::Utc::now());
                let bodies: Vec<String> = (0..16)
                    .map(|k| {
                        let first = counter.fetch_add(batch, Ordering::Relaxed) + k;
                        let mut body = String::with_capacity(batch as usize * 210);
                        for i in first..first + batch {
                            body.push_str(&without_id(&event_line(i, &t)));
                            body.push('\n');
                        }
                        body
                    })
                    .collect();
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) {
                    let body = &bodies[k % bodies.len()];
                    k += 1;
                    let sent = Instant::now();
                    let mut r = agent
                        .post(&url)
                        .header("Content-Type", "application/x-ndjson")
                        .send(body.as_bytes())
                        .expect("node reachable");
                    let text = r.body_mut().read_to_string().unwrap_or_default();
                    local.push(sent.elapsed().as_micros() as u32);
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    accepted.fetch_add(v["accepted"].as_u64().unwrap_or(0), Ordering::Relaxed);
                }
                latencies.lock().unwrap().extend(local);
            })
        })
        .collect();
    let mut peak_rss_kib = 0u64;
    while started.elapsed() < Duration::from_secs(args.seconds) {
        std::thread::sleep(Duration::from_millis(500));
        peak_rss_kib = peak_rss_kib.max(rss_kib(node.id()));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    peak_rss_kib = peak_rss_kib.max(hwm_kib(node.id()));
    // How far compaction got: records still only in the WAL, and rows in Parquet.
    let metrics = ureq::get(&format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .unwrap_or_default();
    let sum = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let (lag, lake_rows) = (sum("cityward_lake_lag_records"), sum("cityward_lake_rows"));
    let _ = node.kill();
    let mut l = latencies.lock().unwrap().clone();
    l.sort_unstable();
    let pct = |p: f64| l[((l.len() as f64 * p) as usize).min(l.len() - 1)] as f64 / 1000.0;
    let n = accepted.load(Ordering::Relaxed);
    println!("durable HTTP intake: {n} events in {secs:.1} s = {:.0} events/s; batch {} x {} clients; request latency p50 {:.1} ms, p99 {:.1} ms; node peak RSS {} MiB; at the end {lake_rows:.0} rows in Parquet, {lag:.0} records not yet compacted",
        n as f64 / secs, args.batch, args.clients, pct(0.5), pct(0.99), peak_rss_kib / 1024);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn without_id(line: &str) -> String {
    let end = line.find(",\"source\"").expect("id comes first");
    format!("{{{}", &line[end + 1..])
}

fn cityward_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn status_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    status_field(pid, "VmRSS:")
}

fn hwm_kib(pid: u32) -> u64 {
    status_field(pid, "VmHWM:")
}
