//! tier-bench: the links between tiers on real nats-server processes joined by leaf nodes.
//!
//! 1. Latency over healthy links: a community sends alert changes one at a time (paced);
//!    the street applies each and sends it on up; the city records how long each took
//!    from the community's append to the city's inbox.
//! 2. A partition: the community's link is cut (a relay in front of the street's leaf
//!    port), the community appends a backlog, the link returns. Reported: how fast the
//!    backlog was appended locally, when the street got the first of it after the link
//!    returned, and how fast it drained.
//! 3. The peer, in the same run: JetStream's own mirroring across the same cut link
//!    (a stream on the street mirroring a stream of the community's by domain), with the
//!    same backlog, timed the same way.
//!
//! ```text
//! cargo run --release -p cityward-tier-bench --bin tier-bench -- --backlog 1000000 --per-message 1
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use clap::Parser;
use cityward_tier::testkit::{LinkCutter, NatsServer};
use cityward_tier::{Envelope, Link, LinkConfig};
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Alert changes appended while the link is cut.
    #[arg(long, default_value_t = 1_000_000)]
    backlog: usize,
    /// Alert changes per outbox message (1: each change on its own, as a quiet node
    /// appends them; the node's pump packs up to 1024 when they come fast).
    #[arg(long, default_value_t = 1)]
    per_message: usize,
    /// Alert changes sent one by one for the latency measurement.
    #[arg(long, default_value_t = 3000)]
    latency_samples: usize,
    /// Their rate, per second.
    #[arg(long, default_value_t = 500)]
    latency_rate: u64,
}

/// An alert change of about the size a node sends (≈600 bytes).
fn change(i: usize, origin: &str) -> Envelope {
    let sent = now_us();
    let body = json!({"change": "raised", "sent_us": sent, "row": {
        "id": format!("al-{origin}-{i}"), "rule": "smoke-alarm", "key": format!("smoke-{i}"), "status": "assigned",
        "severity": "high", "category": "fire.smoke", "time": "2026-12-04T10:00:00.000Z", "grid": "g-0042",
        "body": {"title": "Smoke alarm", "lon": 121.4731, "lat": 31.2304, "evidence": [format!("ev-{i}")],
                 "handling": {"owner": "unit-comm-a", "status": "assigned", "deadlines": {"ack": "2m", "arrive": "15m"}}},
        "updated_at": "2026-12-04T10:00:00.100Z", "scopes": ["region:comm-a", "unit:unit-comm-a"], "class": "incident", "incident": null}});
    Envelope::new("alert", format!("al-{origin}-{i}@{sent}"), origin, &body)
}

fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn open(node: &str, server: &NatsServer, parent: &str) -> Arc<Link> {
    Arc::new(Link::open(LinkConfig { node: node.into(), nats: server.url(), parent: parent.into(), ..LinkConfig::default() }).await.expect("link opens"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    // RUST_LOG=cityward_tier=debug shows the links at work.
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_writer(std::io::stderr).init();
    let dir = tempfile::tempdir().unwrap();
    let cutter = LinkCutter::start(0);
    let city_nats = NatsServer::start("city", dir.path(), None);
    let street_nats = NatsServer::start_behind("street", dir.path(), Some(city_nats.leaf_port), Some(cutter.port));
    cutter.set_target(street_nats.leaf_port);
    let comm_nats = NatsServer::start_leaf_of("comm", dir.path(), Some(cutter.port));
    let city = open("city", &city_nats, "").await;
    let street = open("street", &street_nats, "city").await;
    let comm = open("comm", &comm_nats, "street").await;
    tokio::spawn(comm.clone().run_forwarder());
    tokio::spawn(street.clone().run_forwarder());

    // The street applies nothing here but counts, and sends what arrives on up.
    let at_street = Arc::new(AtomicU64::new(0));
    let first_at_street: Arc<Mutex<Option<Instant>>> = Arc::default();
    {
        let (street2, count, first) = (street.clone(), at_street.clone(), first_at_street.clone());
        tokio::spawn(street.clone().run_inbox(move |batch| {
            let (street, count, first) = (street2.clone(), count.clone(), first.clone());
            async move {
                first.lock().unwrap().get_or_insert_with(Instant::now);
                count.fetch_add(batch.len() as u64, Ordering::Relaxed);
                if batch.first().is_some_and(|e| e.id.starts_with("lat-")) {
                    street.send_up(&batch).await.map_err(|e| e.to_string())?;
                }
                Ok(())
            }
        }));
    }
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    {
        let lat = latencies.clone();
        tokio::spawn(city.clone().run_inbox(move |batch| {
            let lat = lat.clone();
            async move {
                let now = now_us();
                let mut l = lat.lock().unwrap();
                for e in batch {
                    let sent = e.body::<serde_json::Value>().ok().and_then(|b| b["sent_us"].as_u64()).unwrap_or(now);
                    l.push((now - sent) as f64 / 1000.0);
                }
                Ok(())
            }
        }));
    }

    // 1. Latency community → street → city, healthy links.
    let gap = Duration::from_micros(1_000_000 / args.latency_rate);
    let mut next = Instant::now();
    for i in 0..args.latency_samples {
        let mut e = change(i, "comm");
        e.id = format!("lat-{i}");
        comm.send_up(&[e]).await.unwrap();
        next += gap;
        tokio::time::sleep_until(next.into()).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while latencies.lock().unwrap().len() < args.latency_samples && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut l = latencies.lock().unwrap().clone();
    l.sort_by(f64::total_cmp);
    println!(
        "latency community → street → city, {} alert changes at {}/s: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} arrived)",
        args.latency_samples, args.latency_rate, percentile(&l, 0.5), percentile(&l, 0.99), l.last().unwrap(), l.len()
    );

    // 2. Partition: cut, append the backlog, restore, time the drain.
    let before = at_street.load(Ordering::Relaxed);
    cutter.cut();
    *first_at_street.lock().unwrap() = None;
    let t = Instant::now();
    let mut i = 0;
    while i < args.backlog {
        let n = args.per_message.min(args.backlog - i);
        let batch: Vec<Envelope> = (i..i + n).map(|k| change(k, "comm")).collect();
        comm.send_up(&batch).await.unwrap();
        i += n;
    }
    let append = t.elapsed();
    println!(
        "backlog: {} alert changes in {} outbox messages appended locally while cut in {:.1} s ({:.0} changes/s)",
        args.backlog,
        args.backlog.div_ceil(args.per_message),
        append.as_secs_f64(),
        args.backlog as f64 / append.as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    *first_at_street.lock().unwrap() = None;
    cutter.restore();
    let restored = Instant::now();
    let target = before + args.backlog as u64;
    while at_street.load(Ordering::Relaxed) < target {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drained = restored.elapsed();
    let first = first_at_street.lock().unwrap().map(|f| f - restored).unwrap_or_default();
    let drain_only = drained - first;
    println!(
        "partition: first of the backlog at the street {:.2} s after the link returned; all {} in {:.2} s: {:.0} changes/s from the first",
        first.as_secs_f64(),
        args.backlog,
        drained.as_secs_f64(),
        args.backlog as f64 / drain_only.as_secs_f64()
    );
    let s = comm.stats();
    println!(
        "  forwarder: {} batches, {} duplicates dropped by the street, {} failed attempts while cut",
        s.forwarded_batches.load(Ordering::Relaxed),
        s.duplicate_batches.load(Ordering::Relaxed),
        s.up_failures.load(Ordering::Relaxed)
    );

    // 3. The peer: JetStream mirroring the same backlog across the same cut link.
    let comm_js = jetstream::new(async_nats::connect(comm_nats.url()).await.unwrap());
    let street_js = jetstream::new(async_nats::connect(street_nats.url()).await.unwrap());
    comm_js
        .create_stream(jetstream::stream::Config {
            name: "PEER_OUT".into(),
            subjects: vec!["peer.out".into()],
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .unwrap();
    street_js
        .create_stream(jetstream::stream::Config {
            name: "PEER_MIRROR".into(),
            storage: jetstream::stream::StorageType::File,
            mirror: Some(jetstream::stream::Source { name: "PEER_OUT".into(), domain: Some("comm".into()), ..Default::default() }),
            ..Default::default()
        })
        .await
        .unwrap();
    cutter.cut();
    let messages = args.backlog.div_ceil(args.per_message);
    let mut acks = Vec::new();
    let mut i = 0;
    while i < args.backlog {
        let n = args.per_message.min(args.backlog - i);
        let batch: Vec<Envelope> = (i..i + n).map(|k| change(k, "peer")).collect();
        acks.push(comm_js.publish("peer.out", cityward_tier::encode(&batch).unwrap()).await.unwrap());
        if acks.len() >= 4096 {
            for a in acks.drain(..) {
                a.await.unwrap();
            }
        }
        i += n;
    }
    for a in acks.drain(..) {
        a.await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    cutter.restore();
    let restored = Instant::now();
    let mut first = None;
    loop {
        let mut stream = street_js.get_stream("PEER_MIRROR").await.unwrap();
        let have = stream.info().await.unwrap().state.messages as usize;
        if have > 0 && first.is_none() {
            first = Some(restored.elapsed());
        }
        if have >= messages {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drained = restored.elapsed();
    let first = first.unwrap_or_default();
    println!(
        "peer (JetStream mirror by domain, same link): first at the street {:.2} s after the link returned; all {} in {:.2} s: {:.0} changes/s from the first",
        first.as_secs_f64(),
        args.backlog,
        drained.as_secs_f64(),
        args.backlog as f64 / (drained - first).as_secs_f64()
    );
}
