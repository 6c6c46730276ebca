//! `node-bench`: the whole node — durable HTTP intake → detection → stored alerts — with
//! 10,000 rules of mixed kinds and 1,000,000 absence timers.
//!
//! 1. Generates the large demo city and a rule file of 10,000 rules: a threshold per
//!    sensor (by `event.source`), a speed limit per truck, a door watch per door sensor,
//!    geofences, counts, sequences, one absence rule over heartbeats, and a marker rule.
//! 2. Starts `cityward serve` (release build) and reads its RSS with the rules loaded.
//! 3. Primes 1,000,000 absence timers: one heartbeat from each of 1,000,000 sources.
//! 4. Sustained load: `--seconds` of mixed events (GPS of 5,000 trucks, sensor readings,
//!    heartbeats) from several clients, as fast as the node acknowledges them.
//! 5. Latency: `--latency-rate` events/s paced for `--latency-seconds`, among them marker
//!    events that a `match` rule turns into an alert each; event-to-alert latency is the
//!    alert's stored time (`updated_at`, node clock) minus the marker's event time (set by the
//!    client just before sending). Both clocks are this machine's.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::Value;

use cityward_bench::workload::{agent, mixed_event, now_text, post, post_mixed_until, read_devices, run, start_node, write_rules};

#[derive(Parser)]
struct Args {
    /// Path of the `cityward` binary to measure.
    #[arg(long, default_value = "target/release/cityward")]
    cityward: PathBuf,
    /// Work directory (city, rules, node data).
    #[arg(long, default_value = "/tmp/cityward-node-bench")]
    dir: PathBuf,
    /// Rules in total.
    #[arg(long, default_value_t = 10_000)]
    rules: usize,
    /// Absence timers to prime (distinct heartbeat sources).
    #[arg(long, default_value_t = 1_000_000)]
    timers: usize,
    /// Seconds of sustained load.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Client threads for the sustained load.
    #[arg(long, default_value_t = 6)]
    clients: usize,
    /// Events per request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Offered load of the latency phase, events/s.
    #[arg(long, default_value_t = 100_000)]
    latency_rate: u64,
    /// Seconds of the latency phase.
    #[arg(long, default_value_t = 30)]
    latency_seconds: u64,
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dir = &args.dir;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let city = dir.join("city");
    run(Command::new(&args.cityward).args(["city", "generate", "--size", "large", "--out"]).arg(&city))?;
    let devices = read_devices(&city)?;
    let rules_path = dir.join("rules.yaml");
    let written = write_rules(&rules_path, &devices, args.rules, true)?;
    println!("Wrote {written} rules ({} sensors, {} doors in the city).", devices.sensors.len(), devices.doors.len());

    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let data = dir.join("data");
    let config = dir.join("cityward.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\ndata_dir = {:?}\nlisten = \"127.0.0.1:{port}\"\n[city]\ndir = {:?}\n[auth]\nopen_ingest = true\n[ingest]\nreject_outside_city = false\n[lake]\ncompact_every = \"5s\"\n[detect]\nrules = [{:?}]\n",
            data.display().to_string(),
            city.display().to_string(),
            rules_path.display().to_string()
        ),
    )?;
    // Baseline: the same node with no rules, for the memory the rules take.
    let empty = dir.join("no-rules.yaml");
    std::fs::write(&empty, "rules: []\n")?;
    let base_config = dir.join("baseline.toml");
    std::fs::write(&base_config, std::fs::read_to_string(&config)?.replace(&format!("{:?}", rules_path.display().to_string()), &format!("{:?}", empty.display().to_string())).replace(&format!("{:?}", data.display().to_string()), &format!("{:?}", dir.join("baseline-data").display().to_string())))?;
    let mut baseline = start_node(&args.cityward, &base_config, port)?;
    std::thread::sleep(Duration::from_secs(2));
    let rss_baseline = status_kib(baseline.id(), "VmRSS:");
    let _ = baseline.kill();
    let _ = baseline.wait();
    std::thread::sleep(Duration::from_millis(500));

    run(Command::new(&args.cityward).args(["user", "add", "--data"]).arg(&data).args(["--username", "bench", "--role", "admin", "--password", "bench-pass"]))?;
    let started = Instant::now();
    let mut node = start_node(&args.cityward, &config, port)?;
    let pid = node.id();
    let base = format!("http://127.0.0.1:{port}");
    let client = agent();
    let token: Value = serde_json::from_str(
        &client
            .post(&format!("{base}/api/v1/login"))
            .header("Content-Type", "application/json")
            .send(r#"{"username": "bench", "password": "bench-pass"}"#)?
            .body_mut()
            .read_to_string()?,
    )?;
    let token = format!("Bearer {}", token["token"].as_str().context("no token")?);
    let status = |agent: &ureq::Agent| -> Result<Value> {
        Ok(serde_json::from_str(&agent.get(&format!("{base}/api/v1/detect/status")).header("Authorization", &token).call()?.body_mut().read_to_string()?)?)
    };
    let rules_running = status(&client)?["rules"].as_u64().unwrap_or(0);
    let rss_rules = status_kib(pid, "VmRSS:");
    println!(
        "Node up in {:.1} s with {rules_running} rules; RSS {} MiB, {} MiB without rules: {:.1} KB per rule.",
        started.elapsed().as_secs_f64(),
        rss_rules / 1024,
        rss_baseline / 1024,
        rss_rules.saturating_sub(rss_baseline) as f64 * 1.024 / rules_running.max(1) as f64
    );

    // Prime the absence timers.
    let url = format!("{base}/api/v1/events");
    let t0 = Instant::now();
    let chunk = 10_000;
    let clients = args.clients.max(1);
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let url = url.clone();
                s.spawn(move || -> Result<()> {
                    let agent = agent();
                    let mut start = c * chunk;
                    while start < args.timers {
                        let t = now_text();
                        let body: Vec<String> = (start..(start + chunk).min(args.timers))
                            .map(|i| format!(r#"{{"source":"hb-{i:07}","kind":"heartbeat","time":"{t}","attrs":{{"battery":90.0}}}}"#))
                            .collect();
                        post(&agent, &url, &body.join("\n"))?;
                        start += clients * chunk;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().expect("client")?;
        }
        Ok(())
    })?;
    // Wait until detection has applied them.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let st = status(&client)?;
        let keys = st["stats"]["rules"]["hb-offline"]["keys"].as_u64().unwrap_or(0);
        if keys >= args.timers as u64 || Instant::now() > deadline {
            println!("Primed {keys} absence keys ({} timers pending) in {:.1} s.", st["stats"]["timers"], t0.elapsed().as_secs_f64());
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let rss_timers = status_kib(pid, "VmRSS:");

    // Sustained load.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let sensors = Arc::new(devices.sensors.clone());
    let t1 = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let (stop, sent, sensors, url) = (stop.clone(), sent.clone(), sensors.clone(), url.clone());
            let batch = args.batch;
            std::thread::spawn(move || post_mixed_until(c, std::slice::from_ref(&url), batch, &sensors, &stop, &sent))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(args.seconds));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("client")?;
    }
    let secs = t1.elapsed().as_secs_f64();
    let n = sent.load(Ordering::Relaxed);
    // How long detection needs to catch up with what was acknowledged.
    let t2 = Instant::now();
    let mut last = 0;
    loop {
        let seq = status(&client)?["next_seq"].as_u64().unwrap_or(0);
        if seq == last && t2.elapsed() > Duration::from_secs(2) {
            break;
        }
        last = seq;
        std::thread::sleep(Duration::from_millis(500));
    }
    let catch_up = t2.elapsed().as_secs_f64() - 1.0;
    let st = status(&client)?;
    println!(
        "Detection after the load: {} events applied, {} timers, {} events held for ordered rules, RSS now {} MiB.",
        st["stats"]["events"], st["stats"]["timers"], st["stats"]["buffered"], status_kib(pid, "VmRSS:") / 1024
    );
    println!(
        "Sustained: {n} events in {secs:.1} s = {:.0} events/s acknowledged; detection caught up {catch_up:.1} s after the load stopped; peak RSS {} MiB.",
        n as f64 / secs,
        status_kib(pid, "VmHWM:") / 1024
    );

    // Latency at a paced rate.
    let per_client = args.latency_rate / clients as u64;
    let batches_per_s = (per_client as f64 / args.batch as f64).max(1.0);
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let (stop, sensors, url) = (stop.clone(), sensors.clone(), url.clone());
            let batch = args.batch;
            std::thread::spawn(move || -> Result<u64> {
                let agent = agent();
                let mut i = 1_000_000_000u64;
                let mut markers = 0;
                let period = Duration::from_secs_f64(1.0 / batches_per_s);
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let mut body: Vec<String> = Vec::with_capacity(batch);
                    for _ in 0..batch - 1 {
                        i += 1;
                        body.push(mixed_event(c, i, &now_text(), &sensors));
                    }
                    body.push(format!(r#"{{"source":"marker","kind":"door","time":"{}","attrs":{{"open":true}}}}"#, now_text()));
                    markers += 1;
                    post(&agent, &url, &body.join("\n"))?;
                    next += period;
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
                Ok(markers)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(args.latency_seconds));
    stop.store(true, Ordering::Relaxed);
    let mut markers = 0;
    for h in handles {
        markers += h.join().expect("client")?;
    }
    std::thread::sleep(Duration::from_secs(3));
    // Read the marker alerts back.
    let mut latencies = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/api/v1/alerts?limit=1000");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = serde_json::from_str(&client.get(&url).header("Authorization", &token).call()?.body_mut().read_to_string()?)?;
        for a in page["items"].as_array().into_iter().flatten() {
            if a["rule"] == "marker" {
                let t = chrono::DateTime::parse_from_rfc3339(a["time"].as_str().unwrap_or_default())?;
                let stored = chrono::DateTime::parse_from_rfc3339(a["updated_at"].as_str().unwrap_or_default())?;
                latencies.push((stored - t).num_microseconds().unwrap_or(0) as f64 / 1000.0);
            }
        }
        match page["next"].as_str() {
            Some(c) if latencies.len() < markers as usize => cursor = Some(c.to_string()),
            _ => break,
        }
    }
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| latencies.get(((latencies.len() as f64 - 1.0) * p) as usize).copied().unwrap_or(f64::NAN);
    println!(
        "Latency at {} events/s offered: {} markers, {} alerts; event-to-alert p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms.",
        args.latency_rate,
        markers,
        latencies.len(),
        pct(0.5),
        pct(0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    let st = status(&client)?;
    println!(
        "Detection's own latency (WAL acknowledgement to alert stored), last {} alerts: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms.",
        st["alert_latency_ms"]["alerts"],
        st["alert_latency_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
        st["alert_latency_ms"]["p99"].as_f64().unwrap_or(f64::NAN),
        st["alert_latency_ms"]["max"].as_f64().unwrap_or(f64::NAN)
    );
    println!(
        "Taking the last checkpoint held detection for {:.1} ms.",
        st["checkpoint_pause_ms"].as_f64().unwrap_or(f64::NAN)
    );
    println!(
        "Memory: RSS with {rules_running} rules {} MiB; after {} absence keys {} MiB (+{:.0} bytes per timer); peak {} MiB. Late events: {}.",
        rss_rules / 1024,
        args.timers,
        rss_timers / 1024,
        (rss_timers.saturating_sub(rss_rules)) as f64 * 1024.0 / args.timers as f64,
        status_kib(pid, "VmHWM:") / 1024,
        st["stats"]["late"]
    );
    let _ = node.kill();
    let _ = node.wait();
    Ok(())
}
