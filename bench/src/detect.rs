//! `detect-bench`: the detection engine alone, on pre-decoded GPS events.
//!
//! 10,000 star-shaped polygon zones of ~50 vertices (radius 50–400 m) in a 40 × 33 km box
//! (the point-in-polygon data set of PEERS.md), 100,000 vehicles driving straight lines at
//! 20–60 km/h with a fix every `--interval` seconds (default 1), and three rules over every
//! zone: enter, exit, and dwell longer than 2 minutes. The events are built before the clock starts; what is timed is
//! `Engine::process` (plus draining the outputs). With `--threads 2` the vehicles are split
//! by key between two engines on two threads, as a node does with partitions.
//!
//! Prints events/s, alerts per rule and the process's peak RSS.

use std::sync::Arc;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::Instant;

use anyhow::Result;
use cityward_bench::SplitMix64;
use chrono::{TimeZone, Utc};
use clap::Parser;
use cityward_detect::{compile_rules, Engine, EngineConfig, Output};
use cityward_model::city::Zone;
use cityward_model::geo::{Geometry, Point, Polygon};
use cityward_model::{City, Event};

#[derive(Parser)]
struct Args {
    /// Polygon zones.
    #[arg(long, default_value_t = 10_000)]
    zones: usize,
    /// Vertices per zone (±5).
    #[arg(long, default_value_t = 50)]
    vertices: usize,
    /// Tracked vehicles.
    #[arg(long, default_value_t = 100_000)]
    vehicles: usize,
    /// Fixes per vehicle.
    #[arg(long, default_value_t = 30)]
    fixes: usize,
    /// Seconds between a vehicle's fixes.
    #[arg(long, default_value_t = 1)]
    interval: u64,
    /// Engine threads (vehicles are split between them by key).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Which of the three rules to run (comma-separated: enter, exit, dwell).
    #[arg(long, default_value = "enter,exit,dwell")]
    rules: String,
    /// Instead of the geofence run: prime this many absence timers (one heartbeat per
    /// source), report memory per timer and the time to checkpoint them.
    #[arg(long)]
    absence_keys: Option<usize>,
    /// Write the figures as JSON here.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

const BOX: (f64, f64, f64, f64) = (121.40, 29.70, 121.80, 30.00);
const M_PER_DEG_LAT: f64 = 111_320.0;

fn star(rng: &mut SplitMix64, vertices: usize) -> Polygon {
    let (cx, cy) = (rng.range(BOX.0, BOX.2), rng.range(BOX.1, BOX.3));
    let radius = rng.range(50.0, 400.0);
    let n = vertices - 5 + (rng.next_u64() % 11) as usize;
    let m_per_deg_lon = M_PER_DEG_LAT * cy.to_radians().cos();
    let ring: Vec<Point> = (0..n)
        .map(|i| {
            let a = (i as f64 + rng.range(0.0, 0.8)) / n as f64 * std::f64::consts::TAU;
            let r = radius * rng.range(0.4, 1.0);
            (cx + r * a.cos() / m_per_deg_lon, cy + r * a.sin() / M_PER_DEG_LAT)
        })
        .collect();
    Polygon::new(ring, vec![])
}

fn city(args: &Args) -> Result<City> {
    let mut rng = SplitMix64(7);
    let zones = (0..args.zones)
        .map(|i| Zone {
            id: format!("z{i}"),
            name: format!("zone {i}"),
            kind: "fence".into(),
            geometry: Geometry::Polygon(star(&mut rng, args.vertices)),
            width_m: None,
            properties: Default::default(),
        })
        .collect();
    Ok(City::from_parts(vec![], vec![], zones, vec![], vec![], vec![])?)
}

/// Vehicles driving straight lines (bouncing off the box) at 20–60 km/h, a fix every interval,
/// in time order across vehicles.
fn events(args: &Args) -> Vec<Event> {
    let mut rng = SplitMix64(11);
    let start = Utc.with_ymd_and_hms(2026, 11, 22, 8, 0, 0).unwrap();
    struct V {
        p: Point,
        v: Point,
    }
    let mut vehicles: Vec<V> = (0..args.vehicles)
        .map(|_| {
            let speed = rng.range(20.0, 60.0) / 3.6 * args.interval as f64; // metres per fix
            let a = rng.range(0.0, std::f64::consts::TAU);
            let lat = rng.range(BOX.1, BOX.3);
            let m_per_deg_lon = M_PER_DEG_LAT * lat.to_radians().cos();
            V {
                p: (rng.range(BOX.0, BOX.2), lat),
                v: (speed * a.cos() / m_per_deg_lon, speed * a.sin() / M_PER_DEG_LAT),
            }
        })
        .collect();
    let sources: Vec<String> = (0..args.vehicles).map(|i| format!("veh-{i:06}")).collect();
    let mut out = Vec::with_capacity(args.vehicles * args.fixes);
    let interval_ms = args.interval as i64 * 1000;
    let step_ms = interval_ms / args.vehicles.max(1) as i64;
    for f in 0..args.fixes {
        for (i, v) in vehicles.iter_mut().enumerate() {
            v.p.0 += v.v.0;
            v.p.1 += v.v.1;
            if v.p.0 < BOX.0 || v.p.0 > BOX.2 {
                v.v.0 = -v.v.0;
            }
            if v.p.1 < BOX.1 || v.p.1 > BOX.3 {
                v.v.1 = -v.v.1;
            }
            let t = start + chrono::Duration::milliseconds(f as i64 * interval_ms + i as i64 * step_ms);
            let mut e = Event::new(sources[i].clone(), "gps", t).at(v.p.0, v.p.1);
            e.id = format!("e{f}-{i}");
            out.push(e);
        }
    }
    out
}

const RULES: &str = r#"
rules:
  - id: fence-enter
    kind: geofence
    when: 'event.kind == "gps"'
    zone_kinds: [fence]
    on: enter
    category: bench.enter
  - id: fence-exit
    kind: geofence
    when: 'event.kind == "gps"'
    zone_kinds: [fence]
    on: exit
    category: bench.exit
  - id: fence-dwell
    kind: geofence
    when: 'event.kind == "gps"'
    zone_kinds: [fence]
    on: dwell
    dwell: 2m
    category: bench.dwell
"#;

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// One absence rule over `n` heartbeat sources: memory per timer, processing rate, and the
/// cost of a checkpoint of that state.
fn absence(n: usize) -> Result<()> {
    let city = Arc::new(City::from_parts(vec![], vec![], vec![], vec![], vec![], vec![])?);
    let rules = compile_rules(
        "rules:\n  - {id: offline, kind: absence, when: 'event.kind == \"heartbeat\"', for: 15m, category: device.offline}\n",
        None,
        &city,
    )?;
    let start = Utc.with_ymd_and_hms(2026, 11, 22, 8, 0, 0).unwrap();
    // Events are made in chunks so their own memory does not count.
    let mut engine = Engine::new(EngineConfig::default(), city, rules);
    let before = rss_mib();
    let t0 = Instant::now();
    let mut made = 0;
    while made < n {
        let chunk: Vec<Event> = (made..(made + 100_000).min(n))
            .map(|i| {
                let mut e = Event::new(format!("hb-{i:07}"), "heartbeat", start + chrono::Duration::microseconds(i as i64));
                e.id = format!("01JD{i:022}");
                e
            })
            .collect();
        for e in &chunk {
            engine.process(e);
        }
        made += chunk.len();
    }
    let secs = t0.elapsed().as_secs_f64();
    let after = rss_mib();
    let st = engine.stats();
    // A node takes the snapshot on its detection thread (the pause) and writes it elsewhere.
    let t1 = Instant::now();
    let snapshot = engine.snapshot();
    let pause_ms = t1.elapsed().as_secs_f64() * 1e3;
    let bytes = serde_json::to_vec(&snapshot.into_checkpoint())?;
    let cp_secs = t1.elapsed().as_secs_f64();
    println!(
        "absence: {n} keys, {} timers, {:.0} events/s; RSS +{:.0} MiB = {:.0} bytes per timer; checkpoint {:.2} s ({pause_ms:.0} ms of it taking the snapshot), {:.0} MiB JSON",
        st.timers,
        n as f64 / secs,
        after - before,
        (after - before) * 1048576.0 / n as f64,
        cp_secs,
        bytes.len() as f64 / 1048576.0
    );
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(n) = args.absence_keys {
        return absence(n);
    }
    let t0 = Instant::now();
    let city = Arc::new(city(&args)?);
    let events = events(&args);
    println!(
        "Built {} zones and {} events of {} vehicles in {:.1} s.",
        city.zones.len(),
        events.len(),
        args.vehicles,
        t0.elapsed().as_secs_f64()
    );
    let threads = args.threads.max(1);
    let wanted: Vec<String> = args.rules.split(',').map(|r| format!("fence-{}", r.trim())).collect();
    let rules: Vec<_> = compile_rules(RULES, None, &city)?
        .into_iter()
        .filter(|r| wanted.contains(&r.spec.id))
        .collect();
    // Engines (with their zone indexes) are built before the clock starts.
    let engines: Vec<Engine> = (0..threads)
        .map(|_| Engine::new(EngineConfig::default(), city.clone(), rules.clone()))
        .collect();
    // Split by key: vehicle i goes to engine i % threads; each part stays in time order.
    let parts: Vec<Vec<&Event>> = (0..threads)
        .map(|p| {
            events
                .iter()
                .enumerate()
                .filter(|(i, _)| (i % args.vehicles) % threads == p)
                .map(|(_, e)| e)
                .collect()
        })
        .collect();
    let started = Instant::now();
    let results: Vec<(u64, [u64; 3])> = std::thread::scope(|s| {
        let handles: Vec<_> = engines
            .into_iter()
            .zip(&parts)
            .map(|(mut engine, part)| {
                s.spawn(move || {
                    let mut counts = [0u64; 3];
                    let mut n = 0u64;
                    for chunk in part.chunks(4096) {
                        for e in chunk {
                            engine.process(e);
                        }
                        n += chunk.len() as u64;
                        for out in engine.drain() {
                            if let Output::Raised(a) = out {
                                let i = match a.rule.as_str() {
                                    "fence-enter" => 0,
                                    "fence-exit" => 1,
                                    _ => 2,
                                };
                                counts[i] += 1;
                            }
                        }
                    }
                    (n, counts)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("engine thread")).collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let n: u64 = results.iter().map(|r| r.0).sum();
    let mut alerts = [0u64; 3];
    for (_, c) in &results {
        for i in 0..3 {
            alerts[i] += c[i];
        }
    }
    let rate = n as f64 / elapsed;
    let rss = peak_rss_mib();
    println!(
        "threads={threads} events={n} time={elapsed:.2}s rate={rate:.0} events/s alerts: enter={} exit={} dwell={} peak_rss={rss:.0} MiB",
        alerts[0], alerts[1], alerts[2]
    );
    if let Some(out) = &args.out {
        let json = serde_json::json!({
            "threads": threads, "zones": args.zones, "vehicles": args.vehicles, "events": n,
            "seconds": elapsed, "events_per_s": rate,
            "alerts": {"enter": alerts[0], "exit": alerts[1], "dwell": alerts[2]},
            "peak_rss_mib": rss,
        });
        std::fs::write(out, serde_json::to_string_pretty(&json)?)?;
    }
    Ok(())
}
