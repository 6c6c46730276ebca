//! Closed-loop handling under load: a node (in this process) with the large demo city and
//! one `match` rule raising an alert for every smoke alarm it is fed, at a paced rate;
//! every alert is routed to its unit as it is stored. Meanwhile `--clients` live-stream
//! connections (`GET /api/v1/alerts/stream`), spread over responders of every community,
//! each check that they receive only their community's alerts, and time each delivery.
//!
//! Reported: alerts stored per second; time from the WAL acknowledging an event to its
//! alert stored with an owner (the detection stage's own sample: detection, routing and
//! the store write); live-stream delivery time from the alert's routing to the client
//! reading it; jurisdiction violations (must be 0).
//!
//! ```text
//! cargo build --release -p cityward-bench --bin alerts-bench
//! target/release/alerts-bench --rate 10000 --seconds 30 --clients 1000
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::Utc;
use cityward_server::{Channel, Node, NodeConfig, Role};
use clap::Parser;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// Alerts per second to raise (0: as fast as the node takes them).
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// How long to raise them.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Live-stream clients.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Responder users the clients log in as (each in its own community).
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// Milliseconds between intake batches: alarms arrive spread over the second as a
    /// city's sensors send them, rate × tick / 1000 at a time.
    #[arg(long, default_value_t = 10)]
    tick_ms: u64,
}

const RULES: &str = "rules:\n  - id: every-alarm\n    kind: match\n    when: 'event.kind == \"smoke\" && event.attrs.alarm == true'\n    key: event.id\n    severity: high\n    category: fire.smoke\n";

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// One live-stream client: reads events, times each alert from its routing, and checks it
/// belongs to the client's community (its grid in the community, or the community among
/// the units it was routed to).
async fn client(
    addr: std::net::SocketAddr,
    token: String,
    community: String,
    grids: Arc<std::collections::HashSet<String>>,
    latencies: Arc<Mutex<Vec<f64>>>,
    violations: Arc<AtomicU64>,
) -> Result<()> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET /api/v1/alerts/stream HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut lines = BufReader::new(stream).lines();
    let mut mine = Vec::new();
    while let Some(line) = lines.next_line().await? {
        let Some(data) = line.strip_prefix("data: ") else { continue };
        let received = Utc::now();
        let Ok(change) = serde_json::from_str::<Value>(data) else { continue };
        let alert = &change["alert"];
        let routed = alert["handling"]["timeline"][0]["at"].as_str().and_then(cityward_model::parse_time);
        if let Some(routed) = routed {
            mine.push((received - routed).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
        // Visible when in the community's grids, or routed, offered (near a boundary) or
        // escalated to the community's unit.
        let in_grid = alert["grid"].as_str().is_some_and(|g| grids.contains(g));
        let h = &alert["handling"];
        let named = |v: &Value| v.as_str() == Some(community.as_str());
        let routed_here = named(&h["owner"])
            || h["routing"]["candidates"].as_array().is_some_and(|c| c.iter().any(named))
            || h["escalations"].as_array().is_some_and(|e| e.iter().any(|x| named(&x["unit"])));
        if !in_grid && !routed_here {
            violations.fetch_add(1, Ordering::Relaxed);
        }
        if mine.len() >= 256 {
            latencies.lock().unwrap().append(&mut mine);
        }
    }
    latencies.lock().unwrap().append(&mut mine);
    Ok(())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let city = cityward_sim::generate_city(7, cityward_sim::Size::Large);
    city.write(&dir.path().join("city"))?;
    std::fs::write(dir.path().join("rules.yaml"), RULES)?;
    let mut config = NodeConfig::default();
    config.node.data_dir = dir.path().join("data");
    config.city.dir = Some(dir.path().join("city"));
    config.detect.rules = vec![dir.path().join("rules.yaml")];
    config.ingest.reject_outside_city = false;
    let node = Node::open(config).await.context("node")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(cityward_server::serve_on(node.clone(), listener, async {
        let _ = stopped.await;
    }));

    // Responders of the first `users` communities, and the grids of each community.
    let communities: Vec<_> = city.units.iter().filter(|u| u.kind == "community").take(args.users).cloned().collect();
    let mut clients = Vec::new();
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let violations = Arc::new(AtomicU64::new(0));
    for (i, unit) in communities.iter().enumerate() {
        let name = format!("r{i}");
        node.create_user(&name, "bench-pass", Role::Responder, Some(&unit.id))?;
        let base = format!("http://{addr}");
        let token = tokio::task::spawn_blocking(move || -> Result<String> {
            let body = json!({"username": name, "password": "bench-pass"}).to_string();
            let mut r = ureq::post(&format!("{base}/api/v1/login")).header("Content-Type", "application/json").send(body.as_bytes())?;
            let answer: Value = serde_json::from_str(&r.body_mut().read_to_string()?)?;
            Ok(answer["token"].as_str().unwrap_or_default().to_string())
        })
        .await??;
        let region = unit.region.clone().unwrap_or_default();
        let grids: std::collections::HashSet<String> = city.grids.iter().filter(|g| g.region == region).map(|g| g.id.clone()).collect();
        clients.push((token, unit.id.clone(), Arc::new(grids)));
    }
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let (token, community, grids) = clients[c % clients.len()].clone();
        tasks.push(tokio::spawn(client(addr, token, community, grids, latencies.clone(), violations.clone())));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!("{} live-stream clients connected as {} responders of {} communities.", args.clients, clients.len(), clients.len());

    // Smoke alarms from every smoke sensor in turn, one batch every tick.
    let smokes: Vec<_> = city.devices.iter().filter(|d| d.kind == "smoke").collect();
    let batch = if args.rate == 0 { 2000 } else { (args.rate * args.tick_ms.max(1) / 1000).max(1) as usize };
    let total = if args.rate == 0 { 200_000 } else { args.rate * args.seconds };
    // The node keeps the latencies of its last 10,000 alerts — about the last second at
    // 10,000 alerts/s: its p99 read every second gives the p99 of each second of the run.
    let per_second: Arc<Mutex<Vec<f64>>> = Arc::default();
    let sampler = {
        let (node, per_second) = (node.clone(), per_second.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if let Some(p99) = node.detect_status()["alert_latency_ms"]["p99"].as_f64() {
                    per_second.lock().unwrap().push(p99);
                }
            }
        })
    };
    let started = Instant::now();
    let mut sent = 0u64;
    let mut n = 0usize;
    while sent < total {
        let now = cityward_model::format_time(&Utc::now());
        let body: String = (0..batch)
            .map(|_| {
                n += 1;
                let d = smokes[n % smokes.len()];
                format!("{{\"id\":\"b{n}\",\"source\":\"{}\",\"kind\":\"smoke\",\"time\":\"{now}\",\"attrs\":{{\"alarm\":true,\"value\":0.4}}}}\n", d.id)
            })
            .collect();
        let out = node.ingest_body(body.as_bytes(), Channel::Internal, false).await;
        if let Err(e) = out {
            // Back-pressure: wait and go on.
            eprintln!("intake refused a batch ({e}); retrying");
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        sent += batch as u64;
        if args.rate > 0 {
            let due = Duration::from_secs_f64(sent as f64 / args.rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    // Wait for detection to store the last alert.
    let offered = started.elapsed().as_secs_f64();
    loop {
        let st = node.detect_status();
        if st["next_seq"].as_u64().unwrap_or(0) >= sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A checkpoint waits for the alert writer to store everything detection handed it.
    node.checkpoint_detection().await;
    let stored = started.elapsed().as_secs_f64();
    sampler.abort();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let st = node.detect_status();
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_by(|a, b| a.total_cmp(b));
    println!(
        "alerts: {sent} raised in {offered:.1} s, all stored with an owner after {stored:.1} s = {:.0} alerts/s",
        sent as f64 / stored
    );
    println!("WAL ack -> alert stored with its owner (detection's sample of the last 10,000): {}", st["alert_latency_ms"]);
    let mut p99s = per_second.lock().unwrap().clone();
    p99s.sort_by(|a, b| a.total_cmp(b));
    println!(
        "  p99 of each second of the run ({} seconds): median {:.1} ms, worst {:.1} ms",
        p99s.len(),
        percentile(&p99s, 0.5),
        p99s.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "live stream: {} deliveries to {} clients; routing -> client p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; jurisdiction violations {}",
        lat.len(),
        args.clients,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN),
        violations.load(Ordering::Relaxed)
    );
    let _ = stop.send(());
    for t in tasks {
        t.abort();
    }
    let _ = served.await;
    Ok(())
}
