//! Closed-loop handling through the HTTP API of an in-process node: every alert routed to
//! the unit of its place as it is stored, the lifecycle driven by people with the roles
//! and units allowed, jurisdictions kept on every endpoint and on the live stream, missed
//! deadlines escalating up the unit chain, and routing changes taking effect at once.

use std::io::BufRead;
use std::sync::mpsc;
use std::time::Duration;

use cityward_model::city::Device;
use cityward_model::City;
use cityward_server::Role;
use serde_json::{json, Value};

mod common;
use common::*;

const SMOKE_RULE: &str = r#"{"id": "smoke-alarm", "kind": "match", "when": "event.kind == \"smoke\" && event.attrs.alarm == true",
    "severity": "high", "category": "fire.smoke", "title": "Smoke alarm"}"#;

/// Two smoke sensors whose grids belong to different community units: (sensor, its unit).
fn two_communities(city: &City) -> ((Device, String), (Device, String)) {
    let unit_of = |d: &Device| city.grid_unit(&d.grid).map(|u| u.id.clone()).unwrap();
    let smokes: Vec<&Device> = city.devices.iter().filter(|d| d.kind == "smoke").collect();
    let a = smokes[0];
    let b = smokes.iter().find(|d| unit_of(d) != unit_of(a)).expect("smoke sensors in two communities");
    ((a.clone(), unit_of(a)), ((*b).clone(), unit_of(b)))
}

fn alarm(id: &str, sensor: &Device) -> Value {
    smoke(id, &sensor.id, true, 25.0)
}

async fn act(t: &TestNode, token: &str, id: &str, action: &str, body: Value) -> (u16, Value) {
    t.post_json(&format!("/api/v1/alerts/{id}/{action}"), token, body).await
}

/// Sets up the smoke rule and a responder in each of two communities.
async fn setup(t: &TestNode) -> (String, String, (Device, String), (Device, String)) {
    let admin = t.login("admin", "admin-pass").await;
    let (status, body) = t.put_rule("smoke-alarm", "", &admin, false, SMOKE_RULE).await;
    assert_eq!(status, 200, "{body}");
    let city = t.node.city();
    let (a, b) = two_communities(&city);
    t.node.create_user("resp-a", "pass-a", Role::Responder, Some(&a.1)).unwrap();
    t.node.create_user("resp-b", "pass-b", Role::Responder, Some(&b.1)).unwrap();
    (t.login("resp-a", "pass-a").await, t.login("resp-b", "pass-b").await, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_is_routed_to_its_community_and_handled_to_closure() {
    let t = start(|_| {}).await;
    let (resp_a, resp_b, (sensor, unit_a), _) = setup(&t).await;
    let hub = t.login("sensorhub", "ingest-pass").await;
    let duty = t.login("duty", "duty-pass").await;
    t.ingest(&hub, &[alarm("smoke-1", &sensor)]).await;
    let alert = t.wait_alert(&duty, "from smoke-1", |a| a["evidence"][0] == "smoke-1").await;
    let id = alert["id"].as_str().unwrap().to_string();
    // Routed as it was stored: never seen without an owner.
    assert_eq!(alert["status"], "assigned", "{alert:#}");
    let handling = &alert["handling"];
    assert_eq!(handling["owner"], json!(unit_a));
    assert!(handling["routing"]["reason"].as_str().unwrap().contains("administrative unit"), "{handling:#}");
    assert!(handling["ack_due"].is_string() && handling["arrive_due"].is_string(), "{handling:#}");

    // The other community sees nothing of it, by any endpoint.
    assert!(t.alerts(&resp_b).await.iter().all(|a| a["id"] != id.as_str()));
    let (status, body) = t.get(&format!("/api/v1/alerts/{id}"), &resp_b).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
    let (status, body) = act(&t, &resp_b, &id, "ack", json!({})).await;
    assert_eq!(status, 404, "acting on an alert out of jurisdiction: {body}");

    // Its own community acknowledges; a responder may not close.
    assert!(t.alerts(&resp_a).await.iter().any(|a| a["id"] == id.as_str()));
    let (status, body) = act(&t, &resp_a, &id, "ack", json!({"note": "on our way"})).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("acknowledged")), "{body}");
    let (status, body) = act(&t, &resp_a, &id, "close", json!({"disposition": "false_alarm", "note": "x"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
    let (status, body) = act(&t, &resp_a, &id, "ack", json!({})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("conflict")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("acknowledged already"), "{body}");

    // The city's dispatcher sends a responder; the community responder arrives and resolves.
    let (status, body) = act(&t, &duty, &id, "dispatch", json!({"responders": ["patrol-7"]})).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("dispatched")), "{body}");
    let (status, _) = act(&t, &resp_a, &id, "arrive", json!({})).await;
    assert_eq!(status, 200);
    let (status, _) = act(&t, &resp_a, &id, "resolve", json!({"note": "burnt toast"})).await;
    assert_eq!(status, 200);
    // Closing needs a known disposition and a note.
    let (status, body) = act(&t, &duty, &id, "close", json!({"note": "x"})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("needs `disposition`"), "{body}");
    let (status, body) = act(&t, &duty, &id, "close", json!({"disposition": "boring", "note": "x"})).await;
    assert!(status == 400 && body["error"]["message"].as_str().unwrap().contains("false_alarm"), "{body}");
    let (status, body) = act(&t, &duty, &id, "close", json!({"disposition": "false_alarm"})).await;
    assert!(status == 400 && body["error"]["message"].as_str().unwrap().contains("note"), "{body}");
    let (status, body) = act(&t, &duty, &id, "close", json!({"disposition": "false_alarm", "note": "toast"})).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("closed")), "{body}");
    let (status, body) = act(&t, &duty, &id, "reopen", json!({})).await;
    assert_eq!(status, 409, "closed is final: {body}");
    let (status, body) = act(&t, &duty, &id, "escalate", json!({})).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("ack, dispatch"), "{body}");
    let (status, body) = act(&t, &duty, &id, "ack", json!({"nonsense": 1})).await;
    assert_eq!(status, 400, "unknown body fields are refused: {body}");

    // The whole story is on the alert, and the list filters by status.
    let (_, alert) = t.get(&format!("/api/v1/alerts/{id}"), &duty).await;
    let story: Vec<(String, String, String)> = alert["handling"]["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["action"].as_str().unwrap().into(), s["actor"].as_str().unwrap().into(), s["to"].as_str().unwrap().into()))
        .collect();
    let expected = [
        ("routed", "system", "assigned"),
        ("ack", "resp-a", "acknowledged"),
        ("dispatch", "duty", "dispatched"),
        ("arrive", "resp-a", "on_scene"),
        ("resolve", "resp-a", "resolved"),
        ("close", "duty", "closed"),
    ]
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()));
    assert_eq!(story, expected);
    assert_eq!(alert["handling"]["disposition"], "false_alarm");
    assert_eq!(alert["handling"]["responders"], json!(["patrol-7"]));
    let (status, page) = t.get("/api/v1/alerts?status=closed,resolved", &duty).await;
    assert_eq!(status, 200, "{page}");
    assert!(page["items"].as_array().unwrap().iter().all(|a| a["status"] == "closed"));
    let (status, body) = t.get("/api/v1/alerts?status=done", &duty).await;
    assert!(status == 400 && body["error"]["message"].as_str().unwrap().contains("on_scene"), "{body}");

    // Every change and every read of the alert is in the audit log, chained.
    let (status, _) = t.get("/api/v1/audit", &duty).await;
    assert_eq!(status, 403, "dispatchers do not read the audit log");
    let admin = t.login("admin", "admin-pass").await;
    let (status, log) = t.get("/api/v1/audit?action=alert.&limit=1000", &admin).await;
    assert_eq!(status, 200, "{log}");
    let mine: Vec<(String, String)> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target"] == id.as_str())
        .map(|e| (e["actor"].as_str().unwrap().to_string(), e["action"].as_str().unwrap().to_string()))
        .rev()
        .collect();
    let expected = [("resp-a", "alert.ack"), ("duty", "alert.dispatch"), ("resp-a", "alert.arrive"), ("resp-a", "alert.resolve"), ("duty", "alert.close"), ("duty", "alert.read")]
        .map(|(a, b)| (a.to_string(), b.to_string()));
    assert_eq!(mine, expected);
    let (_, all) = t.get("/api/v1/audit?limit=1000", &admin).await;
    let entries = all["items"].as_array().unwrap();
    for pair in entries.windows(2) {
        assert_eq!(pair[0]["prev_hash"], pair[1]["hash"], "newest first, each commits to the one before");
    }
}

/// Reads a Server-Sent Events stream on a thread; each `alert` event's data arrives on the
/// channel as JSON.
fn listen(base: &str, token: &str) -> mpsc::Receiver<Value> {
    let url = format!("{base}/api/v1/alerts/stream?access_token={token}");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let agent = ureq::Agent::new_with_config(ureq::config::Config::builder().http_status_as_error(false).build());
        let response = agent.get(&url).call().unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let reader = std::io::BufReader::new(response.into_body().into_reader());
        let mut event = String::new();
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if let Some(name) = line.strip_prefix("event: ") {
                event = name.to_string();
            } else if let Some(data) = line.strip_prefix("data: ") {
                if event == "alert" && tx.send(serde_json::from_str(data).unwrap()).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// Changes received within `wait`, as (change, alert evidence id).
fn received(rx: &mpsc::Receiver<Value>, wait: Duration) -> Vec<(String, String)> {
    let until = std::time::Instant::now() + wait;
    let mut out = Vec::new();
    while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(v) => out.push((v["change"].as_str().unwrap().to_string(), v["alert"]["evidence"][0].as_str().unwrap_or("").to_string())),
            Err(_) => break,
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_acknowledgement_escalates_and_each_stream_hears_only_its_jurisdiction() {
    let t = start(|c| {
        c.alerts.clock_every = Duration::from_millis(100);
        c.alerts.deadlines = vec![cityward_alerts::DeadlineRule {
            category: "*".into(),
            severity: None,
            ack: Duration::from_secs(1),
            arrive: Duration::from_secs(3600),
            progress: Duration::from_secs(3600),
        }];
    })
    .await;
    let (resp_a, resp_b, (sensor_a, unit_a), (sensor_b, _)) = setup(&t).await;
    let (status, _) = call("GET", format!("{}/api/v1/alerts/stream?access_token=forged", t.base), None, "", vec![]).await;
    assert_eq!(status, 401);
    let stream_a = listen(&t.base, &resp_a);
    let stream_b = listen(&t.base, &resp_b);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hub = t.login("sensorhub", "ingest-pass").await;
    t.ingest(&hub, &[alarm("smoke-a", &sensor_a), alarm("smoke-b", &sensor_b)]).await;

    let heard_a = tokio::task::spawn_blocking(move || received(&stream_a, Duration::from_secs(4))).await.unwrap();
    let heard_b = tokio::task::spawn_blocking(move || received(&stream_b, Duration::from_millis(500))).await.unwrap();
    assert_eq!(heard_a.first(), Some(&("raised".to_string(), "smoke-a".to_string())), "{heard_a:?}");
    assert!(heard_a.contains(&("escalate".to_string(), "smoke-a".to_string())), "{heard_a:?}");
    assert!(heard_a.iter().all(|(_, e)| e == "smoke-a"), "community A hears only its own alert: {heard_a:?}");
    assert!(heard_b.iter().all(|(_, e)| e == "smoke-b") && !heard_b.is_empty(), "{heard_b:?}");

    // Escalated to the street above, the owner kept.
    let duty = t.login("duty", "duty-pass").await;
    let alert = t.wait_alert(&duty, "escalated", |a| a["evidence"][0] == "smoke-a" && a["status"] == "escalated").await;
    let street = t.node.city().unit(&unit_a).unwrap().parent_unit.clone().unwrap();
    assert_eq!(alert["handling"]["owner"], json!(unit_a));
    assert_eq!(alert["handling"]["escalations"][0]["unit"], json!(street));
    assert_eq!(alert["handling"]["escalations"][0]["reason"], "acknowledgement deadline missed");
    // The street unit, told, may take it.
    t.node.create_user("street", "pass-s", Role::Dispatcher, Some(&street)).unwrap();
    let street_token = t.login("street", "pass-s").await;
    let (status, body) = act(&t, &street_token, alert["id"].as_str().unwrap(), "ack", json!({})).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("acknowledged")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_changes_take_effect_at_once_and_are_kept_as_versions() {
    let t = start(|_| {}).await;
    let (resp_a, _, (sensor, _), _) = setup(&t).await;
    let admin = t.login("admin", "admin-pass").await;
    let duty = t.login("duty", "duty-pass").await;
    let city = t.node.city();
    let grid = city.grid(&sensor.grid).unwrap();
    let district = city.region_chain(&grid.region).last().unwrap().id.clone();
    let brigade = city.units.iter().find(|u| u.kind == "fire" && u.region.as_deref() == Some(&district)).unwrap().id.clone();

    let (status, table) = t.get("/api/v1/routing", &duty).await;
    assert_eq!((status, table["version"].as_u64()), (200, Some(0)), "{table}");
    let put = |token: String, body: Value| {
        let url = format!("{}/api/v1/routing", t.base);
        async move {
            let (status, text) = call("PUT", url, Some(token), "application/json", body.to_string().into_bytes()).await;
            (status, parse(&text))
        }
    };
    let entries = json!([{"category": "fire.*", "region": district, "unit": brigade}]);
    let (status, body) = put(duty.clone(), json!({"entries": entries, "note": "x"})).await;
    assert_eq!(status, 403, "only an admin changes routing: {body}");
    let (status, body) = put(admin.clone(), json!({"entries": [{"category": "*", "unit": "unit-nowhere"}], "note": "x"})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("routing entry 0: unit `unit-nowhere`"), "{body}");
    let (status, body) = put(admin.clone(), json!({"entries": entries, "note": " "})).await;
    assert!(status == 400 && body["error"]["message"].as_str().unwrap().contains("note"), "{body}");
    let (status, body) = put(admin.clone(), json!({"entries": entries, "note": "fires go to the district brigade", "expected_version": 0})).await;
    assert_eq!((status, body["version"].as_u64()), (200, Some(1)), "{body}");
    let (status, body) = put(admin.clone(), json!({"entries": entries, "note": "again", "expected_version": 0})).await;
    assert_eq!(status, 409, "a stale version is refused: {body}");

    let hub = t.login("sensorhub", "ingest-pass").await;
    t.ingest(&hub, &[alarm("smoke-r", &sensor)]).await;
    let alert = t.wait_alert(&duty, "from smoke-r", |a| a["evidence"][0] == "smoke-r").await;
    assert_eq!(alert["handling"]["owner"], json!(brigade));
    assert_eq!(alert["handling"]["routing"]["table_version"], 1);
    // Still in the community's region: its responders see it.
    assert!(t.alerts(&resp_a).await.iter().any(|a| a["id"] == alert["id"]));

    let (status, history) = t.get("/api/v1/routing/history", &duty).await;
    assert_eq!(status, 200);
    let v1 = &history["items"][0];
    assert_eq!((v1["version"].as_u64(), v1["changed_by"].as_str()), (Some(1), Some("admin")), "{history}");
    assert_eq!(v1["note"], "fires go to the district brigade");
    assert_eq!(v1["entries"], entries);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatchers_and_responders_need_a_unit_of_the_city() {
    let t = start(|_| {}).await;
    let e = t.node.create_user("nobody", "pass", Role::Responder, None).unwrap_err();
    assert!(e.to_string().contains("acts for a unit"), "{e}");
    let e = t.node.create_user("lost", "pass", Role::Dispatcher, Some("unit-atlantis")).unwrap_err();
    assert!(e.to_string().contains("unit-atlantis"), "{e}");
}

const CAP_CHECK: &str = "import sys, capvalidator\nr = capvalidator.check_schema(sys.stdin.buffer.read())\nprint(r.message)\nsys.exit(0 if r.passed else 1)";

async fn cap(t: &TestNode, token: &str, id: &str) -> String {
    let (status, xml) = call("GET", format!("{}/api/v1/alerts/{id}/cap", t.base), Some(token.into()), "", vec![]).await;
    assert_eq!(status, 200, "{xml}");
    xml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_state_of_an_alert_exports_as_valid_cap_1_2() {
    let t = start(|_| {}).await;
    let (resp_a, resp_b, (sensor, unit_a), _) = setup(&t).await;
    let hub = t.login("sensorhub", "ingest-pass").await;
    let duty = t.login("duty", "duty-pass").await;
    t.ingest(&hub, &[alarm("smoke-cap", &sensor)]).await;
    let alert = t.wait_alert(&duty, "from smoke-cap", |a| a["evidence"][0] == "smoke-cap").await;
    let id = alert["id"].as_str().unwrap();

    let first = cap(&t, &resp_a, id).await;
    act(&t, &resp_a, id, "ack", json!({})).await;
    let update = cap(&t, &resp_a, id).await;
    act(&t, &duty, id, "close", json!({"disposition": "false_alarm", "note": "steam from a shower"})).await;
    let cancel = cap(&t, &duty, id).await;
    let (status, _) = call("GET", format!("{}/api/v1/alerts/{id}/cap", t.base), Some(resp_b), "", vec![]).await;
    assert_eq!(status, 404, "outside the jurisdiction");

    assert!(first.contains("<msgType>Alert</msgType>") && !first.contains("<references>"), "{first}");
    assert!(first.contains("<category>Fire</category>") && first.contains("<severity>Severe</severity>"), "{first}");
    assert!(first.contains(&format!("<senderName>{unit_a}</senderName>")), "{first}");
    assert!(first.contains(&format!("<circle>{:.6},{:.6} 0.1</circle>", sensor.lat, sensor.lon)), "{first}");
    let identifier = |xml: &str| xml.split("<identifier>").nth(1).unwrap().split('<').next().unwrap().to_string();
    let original = identifier(&first);
    assert!(update.contains("<msgType>Update</msgType>"), "{update}");
    assert!(update.contains(&format!(",{original},")), "an update references the original: {update}");
    assert_ne!(identifier(&update), original);
    assert!(cancel.contains("<msgType>Cancel</msgType>") && cancel.contains(&format!(",{original},")), "{cancel}");
    assert!(cancel.contains("<urgency>Past</urgency>") && cancel.contains("closed as false_alarm"), "{cancel}");

    for xml in [&first, &update, &cancel] {
        if let Some(result) = python_check("capvalidator", CAP_CHECK, xml) {
            result.unwrap_or_else(|e| panic!("not valid CAP 1.2: {e}\n{xml}"));
        }
    }
    // The validator does refuse a message that breaks the schema.
    let broken = first.replace("<status>Actual</status>", "<status>Real</status>");
    if let Some(result) = python_check("capvalidator", CAP_CHECK, &broken) {
        assert!(result.is_err(), "capvalidator accepted a bad status");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silenced_alerts_are_kept_as_suppressed_and_device_health_opens_tickets_for_its_owner() {
    let t = start(|_| {}).await;
    let (resp_a, _, (sensor, _), (other, _)) = setup(&t).await;
    let admin = t.login("admin", "admin-pass").await;
    let duty = t.login("duty", "duty-pass").await;
    let hub = t.login("sensorhub", "ingest-pass").await;
    let battery = json!({"id": "battery-low", "kind": "match", "when": "event.kind == \"heartbeat\" && event.attrs.battery < 10",
                         "severity": "critical", "category": "device.battery"});
    t.install(&admin, battery).await;

    // A community responder may not silence; a silence needs a reason and an end.
    let expires = cityward_model::format_time(&(chrono::Utc::now() + chrono::Duration::hours(2)));
    let drill = json!({"source": sensor.id, "reason": "fire drill in the block", "expires": expires});
    let (status, body) = t.post_json("/api/v1/silences", &resp_a, drill.clone()).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = t.post_json("/api/v1/silences", &duty, json!({"source": sensor.id, "expires": expires})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = t.post_json("/api/v1/silences", &duty, json!({"reason": "x", "expires": expires})).await;
    assert!(status == 400 && body["error"]["message"].as_str().unwrap().contains("needs a scope"), "{body}");
    let (status, silence) = t.post_json("/api/v1/silences", &duty, drill).await;
    assert_eq!(status, 201, "{silence}");
    let silence_id = silence["id"].as_str().unwrap().to_string();
    assert_eq!(silence["owner"], "duty");

    t.ingest(&hub, &[alarm("drill-1", &sensor), alarm("real-1", &other)]).await;
    let drilled = t.wait_alert(&duty, "from drill-1", |a| a["evidence"][0] == "drill-1").await;
    assert_eq!(drilled["status"], "suppressed", "{drilled:#}");
    assert_eq!(drilled["handling"]["suppressed_by"], json!(silence_id));
    assert!(drilled["handling"]["ack_due"].is_null(), "no deadlines under a silence");
    let real = t.wait_alert(&duty, "from real-1", |a| a["evidence"][0] == "real-1").await;
    assert_eq!(real["status"], "assigned", "another device is not covered");
    // Still visible to its community, and reopenable.
    assert!(t.alerts(&resp_a).await.iter().any(|a| a["id"] == drilled["id"]));
    let (status, body) = act(&t, &duty, drilled["id"].as_str().unwrap(), "reopen", json!({"note": "smoke after the drill"})).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("assigned")), "{body}");

    // Ended early, the next alarm from that sensor is handled again.
    let (status, ended) = t.delete(&format!("/api/v1/silences/{silence_id}"), &duty).await;
    assert_eq!(status, 200, "{ended}");
    let (status, _) = t.delete(&format!("/api/v1/silences/{silence_id}"), &duty).await;
    assert_eq!(status, 404, "it is no longer running");
    let (_, list) = t.get("/api/v1/silences", &duty).await;
    assert_eq!(list["items"][0]["active"], false, "{list}");

    // A low battery is a ticket for the device's owning unit, apart from incidents: here a
    // device owned by another unit than the administrative unit of its grid.
    let city = t.node.city();
    let device = city
        .devices
        .iter()
        .find(|d| d.owner_unit.is_some() && d.owner_unit.as_deref() != city.grid_unit(&d.grid).map(|u| u.id.as_str()))
        .expect("a device owned by a unit other than its grid's")
        .clone();
    let owner = device.owner_unit.clone().unwrap();
    t.ingest(&hub, &[json!({"id": "hb-1", "source": device.id, "kind": "heartbeat", "time": now(), "attrs": {"battery": 4}})]).await;
    let ticket = t.wait_alert(&duty, "battery ticket", |a| a["rule"] == "battery-low").await;
    assert_eq!(ticket["handling"]["class"], "maintenance");
    assert_eq!(ticket["handling"]["owner"], json!(owner));
    assert!(ticket["handling"]["routing"]["reason"].as_str().unwrap().contains("owner of device"), "{ticket:#}");
    let (_, incidents) = t.get("/api/v1/alerts?class=incident&limit=1000", &duty).await;
    let incidents = incidents["items"].as_array().unwrap();
    assert!(incidents.iter().all(|a| a["rule"] != "battery-low") && incidents.len() >= 2);
    let (_, tickets) = t.get("/api/v1/alerts?class=maintenance", &duty).await;
    assert_eq!(tickets["items"].as_array().unwrap().len(), 1, "{tickets}");
    let (status, _) = t.get("/api/v1/alerts?class=urgent", &duty).await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_near_in_place_and_time_are_grouped_into_one_incident() {
    let t = start(|_| {}).await;
    let (resp_a, _, (sensor, _), (other, _)) = setup(&t).await;
    let admin = t.login("admin", "admin-pass").await;
    let duty = t.login("duty", "duty-pass").await;
    let hub = t.login("sensorhub", "ingest-pass").await;
    let camera = json!({"id": "camera-fire", "kind": "match", "when": "event.kind == \"video_event\" && event.attrs.event_type == \"fire\"",
                        "severity": "high", "category": "fire.camera"});
    t.install(&admin, camera).await;
    // A camera sees fire 80 m from the smoke sensor that alarms; another sensor, far away, too.
    let near = cityward_model::geo::offset_m((sensor.lon, sensor.lat), 80.0, 0.0);
    let video = json!({"id": "cam-1", "source": "camera-77", "kind": "video_event", "time": now(), "lon": near.0, "lat": near.1,
                       "attrs": {"event_type": "fire", "confidence": 0.9}});
    t.ingest(&hub, &[alarm("smoke-i", &sensor), video, alarm("smoke-far", &other)]).await;
    let smoke = t.wait_alert(&duty, "from smoke-i", |a| a["evidence"][0] == "smoke-i").await;
    let cam = t.wait_alert(&duty, "from cam-1", |a| a["evidence"][0] == "cam-1").await;
    let far = t.wait_alert(&duty, "from smoke-far", |a| a["evidence"][0] == "smoke-far").await;
    let incident = smoke["incident"].as_str().unwrap();
    assert_eq!(cam["incident"], smoke["incident"], "{cam:#}");
    assert_ne!(far["incident"], smoke["incident"]);

    let (status, body) = t.get(&format!("/api/v1/incidents/{incident}"), &resp_a).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 2);
    assert_eq!(body["categories"], json!(["fire.camera", "fire.smoke"]));
    let members: Vec<&str> = body["alerts"].as_array().unwrap().iter().map(|a| a["evidence"][0].as_str().unwrap()).collect();
    assert!(members.contains(&"smoke-i") && members.contains(&"cam-1"), "{members:?}");
    // A community none of its alerts was routed to sees nothing of it.
    let involved: Vec<Value> = [&smoke, &cam]
        .iter()
        .flat_map(|a| {
            let h = &a["handling"];
            let mut units = vec![h["owner"].clone()];
            units.extend(h["routing"]["candidates"].as_array().cloned().unwrap_or_default());
            units
        })
        .collect();
    let city = t.node.city();
    let outsider = city.units.iter().find(|u| u.kind == "community" && !involved.contains(&json!(u.id))).unwrap();
    t.node.create_user("outsider", "pass-o", Role::Responder, Some(&outsider.id)).unwrap();
    let outsider = t.login("outsider", "pass-o").await;
    let (status, _) = t.get(&format!("/api/v1/incidents/{incident}"), &outsider).await;
    assert_eq!(status, 404, "another community sees nothing of it");
}

/// A webhook receiver on a free port: records each request's headers and body, and answers
/// the statuses given in turn (204 once they run out).
/// A request as the receiver saw it: headers (names lowercased) and body.
type Received = (Vec<(String, String)>, String);

fn receiver(mut answers: Vec<u16>) -> (u16, mpsc::Receiver<Received>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    answers.reverse();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut headers = Vec::new();
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            loop {
                line.clear();
                reader.read_line(&mut line).unwrap();
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                let (k, v) = l.split_once(':').unwrap();
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
            let len: usize = headers.iter().find(|(k, _)| k == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let status = answers.pop().unwrap_or(204);
            write!(stream, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
            if tx.send((headers, String::from_utf8(body).unwrap())).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_get_signed_deliveries_retried_logged_and_replayable() {
    let t = start(|_| {}).await;
    let (resp_a, _, (sensor_a, unit_a), (sensor_b, _)) = setup(&t).await;
    let admin = t.login("admin", "admin-pass").await;
    let hub = t.login("sensorhub", "ingest-pass").await;
    let (port, requests) = receiver(vec![500]);
    let secret = "a-long-shared-secret";
    let (status, live) = t
        .post_json("/api/v1/webhooks", &admin, json!({"url": format!("http://127.0.0.1:{port}/hook"), "secret": secret, "unit": unit_a}))
        .await;
    assert_eq!(status, 201, "{live}");
    assert!(live.get("secret").is_none(), "the secret is never shown back");
    let (status, dead) =
        t.post_json("/api/v1/webhooks", &admin, json!({"url": "http://127.0.0.1:9/nobody", "secret": secret, "category": "fire.*"})).await;
    assert_eq!(status, 201, "{dead}");
    let (status, body) = t.post_json("/api/v1/webhooks", &admin, json!({"url": "http://x/", "secret": "short", "unit": unit_a})).await;
    assert!(status == 400 && body["error"]["message"].as_str().unwrap().contains("16 characters"), "{body}");
    let (status, _) = t.post_json("/api/v1/webhooks", &resp_a, json!({"url": "http://x/", "secret": secret, "unit": unit_a})).await;
    assert_eq!(status, 403);

    t.ingest(&hub, &[alarm("hook-a", &sensor_a), alarm("hook-b", &sensor_b)]).await;
    let alert = t.wait_alert(&admin, "from hook-a", |a| a["evidence"][0] == "hook-a").await;
    // First answered 500, then delivered on the retry (2 s later), signed both times.
    let got = tokio::task::spawn_blocking(move || {
        let first = requests.recv_timeout(Duration::from_secs(10)).expect("a first attempt");
        let second = requests.recv_timeout(Duration::from_secs(10)).expect("a retry");
        (first, second, requests)
    })
    .await
    .unwrap();
    let (first, (headers, body), requests) = got;
    assert_eq!(first.1, body, "the retry sends the same delivery");
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap();
    let timestamp: i64 = header("x-cityward-timestamp").parse().unwrap();
    assert_eq!(header("x-cityward-signature"), cityward_alerts::signature(secret, timestamp, body.as_bytes()));
    let payload = parse(&body);
    assert_eq!((payload["change"].as_str(), payload["alert"]["id"].as_str()), (Some("raised"), alert["id"].as_str()));

    // The log: delivered after two attempts; the dead endpoint's attempts failing.
    let live_id = live["id"].as_str().unwrap();
    let (_, log) = t.get(&format!("/api/v1/webhooks/deliveries?webhook={live_id}"), &admin).await;
    let items = log["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "community B's alert is not for this unit's webhook: {log:#}");
    let delivered = &items[0];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut delivered = delivered.clone();
    while delivered["status"] != "delivered" && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, log) = t.get(&format!("/api/v1/webhooks/deliveries?webhook={live_id}"), &admin).await;
        delivered = log["items"][0].clone();
    }
    assert_eq!((delivered["status"].as_str(), delivered["attempts"].as_u64()), (Some("delivered"), Some(2)), "{delivered:#}");
    let dead_id = dead["id"].as_str().unwrap();
    let (_, log) = t.get(&format!("/api/v1/webhooks/deliveries?webhook={dead_id}"), &admin).await;
    let dead_items = log["items"].as_array().unwrap();
    assert_eq!(dead_items.len(), 2, "both fire alerts: {log:#}");
    assert!(dead_items.iter().all(|d| d["status"] == "pending" && d["attempts"].as_u64() >= Some(1)), "{log:#}");
    assert!(dead_items[0]["last_error"].as_str().unwrap().contains("no answer"), "{log:#}");
    let (status, replayed) = t.post_json(&format!("/api/v1/webhooks/deliveries/{}/replay", dead_items[0]["id"]), &admin, json!({})).await;
    assert_eq!((status, replayed["status"].as_str()), (200, Some("pending")), "{replayed}");

    // An action is a change too.
    let (status, _) = act(&t, &resp_a, alert["id"].as_str().unwrap(), "ack", json!({})).await;
    assert_eq!(status, 200);
    let (_, body) = tokio::task::spawn_blocking(move || requests.recv_timeout(Duration::from_secs(10)).expect("the ack")).await.unwrap();
    assert_eq!(parse(&body)["change"], "ack");
    let (status, _) = t.delete(&format!("/api/v1/webhooks/{dead_id}"), &admin).await;
    assert_eq!(status, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machines_get_scoped_revocable_tokens() {
    let t = start(|_| {}).await;
    let (_, _, (sensor_a, unit_a), (sensor_b, _)) = setup(&t).await;
    let admin = t.login("admin", "admin-pass").await;
    let duty = t.login("duty", "duty-pass").await;
    let (status, _) = t.post_json("/api/v1/tokens", &duty, json!({"name": "gw", "scope": "ingest"})).await;
    assert_eq!(status, 403, "only an admin issues tokens");
    let (status, body) = t.post_json("/api/v1/tokens", &admin, json!({"name": "gw", "scope": "write"})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = t.post_json("/api/v1/tokens", &admin, json!({"name": "duty", "scope": "ingest"})).await;
    assert_eq!(status, 409, "a person's name is not a machine's: {body}");
    let (status, ingest) = t.post_json("/api/v1/tokens", &admin, json!({"name": "sensor-gateway", "scope": "ingest", "days": 30})).await;
    assert_eq!(status, 201, "{ingest}");
    let (status, reader) = t.post_json("/api/v1/tokens", &admin, json!({"name": "community-board", "scope": "read", "unit": unit_a})).await;
    assert_eq!(status, 201, "{reader}");
    let gateway = ingest["token"].as_str().unwrap().to_string();
    let board = reader["token"].as_str().unwrap().to_string();

    // The ingest token posts events and reads nothing.
    t.ingest(&gateway, &[alarm("tok-a", &sensor_a), alarm("tok-b", &sensor_b)]).await;
    let (status, _) = t.get("/api/v1/alerts", &gateway).await;
    assert_eq!(status, 403);
    // The read token reads its unit's alerts only, and cannot act.
    let a = t.wait_alert(&duty, "from tok-a", |a| a["evidence"][0] == "tok-a").await;
    t.wait_alert(&duty, "from tok-b", |a| a["evidence"][0] == "tok-b").await;
    let seen: Vec<String> = t.alerts(&board).await.iter().map(|a| a["evidence"][0].as_str().unwrap().to_string()).collect();
    assert!(seen.contains(&"tok-a".to_string()) && !seen.contains(&"tok-b".to_string()), "{seen:?}");
    let (status, _) = act(&t, &board, a["id"].as_str().unwrap(), "ack", json!({})).await;
    assert_eq!(status, 403);
    let (status, _) = t.post_json("/api/v1/events", &board, json!([])).await;
    assert_eq!(status, 403, "a read token posts nothing");

    // Listed without the tokens; revoked at once.
    let (_, list) = t.get("/api/v1/tokens", &admin).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2, "{list}");
    assert!(!list.to_string().contains(&gateway) && !list.to_string().contains(&board));
    let (status, _) = t.delete(&format!("/api/v1/tokens/{}", ingest["id"].as_str().unwrap()), &admin).await;
    assert_eq!(status, 204);
    let (status, _) = t.post_json("/api/v1/events", &gateway, json!([])).await;
    assert_eq!(status, 401, "a revoked token no longer works");
    let (status, _) = t.delete(&format!("/api/v1/tokens/{}", ingest["id"].as_str().unwrap()), &admin).await;
    assert_eq!(status, 404);
    assert_eq!(t.alerts(&board).await.len(), seen.len(), "the other token still works");
}

/// A certificate authority and a server certificate it signs for 127.0.0.1, made with the
/// `openssl` command line in `dir`: (CA file, certificate file, key file).
fn tls_identity(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs (apt install openssl)");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let (ca_key, ca, key, csr, cert) =
        (format!("{name}-ca.key"), format!("{name}-ca.pem"), format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
    let subject = format!("/CN={name} city CA");
    run(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", &ca_key, "-out", &ca, "-days", "2", "-subj", &subject]);
    run(&["req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"]);
    let ext = format!("{name}.ext");
    std::fs::write(dir.join(&ext), "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n").unwrap();
    run(&["x509", "-req", "-in", &csr, "-CA", &ca, "-CAkey", &ca_key, "-CAcreateserial", "-out", &cert, "-days", "2", "-extfile", &ext]);
    (dir.join(ca), dir.join(cert), dir.join(key))
}

/// An https webhook receiver (Python's `http.server` behind `ssl`): its port, and each
/// request's body as it arrives. Killed when the guard drops.
struct HttpsReceiver {
    child: std::process::Child,
    port: u16,
    bodies: mpsc::Receiver<String>,
}

impl HttpsReceiver {
    fn start(cert: &std::path::Path, key: &std::path::Path) -> HttpsReceiver {
        const SERVER: &str = r#"
import http.server, json, ssl, sys
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers['Content-Length']))
        print(json.dumps(body.decode()), flush=True)
        self.send_response(204)
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(('127.0.0.1', 0), Hook)
tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
tls.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = tls.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;
        let mut child = std::process::Command::new("python3")
            .args(["-c", SERVER])
            .arg(cert)
            .arg(key)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let port = lines.next().unwrap().unwrap().trim().parse().unwrap();
        let (tx, bodies) = mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if tx.send(serde_json::from_str::<String>(&line).unwrap()).is_err() {
                    return;
                }
            }
        });
        HttpsReceiver { child, port, bodies }
    }
}

impl Drop for HttpsReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_reach_https_endpoints_whose_certificates_the_city_trusts() {
    let certs = tempfile::tempdir().unwrap();
    let (city_ca, city_cert, city_key) = tls_identity(certs.path(), "city");
    let (_, stranger_cert, stranger_key) = tls_identity(certs.path(), "stranger");
    let trusted = HttpsReceiver::start(&city_cert, &city_key);
    let untrusted = HttpsReceiver::start(&stranger_cert, &stranger_key);
    let ca = city_ca.clone();
    let t = start(move |c| c.alerts.webhook_ca_file = Some(ca)).await;
    let (_, _, (sensor_a, unit_a), _) = setup(&t).await;
    let admin = t.login("admin", "admin-pass").await;
    let hub = t.login("sensorhub", "ingest-pass").await;
    let secret = "a-long-shared-secret";
    let mut hooks = Vec::new();
    for port in [trusted.port, untrusted.port] {
        let url = format!("https://127.0.0.1:{port}/hook");
        let (status, hook) = t.post_json("/api/v1/webhooks", &admin, json!({"url": url, "secret": secret, "unit": unit_a})).await;
        assert_eq!(status, 201, "{hook}");
        hooks.push(hook["id"].as_str().unwrap().to_string());
    }
    t.ingest(&hub, &[alarm("tls-a", &sensor_a)]).await;
    let alert = t.wait_alert(&admin, "from tls-a", |a| a["evidence"][0] == "tls-a").await;

    let body = tokio::task::block_in_place(|| trusted.bodies.recv_timeout(Duration::from_secs(10)).expect("a delivery over https"));
    assert_eq!(parse(&body)["alert"]["id"], alert["id"]);
    // The stranger's certificate is not signed by a CA the city trusts: nothing reaches it,
    // and the failed attempt says why.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let failed = loop {
        let (_, log) = t.get(&format!("/api/v1/webhooks/deliveries?webhook={}", hooks[1]), &admin).await;
        let item = log["items"][0].clone();
        if item["attempts"].as_u64() >= Some(1) || std::time::Instant::now() > deadline {
            break item;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(failed["status"], "pending", "{failed:#}");
    assert!(failed["last_error"].as_str().unwrap().to_lowercase().contains("certificate"), "{failed:#}");
    assert!(untrusted.bodies.try_recv().is_err(), "no body reached the untrusted endpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_ca_file_that_is_not_pem_stops_the_node_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("ca.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let mut config = cityward_server::NodeConfig::default();
    config.node.data_dir = dir.path().join("data");
    config.alerts.webhook_ca_file = Some(bad.clone());
    let err = cityward_server::Node::open(config).await.err().expect("refused").to_string();
    assert!(err.contains("alerts.webhook_ca_file") && err.contains(&bad.display().to_string()), "{err}");
    assert!(err.contains("no certificate"), "{err}");
}
