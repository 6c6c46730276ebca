//! Detection end to end with the `cityward` binary: `replay` is deterministic whatever the
//! thread count and raises the alerts the simulator scripts; `rules test` and `rules check`
//! report per rule and per line; and a node killed with SIGKILL while detecting resumes
//! from its checkpoint without missing or doubling an alert (compared with `replay`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn cityward() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cityward"))
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// One rule of each kind the simulated hour can trigger.
const RULES: &str = r#"rules:
  - id: speeding
    kind: speed
    when: event.kind == "gps"
    limit_kmh: 80
    category: traffic.speeding
  - id: depot-enter
    kind: geofence
    when: event.kind == "gps"
    zones: [depot-north, depot-south]
    on: enter
    category: hazmat.depot
  - id: depot-dwell
    kind: geofence
    when: event.kind == "gps"
    zones: [depot-north, depot-south]
    on: dwell
    dwell: 10m
    category: hazmat.dwell
  - id: off-corridor
    kind: corridor
    when: event.kind == "gps" && has(event.attrs.route)
    corridor_attr: route
    category: traffic.corridor
  - id: heat
    kind: threshold
    when: event.kind == "smoke"
    attr: temperature_c
    above: 60
    severity: high
    category: fire.heat
  - id: flooding
    kind: threshold
    when: event.kind == "water_level"
    attr: value
    above: 0.3
    severity: high
    category: flood.water
  - id: gas-high
    kind: threshold
    when: event.kind == "gas"
    attr: value
    above: 25
    severity: critical
    category: hazard.gas
  - id: fire-spread
    kind: sequence
    key: event.grid
    first: event.kind == "smoke" && event.attrs.alarm == true
    then: event.kind == "smoke" && event.attrs.temperature_c > 60
    within: 15m
    severity: critical
    category: fire.spread
  - id: busy-grid
    kind: count
    when: event.kind == "plate_read"
    group: grid
    count: 30
    window: 5m
    category: traffic.busy
  - id: device-silent
    kind: absence
    when: event.kind == "heartbeat"
    for: 15m
    category: device.offline
  - id: wanted
    kind: hotlist
    when: event.kind == "plate_read"
    list: wanted
    attr: plate
    key: event.attrs.plate
    severity: high
    category: police.wanted
  - id: smoke-alarm
    kind: match
    when: event.kind == "smoke" && event.attrs.alarm == true
    severity: high
    category: fire.smoke
"#;

const RULE_IDS: [&str; 12] = [
    "speeding",
    "depot-enter",
    "depot-dwell",
    "off-corridor",
    "heat",
    "flooding",
    "gas-high",
    "fire-spread",
    "busy-grid",
    "device-silent",
    "wanted",
    "smoke-alarm",
];

/// Rules whose alerts come only from events, never from timers.
const NO_TIMERS: [&str; 10] = [
    "speeding",
    "depot-enter",
    "off-corridor",
    "heat",
    "flooding",
    "gas-high",
    "fire-spread",
    "busy-grid",
    "wanted",
    "smoke-alarm",
];

const WANTED_PLATE: &str = "浙B7Q5X9";

/// A generated city, an hour of simulated events, the rule file and the hotlist file.
struct Fixture {
    dir: tempfile::TempDir,
    city: PathBuf,
    events: PathBuf,
    rules: PathBuf,
    hotlists: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let city = dir.path().join("city");
    let events = dir.path().join("events.ndjson");
    run_ok(cityward().args(["city", "generate", "--size", "small", "--seed", "5", "--out"]).arg(&city));
    run_ok(
        cityward()
            .args(["simulate", "--duration", "1h", "--start", "2026-11-20T00:00:00Z", "--city"])
            .arg(&city)
            .arg("--out")
            .arg(&events),
    );
    assert!(
        cityward_sim::HOTLIST_PLATES.contains(&WANTED_PLATE),
        "the simulator's first hotlisted plate changed"
    );
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, RULES).unwrap();
    let hotlists = dir.path().join("hotlists.json");
    std::fs::write(
        &hotlists,
        json!({"wanted": [{"value": WANTED_PLATE, "reason": "case 2026-0042", "owner": "traffic",
                           "added": "2026-01-01T00:00:00Z"}]})
        .to_string(),
    )
    .unwrap();
    Fixture {
        dir,
        city,
        events,
        rules,
        hotlists,
    }
}

impl Fixture {
    fn replay(&self, events: &Path, out: &Path, threads: usize) -> Vec<Value> {
        run_ok(
            cityward()
                .args(["replay", "--quiet", "--lateness", "5s", "--horizon", "0s", "--threads"])
                .arg(threads.to_string())
                .arg("--city")
                .arg(&self.city)
                .arg("--rules")
                .arg(&self.rules)
                .arg("--hotlists")
                .arg(&self.hotlists)
                .arg("--events")
                .arg(events)
                .arg("--out")
                .arg(out),
        );
        std::fs::read_to_string(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn read_events(path: &Path) -> Vec<Value> {
    BufReader::new(std::fs::File::open(path).unwrap())
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect()
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

#[test]
fn replay_is_deterministic_and_raises_the_scripted_incidents() {
    let f = fixture();
    let out = run_ok(cityward().args(["rules", "check", "--city"]).arg(&f.city).arg(&f.rules));
    assert!(String::from_utf8_lossy(&out.stdout).contains("12 rules, all valid"), "{out:?}");

    let dir = f.dir.path();
    let a = f.replay(&f.events, &dir.join("a.ndjson"), 1);
    f.replay(&f.events, &dir.join("b.ndjson"), 1);
    f.replay(&f.events, &dir.join("c.ndjson"), 3);
    let bytes = std::fs::read(dir.join("a.ndjson")).unwrap();
    assert!(!bytes.is_empty());
    assert_eq!(bytes, std::fs::read(dir.join("b.ndjson")).unwrap(), "two runs differ");
    assert_eq!(bytes, std::fs::read(dir.join("c.ndjson")).unwrap(), "1 and 3 threads differ");

    // Every alert is complete; geofence and corridor alerts name their zone.
    let mut per_rule: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for alert in &a {
        for field in ["id", "rule", "key", "time", "fired_at", "severity", "category", "grid"] {
            assert!(alert[field].as_str().is_some_and(|s| !s.is_empty()), "no {field}: {alert}");
        }
        assert!(alert["lon"].is_f64() && alert["lat"].is_f64(), "no place: {alert}");
        assert!(!ids(&alert["evidence"]).is_empty(), "no evidence: {alert}");
        assert!(alert["count"].as_u64().unwrap() >= 1, "{alert}");
        let rule = alert["rule"].as_str().unwrap();
        assert!(RULE_IDS.contains(&rule), "{alert}");
        if ["depot-enter", "depot-dwell", "off-corridor"].contains(&rule) {
            assert!(alert["zone"].as_str().is_some_and(|z| !z.is_empty()), "no zone: {alert}");
        }
        if rule.starts_with("depot-") {
            assert!(["depot-north", "depot-south"].contains(&alert["zone"].as_str().unwrap()), "{alert}");
        }
        per_rule.entry(rule.to_string()).or_default().push(alert.clone());
    }
    let counts: BTreeMap<&str, usize> = per_rule.iter().map(|(r, v)| (r.as_str(), v.len())).collect();
    let fired = counts.len();
    assert!(fired >= 10, "only {fired} of 12 rules raised alerts: {counts:?}");

    // What the simulator scripts in its first cycle: the hotlisted vehicle, a fire, a flood,
    // a gas leak; and some speeders.
    let events = read_events(&f.events);
    let wanted_reads: Vec<String> = events
        .iter()
        .filter(|e| e["kind"] == "plate_read" && e["attrs"]["plate"] == WANTED_PLATE)
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert!(!wanted_reads.is_empty(), "the simulated hour has no read of the hotlisted plate");
    let wanted = per_rule.get("wanted").expect("no hotlist alert");
    assert_eq!(wanted.len(), 1, "{wanted:#?}");
    assert_eq!(wanted[0]["key"], WANTED_PLATE);
    assert_eq!(wanted[0]["severity"], "high");
    assert_eq!(wanted[0]["category"], "police.wanted");
    assert_eq!(ids(&wanted[0]["evidence"]), wanted_reads, "every read of the plate is evidence");
    assert_eq!(wanted[0]["count"].as_u64(), Some(wanted_reads.len() as u64));
    assert_eq!(wanted[0]["detail"]["reason"], "case 2026-0042");
    for rule in ["smoke-alarm", "heat", "fire-spread", "flooding", "gas-high", "speeding"] {
        assert!(per_rule.contains_key(rule), "no `{rule}` alert: {counts:?}");
    }
    // The fire: the alarm comes from a smoke sensor, and heat follows in the same grid.
    let alarm = &per_rule["smoke-alarm"][0];
    assert!(alarm["key"].as_str().unwrap().starts_with("smoke-"), "{alarm}");
    let spread = &per_rule["fire-spread"][0];
    assert!(per_rule["heat"].iter().any(|h| h["grid"] == spread["key"]), "{spread}");
    assert_eq!(spread["severity"], "critical");
    let flood = &per_rule["flooding"][0];
    assert!(flood["key"].as_str().unwrap().starts_with("water-"), "{flood}");
    assert!(flood["detail"]["value"].as_f64().unwrap() > 0.3, "{flood}");
    let gas = &per_rule["gas-high"][0];
    assert!(gas["key"].as_str().unwrap().starts_with("gas-"), "{gas}");
    assert_eq!(gas["severity"], "critical");
    let speed = &per_rule["speeding"][0];
    assert!(speed["detail"]["speed_kmh"].as_f64().unwrap() > 80.0, "{speed}");

    // `rules test`: one table row per rule with the alert count replay found.
    let out = run_ok(
        cityward()
            .args(["rules", "test", "--city"])
            .arg(&f.city)
            .arg("--hotlists")
            .arg(&f.hotlists)
            .arg("--events")
            .arg(&f.events)
            .arg(&f.rules),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let header = stdout.lines().find(|l| l.split_whitespace().collect::<Vec<_>>() == ["rule", "alerts", "keys"]);
    assert!(header.is_some(), "no table header: {stdout}");
    for rule in RULE_IDS {
        let row = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(rule))
            .unwrap_or_else(|| panic!("no row for {rule}: {stdout}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols.len(), 3, "{row}");
        let n: usize = cols[1].parse().unwrap();
        assert_eq!(n, counts.get(rule).copied().unwrap_or(0), "{rule}: {stdout}");
        let keys: usize = cols[2].parse().unwrap();
        assert!(keys <= n && (n == 0) == (keys == 0), "{row}");
    }
    assert!(stdout.contains(&format!("{} events", events.len())), "{stdout}");

    // `rules check` on broken files: non-zero exit, naming the file and the line.
    let broken: [(&str, String, usize, &str); 3] = [
        ("unknown zone", RULES.replace("zones: [depot-north, depot-south]\n    on: enter", "zones: [depot-north, depot-east]\n    on: enter"), 10, "depot-east"),
        ("bad CEL", RULES.replace("when: event.kind == \"water_level\"", "when: event.kind == = \"water_level\""), 34, "`when`"),
        ("unknown key", RULES.replace("    limit_kmh: 80\n", "    limit_kmh: 80\n    limit_mph: 50\n"), 6, "limit_mph"),
    ];
    for (what, text, line, needle) in broken {
        let path = dir.join(format!("broken-{}.yaml", what.replace(' ', "-")));
        std::fs::write(&path, text).unwrap();
        let out = cityward().args(["rules", "check", "--city"]).arg(&f.city).arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: accepted: {}", String::from_utf8_lossy(&out.stdout));
        assert!(stderr.contains(&path.display().to_string()), "{what}: file not named: {stderr}");
        assert!(stderr.contains(&format!("line {line}")), "{what}: line {line} not named: {stderr}");
        assert!(stderr.contains(needle), "{what}: `{needle}` not named: {stderr}");
    }
}

// ---------------------------------------------------------------------------------------
// A node killed during detection.

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A node process, killed (SIGKILL) when dropped so a failing test leaves none behind.
struct NodeProcess(Child);

impl NodeProcess {
    fn sigkill(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_node(config: &Path, port: u16) -> NodeProcess {
    let child = cityward()
        .args(["serve", "--config"])
        .arg(config)
        .env("CITYWARD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "node did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    NodeProcess(child)
}

fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::config::Config::builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            .build(),
    )
}

fn login(base: &str) -> String {
    let mut r = agent()
        .post(&format!("{base}/api/v1/login"))
        .header("Content-Type", "application/json")
        .send(json!({"username": "admin", "password": "admin-pass"}).to_string().as_bytes())
        .unwrap();
    let body: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    body["token"].as_str().unwrap_or_else(|| panic!("login failed: {body}")).to_string()
}

fn get(base: &str, path: &str, token: &str) -> Value {
    let mut r = agent()
        .get(&format!("{base}{path}"))
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap();
    assert_eq!(r.status(), 200, "GET {path}");
    serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap()
}

/// Posts one NDJSON batch: `Ok(outcome)` when answered 200, `Err` otherwise.
fn post_batch(base: &str, lines: &[String]) -> Result<Value, String> {
    let body = lines.join("\n");
    match agent()
        .post(&format!("{base}/api/v1/events"))
        .header("Content-Type", "application/x-ndjson")
        .send(body.as_bytes())
    {
        Ok(mut r) if r.status() == 200 => Ok(serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap()),
        Ok(r) => Err(format!("status {}", r.status())),
        Err(e) => Err(e.to_string()),
    }
}

fn checkpoint_seq(data: &Path) -> u64 {
    std::fs::read(data.join("detect").join("checkpoint.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["next_seq"].as_u64())
        .unwrap_or(0)
}

/// Every alert of the node, paging through `GET /api/v1/alerts`.
fn all_alerts(base: &str, token: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut path = "/api/v1/alerts?limit=1000".to_string();
    loop {
        let page = get(base, &path, token);
        out.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => path = format!("/api/v1/alerts?limit=1000&cursor={next}"),
            None => return out,
        }
    }
}

fn by_rule(alerts: &[Value]) -> BTreeMap<String, BTreeSet<String>> {
    let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for a in alerts {
        let rule = a["rule"].as_str().unwrap();
        if NO_TIMERS.contains(&rule) {
            map.entry(rule.to_string()).or_default().insert(a["id"].as_str().unwrap().to_string());
        }
    }
    map
}

#[test]
fn a_node_killed_while_detecting_raises_exactly_the_alerts_of_a_replay() {
    let f = fixture();
    let dir = f.dir.path();
    // The simulated hour, then one event a minute later so that the node's watermark
    // passes every simulated event (replay ends by moving it to the newest event).
    let mut lines: Vec<String> = std::fs::read_to_string(&f.events).unwrap().lines().map(String::from).collect();
    let newest = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["time"].as_str().unwrap().to_string())
        .filter_map(|t| cityward_model::parse_time(&t))
        .max()
        .unwrap();
    let tail_time = cityward_model::format_time(&(newest + chrono::Duration::seconds(60)));
    lines.push(
        json!({"id": "tail-1", "source": "tail-probe", "kind": "heartbeat", "time": tail_time, "attrs": {"battery": 99.0}})
            .to_string(),
    );
    let events = dir.join("events-tail.ndjson");
    std::fs::write(&events, lines.join("\n") + "\n").unwrap();
    let total = lines.len() as u64;

    let data = dir.join("data");
    run_ok(
        cityward()
            .args(["user", "add", "--username", "admin", "--role", "admin", "--password", "admin-pass", "--data"])
            .arg(&data),
    );
    let port = free_port();
    let config = dir.join("cityward.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\ndata_dir = {data:?}\nlisten = \"127.0.0.1:{port}\"\n\
             [city]\ndir = {city:?}\n\
             [auth]\nopen_ingest = true\n\
             [dedup]\nreload_window = \"3650d\"\n\
             [detect]\nclock = \"event\"\ncheckpoint_every = \"1s\"\nlateness = \"5s\"\nrules = [{rules:?}]\n",
            data = data.display().to_string(),
            city = f.city.display().to_string(),
            rules = f.rules.display().to_string(),
        ),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");

    let mut node = start_node(&config, port);
    let token = login(&base);
    let mut r = agent()
        .post(&format!("{base}/api/v1/hotlists/wanted/entries"))
        .header("Authorization", &format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .send(
            json!({"value": WANTED_PLATE, "reason": "case 2026-0042", "owner": "traffic", "expires": "2027-01-01T00:00:00Z"})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.body_mut().read_to_string().unwrap());

    // Ingest in file order, 1000 events a batch, until the node is killed.
    let batches: Vec<Vec<String>> = lines.chunks(1000).map(|c| c.to_vec()).collect();
    let killed = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let parked = Arc::new(AtomicBool::new(false));
    let sender = {
        let (batches, killed, acked, parked, base) =
            (batches.clone(), killed.clone(), acked.clone(), parked.clone(), base.clone());
        std::thread::spawn(move || {
            for (i, batch) in batches.iter().enumerate() {
                // Two thirds in, wait for the kill (should detection lag behind), so that
                // it always comes mid-way.
                if acked.load(Ordering::SeqCst) >= total * 2 / 3 {
                    parked.store(true, Ordering::SeqCst);
                    while !killed.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                match post_batch(&base, batch) {
                    Ok(outcome) => {
                        assert_eq!(outcome["accepted"].as_u64(), Some(batch.len() as u64), "batch {i}: {outcome}");
                        acked.fetch_add(batch.len() as u64, Ordering::SeqCst);
                    }
                    Err(e) => {
                        assert!(killed.load(Ordering::SeqCst), "batch {i} failed before the kill: {e}");
                        return i;
                    }
                }
                std::thread::sleep(Duration::from_millis(60));
            }
            batches.len()
        })
    };
    // Kill once checkpoints cover a third of the events and at least 2500 events were
    // stored (and, most likely, applied) after the last checkpoint: those are applied
    // again after the restart, their alerts already stored.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let saved = checkpoint_seq(&data);
        let gap = (acked.load(Ordering::SeqCst) + 1).saturating_sub(saved);
        if saved >= total / 3 && (gap >= 2500 || parked.load(Ordering::SeqCst)) {
            break;
        }
        assert!(Instant::now() < deadline, "no checkpoint past {} events", total / 3);
        assert!(!sender.is_finished(), "the sender stopped before the kill");
        std::thread::sleep(Duration::from_millis(5));
    }
    killed.store(true, Ordering::SeqCst);
    node.sigkill();
    let resume_at = sender.join().unwrap();
    let at_kill = checkpoint_seq(&data);
    let acked_at_kill = acked.load(Ordering::SeqCst);
    assert!(resume_at < batches.len(), "the kill came after the last batch");

    // Restart; send the rest, from the batch that was in flight.
    let mut node = start_node(&config, port);
    let token = login(&base);
    let mut again = (0, 0);
    for batch in &batches[resume_at..] {
        let outcome = post_batch(&base, batch).unwrap();
        assert_eq!(outcome["rejected"], json!([]), "{outcome}");
        again.0 += outcome["accepted"].as_u64().unwrap();
        again.1 += outcome["duplicates"].as_u64().unwrap();
    }
    let resent: u64 = batches[resume_at..].iter().map(|b| b.len() as u64).sum();
    assert_eq!(again.0 + again.1, resent, "every event resent is stored or a duplicate");
    assert!(again.1 <= 1000, "only the batch in flight can hold duplicates: {again:?}");
    // Detection reaches the end of the WAL: every event stored once (sequence numbers
    // start at 1), and applied.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let st = get(&base, "/api/v1/detect/status", &token);
        let next = st["next_seq"].as_u64().unwrap();
        assert!(next <= total + 1, "more records than events: {st}");
        if next == total + 1 {
            break st;
        }
        assert!(Instant::now() < deadline, "detection stuck: {st}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status["rules"], 12, "{status}");
    std::thread::sleep(Duration::from_millis(1500));
    let st = get(&base, "/api/v1/detect/status", &token);
    assert_eq!(st["next_seq"].as_u64(), Some(total + 1), "{st}");
    let node_alerts = all_alerts(&base, &token);
    eprintln!(
        "{total} events; killed with {acked_at_kill} acknowledged and a checkpoint at {at_kill}; resumed at batch {resume_at} of {}; \
         after the restart {} accepted, {} duplicates; {} alerts stored",
        batches.len(),
        again.0,
        again.1,
        node_alerts.len()
    );
    node.sigkill();

    let replayed = f.replay(&events, &dir.join("replay.ndjson"), 1);
    let want = by_rule(&replayed);
    let got = by_rule(&node_alerts);
    assert!(want.len() >= 8, "replay raised too few kinds of alert: {want:?}");
    for rule in NO_TIMERS {
        let (w, g) = (want.get(rule).cloned().unwrap_or_default(), got.get(rule).cloned().unwrap_or_default());
        let missed: Vec<&String> = w.difference(&g).collect();
        let extra: Vec<&String> = g.difference(&w).collect();
        assert!(
            missed.is_empty() && extra.is_empty(),
            "rule {rule} (killed with checkpoint at {at_kill} of {total}, {acked_at_kill} acknowledged, resumed at batch {resume_at}): \
             {} alerts missed {missed:?}, {} extra {extra:?}",
            missed.len(),
            extra.len()
        );
    }
    // No alert doubled: ids are unique in the store, and repeats were counted once.
    let unique: BTreeSet<&str> = node_alerts.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(unique.len(), node_alerts.len());
    let stored: BTreeMap<&str, &Value> = node_alerts.iter().map(|a| (a["id"].as_str().unwrap(), a)).collect();
    for a in replayed.iter().filter(|a| NO_TIMERS.contains(&a["rule"].as_str().unwrap())) {
        let n = stored[a["id"].as_str().unwrap()];
        for field in ["rule", "key", "time", "fired_at", "severity", "category", "grid", "zone", "lon", "lat", "count", "evidence"] {
            assert_eq!(n[field], a[field], "{field} differs; node: {n}\nreplay: {a}");
        }
    }
}
