//! Dispatch through the HTTP API of an in-process node: responders registered through the
//! API, their positions taken from their own devices' `gps` events, and the nearest
//! available ones recommended for an alert by road over the generated city's streets —
//! busy, off-duty and unheard-of responders left out, jurisdictions kept, bad input
//! answered with what to send instead.

use std::time::{Duration, Instant};

use cityward_model::city::Device;
use cityward_model::geo::{haversine_m, offset_m, Point};
use cityward_model::City;
use cityward_server::Role;
use serde_json::{json, Value};

mod common;
use common::*;

const SMOKE_RULE: &str = r#"{"id": "smoke-alarm", "kind": "match", "when": "event.kind == \"smoke\" && event.attrs.alarm == true",
    "severity": "high", "category": "fire.smoke", "title": "Smoke alarm"}"#;

/// The smoke sensor nearest the middle of the city (so points around it stay in the city),
/// and the fire brigade of its district.
fn central_sensor(city: &City) -> (Device, String) {
    let middle = city.bbox().center();
    let sensor = city
        .devices
        .iter()
        .filter(|d| d.kind == "smoke")
        .min_by(|a, b| haversine_m(middle, (a.lon, a.lat)).total_cmp(&haversine_m(middle, (b.lon, b.lat))))
        .expect("the generated city has smoke sensors")
        .clone();
    let region = &city.grid(&sensor.grid).unwrap().region;
    let district = city.region_chain(region).last().unwrap().id.clone();
    let brigade = format!("fire-{district}");
    assert!(city.unit(&brigade).is_some(), "no unit {brigade}");
    (sensor, brigade)
}

/// A community unit whose region does not hold `grid`.
fn other_community(city: &City, grid: &str) -> String {
    let region = &city.grid(grid).unwrap().region;
    let chain: Vec<&str> = city.region_chain(region).iter().map(|r| r.id.as_str()).collect();
    city.units
        .iter()
        .find(|u| u.kind == "community" && u.region.as_deref().is_some_and(|r| !chain.contains(&r)))
        .expect("another community")
        .id
        .clone()
}

fn gps(id: &str, source: &str, p: Point, time: String) -> Value {
    json!({"id": id, "source": source, "kind": "gps", "time": time, "lon": p.0, "lat": p.1, "attrs": {"speed_kmh": 0.0}})
}

async fn put_responder(t: &TestNode, token: &str, id: &str, body: Value) -> (u16, Value) {
    let (status, text) = call(
        "PUT",
        format!("{}/api/v1/responders/{}", t.base, encode(id)),
        Some(token.into()),
        "application/json",
        body.to_string().into_bytes(),
    )
    .await;
    (status, parse(&text))
}

async fn set_status(t: &TestNode, token: &str, id: &str, status: &str) -> (u16, Value) {
    t.post_json(&format!("/api/v1/responders/{}/status", encode(id)), token, json!({"status": status})).await
}

/// Responders listed, by id.
async fn listed(t: &TestNode, token: &str) -> Vec<Value> {
    let (status, page) = t.get("/api/v1/responders", token).await;
    assert_eq!(status, 200, "{page}");
    page["items"].as_array().unwrap().clone()
}

fn ids(answer: &Value) -> Vec<String> {
    answer["items"].as_array().unwrap().iter().map(|i| i["responder"].as_str().unwrap().to_string()).collect()
}

fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_else(|| panic!("no error message in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nearest_available_responders_are_recommended_by_road() {
    let t = start(|_| {}).await;
    let admin = t.login("admin", "admin-pass").await;
    let duty = t.login("duty", "duty-pass").await;
    let hub = t.login("sensorhub", "ingest-pass").await;
    let (status, body) = t.put_rule("smoke-alarm", "", &admin, false, SMOKE_RULE).await;
    assert_eq!(status, 200, "{body}");
    let city = t.node.city();
    let (sensor, brigade) = central_sensor(&city);
    let place = (sensor.lon, sensor.lat);

    // Six engines of the district's brigade around the sensor: three to recommend, and
    // one busy, one off duty and one last heard of twenty minutes ago.
    let engines: [(&str, &str, (f64, f64), i64); 6] = [
        ("engine-near", "available", (300.0, 0.0), 0),
        ("engine-mid", "available", (-700.0, 500.0), 0),
        ("engine-far", "available", (1200.0, -1100.0), 0),
        ("engine-busy", "busy", (100.0, 0.0), 0),
        ("engine-off", "off_duty", (0.0, 80.0), 0),
        ("engine-stale", "available", (150.0, 0.0), 20),
    ];
    for (id, status, _, _) in engines {
        let (code, body) = put_responder(&t, &duty, id, json!({"unit": brigade, "name": format!("Engine {id}"), "status": status})).await;
        assert_eq!(code, 201, "{body}");
        assert_eq!((body["id"].as_str(), body["status"].as_str(), body["stale"].as_bool()), (Some(id), Some(status), Some(true)), "{body}");
    }
    let (code, body) = put_responder(&t, &duty, "engine-near", json!({"unit": brigade, "name": "Engine 1"})).await;
    assert_eq!((code, body["name"].as_str(), body["status"].as_str()), (200, Some("Engine 1"), Some("available")), "{body}");

    let fixes: Vec<Value> = engines
        .iter()
        .map(|(id, _, (east, north), minutes_ago)| {
            let time = cityward_model::format_time(&(chrono::Utc::now() - chrono::Duration::minutes(*minutes_ago)));
            gps(&format!("fix-{id}"), id, offset_m(place, *east, *north), time)
        })
        .collect();
    t.ingest(&hub, &fixes).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let items = listed(&t, &duty).await;
        if items.len() == engines.len() && items.iter().all(|r| r["position"].is_object()) {
            let stale: Vec<&str> = items.iter().filter(|r| r["stale"] == true).map(|r| r["id"].as_str().unwrap()).collect();
            assert_eq!(stale, ["engine-stale"], "{items:#?}");
            break;
        }
        assert!(Instant::now() < deadline, "positions not taken within 10 s: {items:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(t.node.metrics().sum("cityward_dispatch_positions_total") >= engines.len() as f64);

    t.ingest(&hub, &[smoke("smoke-1", &sensor.id, true, 25.0)]).await;
    let alert = t.wait_alert(&duty, "from smoke-1", |a| a["evidence"][0] == "smoke-1").await;
    let id = alert["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/alerts/{id}/recommendations");

    let (status, answer) = t.get(&format!("{path}?k=5"), &duty).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["by"], "road", "the generated city has roads: {answer:#}");
    let mut got = ids(&answer);
    got.sort();
    assert_eq!(got, ["engine-far", "engine-mid", "engine-near"], "busy, off-duty and stale engines are left out: {answer:#}");
    let items = answer["items"].as_array().unwrap();
    for pair in items.windows(2) {
        assert!(pair[0]["eta_s"].as_f64() <= pair[1]["eta_s"].as_f64(), "soonest first: {answer:#}");
    }
    for item in items {
        assert_eq!(item["by"], "road", "{item}");
        assert_eq!(item["unit"].as_str(), Some(brigade.as_str()));
        let (_, _, (east, north), _) = engines.iter().find(|e| e.0 == item["responder"]).unwrap();
        let straight = haversine_m(place, offset_m(place, *east, *north));
        let road = item["distance_m"].as_f64().unwrap();
        assert!(road + 0.5 >= straight, "{item}: by road {road} m, in straight line {straight} m");
        assert!(item["eta_s"].as_f64().unwrap() > 0.0, "{item}");
    }
    let (status, first) = t.get(&format!("{path}?k=1"), &duty).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["items"].as_array().unwrap()[..], items[..1]);
    assert!(t.node.metrics().get("cityward_dispatch_recommendations_total", &[("by", "road")]) >= 2.0);

    // The nearest engine's crew, logged in as the engine, takes another job: it drops out.
    let leader = items[0]["responder"].as_str().unwrap().to_string();
    t.node.create_user(&leader, "crew-pass", Role::Responder, Some(&brigade)).unwrap();
    let crew = t.login(&leader, "crew-pass").await;
    let (status, body) = set_status(&t, &crew, &leader, "busy").await;
    assert_eq!((status, body["status"].as_str(), body["changed_by"].as_str()), (200, Some("busy"), Some(leader.as_str())), "{body}");
    let (status, answer) = t.get(&path, &crew).await;
    assert_eq!(status, 200, "the brigade sees alerts of its district: {answer}");
    assert!(!ids(&answer).contains(&leader), "{answer:#}");
    assert_eq!(answer["items"].as_array().unwrap().len(), 2, "{answer:#}");
    // A crew sets its own availability only; a dispatcher sets anyone's in their jurisdiction.
    let other = ids(&answer)[0].clone();
    let (status, body) = set_status(&t, &crew, &other, "off_duty").await;
    assert_eq!(status, 403, "{body}");
    assert!(message(&body).contains("dispatcher"), "{body}");
    let (status, body) = set_status(&t, &duty, &leader, "available").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("available")), "{body}");
    let (_, answer) = t.get(&path, &duty).await;
    assert!(ids(&answer).contains(&leader), "{answer:#}");

    // Outside the alert's jurisdiction the alert does not exist.
    let elsewhere = other_community(&city, &sensor.grid);
    t.node.create_user("resp-elsewhere", "pass-e", Role::Responder, Some(&elsewhere)).unwrap();
    let stranger = t.login("resp-elsewhere", "pass-e").await;
    let (status, body) = t.get(&path, &stranger).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
    assert!(listed(&t, &stranger).await.is_empty(), "another community sees none of the brigade's engines");
    let (status, body) = set_status(&t, &stranger, "engine-mid", "busy").await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = t.get("/api/v1/alerts/no-such-alert/recommendations", &duty).await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_other_jurisdictions_are_refused_with_what_to_do() {
    let t = start(|_| {}).await;
    let admin = t.login("admin", "admin-pass").await;
    let duty = t.login("duty", "duty-pass").await;
    let hub = t.login("sensorhub", "ingest-pass").await;
    let city = t.node.city();
    let (sensor, brigade) = central_sensor(&city);

    let (status, body) = put_responder(&t, &duty, "engine-1", json!({"unit": "fire-atlantis"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_input")), "{body}");
    assert!(message(&body).contains("fire-atlantis") && message(&body).contains("units.csv"), "{body}");
    let (status, body) = put_responder(&t, &duty, "engine-1", json!({"unit": brigade, "status": "lunch"})).await;
    assert_eq!(status, 400, "{body}");
    assert!(message(&body).contains("available, busy or off_duty"), "{body}");
    let (status, body) = put_responder(&t, &duty, "engine-1", json!({"unit": brigade, "colour": "red"})).await;
    assert_eq!(status, 400, "{body}");
    assert!(message(&body).contains(r#""unit""#), "the message shows what to send: {body}");
    let (status, body) = put_responder(&t, &duty, "engine 1", json!({"unit": brigade})).await;
    assert_eq!(status, 400, "{body}");
    assert!(message(&body).contains("source"), "{body}");

    let (status, body) = put_responder(&t, &duty, "engine-1", json!({"unit": brigade})).await;
    assert_eq!((status, body["status"].as_str(), body["name"].as_str()), (201, Some("available"), Some("engine-1")), "{body}");
    let (status, body) = set_status(&t, &duty, "engine-1", "lunch").await;
    assert_eq!(status, 400, "{body}");
    assert!(message(&body).contains("available, busy or off_duty"), "{body}");
    let (status, body) = set_status(&t, &duty, "engine-99", "busy").await;
    assert_eq!(status, 404, "{body}");
    assert!(message(&body).contains("PUT /api/v1/responders/"), "{body}");

    // A community's dispatcher registers only its own units' responders.
    let community = other_community(&city, &sensor.grid);
    t.node.create_user("duty-c", "pass-c", Role::Dispatcher, Some(&community)).unwrap();
    let duty_c = t.login("duty-c", "pass-c").await;
    let (status, body) = put_responder(&t, &duty_c, "warden-1", json!({"unit": community})).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = put_responder(&t, &duty_c, "engine-2", json!({"unit": "fire-city"})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
    assert!(message(&body).contains("outside your jurisdiction"), "{body}");
    let (status, body) = put_responder(&t, &duty_c, "engine-1", json!({"unit": community})).await;
    assert_eq!(status, 403, "taking over another unit's responder: {body}");
    let (status, body) = set_status(&t, &duty_c, "engine-1", "busy").await;
    assert_eq!(status, 404, "{body}");
    let seen: Vec<String> = listed(&t, &duty_c).await.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(seen, ["warden-1"]);
    assert_eq!(listed(&t, &duty).await.len(), 2);
    let analyst = t.login("analyst", "analyst-pass").await;
    let (status, _) = put_responder(&t, &analyst, "engine-3", json!({"unit": brigade})).await;
    assert_eq!(status, 403);

    // An alert without a place has nothing to measure from; `k` is bounded.
    let rule = json!({"id": "beacon", "kind": "match", "when": "event.kind == \"heartbeat\" && event.source == \"beacon-1\"",
                      "severity": "low", "category": "test.beacon"});
    t.install(&admin, rule).await;
    t.ingest(&hub, &[json!({"id": "hb-1", "source": "beacon-1", "kind": "heartbeat", "time": now()})]).await;
    let alert = t.wait_alert(&admin, "from hb-1", |a| a["evidence"][0] == "hb-1").await;
    assert!(alert["lon"].is_null(), "{alert:#}");
    let path = format!("/api/v1/alerts/{}/recommendations", alert["id"].as_str().unwrap());
    let (status, body) = t.get(&path, &admin).await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("conflict")), "{body}");
    assert!(message(&body).contains("has no place"), "{body}");
    for k in ["0", "51", "five"] {
        let (status, body) = t.get(&format!("{path}?k={k}"), &admin).await;
        assert_eq!(status, 400, "k={k}: {body}");
        assert!(message(&body).contains("from 1 to 50"), "{body}");
    }
}
