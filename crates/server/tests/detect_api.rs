//! The detection stage through the HTTP API of an in-process node: rules (CRUD, versions,
//! validation, roles), alerts raised from live intake (and repeats counted on them), rule
//! changes at run time that keep the state of unchanged rules, hotlists, and the stage's
//! status.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::*;

const SMOKE_YAML: &str = r#"id: smoke-alarm
kind: match
when: event.kind == "smoke" && event.attrs.alarm == true
severity: high
category: fire.smoke
title: Smoke alarm
"#;

fn heat_rule(id: &str, category: &str) -> Value {
    json!({"id": id, "kind": "threshold", "when": "event.kind == \"smoke\"", "attr": "temperature_c",
           "above": 60, "count": 2, "severity": "critical", "category": category})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_are_stored_read_validated_and_deleted_by_role() {
    let t = start(|_| {}).await;
    let admin = t.login("admin", "admin-pass").await;
    let analyst = t.login("analyst", "analyst-pass").await;
    let duty = t.login("duty", "duty-pass").await;

    // YAML and JSON bodies.
    let (status, body) = t.put_rule("smoke-alarm", "", &admin, true, SMOKE_YAML).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 1);
    assert_eq!(body["updated_by"], "admin");
    assert_eq!(body["rule"]["kind"], "match");
    assert_eq!(body["rule"]["severity"], "high");
    let (status, body) = t.put_rule("heat", "", &analyst, false, &heat_rule("heat", "fire.heat").to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 1);

    // One, and the list.
    let (status, one) = t.get("/api/v1/rules/smoke-alarm", &duty).await;
    assert_eq!(status, 200, "a dispatcher may read rules: {one}");
    assert_eq!(one["id"], "smoke-alarm");
    assert_eq!(one["rule"]["when"], r#"event.kind == "smoke" && event.attrs.alarm == true"#);
    assert_eq!(one["rule"]["title"], "Smoke alarm");
    assert_eq!(one["enabled"], true);
    let (status, list) = t.get("/api/v1/rules", &duty).await;
    assert_eq!(status, 200, "{list}");
    let items = list["items"].as_array().unwrap();
    let summary: Vec<(String, i64, String)> = items
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["version"].as_i64().unwrap(),
                r["updated_by"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![("heat".to_string(), 1, "analyst".to_string()), ("smoke-alarm".to_string(), 1, "admin".to_string())]
    );

    // Replacing with the right version bumps it.
    let changed = SMOKE_YAML.replace("severity: high", "severity: critical");
    let (status, body) = t.put_rule("smoke-alarm", "?version=1", &admin, true, &changed).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 2);
    assert_eq!(body["rule"]["severity"], "critical");

    // Refused rules: 400 with a message naming the key at fault.
    let cases: Vec<(&str, bool, String, Vec<&str>)> = vec![
        (
            "unknown key",
            true,
            "id: bad\nkind: match\ncolour: red\ncategory: x.y\n".to_string(),
            vec!["colour"],
        ),
        (
            "bad CEL",
            false,
            json!({"id": "bad", "kind": "match", "when": "event.kind == ", "category": "x.y"}).to_string(),
            vec!["`when`", "line 1, column"],
        ),
        (
            "unknown zone",
            false,
            json!({"id": "bad", "kind": "geofence", "zones": ["no-such-zone"], "on": "enter", "category": "x.y"}).to_string(),
            vec!["`zones`", "no-such-zone"],
        ),
        (
            "key of another kind",
            false,
            json!({"id": "bad", "kind": "match", "limit_kmh": 50, "category": "x.y"}).to_string(),
            vec!["limit_kmh"],
        ),
    ];
    for (what, yaml, body, needles) in cases {
        let (status, answer) = t.put_rule("bad", "", &admin, yaml, &body).await;
        assert_eq!(status, 400, "{what}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_input", "{what}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        for n in needles {
            assert!(message.contains(n), "{what}: `{n}` not in: {message}");
        }
    }
    let (status, answer) = t.put_rule("other-id", "", &admin, true, SMOKE_YAML).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("other-id"), "{answer}");
    let (status, _) = t.get("/api/v1/rules/bad", &admin).await;
    assert_eq!(status, 404, "a refused rule is not stored");

    // Roles: a dispatcher may read but not write.
    let (status, answer) = t.put_rule("smoke-alarm", "", &duty, true, SMOKE_YAML).await;
    assert_eq!(status, 403, "{answer}");
    let (status, _) = t.delete("/api/v1/rules/smoke-alarm", &duty).await;
    assert_eq!(status, 403);
    let (status, _) = call("GET", format!("{}/api/v1/rules", t.base), None, "", vec![]).await;
    assert_eq!(status, 401);

    // Delete: 204, then 404 for it and for a second delete.
    let (status, body) = t.delete("/api/v1/rules/smoke-alarm", &admin).await;
    assert_eq!(status, 204, "{body}");
    let (status, _) = t.get("/api/v1/rules/smoke-alarm", &admin).await;
    assert_eq!(status, 404);
    let (status, _) = t.delete("/api/v1/rules/smoke-alarm", &admin).await;
    assert_eq!(status, 404);
    let (_, list) = t.get("/api/v1/rules", &admin).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_rule_version_is_a_conflict() {
    let t = start(|_| {}).await;
    let admin = t.login("admin", "admin-pass").await;
    let (status, body) = t.put_rule("smoke-alarm", "?version=0", &admin, true, SMOKE_YAML).await;
    assert_eq!(status, 200, "version 0: create only: {body}");
    let (status, body) = t.put_rule("smoke-alarm", "?version=0", &admin, true, SMOKE_YAML).await;
    assert_eq!(status, 409, "it exists already: {body}");
    let (status, body) = t.put_rule("smoke-alarm", "?version=7", &admin, true, SMOKE_YAML).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict", "{body}");
    let (status, body) = t.delete("/api/v1/rules/smoke-alarm?version=3", &admin).await;
    assert_eq!(status, 409, "{body}");
    let (_, one) = t.get("/api/v1/rules/smoke-alarm", &admin).await;
    assert_eq!(one["version"], 1, "nothing changed: {one}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_raise_alerts_and_repeats_count_on_the_open_alert() {
    let t = start(|_| {}).await;
    let admin = t.login("admin", "admin-pass").await;
    let hub = t.login("sensorhub", "ingest-pass").await;
    let duty = t.login("duty", "duty-pass").await;
    let sensor = device(&t.node, "smoke");
    let other = t.node.city().devices.iter().find(|d| d.kind == "smoke" && d.id != sensor.id).unwrap().clone();

    let (status, st) = t.get("/api/v1/detect/status", &admin).await;
    assert_eq!(status, 200, "{st}");
    assert_eq!(st["next_seq"], 1, "nothing applied yet: {st}");
    let (status, _) = t.get("/api/v1/detect/status", &duty).await;
    assert_eq!(status, 403, "the detection status is for admins and analysts");

    let (status, body) = t.put_rule("smoke-alarm", "", &admin, true, SMOKE_YAML).await;
    assert_eq!(status, 200, "{body}");
    t.install(&admin, heat_rule("heat", "fire.heat")).await;

    // Nothing for a normal reading; an alert for an alarm.
    t.ingest(&hub, &[smoke("s0", &sensor.id, false, 20.0), smoke("s1", &sensor.id, true, 25.0)]).await;
    let alert = t.wait_alert(&duty, "for the smoke alarm", |a| a["rule"] == "smoke-alarm").await;
    assert_eq!(alert["key"], sensor.id.as_str());
    assert_eq!(alert["severity"], "high");
    assert_eq!(alert["category"], "fire.smoke");
    assert_eq!(alert["title"], "Smoke alarm");
    assert_eq!(alert["evidence"], json!(["s1"]));
    assert_eq!(alert["count"], 1);
    assert_eq!(alert["status"], "assigned", "routed as it was stored");
    assert_eq!(alert["grid"], sensor.grid.as_str(), "the device's grid (the event had no place)");
    assert_eq!((alert["lon"].as_f64(), alert["lat"].as_f64()), (Some(sensor.lon), Some(sensor.lat)));
    let id = alert["id"].as_str().unwrap().to_string();
    let (status, one) = t.get(&format!("/api/v1/alerts/{id}"), &duty).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["id"], id.as_str());
    assert_eq!(one["rule"], "smoke-alarm");
    let (status, _) = t.get("/api/v1/alerts/a0000000000000000", &duty).await;
    assert_eq!(status, 404);

    // A repeat within the suppression period counts on the same alert; another sensor is
    // another key and another alert.
    t.ingest(&hub, &[smoke("s2", &sensor.id, true, 26.0), smoke("o1", &other.id, true, 22.0)]).await;
    let repeated = t
        .wait_alert(&duty, "counted twice", |a| a["id"] == id.as_str() && a["count"] == 2)
        .await;
    assert_eq!(repeated["evidence"], json!(["s1", "s2"]));
    let second = t.wait_alert(&duty, "for the other sensor", |a| a["key"] == other.id.as_str()).await;
    assert_ne!(second["id"], id.as_str());
    let smoke_alerts = t.alerts(&duty).await.into_iter().filter(|a| a["rule"] == "smoke-alarm").count();
    assert_eq!(smoke_alerts, 2);
    assert!(
        t.alerts(&duty).await.iter().all(|a| a["rule"] != "heat"),
        "no reading was above 60 °C"
    );

    // Status filter and paging.
    let (status, page) = t.get("/api/v1/alerts?status=assigned&limit=1", &duty).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let next = page["next"].as_str().expect("a second page").to_string();
    let (status, page2) = t.get(&format!("/api/v1/alerts?status=assigned&limit=1&cursor={next}"), &duty).await;
    assert_eq!(status, 200, "{page2}");
    assert_eq!(page2["items"].as_array().unwrap().len(), 1);
    assert_ne!(page2["items"][0]["id"], page["items"][0]["id"]);
    let (_, closed) = t.get("/api/v1/alerts?status=closed", &duty).await;
    assert_eq!(closed["items"], json!([]));

    // The status: position moves, rules counted, counters per rule.
    let st = t.wait_applied(&admin, 5).await;
    assert_eq!(st["next_seq"], 5, "four events applied: {st}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let st = loop {
        let (_, st) = t.get("/api/v1/detect/status", &admin).await;
        if st["rules"] == 2 && st["stats"]["rules"]["smoke-alarm"]["raised"] == 2 {
            break st;
        }
        assert!(Instant::now() < deadline, "status does not show 2 rules and 2 raised: {st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(st["stats"]["rules"]["smoke-alarm"]["repeated"], 1, "{st}");
    assert_eq!(st["stats"]["events"], 4, "{st}");
    assert!(st["watermark"].is_string(), "{st}");

    // The stage's metrics are exported.
    let (status, text) = call("GET", format!("{}/metrics", t.base), None, "", vec![]).await;
    assert_eq!(status, 200);
    for line in ["cityward_detect_events_total 4", "cityward_detect_alerts_raised_total 2"] {
        assert!(text.lines().any(|l| l == line), "`{line}` not in /metrics:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_one_rule_keeps_the_state_of_the_others() {
    let t = start(|_| {}).await;
    let admin = t.login("admin", "admin-pass").await;
    let hub = t.login("sensorhub", "ingest-pass").await;
    let sensor = device(&t.node, "smoke");
    // Two threshold rules needing two readings above 60 °C: `kept` is never touched,
    // `changed` is replaced between the readings.
    t.install(&admin, heat_rule("kept", "fire.heat")).await;
    t.install(&admin, heat_rule("changed", "fire.heat")).await;
    t.install(&admin, json!({"id": "other", "kind": "match", "when": "event.kind == \"door\"", "category": "site.door"})).await;

    t.ingest(&hub, &[smoke("r1", &sensor.id, false, 70.0)]).await;
    t.wait_applied(&admin, 2).await;
    // Another rule changes, a third rule is added, and `changed` itself changes.
    t.install(&admin, json!({"id": "other", "kind": "match", "when": "event.kind == \"door\"", "category": "site.gate"})).await;
    t.install(&admin, json!({"id": "added", "kind": "match", "when": "event.kind == \"gas\"", "category": "hazard.gas"})).await;
    t.install(&admin, heat_rule("changed", "fire.heat2")).await;

    t.ingest(&hub, &[smoke("r2", &sensor.id, false, 75.0)]).await;
    let kept = t.wait_alert(&admin, "of the unchanged rule", |a| a["rule"] == "kept").await;
    assert_eq!(kept["evidence"], json!(["r1", "r2"]), "the first reading was remembered: {kept}");
    assert_eq!(kept["key"], sensor.id.as_str());
    assert_eq!(kept["severity"], "critical");
    assert_eq!(kept["detail"]["readings"], 2);
    // The changed rule started afresh: r2 is its first reading, r3 its second.
    t.ingest(&hub, &[smoke("r3", &sensor.id, false, 80.0)]).await;
    let changed = t.wait_alert(&admin, "of the changed rule", |a| a["rule"] == "changed").await;
    assert_eq!(changed["evidence"], json!(["r2", "r3"]), "{changed}");
    assert_eq!(changed["category"], "fire.heat2");
    let kept_alerts = t.alerts(&admin).await.into_iter().filter(|a| a["rule"] == "kept").count();
    assert_eq!(kept_alerts, 1, "still above: no second alert");

    // Deleting a rule drops its state: recreated, it needs two readings again.
    let (status, _) = t.delete("/api/v1/rules/kept", &admin).await;
    assert_eq!(status, 204);
    t.install(&admin, heat_rule("kept", "fire.heat")).await;
    t.ingest(&hub, &[smoke("r4", &sensor.id, false, 20.0), smoke("r5", &sensor.id, false, 90.0)]).await;
    t.ingest(&hub, &[smoke("r6", &sensor.id, false, 91.0)]).await;
    let again = t
        .wait_alert(&admin, "of the re-created rule", |a| a["rule"] == "kept" && a["id"] != kept["id"])
        .await;
    assert_eq!(again["evidence"], json!(["r5", "r6"]), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hotlist_entries_match_normalised_plates_until_they_expire_or_are_removed() {
    let t = start(|_| {}).await;
    let admin = t.login("admin", "admin-pass").await;
    let analyst = t.login("analyst", "analyst-pass").await;
    let hub = t.login("sensorhub", "ingest-pass").await;
    let duty = t.login("duty", "duty-pass").await;
    let anpr = device(&t.node, "anpr");
    t.install(
        &admin,
        json!({"id": "wanted", "kind": "hotlist", "when": "event.kind == \"plate_read\"", "list": "wanted",
               "attr": "plate", "key": "event.attrs.plate", "severity": "high", "category": "police.wanted"}),
    )
    .await;

    let in_a_day = cityward_model::format_time(&(chrono::Utc::now() + chrono::Duration::days(1)));
    let (status, entry) = t
        .post_json(
            "/api/v1/hotlists/wanted/entries",
            &analyst,
            json!({"value": "浙B7Q5X9", "reason": "case 2026-0117", "expires": in_a_day}),
        )
        .await;
    assert_eq!(status, 200, "{entry}");
    assert_eq!(entry["owner"], "police-city", "the caller's unit when no owner is given");
    let (status, entry) = t
        .post_json(
            "/api/v1/hotlists/wanted/entries",
            &admin,
            json!({"value": "沪A12345", "reason": "stolen", "owner": "traffic", "expires": in_a_day}),
        )
        .await;
    assert_eq!(status, 200, "{entry}");
    // Refused entries.
    let (status, answer) = t
        .post_json("/api/v1/hotlists/wanted/entries", &admin, json!({"value": "苏E9L2D6", "expires": in_a_day}))
        .await;
    assert_eq!(status, 400, "no reason: {answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("reason"), "{answer}");
    let (status, answer) = t
        .post_json("/api/v1/hotlists/wanted/entries", &admin, json!({"value": "苏E9L2D6", "reason": " ", "expires": in_a_day}))
        .await;
    assert_eq!(status, 400, "blank reason: {answer}");
    let an_hour_ago = cityward_model::format_time(&(chrono::Utc::now() - chrono::Duration::hours(1)));
    let (status, answer) = t
        .post_json("/api/v1/hotlists/wanted/entries", &admin, json!({"value": "苏E9L2D6", "reason": "old case", "expires": an_hour_ago}))
        .await;
    assert!(status == 400 || status == 200, "{answer}");
    let (status, answer) = t
        .post_json("/api/v1/hotlists/wanted/entries", &duty, json!({"value": "苏E9L2D6", "reason": "x", "expires": in_a_day}))
        .await;
    assert_eq!(status, 403, "{answer}");
    // An entry that expires in a moment.
    let soon = cityward_model::format_time(&(chrono::Utc::now() + chrono::Duration::milliseconds(1500)));
    let (status, answer) = t
        .post_json("/api/v1/hotlists/wanted/entries", &admin, json!({"value": "皖C55555", "reason": "brief", "expires": soon}))
        .await;
    assert_eq!(status, 200, "{answer}");
    let (status, lists) = t.get("/api/v1/hotlists", &admin).await;
    assert_eq!(status, 200, "{lists}");
    let values: Vec<&str> = lists["items"][0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["value"].as_str().unwrap())
        .collect();
    assert!(values.contains(&"浙B7Q5X9") && values.contains(&"沪A12345"), "{lists}");
    tokio::time::sleep(Duration::from_millis(1700)).await;

    // Reads of the expired plates first, then a listed plate written differently.
    t.ingest(
        &hub,
        &[
            plate_read("p1", &anpr, "苏E9L2D6"),
            plate_read("p2", &anpr, "皖C55555"),
            plate_read("p3", &anpr, "浙b 7q5x9"),
        ],
    )
    .await;
    let alert = t.wait_alert(&duty, "for the listed plate", |a| a["rule"] == "wanted").await;
    assert_eq!(alert["key"], "浙b 7q5x9");
    assert_eq!(alert["evidence"], json!(["p3"]));
    assert_eq!(alert["category"], "police.wanted");
    assert_eq!(alert["severity"], "high");
    assert_eq!(alert["detail"]["listed_value"], "浙B7Q5X9");
    assert_eq!(alert["detail"]["reason"], "case 2026-0117");
    assert_eq!(alert["detail"]["owner"], "police-city");
    let expected_grid = t.node.city().grid_at(anpr.lon, anpr.lat).map(|g| g.id.clone());
    assert_eq!(alert["grid"].as_str(), expected_grid.as_deref());
    let wanted: Vec<Value> = t.alerts(&duty).await.into_iter().filter(|a| a["rule"] == "wanted").collect();
    assert_eq!(wanted.len(), 1, "expired entries do not match: {wanted:#?}");

    // Removed, it no longer matches.
    let (status, body) = t.delete(&format!("/api/v1/hotlists/wanted/entries/{}", encode("沪A12345")), &admin).await;
    assert_eq!(status, 204, "{body}");
    let (status, _) = t.delete(&format!("/api/v1/hotlists/wanted/entries/{}", encode("沪A12345")), &admin).await;
    assert_eq!(status, 404);
    t.ingest(&hub, &[plate_read("p4", &anpr, "沪A12345"), plate_read("p5", &anpr, "浙B7Q5X9")]).await;
    t.wait_alert(&duty, "for the other spelling of the listed plate", |a| a["key"] == "浙B7Q5X9").await;
    let keys: Vec<String> = t
        .alerts(&duty)
        .await
        .into_iter()
        .filter(|a| a["rule"] == "wanted")
        .map(|a| a["key"].as_str().unwrap().to_string())
        .collect();
    assert!(!keys.contains(&"沪A12345".to_string()), "a removed entry matched: {keys:?}");
}

/// A `sql` rule runs on its schedule over the events (lake and WAL), and each row becomes an
/// alert with the row as its detail; the next run over the same data stores nothing new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_rules_turn_rows_into_alerts_on_their_schedule() {
    let t = start(|_| {}).await;
    let admin = t.login("admin", "admin-pass").await;
    let hub = t.login("sensorhub", "ingest-pass").await;
    let sensor = device(&t.node, "smoke");
    t.ingest(&hub, &[smoke("q1", &sensor.id, false, 71.0), smoke("q2", &sensor.id, false, 20.0)]).await;
    let rule = json!({
        "id": "hot-readings",
        "kind": "sql",
        "query": "SELECT source AS key, id, CAST(time AS VARCHAR) AS time, grid FROM events WHERE kind = 'smoke' AND temperature_c > 60",
        "every": "1s",
        "severity": "high",
        "category": "fire.model",
    });
    t.install(&admin, rule).await;
    let alert = t.wait_alert(&admin, "from the SQL rule", |a| a["rule"] == "hot-readings").await;
    assert_eq!(alert["key"], sensor.id.as_str());
    assert_eq!(alert["evidence"], json!(["q1"]));
    assert_eq!(alert["severity"], "high");
    assert_eq!(alert["grid"], sensor.grid.as_str());
    assert_eq!(alert["detail"]["id"], "q1", "the row is the alert's detail: {alert}");
    // Later runs over the same rows add nothing.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let n = t.alerts(&admin).await.into_iter().filter(|a| a["rule"] == "hot-readings").count();
    assert_eq!(n, 1);
}
