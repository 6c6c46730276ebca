//! Three tiers as separate processes: a city node, a street node and two community nodes,
//! each `cityward serve` beside its own `nats-server`, the servers joined by leaf nodes.
//!
//! Proves: a rule, a routing table and a zone published at the city reach the communities
//! (the rule fires there); the city reads a community's evidence on demand; the community's alerts and
//! every change to them reach the street and the city exactly once and newest last; a
//! community whose link is cut keeps alerting locally and catches up when the link
//! returns; a community killed with SIGKILL mid-flow loses nothing upwards after restart;
//! an escalation at the community reaches the street, and the street's action comes back;
//! per-minute summaries reach the city exactly as the community counts its own events.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use cityward_tier::testkit::{available, LinkCutter, NatsServer};
use common::{agent, cityward, free_port, wait_until, Served};
use serde_json::{json, Value};

/// Who a node is: its name, role, region, parent, and configuration to add.
struct Spec<'a> {
    name: &'a str,
    role: &'a str,
    region: &'a str,
    parent: &'a str,
    extra: &'a str,
}

/// A `cityward serve` process of one tier, with its own data, port and NATS server.
fn tier_node(dir: &Path, city: &Path, nats: &NatsServer, spec: Spec<'_>) -> Served {
    let Spec { name, role, region, parent, extra } = spec;
    let data = dir.join(name);
    let out = cityward()
        .args(["user", "add", "--username", "admin", "--role", "admin", "--password", "admin-pass", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "user add: {}", String::from_utf8_lossy(&out.stderr));
    let port = free_port();
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[node]\nname = \"{name}\"\nrole = \"{role}\"\ndata_dir = {data:?}\nlisten = \"127.0.0.1:{port}\"\n\
             [city]\ndir = {city:?}\n\
             [auth]\nopen_ingest = true\n\
             [tier]\nenabled = true\nnats = \"{url}\"\nparent = \"{parent}\"\nregion = \"{region}\"\nsummary_lateness = \"30s\"\n{extra}",
            data = data.display().to_string(),
            city = city.display().to_string(),
            url = nats.url(),
        ),
    )
    .unwrap();
    let mut node = Served::new(name, config, port);
    node.start();
    node
}

/// Every alert of a node, by id: (status, updated_at, owner).
fn alerts(node: &Served) -> BTreeMap<String, (String, String, String)> {
    node.all_alerts()
        .into_iter()
        .map(|a| {
            let text = |v: &Value| v.as_str().unwrap_or("").to_string();
            (text(&a["id"]), (text(&a["status"]), text(&a["updated_at"]), text(&a["handling"]["owner"])))
        })
        .collect()
}

fn sql(node: &Served, sql: &str) -> Vec<Vec<Value>> {
    let (status, body) = node.call("POST", "/api/v1/sql", Some(json!({"sql": sql})));
    assert_eq!(status, 200, "{sql}: {body}");
    serde_json::from_value(body["rows"].clone()).unwrap()
}

/// Whether `at` holds every alert of `from` at the same last change; says which it lacks
/// when `report`.
fn holds_all(at: &Served, from: &BTreeMap<String, (String, String, String)>) -> bool {
    let there = alerts(at);
    let lacking: Vec<_> = from.iter().filter(|(id, row)| there.get(*id) != Some(*row)).collect();
    if !lacking.is_empty() && std::env::var("TIERS_DEBUG").is_ok() {
        eprintln!("{} lacks {} of {}: e.g. {:?} (has {:?})", at.name, lacking.len(), from.len(), lacking[0], there.get(lacking[0].0));
    }
    lacking.is_empty()
}

fn smoke(source: &str, lon: f64, lat: f64, time: chrono::DateTime<chrono::Utc>) -> Value {
    json!({"source": source, "kind": "smoke", "time": cityward_model::format_time(&time), "lon": lon, "lat": lat, "attrs": {"alarm": true}})
}

/// A point inside a grid of `region` (the centroid of its outer ring).
fn point_in(city: &Path, region: &str) -> (f64, f64) {
    let grids: Value = serde_json::from_str(&std::fs::read_to_string(city.join("grids.geojson")).unwrap()).unwrap();
    let grid = grids["features"].as_array().unwrap().iter().find(|g| g["properties"]["region"] == region).expect("a grid in the region");
    let ring = grid["geometry"]["coordinates"][0].as_array().unwrap();
    let n = (ring.len() - 1) as f64;
    let sum = ring[..ring.len() - 1].iter().fold((0.0, 0.0), |(x, y), p| (x + p[0].as_f64().unwrap(), y + p[1].as_f64().unwrap()));
    (sum.0 / n, sum.1 / n)
}

#[test]
fn three_tiers_carry_rules_down_and_alerts_and_summaries_up_across_cuts_and_kills() {
    if !available() {
        eprintln!("skipped: nats-server is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let city = dir.join("city");
    let out = cityward().args(["city", "generate", "--size", "small", "--seed", "5", "--out"]).arg(&city).output().unwrap();
    assert!(out.status.success());

    // A street with two communities.
    let regions: Value = serde_json::from_str(&std::fs::read_to_string(city.join("regions.geojson")).unwrap()).unwrap();
    let regions: Vec<&Value> = regions["features"].as_array().unwrap().iter().map(|f| &f["properties"]).collect();
    let street = regions
        .iter()
        .find(|s| s["level"] == "street" && regions.iter().filter(|c| c["parent"] == s["id"]).count() >= 2)
        .expect("a street with two communities");
    let street_id = street["id"].as_str().unwrap();
    let communities: Vec<&str> = regions.iter().filter(|c| c["parent"] == street["id"]).map(|c| c["id"].as_str().unwrap()).take(2).collect();
    let (lon, lat) = point_in(&city, communities[0]);

    // NATS: city ← street ← (cutter) ← comm-a, and street ← comm-b.
    let city_nats = NatsServer::start("city", dir, None);
    let cutter = LinkCutter::start(0);
    let street_nats = NatsServer::start_behind("street-1", dir, Some(city_nats.leaf_port), Some(cutter.port));
    cutter.set_target(street_nats.leaf_port);
    let comm_a_nats = NatsServer::start_leaf_of("comm-a", dir, Some(cutter.port));
    let comm_b_nats = NatsServer::start("comm-b", dir, Some(&street_nats));

    // The community's deadline to acknowledge test alerts is short, to see escalation.
    let deadlines = "[[alerts.deadlines]]\ncategory = \"test.*\"\nack = \"3s\"\narrive = \"1h\"\nprogress = \"1h\"\n";
    let city_node = tier_node(dir, &city, &city_nats, Spec { name: "city", role: "city", region: "", parent: "", extra: "" });
    let street_node = tier_node(dir, &city, &street_nats, Spec { name: "street-1", role: "street", region: street_id, parent: "city", extra: "" });
    let mut comm_a = tier_node(dir, &city, &comm_a_nats, Spec { name: "comm-a", role: "community", region: communities[0], parent: "street-1", extra: deadlines });
    let comm_b = tier_node(dir, &city, &comm_b_nats, Spec { name: "comm-b", role: "community", region: communities[1], parent: "street-1", extra: "" });

    // Heartbeats of the last half minute at comm-a: their minutes are not summarised yet.
    let t0 = chrono::Utc::now();
    let beats: Vec<Value> = (0..90)
        .map(|i| json!({"source": format!("beat-{}", i % 7), "kind": "heartbeat", "time": cityward_model::format_time(&(t0 - chrono::Duration::milliseconds(30_000 - i * 300))), "lon": lon, "lat": lat, "attrs": {"battery": 90.0}}))
        .collect();
    comm_a.post_events(&beats).unwrap();

    // A rule published at the city reaches both communities.
    let rule = json!({"id": "smoke-test", "kind": "match", "when": "event.kind == \"smoke\" && event.attrs.alarm == true",
                      "key": "event.source", "severity": "high", "category": "test.smoke"});
    let (status, body) = city_node.call("PUT", "/api/v1/rules/smoke-test", Some(rule));
    assert_eq!(status, 200, "{body}");
    for node in [&comm_a, &comm_b, &street_node] {
        let took = wait_until(&format!("the rule at {}", node.name), Duration::from_secs(30), || node.call("GET", "/api/v1/rules/smoke-test", None).0 == 200);
        eprintln!("rule published at the city reached {} in {took:?}", node.name);
    }

    // So does a routing table: the same entries, recorded as published from above.
    let units: Vec<Value> = std::fs::read_to_string(city.join("units.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| json!(l.split(',').next().unwrap()))
        .collect();
    let entries = json!([{"category": "test.routing", "unit": units[0]}]);
    let (status, body) = city_node.call("PUT", "/api/v1/routing", Some(json!({"entries": entries, "note": "city-wide table"})));
    assert_eq!(status, 200, "{body}");
    wait_until("the routing table at comm-b", Duration::from_secs(30), || comm_b.call("GET", "/api/v1/routing", None).1["entries"] == entries);
    let (_, history) = comm_b.call("GET", "/api/v1/routing/history", None);
    assert_eq!((history["items"][0]["changed_by"].as_str(), history["items"][0]["note"].as_str()), (Some("tier:city"), Some("city-wide table")), "{history}");

    // And a zone drawn at the city.
    let d = 0.001;
    let zone = json!({"type": "Feature", "properties": {"name": "Market square", "kind": "restricted"},
                      "geometry": {"type": "Polygon", "coordinates": [[[lon - d, lat - d], [lon + d, lat - d], [lon + d, lat + d], [lon - d, lat + d], [lon - d, lat - d]]]}});
    let (status, body) = city_node.call("PUT", "/api/v1/city/zones/market-square", Some(zone));
    assert_eq!(status, 200, "{body}");
    wait_until("the zone at comm-a", Duration::from_secs(30), || {
        let (_, layer) = comm_a.call("GET", "/api/v1/city/layers/zones", None);
        layer["features"].as_array().is_some_and(|f| f.iter().any(|z| z["properties"]["id"] == "market-square" || z["id"] == "market-square"))
    });

    // An alert raised at comm-a reaches the street and the city.
    let now = chrono::Utc::now();
    comm_a.post_events(&[smoke("smoke-0", lon, lat, now)]).unwrap();
    wait_until("the first alert at comm-a", Duration::from_secs(15), || !alerts(&comm_a).is_empty());
    let first = alerts(&comm_a);
    let first_id = first.keys().next().unwrap().clone();
    let took = wait_until("the first alert at the city", Duration::from_secs(15), || alerts(&city_node).contains_key(&first_id));
    eprintln!("community alert reached the city in {took:?}");

    // The city asks comm-a for the raw events behind the alert; comm-a records the read.
    let (status, evidence) = city_node.call("GET", &format!("/api/v1/alerts/{first_id}/evidence"), None);
    assert_eq!(status, 200, "{evidence}");
    assert_eq!(evidence["from"], "comm-a");
    assert_eq!(evidence["items"][0]["source"], "smoke-0", "{evidence}");
    let (_, audit) = comm_a.call("GET", "/api/v1/audit?actor=city:admin", None);
    assert!(audit["items"].as_array().unwrap().iter().any(|e| e["action"] == "alert.evidence" && e["target"] == first_id.as_str()), "{audit}");

    // Escalation: comm-a misses the 3 s deadline, the alert goes to the street's unit, the
    // street acknowledges it, and comm-a sees that.
    wait_until("escalation at comm-a", Duration::from_secs(20), || alerts(&comm_a)[&first_id].0 == "escalated");
    wait_until("the escalated alert at the street", Duration::from_secs(15), || alerts(&street_node).get(&first_id).is_some_and(|a| a.0 == "escalated"));
    let (status, body) = street_node.call("POST", &format!("/api/v1/alerts/{first_id}/ack"), Some(json!({"note": "street on it"})));
    assert_eq!(status, 200, "ack at the street: {body}");
    wait_until("the street's acknowledgement at comm-a", Duration::from_secs(15), || alerts(&comm_a)[&first_id].0 == "acknowledged");
    wait_until("the acknowledgement at the city", Duration::from_secs(15), || alerts(&city_node)[&first_id].0 == "acknowledged");

    // Cut comm-a's link: it keeps alerting locally; nothing crosses; after restoring, the
    // street and the city hold exactly comm-a's alerts, each at its last change.
    cutter.cut();
    let batch: Vec<Value> = (1..=150).map(|i| smoke(&format!("smoke-{i}"), lon, lat, chrono::Utc::now())).collect();
    comm_a.post_events(&batch).unwrap();
    wait_until("local alerts while cut", Duration::from_secs(20), || alerts(&comm_a).len() == 151);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(alerts(&city_node).len(), 1, "nothing crosses a cut link");
    cutter.restore();
    // (comm-a's alerts go on changing as their deadlines pass: compare with its latest.)
    let took = wait_until("comm-a's backlog at the city", Duration::from_secs(30), || holds_all(&city_node, &alerts(&comm_a)));
    eprintln!("after the cut, comm-a's 150 new alerts were all at the city {took:?} after the link returned");
    wait_until("comm-a's backlog at the street", Duration::from_secs(30), || holds_all(&street_node, &alerts(&comm_a)));

    // SIGKILL comm-a while it raises alerts; restart; the tiers above end up with exactly
    // its alerts.
    let sender = {
        let base = comm_a.base();
        std::thread::spawn(move || {
            let a = agent();
            let mut sent = 0;
            for i in 0..40 {
                let events: Vec<String> = (0..10).map(|j| smoke(&format!("kill-{i}-{j}"), lon, lat, chrono::Utc::now()).to_string()).collect();
                match a.post(&format!("{base}/api/v1/events")).header("Content-Type", "application/x-ndjson").send(events.join("\n").as_bytes()) {
                    Ok(r) if r.status() == 200 => sent += 10,
                    _ => break,
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            sent
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    comm_a.sigkill();
    let sent = sender.join().unwrap();
    eprintln!("{sent} events acknowledged before SIGKILL");
    comm_a.start();
    wait_until("comm-a's alerts after the restart", Duration::from_secs(30), || alerts(&comm_a).len() >= 151 + sent);
    wait_until("comm-a's alerts at the city after SIGKILL", Duration::from_secs(30), || holds_all(&city_node, &alerts(&comm_a)));
    assert_eq!(alerts(&city_node).len(), alerts(&comm_a).len(), "the city holds comm-a's alerts and no others");

    // Summaries: once each minute of comm-a's heartbeats has closed (30 s after it ends),
    // the city has one summary per minute and grid, with comm-a's own counts.
    let own = sql(&comm_a, "SELECT CAST(date_trunc('minute', time) AS VARCHAR) AS m, grid, count(*) FROM events WHERE kind = 'heartbeat' GROUP BY 1, 2 ORDER BY 1, 2");
    assert!(!own.is_empty());
    let summary_sql = "SELECT CAST(time AS VARCHAR) AS m, grid_id, \"count\" FROM events WHERE kind = 'tier_summary' AND source = 'comm-a' AND of_kind = 'heartbeat' ORDER BY 1, 2";
    let took = wait_until("heartbeat summaries at the city", Duration::from_secs(120), || sql(&city_node, summary_sql).len() >= own.len());
    eprintln!("summaries reached the city after another {took:?}");
    let at_city = sql(&city_node, summary_sql);
    let at_city: Vec<(String, Value, Value)> = at_city.into_iter().map(|r| (r[0].as_str().unwrap()[..16].to_string(), r[1].clone(), r[2].clone())).collect();
    let own: Vec<(String, Value, Value)> = own.into_iter().map(|r| (r[0].as_str().unwrap()[..16].to_string(), r[1].clone(), r[2].clone())).collect();
    assert_eq!(at_city, own, "one summary per minute and grid, with comm-a's own counts");
}
