//! The load the node benchmarks share: the city's devices, a rule file of mixed kinds, the
//! event mix, and driving `cityward serve` processes over HTTP.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Now, as RFC 3339 with microseconds.
pub fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Runs a command; its stdout, or an error with its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().context("cannot run the cityward binary")?;
    if !out.status.success() {
        bail!("{:?} failed: {}", cmd, String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The city's sensors and doors, from its `devices.csv`.
pub struct Devices {
    pub sensors: Vec<(String, String)>, // (id, kind)
    pub doors: Vec<String>,
}

/// Reads the devices of a generated city.
pub fn read_devices(city: &Path) -> Result<Devices> {
    let text = std::fs::read_to_string(city.join("devices.csv"))?;
    let mut sensors = Vec::new();
    let mut doors = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        match f.get(1).copied() {
            Some(k @ ("smoke" | "gas" | "water_level")) => sensors.push((f[0].to_string(), k.to_string())),
            Some("door") => doors.push(f[0].to_string()),
            _ => {}
        }
    }
    Ok(Devices { sensors, doors })
}

/// The rule file: `total` rules, most of them per device (indexed by source).
pub fn write_rules(path: &Path, devices: &Devices, total: usize, by_grid: bool) -> Result<usize> {
    let mut lines: Vec<String> = Vec::new();
    // Fixed part: 1 absence, 1 marker, 20 geofences, and with `by_grid` 10 counts and 10
    // sequences grouped by grid (left out for detection partitioned by source, where a
    // grid's events are split between processes).
    lines.push("  - {id: hb-offline, kind: absence, when: 'event.kind == \"heartbeat\"', for: 15m, severity: low, category: device.offline}\n".into());
    lines.push("  - {id: marker, kind: match, when: 'event.kind == \"door\" && event.source == \"marker\"', key: event.id, category: bench.marker}\n".into());
    let zone_kinds = ["depot", "school", "restricted", "square", "underpass"];
    let classes = ["hazmat", "heavy", "patrol", "bus"];
    for (i, zk) in zone_kinds.iter().enumerate() {
        for (j, class) in classes.iter().enumerate() {
            let on = ["enter", "exit", "dwell", "enter"][(i + j) % 4];
            let dwell = if on == "dwell" { ", dwell: 10m" } else { "" };
            lines.push(format!("  - {{id: geo-{zk}-{class}, kind: geofence, when: 'event.kind == \"gps\" && event.attrs.class == \"{class}\"', zone_kinds: [{zk}], on: {on}{dwell}, category: zone.{zk}}}\n"));
        }
    }
    for (i, kind) in ["smoke", "gas", "water_level", "door", "plate_read"].iter().enumerate().filter(|_| by_grid) {
        for sliding in [false, true] {
            lines.push(format!("  - {{id: count-{kind}-{sliding}, kind: count, when: 'event.kind == \"{kind}\"', group: grid, count: {}, window: 5m, sliding: {sliding}, category: count.{kind}}}\n", 50 + i * 10));
        }
    }
    for i in (0..10).filter(|_| by_grid) {
        lines.push(format!("  - {{id: seq-fire-{i}, kind: sequence, first: 'event.kind == \"smoke\" && event.attrs.value > {}.0', then: 'event.kind == \"smoke\" && event.attrs.temperature_c > 60.0', key: event.grid, within: 5m, within_m: 200, category: fire.confirmed}}\n", 1 + i));
    }
    // Per device: a threshold per sensor, a door watch per door, then speed per truck.
    let mut per_device = total.saturating_sub(lines.len()); // the fixed part above
    for (id, kind) in devices.sensors.iter() {
        if per_device == 0 {
            break;
        }
        let (attr, above, clear) = match kind.as_str() {
            "smoke" => ("temperature_c", 60.0, 45.0),
            "gas" => ("value", 20.0, 10.0),
            _ => ("value", 0.3, 0.2),
        };
        lines.push(format!("  - {{id: th-{id}, kind: threshold, when: 'event.source == \"{id}\"', attr: {attr}, above: {above}, clear: {clear}, count: 2, category: sensor.{kind}}}\n"));
        per_device -= 1;
    }
    for id in devices.doors.iter() {
        if per_device == 0 {
            break;
        }
        lines.push(format!("  - {{id: door-{id}, kind: match, when: 'event.source == \"{id}\" && event.attrs.open == true && event.time.getHours(\"+08:00\") < 6', category: security.door}}\n"));
        per_device -= 1;
    }
    let mut truck = 0;
    while per_device > 0 {
        lines.push(format!("  - {{id: speed-truck-{truck:05}, kind: speed, when: 'event.source == \"truck-{truck:05}\"', limit_kmh: {}, for: 20s, category: traffic.speeding}}\n", 60 + truck % 30));
        truck += 1;
        per_device -= 1;
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "rules:")?;
    for l in &lines {
        out.write_all(l.as_bytes())?;
    }
    out.flush()?;
    Ok(lines.len())
}

/// An HTTP client that reads error statuses instead of failing on them.
pub fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::config::Config::builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build(),
    )
}

/// Posts an NDJSON body of events, waiting out 503 (intake full).
pub fn post(agent: &ureq::Agent, url: &str, body: &str) -> Result<()> {
    loop {
        let resp = agent.post(url).header("Content-Type", "application/x-ndjson").send(body)?;
        match resp.status().as_u16() {
            200 => return Ok(()),
            503 => std::thread::sleep(Duration::from_millis(50)),
            s => bail!("ingest answered {s}"),
        }
    }
}

/// One event of the sustained mix (i counts events of this client).
pub fn mixed_event(client: usize, i: u64, t: &str, sensors: &[(String, String)]) -> String {
    match i % 10 {
        0..=5 => {
            let truck = (i / 10 * 7 + client as u64 * 131) % 5000;
            let lon = 121.45 + ((i * 13 + truck) % 997) as f64 * 0.0002;
            let lat = 29.80 + ((i * 7 + truck) % 991) as f64 * 0.00015;
            let class = ["hazmat", "heavy", "bus", "patrol"][(truck % 4) as usize];
            format!(r#"{{"source":"truck-{truck:05}","kind":"gps","time":"{t}","lon":{lon:.6},"lat":{lat:.6},"attrs":{{"speed_kmh":{:.1},"class":"{class}"}}}}"#, 30.0 + (i % 60) as f64)
        }
        6..=8 => {
            // Sensors read normal values, with a rare excursion that a threshold catches.
            let (id, kind) = &sensors[((i / 10) as usize * 31 + client * 7) % sensors.len()];
            let excursion = (i / 10) % 5000 == 17;
            match kind.as_str() {
                "smoke" => format!(r#"{{"source":"{id}","kind":"smoke","time":"{t}","attrs":{{"alarm":false,"value":0.1,"temperature_c":{:.1}}}}}"#, if excursion { 72.0 } else { 20.0 + (i % 7) as f64 }),
                "gas" => format!(r#"{{"source":"{id}","kind":"gas","time":"{t}","attrs":{{"alarm":false,"value":{:.1}}}}}"#, if excursion { 25.0 } else { (i % 5) as f64 }),
                _ => format!(r#"{{"source":"{id}","kind":"water_level","time":"{t}","attrs":{{"value":{:.3}}}}}"#, if excursion { 0.45 } else { 0.05 + (i % 3) as f64 / 100.0 }),
            }
        }
        _ => format!(r#"{{"source":"hb-{:07}","kind":"heartbeat","time":"{t}","attrs":{{"battery":80.0}}}}"#, (i * 7919 + client as u64) % 1_000_000),
    }
}

/// Starts `cityward serve --config CONFIG` and waits until it listens on `port`.
pub fn start_node(cityward: &Path, config: &Path, port: u16) -> Result<Child> {
    let child = Command::new(cityward)
        .args(["serve", "--config"])
        .arg(config)
        .env("CITYWARD_LOG", std::env::var("CITYWARD_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("the node did not start listening");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(child)
}


/// Posts batches of `batch` mixed events as client `client` until `stop`, to each of
/// `urls` in turn, counting acknowledged events in `sent`.
pub fn post_mixed_until(
    client: usize,
    urls: &[String],
    batch: usize,
    sensors: &[(String, String)],
    stop: &std::sync::atomic::AtomicBool,
    sent: &std::sync::atomic::AtomicU64,
) -> Result<()> {
    use std::sync::atomic::Ordering;
    let agent = agent();
    let mut i = 0u64;
    let mut turn = client;
    while !stop.load(Ordering::Relaxed) {
        let t = now_text();
        let body: Vec<String> = (0..batch)
            .map(|_| {
                i += 1;
                mixed_event(client, i, &t, sensors)
            })
            .collect();
        post(&agent, &urls[turn % urls.len()], &body.join("\n"))?;
        turn += 1;
        sent.fetch_add(batch as u64, Ordering::Relaxed);
    }
    Ok(())
}
