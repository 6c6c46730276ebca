//! The node acknowledges an ingest only once it is fsync'd: kill it with SIGKILL during
//! sustained ingest, restart it, and every acknowledged event is there exactly once.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn cityward() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cityward"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A node configuration on `port` with its data in `data`, open intake, plus `extra` TOML.
fn write_config(config: &Path, data: &Path, port: u16, extra: &str) {
    let text = format!(
        "[node]\ndata_dir = {:?}\nlisten = \"127.0.0.1:{port}\"\n[auth]\nopen_ingest = true\n{extra}",
        data.display().to_string()
    );
    std::fs::write(config, text).unwrap();
}

fn start_node(config: &Path, port: u16) -> Child {
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
    child
}

fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::config::Config::builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build(),
    )
}

fn batch(client: usize, n: usize, size: usize) -> (Vec<String>, String) {
    let time = cityward_model::format_time(&chrono::Utc::now());
    let ids: Vec<String> = (0..size).map(|i| format!("c{client}-b{n}-{i}")).collect();
    let body = ids
        .iter()
        .map(|id| format!(r#"{{"id":"{id}","source":"sensor-{client}","kind":"heartbeat","time":"{time}","attrs":{{"battery":87.5}}}}"#))
        .collect::<Vec<_>>()
        .join("\n");
    (ids, body)
}

fn sql_json(data: &Path, query: &str) -> serde_json::Value {
    let out = cityward()
        .args(["sql", "--json", "--max-rows", "100000000", "--data"])
        .arg(data)
        .arg(query)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn every_acknowledged_event_survives_sigkill_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let config = dir.path().join("cityward.toml");
    write_config(
        &config,
        &data,
        port,
        "[lake]\ncompact_every = \"1s\"\n[wal]\nsegment_bytes = 1048576\n",
    );
    let mut node = start_node(&config, port);
    let url = format!("http://127.0.0.1:{port}/api/v1/events");
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|client| {
            let (acked, stop, url) = (acked.clone(), stop.clone(), url.clone());
            std::thread::spawn(move || {
                let agent = agent();
                let mut sent = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (ids, body) = batch(client, n, 500);
                    n += 1;
                    match agent
                        .post(&url)
                        .header("Content-Type", "application/x-ndjson")
                        .send(body.as_bytes())
                    {
                        Ok(mut r) if r.status() == 200 => {
                            let v: serde_json::Value =
                                serde_json::from_str(&r.body_mut().read_to_string().unwrap())
                                    .unwrap();
                            assert_eq!(v["accepted"].as_u64(), Some(500), "{v}");
                            acked.lock().unwrap().extend(ids);
                        }
                        _ => {
                            sent.push(body);
                            break;
                        }
                    }
                    sent.push(String::new());
                }
                sent.into_iter()
                    .filter(|b| !b.is_empty())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(2500));
    node.kill().unwrap(); // SIGKILL
    node.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    let unacked: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 1500,
        "only {} events were acknowledged before the kill",
        acked.len()
    );

    // Restart: recovery, then the clients' retries are harmless duplicates or new events.
    let mut node = start_node(&config, port);
    let agent = agent();
    let first_acked_batch = batch(0, 0, 500).1;
    let mut r = agent
        .post(&url)
        .header("Content-Type", "application/x-ndjson")
        .send(first_acked_batch.as_bytes())
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(
        (v["accepted"].as_u64(), v["duplicates"].as_u64()),
        (Some(0), Some(500)),
        "re-sent batch must be recognised: {v}"
    );
    for body in &unacked {
        let r = agent
            .post(&url)
            .header("Content-Type", "application/x-ndjson")
            .send(body.as_bytes())
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    node.kill().unwrap();
    node.wait().unwrap();

    let counts = sql_json(
        &data,
        "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM events",
    );
    let (n, ids) = (
        counts["rows"][0][0].as_u64().unwrap(),
        counts["rows"][0][1].as_u64().unwrap(),
    );
    assert_eq!(n, ids, "some event is stored twice");
    let stored = sql_json(&data, "SELECT id FROM events");
    let stored: std::collections::HashSet<String> = stored["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_str().unwrap().to_string())
        .collect();
    let missing: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(3)]
    );
}

#[test]
fn city_generation_is_deterministic_and_simulation_is_ordered_per_source() {
    let dir = tempfile::tempdir().unwrap();
    for out in ["a", "b"] {
        let status = cityward()
            .args([
                "city", "generate", "--seed", "11", "--size", "small", "--out",
            ])
            .arg(dir.path().join(out))
            .status()
            .unwrap();
        assert!(status.success());
    }
    for file in [
        "regions.geojson",
        "grids.geojson",
        "zones.geojson",
        "roads.geojson",
        "devices.csv",
        "units.csv",
    ] {
        let a = std::fs::read(dir.path().join("a").join(file)).unwrap();
        assert!(!a.is_empty(), "{file} is empty");
        assert_eq!(
            a,
            std::fs::read(dir.path().join("b").join(file)).unwrap(),
            "{file} differs for the same seed"
        );
    }
    let events = dir.path().join("events.ndjson");
    let out = cityward()
        .args([
            "simulate",
            "--duration",
            "20m",
            "--start",
            "2026-11-22T00:00:00Z",
            "--city",
        ])
        .arg(dir.path().join("a"))
        .arg("--out")
        .arg(&events)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut last: std::collections::HashMap<String, String> = Default::default();
    let mut kinds = std::collections::BTreeSet::new();
    let mut out_of_order = 0;
    let mut previous = String::new();
    for line in BufReader::new(std::fs::File::open(&events).unwrap()).lines() {
        let event: cityward_model::Event = serde_json::from_str(&line.unwrap()).unwrap();
        let time = cityward_model::format_time(&event.time);
        if let Some(before) = last.get(&event.source) {
            assert!(*before <= time, "time goes back for {}", event.source);
        }
        if time < previous {
            out_of_order += 1;
        }
        previous = time.clone();
        last.insert(event.source.clone(), time);
        kinds.insert(event.kind);
    }
    assert!(
        out_of_order > 0,
        "arrival should be slightly out of order across sources"
    );
    for kind in ["gps", "heartbeat", "plate_read"] {
        assert!(kinds.contains(kind), "no {kind} events in {kinds:?}");
    }
}

#[test]
fn ingest_loads_ndjson_and_csv_and_reports_refused_lines() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let config = dir.path().join("cityward.toml");
    write_config(&config, &data, port, "");
    let mut node = start_node(&config, port);
    let time = cityward_model::format_time(&chrono::Utc::now());
    let ndjson = dir.path().join("events.ndjson");
    std::fs::write(&ndjson, format!(
        "{{\"id\":\"n1\",\"source\":\"d1\",\"kind\":\"door\",\"time\":\"{time}\",\"attrs\":{{\"open\":true}}}}\n\
         {{\"id\":\"n2\",\"source\":\"d1\",\"kind\":\"door\",\"time\":\"{time}\",\"attrs\":{{\"open\":\"yes\"}}}}\n\
         {{\"id\":\"n3\",\"source\":\"d1\",\"kind\":\"door\",\"time\":\"{time}\",\"attrs\":{{\"open\":false}}}}\n"
    )).unwrap();
    let csv = dir.path().join("reads.csv");
    std::fs::write(&csv, format!(
        "id,source,kind,time,lon,lat,plate\nc1,anpr-1,plate_read,{time},121.55,29.87,0042\nc2,anpr-1,plate_read,{time},121.55,29.87,A12345\n"
    )).unwrap();
    let out = cityward()
        .args([
            "ingest",
            "--quiet",
            "--batch",
            "2",
            "--to",
            &format!("http://127.0.0.1:{port}"),
        ])
        .arg(&ndjson)
        .arg(&csv)
        .output()
        .unwrap();
    node.kill().unwrap();
    node.wait().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "refused records make the exit code 2: {stdout} {stderr}"
    );
    assert!(
        stdout.contains("4 accepted, 0 duplicates, 1 refused"),
        "{stdout}"
    );
    let all = format!("{stdout}{stderr}");
    assert!(
        all.contains("events.ndjson:2: attrs.open"),
        "the refused line is named: {all}"
    );
    let plates = sql_json(
        &data,
        "SELECT plate FROM events WHERE kind = 'plate_read' ORDER BY id",
    );
    assert_eq!(plates["rows"], serde_json::json!([["0042"], ["A12345"]]));
}
