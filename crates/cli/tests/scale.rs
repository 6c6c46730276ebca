//! One node's intake and detection shared by two `cityward serve` processes (`[scale]`)
//! over a real nats-server and PostgreSQL, against one ordinary process given the same
//! events.
//!
//! Proves: the two processes raise exactly the alerts the single process raises — same
//! ids, same repeat counts, same clears — while a process joins mid-stream (partitions and
//! their rule state move to it), while a rule is added at one process and reaches the
//! other, while one process is killed with SIGKILL mid-flow and restarted (its
//! partitions go to the other from their last saved state; what it had taken in but not
//! yet published is published after the restart, and applied once), and while the other
//! is stopped with SIGTERM (it hands its partitions on at once).
//! Needs nats-server and PostgreSQL (skipped without, unless CITYWARD_REQUIRE_SERVICES).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cityward_tier::testkit::{available, NatsServer};
use common::{cityward, free_port, wait_until, Served};
use serde_json::{json, Value};

fn postgres_url() -> Option<String> {
    if std::net::TcpStream::connect(("127.0.0.1", 5432)).is_ok() {
        return Some("postgresql://postgres@127.0.0.1:5432/test".into());
    }
    assert!(std::env::var("CITYWARD_REQUIRE_SERVICES").is_err(), "PostgreSQL is not running on 127.0.0.1:5432; start it (.ci/run does)");
    None
}

/// A process of node `ward` (not started), with `config` added to its file.
fn process(dir: &Path, name: &str, config: String) -> Served {
    let port = free_port();
    let path = dir.join(format!("{name}.toml"));
    let data = dir.join(name);
    std::fs::write(
        &path,
        format!("[node]\nname = \"ward\"\ndata_dir = {:?}\nlisten = \"127.0.0.1:{port}\"\n[auth]\nopen_ingest = true\n{config}", data.display().to_string()),
    )
    .unwrap();
    Served::new(name, path, port)
}

/// What this test asks of a process.
trait Detecting {
    fn add_admin(&self);
    fn put_rule(&self, rule: &Value);
    fn detect(&self) -> Value;
    fn events_detected(&self) -> u64;
    fn rules_running(&self) -> u64;
    fn held(&self) -> Vec<u64>;
    /// Every alert: id → (rule, key, repeat count, cleared at).
    fn alerts(&self) -> BTreeMap<String, (String, String, u64, String)>;
}

impl Detecting for Served {
    fn add_admin(&self) {
        let out = cityward()
            .args(["user", "add", "--username", "admin", "--role", "admin", "--password", "admin-pass", "--config"])
            .arg(&self.config)
            .output()
            .unwrap();
        assert!(out.status.success(), "user add: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn put_rule(&self, rule: &Value) {
        let (status, body) = self.call("PUT", &format!("/api/v1/rules/{}", rule["id"].as_str().unwrap()), Some(rule.clone()));
        assert!(status == 200 || status == 201, "rule at {}: {body}", self.name);
    }

    fn detect(&self) -> Value {
        let (status, body) = self.call("GET", "/api/v1/detect/status", None);
        assert_eq!(status, 200, "{body}");
        body
    }

    fn events_detected(&self) -> u64 {
        self.detect()["stats"]["events"].as_u64().unwrap_or(0)
    }

    fn rules_running(&self) -> u64 {
        self.detect()["rules"].as_u64().unwrap_or(0)
    }

    fn held(&self) -> Vec<u64> {
        self.detect()["scale"]["held"].as_array().map(|a| a.iter().filter_map(Value::as_u64).collect()).unwrap_or_default()
    }

    fn alerts(&self) -> BTreeMap<String, (String, String, u64, String)> {
        self.all_alerts()
            .into_iter()
            .map(|a| {
                let text = |k: &str| a[k].as_str().unwrap_or("").to_string();
                (text("id"), (text("rule"), text("key"), a["count"].as_u64().unwrap_or(1), text("cleared_at")))
            })
            .collect()
    }
}

/// Readings of `sources` smoke detectors every 10 s for `rounds` rounds from `t0`, sorted
/// by time: temperatures that rise over the threshold and fall back, alarms now and then.
fn readings(sources: usize, rounds: usize, t0: chrono::DateTime<chrono::Utc>, lon: f64, lat: f64) -> Vec<Value> {
    let mut out = Vec::new();
    for r in 0..rounds {
        for s in 0..sources {
            let phase = (r + s * 3) % 12;
            let temperature = [30.0, 50.0, 70.0, 90.0, 85.0, 75.0, 65.0, 55.0, 45.0, 35.0, 30.0, 30.0][phase];
            let time = t0 + chrono::Duration::seconds(r as i64 * 10) + chrono::Duration::milliseconds(s as i64);
            out.push(json!({
                "id": format!("s{s:02}-r{r:03}"), "source": format!("smoke-{s:02}"), "kind": "smoke",
                "time": cityward_model::format_time(&time), "lon": lon, "lat": lat,
                "attrs": {"alarm": (r + s) % 9 == 0, "temperature_c": temperature},
            }));
        }
    }
    out
}

fn source_index(event: &Value) -> usize {
    event["source"].as_str().unwrap()[6..].parse().unwrap()
}

#[test]
fn two_detection_processes_raise_the_alerts_one_raises_through_a_join_a_rule_change_a_kill_and_a_stop() {
    if !available() {
        eprintln!("skipped: nats-server is not installed");
        return;
    }
    let Some(pg) = postgres_url() else {
        eprintln!("skipped: PostgreSQL is not running on 127.0.0.1:5432");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let city = dir.join("city");
    let out = cityward().args(["city", "generate", "--size", "small", "--seed", "9", "--out"]).arg(&city).output().unwrap();
    assert!(out.status.success());
    let nats = NatsServer::start("ward", dir, None);
    let schema = format!("cw_scale_{}_{}", std::process::id(), chrono::Utc::now().timestamp_micros());

    // Each source's readings reach the stream through one process, but the two processes'
    // batches interleave: a source's readings may come after later readings of others, by
    // less than the lateness allowed.
    let detect = "[detect]\nclock = \"event\"\nlateness = \"10m\"\ncheckpoint_every = \"1s\"\n";
    let city_line = format!("[city]\ndir = {:?}\n", city.display().to_string());
    let mut single = process(dir, "single", format!("{city_line}{detect}"));
    single.add_admin();
    single.start();
    let scaled = |member: &str| {
        format!(
            "{city_line}{detect}[state]\nbackend = \"postgres\"\nurl = \"{pg}\"\nschema = \"{schema}\"\n\
             [scale]\nenabled = true\nnats = \"{}\"\npartitions = 8\nmember = \"{member}\"\nlease = \"1s\"\n",
            nats.url()
        )
    };
    let mut a = process(dir, "a", scaled("a"));
    let mut b = process(dir, "b", scaled("b"));
    a.add_admin();
    a.start();

    let hot = json!({"id": "hot", "kind": "threshold", "when": "event.kind == \"smoke\"", "attr": "temperature_c",
                     "above": 60, "clear": 45, "count": 2, "severity": "high", "category": "fire.heat"});
    let alarm = json!({"id": "alarm", "kind": "match", "when": "event.kind == \"smoke\" && event.attrs.alarm == true",
                       "key": "event.source", "severity": "high", "category": "fire.smoke"});
    single.put_rule(&hot);
    a.put_rule(&hot);

    let sources = 40;
    let t0 = chrono::Utc::now() - chrono::Duration::hours(2);
    let (lon, lat) = (city_point(&city).0, city_point(&city).1);
    let all = readings(sources, 60, t0, lon, lat);
    let per_round = sources;
    let (first, rest) = all.split_at(20 * per_round);
    let (second, rest) = rest.split_at(20 * per_round);
    let (third, fourth) = rest.split_at(10 * per_round);

    // One process alone, then a second joins: partitions and their rule state move.
    for chunk in first.chunks(100) {
        single.post_events(chunk).unwrap();
        a.post_events(chunk).unwrap();
    }
    let total = first.len() as u64;
    wait_until("the first events detected at the single process", Duration::from_secs(30), || single.events_detected() == total);
    wait_until("the first events detected at a", Duration::from_secs(30), || a.events_detected() == total);
    assert_eq!(a.held().len(), 8, "a alone holds every partition");
    b.start();
    wait_until("b holds partitions", Duration::from_secs(30), || {
        let (ha, hb) = (a.held(), b.held());
        !hb.is_empty() && !ha.is_empty() && ha.len() + hb.len() == 8 && ha.iter().all(|p| !hb.contains(p))
    });
    eprintln!("after the join: a holds {:?}, b holds {:?}", a.held(), b.held());

    // A rule added at b reaches a.
    single.put_rule(&alarm);
    b.put_rule(&alarm);
    wait_until("the new rule running at a", Duration::from_secs(10), || a.rules_running() == 2);

    // Each source's later readings go through one of the two processes.
    let split = |events: &[Value]| -> (Vec<Value>, Vec<Value>) { events.iter().cloned().partition(|e| source_index(e) % 2 == 0) };
    let (to_a, to_b) = split(second);
    for chunk in second.chunks(100) {
        single.post_events(chunk).unwrap();
    }
    for (chunk_a, chunk_b) in to_a.chunks(50).zip(to_b.chunks(50)) {
        a.post_events(chunk_a).unwrap();
        b.post_events(chunk_b).unwrap();
    }
    let total = total + second.len() as u64;
    let both = |a: &Served, b: &Served| a.events_detected() + b.events_detected();
    wait_until("the second events detected", Duration::from_secs(30), || single.events_detected() == total && both(&a, &b) == total);

    // b is killed right after taking events in; a takes its partitions from their saved
    // state, and b publishes what it had not yet published once restarted.
    let (to_a, to_b) = split(third);
    for chunk in third.chunks(100) {
        single.post_events(chunk).unwrap();
    }
    for (chunk_a, chunk_b) in to_a.chunks(50).zip(to_b.chunks(50)) {
        b.post_events(chunk_b).unwrap();
        a.post_events(chunk_a).unwrap();
    }
    b.sigkill();
    wait_until("a holds every partition after b died", Duration::from_secs(30), || a.held().len() == 8);
    b.start();
    let total = total + third.len() as u64;
    wait_until("every event detected once b is back", Duration::from_secs(60), || {
        single.events_detected() == total && both(&a, &b) == total
    });
    assert!(!b.held().is_empty(), "b took partitions back after its restart");

    // a is stopped as an operator would: it hands its partitions on at once, and b goes on
    // alone with every source.
    a.terminate();
    let took = wait_until("b holds every partition after a stopped", Duration::from_secs(30), || b.held().len() == 8);
    eprintln!("b held every partition {took:?} after a stopped");
    for chunk in fourth.chunks(100) {
        single.post_events(chunk).unwrap();
        b.post_events(chunk).unwrap();
    }
    let total = total + fourth.len() as u64;
    wait_until("every event detected at b alone", Duration::from_secs(30), || single.events_detected() == total && b.events_detected() == total);
    // Alerts are stored shortly after detection.
    let expected = single.alerts();
    let of = |rule: &str| expected.values().filter(|a| a.0 == rule).count();
    let repeats: u64 = expected.values().map(|a| a.2 - 1).sum();
    eprintln!("one process: {} hot, {} alarm alerts, {repeats} repeats counted on them", of("hot"), of("alarm"));
    assert!(of("hot") > 0 && of("alarm") > 0 && repeats > 0, "threshold and match alerts, with repeats");
    let mut last = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        last = b.alerts();
        if last == expected {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let missing: Vec<_> = expected.iter().filter(|(id, row)| last.get(*id) != Some(*row)).take(3).collect();
    let extra: Vec<_> = last.keys().filter(|id| !expected.contains_key(*id)).take(3).collect();
    assert!(missing.is_empty() && extra.is_empty(), "{} alerts from one process, {} from two; differing e.g. {missing:?}, extra {extra:?}", expected.len(), last.len());

    let _ = Command::new("psql").args([pg.as_str(), "-qc", &format!("DROP SCHEMA IF EXISTS {schema} CASCADE")]).stderr(Stdio::null()).status();
}

/// A point inside the city's first grid.
fn city_point(city: &Path) -> (f64, f64) {
    let grids: Value = serde_json::from_str(&std::fs::read_to_string(city.join("grids.geojson")).unwrap()).unwrap();
    let ring = grids["features"][0]["geometry"]["coordinates"][0].as_array().unwrap();
    let n = (ring.len() - 1) as f64;
    let sum = ring[..ring.len() - 1].iter().fold((0.0, 0.0), |(x, y), p| (x + p[0].as_f64().unwrap(), y + p[1].as_f64().unwrap()));
    (sum.0 / n, sum.1 / n)
}
