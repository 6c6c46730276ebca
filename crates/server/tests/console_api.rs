//! The API behind the console's search, rule trial, zone drawing, dashboard and live map
//! pages, over HTTP against an in-process node.

mod common;

use std::time::{Duration, Instant};

use cityward_server::Role;
use common::*;
use serde_json::{json, Value};

/// A square polygon of `half` degrees around a point, as GeoJSON.
fn square(lon: f64, lat: f64, half: f64) -> Value {
    json!({"type": "Polygon", "coordinates": [[
        [lon - half, lat - half], [lon + half, lat - half], [lon + half, lat + half], [lon - half, lat + half], [lon - half, lat - half]
    ]]})
}

fn gps(id: &str, source: &str, lon: f64, lat: f64, secs_ago: i64) -> Value {
    let time = cityward_model::format_time(&(chrono::Utc::now() - chrono::Duration::seconds(secs_ago)));
    json!({"id": id, "source": source, "kind": "gps", "time": time, "lon": lon, "lat": lat,
           "attrs": {"speed_kmh": 30.0, "class": "hazmat", "plate": "沪A00001"}})
}

/// Polls a job until it ends; answers its last state.
async fn finish(t: &TestNode, token: &str, job: &Value) -> Value {
    let id = job["id"].as_str().expect("a job id").to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, state) = t.get(&format!("/api/v1/jobs/{id}"), token).await;
        assert_eq!(status, 200, "{state}");
        if state["state"] != "running" {
            return state;
        }
        assert!(Instant::now() < deadline, "job did not end within 30 s: {state}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The purpose a search of personal data carries, and the time range it states.
fn for_case(mut body: Value) -> Value {
    body["purpose"] = json!({"case_number": "2026-117", "legal_basis": "criminal_investigation"});
    body["since"] = json!(cityward_model::format_time(&(chrono::Utc::now() - chrono::Duration::hours(1))));
    body
}

async fn post_text(t: &TestNode, path: &str, token: &str, content_type: &'static str, body: &str) -> (u16, String) {
    call("POST", format!("{}{path}", t.base), Some(token.into()), content_type, body.as_bytes().to_vec()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_plates_by_wildcard_kind_and_area_pages_by_cursor_exports_csv_and_is_audited() {
    let t = start(|_| {}).await;
    let hub = t.login("sensorhub", "ingest-pass").await;
    let analyst = t.login("analyst", "analyst-pass").await;
    let admin = t.login("admin", "admin-pass").await;
    let anpr = device(&t.node, "anpr");
    t.ingest(
        &hub,
        &[
            plate_read("r1", &anpr, "粤B12345"),
            plate_read("r2", &anpr, "粤B12845"),
            plate_read("r3", &anpr, "沪A99999"),
            plate_read("r4", &anpr, "粤b12346"),
            smoke("s1", &device(&t.node, "smoke").id, false, 21.0),
        ],
    )
    .await;

    let search = |body: Value| {
        let (t, analyst) = (&t, analyst.clone());
        async move { t.post_json("/api/v1/search", &analyst, for_case(body)).await }
    };
    let ids = |page: &Value| -> Vec<String> {
        let mut v: Vec<String> = page["items"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
        v.sort();
        v
    };
    let (status, page) = search(json!({"plate": "粤B12*"})).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page), ["r1", "r2", "r4"], "a partial plate, case-blind");
    assert_eq!(page["items"][0]["attrs"]["plate"].as_str().map(|p| p.starts_with("粤")), Some(true));
    let (_, page) = search(json!({"plate": "粤B12?45"})).await;
    assert_eq!(ids(&page), ["r1", "r2"], "? is one character");
    let (_, page) = search(json!({"plate": "沪A99999", "kind": "plate_read"})).await;
    assert_eq!(ids(&page), ["r3"]);
    let (_, page) = search(json!({"kind": "smoke"})).await;
    assert_eq!(ids(&page), ["s1"]);
    // Without a purpose, a search sees no plate reads and says so.
    let (status, page) = t.post_json("/api/v1/search", &analyst, json!({})).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page), ["s1"]);
    assert_eq!(page["personal_data_left_out"], true);
    // The area around the reader finds its reads; an area elsewhere finds none.
    let (_, page) = search(json!({"plate": "*1234*", "area": square(anpr.lon, anpr.lat, 0.001)})).await;
    assert_eq!(ids(&page), ["r1", "r4"]);
    let (_, page) = search(json!({"plate": "*1234*", "area": square(anpr.lon + 0.05, anpr.lat, 0.001)})).await;
    assert_eq!(ids(&page), Vec::<String>::new());

    // One at a time, newest first, every read exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut body = for_case(json!({"kind": "plate_read", "limit": 1}));
        if let Some(c) = &cursor {
            body["cursor"] = json!(c);
        }
        let (status, page) = search(body).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(page["items"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()));
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
        assert!(seen.len() <= 4, "paging does not end: {seen:?}");
    }
    seen.sort();
    assert_eq!(seen, ["r1", "r2", "r3", "r4"]);

    // CSV of the same search.
    let (status, csv) = post_text(&t, "/api/v1/search?format=csv", &analyst, "application/json", &for_case(json!({"plate": "粤B12*"})).to_string()).await;
    assert_eq!(status, 200, "{csv}");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "time,kind,source,plate,lon,lat,grid,id");
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(lines[1..].iter().all(|l| l.contains(&anpr.id) && l.contains("plate_read")), "{csv}");

    // Bad filters are refused by name.
    for (body, needle) in [
        (json!({"plate": "**"}), "only wildcards"),
        (json!({"kind": "teleport"}), "not a declared event kind"),
        (json!({"area": {"type": "Point", "coordinates": [1.0, 2.0]}}), "Polygon"),
        (json!({"until": "yesterday"}), "RFC 3339"),
        (json!({"limit": 0}), "limit"),
        (json!({"cursor": "garbage"}), "cursor"),
        (json!({"plates": "x"}), "unknown field"),
    ] {
        let (status, answer) = search(body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains(needle), "{body}: {answer}");
    }
    // Responders do not search.
    t.node.create_user("resp", "resp-pass", Role::Responder, Some("unit-city")).unwrap();
    let resp = t.login("resp", "resp-pass").await;
    let (status, _) = t.post_json("/api/v1/search", &resp, json!({"plate": "粤B12345"})).await;
    assert_eq!(status, 403);

    // Each search is in the audit log with what was asked and how much it found.
    let (status, audit) = t.get("/api/v1/audit?limit=200", &admin).await;
    assert_eq!(status, 200, "{audit}");
    let searches: Vec<&Value> = audit["items"].as_array().unwrap().iter().filter(|e| e["action"] == "search" || e["action"] == "search.csv").collect();
    assert!(searches.len() >= 10, "searches audited: {searches:#?}");
    assert!(
        searches.iter().any(|e| e["actor"] == "analyst"
            && e["detail"]["plate"] == "粤B12*"
            && e["detail"]["results"] == 3
            && e["detail"]["purpose"]["case_number"] == "2026-117"
            && e["detail"]["personal"] == true),
        "{searches:#?}"
    );
    assert!(searches.iter().any(|e| e["action"] == "search.csv"), "{searches:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_trial_counts_what_the_rule_would_raise_over_stored_events_without_storing_it() {
    let t = start(|_| {}).await;
    let hub = t.login("sensorhub", "ingest-pass").await;
    let analyst = t.login("analyst", "analyst-pass").await;
    let admin = t.login("admin", "admin-pass").await;
    let smokes: Vec<_> = t.node.city().devices.iter().filter(|d| d.kind == "smoke").take(8).cloned().collect();
    let events: Vec<Value> = smokes.iter().enumerate().map(|(i, d)| smoke(&format!("s{i}"), &d.id, i < 5, 25.0)).collect();
    t.ingest(&hub, &events).await;

    let rule = "id: trial-smoke\nkind: match\nwhen: event.kind == \"smoke\" && event.attrs.alarm == true\nkey: event.source\nseverity: high\ncategory: fire.smoke\n";
    let (status, text) = post_text(&t, "/api/v1/rules/trial?hours=2", &analyst, "application/yaml", rule).await;
    assert_eq!(status, 202, "{text}");
    let job = parse(&text)["job"].clone();
    assert_eq!(job["kind"], "rule_trial");
    let done = finish(&t, &analyst, &job).await;
    assert_eq!(done["state"], "done", "{done}");
    let result = &done["result"];
    assert_eq!(result["alerts"], 5, "{result}");
    assert_eq!(result["events"], 8, "{result}");
    assert_eq!(done["progress"]["done"], done["progress"]["total"], "{done}");
    assert_eq!(result["items"].as_array().unwrap().len(), 5);
    let by_grid: u64 = result["by_grid"].as_array().unwrap().iter().map(|g| g["alerts"].as_u64().unwrap()).sum();
    assert_eq!(by_grid, 5, "{result}");
    // Nothing was stored or raised.
    let (_, rules) = t.get("/api/v1/rules", &admin).await;
    assert!(rules["items"].as_array().unwrap().iter().all(|r| r["id"] != "trial-smoke"));
    assert!(t.alerts(&admin).await.is_empty());
    // Only its starter (or an administrator) reads the job.
    let duty = t.login("duty", "duty-pass").await;
    let (status, _) = t.get(&format!("/api/v1/jobs/{}", job["id"].as_str().unwrap()), &duty).await;
    assert_eq!(status, 404);
    let (status, _) = t.get(&format!("/api/v1/jobs/{}", job["id"].as_str().unwrap()), &admin).await;
    assert_eq!(status, 200);

    // A broken rule is refused at once, saying where.
    let (status, text) = post_text(&t, "/api/v1/rules/trial", &analyst, "application/yaml", "id: x\nkind: match\nwhen: event.kind ==\ncategory: a.b\n").await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("when"), "{text}");
    let (status, text) = post_text(&t, "/api/v1/rules/trial?hours=500", &analyst, "application/yaml", rule).await;
    assert_eq!(status, 400, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_drawn_through_the_api_is_used_by_rules_at_once_and_cannot_be_deleted_while_needed() {
    let t = start(|c| c.detect.lateness = Duration::from_millis(200)).await;
    let hub = t.login("sensorhub", "ingest-pass").await;
    let analyst = t.login("analyst", "analyst-pass").await;
    let duty = t.login("duty", "duty-pass").await;
    let c = t.node.city().bbox().center();
    let feature = |p: Value| json!({"type": "Feature", "geometry": p, "properties": {"name": "Night market", "kind": "restricted"}});

    // Far from the truck at first.
    let (status, stored) = call("PUT", format!("{}/api/v1/city/zones/night-market", t.base), Some(analyst.clone()), "application/json",
        feature(square(c.0 + 0.05, c.1, 0.002)).to_string().into_bytes()).await;
    assert_eq!(status, 200, "{stored}");
    let (_, zones) = t.get("/api/v1/city/layers/zones", &analyst).await;
    assert!(zones["features"].as_array().unwrap().iter().any(|f| f["id"] == "night-market" && f["properties"]["name"] == "Night market"));
    let rule = json!({"id": "market-entry", "kind": "geofence", "when": "event.kind == \"gps\"", "zones": ["night-market"], "on": "inside",
                      "category": "zone.restricted", "severity": "medium"});
    let (status, body) = t.put_rule("market-entry", "", &analyst, false, &rule.to_string()).await;
    assert_eq!(status, 200, "{body}");
    t.ingest(&hub, &[gps("g1", "truck-9", c.0, c.1, 2)]).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(t.alerts(&duty).await.iter().all(|a| a["rule"] != "market-entry"), "the truck is outside the zone");

    // The zone moves onto the truck: the next fix is inside it.
    let (status, _) = call("PUT", format!("{}/api/v1/city/zones/night-market", t.base), Some(analyst.clone()), "application/json",
        feature(square(c.0, c.1, 0.002)).to_string().into_bytes()).await;
    assert_eq!(status, 200);
    t.ingest(&hub, &[gps("g2", "truck-9", c.0 + 0.0001, c.1, 1)]).await;
    let alert = t.wait_alert(&duty, "from the moved zone", |a| a["rule"] == "market-entry").await;
    assert_eq!(alert["zone"], "night-market");

    // A rule needs it: not deleted. Without the rule: deleted.
    let (status, text) = t.delete("/api/v1/city/zones/night-market", &analyst).await;
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("market-entry"), "{text}");
    let (status, _) = t.delete("/api/v1/rules/market-entry", &analyst).await;
    assert_eq!(status, 204);
    let (status, text) = t.delete("/api/v1/city/zones/night-market", &analyst).await;
    assert_eq!(status, 204, "{text}");
    let (_, zones) = t.get("/api/v1/city/layers/zones", &analyst).await;
    assert!(zones["features"].as_array().unwrap().iter().all(|f| f["id"] != "night-market"));

    // Bad zones are refused by name; dispatchers do not draw zones.
    let line = json!({"type": "LineString", "coordinates": [[c.0, c.1], [c.0 + 0.01, c.1]]});
    for (id, body, needle) in [
        ("lane", feature(line.clone()), "width_m"),
        ("a/b", feature(square(c.0, c.1, 0.001)), "zone id"),
        ("other", json!({"type": "Feature", "geometry": square(c.0, c.1, 0.001), "properties": {"id": "not-other", "kind": "x"}}), "differs"),
        ("nokind", json!({"type": "Feature", "geometry": square(c.0, c.1, 0.001), "properties": {"name": "n"}}), "kind"),
    ] {
        let (status, text) = call("PUT", format!("{}/api/v1/city/zones/{}", t.base, encode(id)), Some(analyst.clone()), "application/json", body.to_string().into_bytes()).await;
        assert!(status == 400 || status == 404, "{id}: {status} {text}");
        if status == 400 {
            assert!(text.contains(needle), "{id}: {text}");
        }
    }
    let mut corridor = feature(line);
    corridor["properties"]["width_m"] = json!(30.0);
    let (status, text) = call("PUT", format!("{}/api/v1/city/zones/lane", t.base), Some(analyst.clone()), "application/json", corridor.to_string().into_bytes()).await;
    assert_eq!(status, 200, "{text}");
    let (status, _) = call("PUT", format!("{}/api/v1/city/zones/lane2", t.base), Some(duty.clone()), "application/json", corridor.to_string().into_bytes()).await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_map_shows_fresh_positions_without_plates_and_the_heat_layer_counts_events() {
    let t = start(|_| {}).await;
    let hub = t.login("sensorhub", "ingest-pass").await;
    let duty = t.login("duty", "duty-pass").await;
    let c = t.node.city().bbox().center();
    t.ingest(&hub, &[gps("p1", "truck-1", c.0, c.1, 30), gps("p2", "truck-1", c.0 + 0.001, c.1, 5), gps("p3", "truck-2", c.0, c.1 + 0.001, 5), gps("p4", "truck-3", c.0, c.1, 60 * 30)]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let features = loop {
        let (status, map) = t.get("/api/v1/city/positions", &duty).await;
        assert_eq!(status, 200, "{map}");
        let features = map["features"].as_array().unwrap().clone();
        if features.len() >= 2 || Instant::now() > deadline {
            break features;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ids: Vec<&str> = features.iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert_eq!(features.len(), 2, "truck-3's fix is half an hour old: {ids:?}");
    let truck1 = features.iter().find(|f| f["id"] == "truck-1").expect("truck-1");
    let lon = truck1["geometry"]["coordinates"][0].as_f64().unwrap();
    assert!((lon - (c.0 + 0.001)).abs() < 1e-7, "its last fix: {truck1}");
    assert_eq!(truck1["properties"]["kind"], "vehicle");
    assert_eq!(truck1["properties"]["class"], "hazmat");
    assert!(!truck1.to_string().contains("沪A00001"), "no plate on the map: {truck1}");

    let (status, heat) = t.get("/api/v1/city/heat?of=events&res=9", &duty).await;
    assert_eq!(status, 200, "{heat}");
    let total: u64 = heat["features"].as_array().unwrap().iter().map(|f| f["properties"]["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 4, "the four fixes of the last 24 hours: {heat}");
    let (status, _) = t.get("/api/v1/city/heat?res=3", &duty).await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_filter_by_severity_category_region_and_time_and_the_dashboard_counts_them() {
    let t = start(|c| c.detect.lateness = Duration::from_millis(200)).await;
    let hub = t.login("sensorhub", "ingest-pass").await;
    let admin = t.login("admin", "admin-pass").await;
    t.install(&admin, json!({"id": "smoke-alarm", "kind": "match", "when": "event.kind == \"smoke\" && event.attrs.alarm == true",
                             "severity": "high", "category": "fire.smoke"})).await;
    let city = t.node.city();
    let smokes: Vec<_> = city.devices.iter().filter(|d| d.kind == "smoke").take(4).cloned().collect();
    t.ingest(&hub, &smokes.iter().enumerate().map(|(i, d)| smoke(&format!("f{i}"), &d.id, true, 30.0)).collect::<Vec<_>>()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.alerts(&admin).await.len() < 4 {
        assert!(Instant::now() < deadline, "four alerts");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let count = |q: String| {
        let (t, admin) = (&t, admin.clone());
        async move {
            let (status, page) = t.get(&format!("/api/v1/alerts?{q}"), &admin).await;
            assert_eq!(status, 200, "{q}: {page}");
            page["items"].as_array().unwrap().len()
        }
    };
    assert_eq!(count("severity=high,critical".into()).await, 4);
    assert_eq!(count("severity=low".into()).await, 0);
    assert_eq!(count("category=fire.smoke".into()).await, 4);
    assert_eq!(count("category=traffic.speed".into()).await, 0);
    let region = city.grid(&smokes[0].grid).unwrap().region.clone();
    let in_region = smokes.iter().filter(|d| city.grid(&d.grid).unwrap().region == region).count();
    assert_eq!(count(format!("region={}", encode(&region))).await, in_region);
    let hour_ago = cityward_model::format_time(&(chrono::Utc::now() - chrono::Duration::hours(1)));
    assert_eq!(count(format!("since={}", encode(&hour_ago))).await, 4);
    assert_eq!(count(format!("until={}", encode(&hour_ago))).await, 0);
    let (status, _) = t.get("/api/v1/alerts?severity=urgent", &admin).await;
    assert_eq!(status, 400);
    let (status, _) = t.get("/api/v1/alerts?region=atlantis", &admin).await;
    assert_eq!(status, 400);

    let (status, stats) = t.get("/api/v1/stats?bucket=hour", &admin).await;
    assert_eq!(status, 200, "{stats}");
    let per_time: u64 = stats["alerts_over_time"].as_array().unwrap().iter().filter(|b| b["category"] == "fire.smoke").map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(per_time, 4, "{stats}");
    let per_region: u64 = stats["alerts_by_region"].as_array().unwrap().iter().map(|r| r["count"].as_u64().unwrap()).sum();
    assert_eq!(per_region, 4, "{stats}");
    assert_eq!(stats["devices"]["total"].as_u64(), Some(city.devices.len() as u64), "{stats}");
    // Deadlines are minutes away: nothing is due yet, so nothing counts as met or missed.
    assert!(stats["deadline_compliance"].as_array().unwrap().iter().all(|u| u["ack_total"] == 0), "{stats}");

    // The rule list says how many alerts each rule has open.
    let (_, rules) = t.get("/api/v1/rules", &admin).await;
    let smoke_rule = rules["items"].as_array().unwrap().iter().find(|r| r["id"] == "smoke-alarm").unwrap().clone();
    assert_eq!(smoke_rule["alerts"]["open"], 4, "{smoke_rule}");
    assert_eq!(smoke_rule["alerts"]["last_24h"], 4, "{smoke_rule}");
    assert!(smoke_rule["yaml"].as_str().unwrap().contains("kind: match"), "{smoke_rule}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_photo_is_attached_to_an_alert_read_back_by_those_who_see_it_and_audited() {
    let t = start(|c| c.detect.lateness = Duration::from_millis(200)).await;
    let hub = t.login("sensorhub", "ingest-pass").await;
    let admin = t.login("admin", "admin-pass").await;
    let duty = t.login("duty", "duty-pass").await;
    t.install(&admin, json!({"id": "smoke-alarm", "kind": "match", "when": "event.kind == \"smoke\" && event.attrs.alarm == true",
                             "severity": "high", "category": "fire.smoke"})).await;
    t.ingest(&hub, &[smoke("ph1", &device(&t.node, "smoke").id, true, 30.0)]).await;
    let alert = t.wait_alert(&duty, "from the alarm", |a| a["rule"] == "smoke-alarm").await;
    let id = alert["id"].as_str().unwrap().to_string();
    let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0];
    jpeg.extend(b"not really a whole jpeg, but it starts like one");

    let url = format!("{}/api/v1/alerts/{id}/photos", t.base);
    let (status, text) = call("POST", url.clone(), Some(duty.clone()), "image/jpeg", jpeg.clone()).await;
    assert_eq!(status, 201, "{text}");
    let photo = parse(&text);
    assert_eq!(photo["content_type"], "image/jpeg");
    let photo_url = format!("{}{}", t.base, photo["url"].as_str().unwrap());
    let bearer = format!("Bearer {duty}");
    let back = tokio::task::spawn_blocking(move || {
        let mut response = ureq::get(&photo_url).header("Authorization", &bearer).call().expect("the photo is served");
        assert_eq!(response.headers().get("content-type").unwrap(), "image/jpeg");
        response.body_mut().read_to_vec().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(back, jpeg, "the same bytes come back");
    let (_, shown) = t.get(&format!("/api/v1/alerts/{id}"), &duty).await;
    assert_eq!(shown["photos"][0]["id"], photo["id"], "{shown}");
    assert!(shown["handling"]["timeline"].as_array().unwrap().iter().any(|s| s["action"] == "photo"), "{shown}");

    let (status, text) = call("POST", url.clone(), Some(duty.clone()), "image/png", b"<svg/>".to_vec()).await;
    assert_eq!(status, 400, "{text}");
    let (status, _) = call("POST", format!("{}/api/v1/alerts/a0000000000000000/photos", t.base), Some(duty.clone()), "image/jpeg", jpeg.clone()).await;
    assert_eq!(status, 404);
    let (_, audit) = t.get("/api/v1/audit?limit=200", &admin).await;
    let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(actions.contains(&"alert.photo") && actions.contains(&"alert.photo.view"), "{actions:?}");

    // The evidence behind the alert, for its small map.
    let (status, evidence) = t.get(&format!("/api/v1/alerts/{id}/evidence"), &duty).await;
    assert_eq!(status, 200, "{evidence}");
    assert_eq!(evidence["items"][0]["id"], "ph1", "{evidence}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_health_lists_devices_with_open_tickets_in_the_callers_jurisdiction_until_closed() {
    let t = start(|c| c.detect.lateness = Duration::from_millis(200)).await;
    let hub = t.login("sensorhub", "ingest-pass").await;
    let admin = t.login("admin", "admin-pass").await;
    // Maintenance tickets keyed by the device: an offline one and a fault.
    t.install(&admin, json!({"id": "smoke-silent", "kind": "match", "when": "event.kind == \"smoke\" && event.attrs.alarm == false",
                             "key": "event.source", "severity": "low", "category": "device.offline"})).await;
    t.install(&admin, json!({"id": "smoke-hot-idle", "kind": "match", "when": "event.kind == \"smoke\" && event.attrs.temperature_c > 70.0",
                             "key": "event.source", "severity": "low", "category": "device.tamper"})).await;
    let city = t.node.city();
    let smokes: Vec<_> = city.devices.iter().filter(|d| d.kind == "smoke").collect();
    let (down, faulty) = (smokes[0].clone(), smokes[1].clone());
    // Both tickets on `down`: offline wins.
    t.ingest(&hub, &[smoke("h1", &down.id, false, 80.0), smoke("h2", &faulty.id, true, 80.0)]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.alerts(&admin).await.len() < 3 {
        assert!(Instant::now() < deadline, "three tickets");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, health) = t.get("/api/v1/city/devices/health", &admin).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["offline"], json!([down.id]), "{health}");
    assert_eq!(health["fault"], json!([faulty.id]), "{health}");
    assert_eq!(health["truncated"], false);

    // A responder of a community where neither device is sees neither.
    let region_of = |grid: &str| city.grid(grid).unwrap().region.clone();
    let elsewhere = city
        .units
        .iter()
        .find(|u| u.kind == "community" && u.region.as_deref().is_some_and(|r| r != region_of(&down.grid) && r != region_of(&faulty.grid)))
        .expect("another community");
    t.node.create_user("far", "far-pass", Role::Responder, Some(&elsewhere.id)).unwrap();
    let far = t.login("far", "far-pass").await;
    let (_, theirs) = t.get("/api/v1/city/devices/health", &far).await;
    assert_eq!(theirs["offline"], json!([]), "{theirs}");
    assert_eq!(theirs["fault"], json!([]), "{theirs}");

    // Closing the fault ticket makes the device healthy again.
    let ticket = t.alerts(&admin).await.into_iter().find(|a| a["key"] == faulty.id.as_str()).unwrap();
    let path = format!("/api/v1/alerts/{}/close", ticket["id"].as_str().unwrap());
    let (status, closed) = t.post_json(&path, &admin, json!({"disposition": "device_fault", "note": "replaced"})).await;
    assert_eq!(status, 200, "{closed}");
    let (_, health) = t.get("/api/v1/city/devices/health", &admin).await;
    assert_eq!(health["fault"], json!([]), "{health}");
    assert_eq!(health["offline"], json!([down.id]), "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_export_runs_as_a_job_with_progress_and_only_its_owner_downloads_the_whole_result() {
    let t = start(|_| {}).await;
    let hub = t.login("sensorhub", "ingest-pass").await;
    let analyst = t.login("analyst", "analyst-pass").await;
    let admin = t.login("admin", "admin-pass").await;
    let duty = t.login("duty", "duty-pass").await;
    let anpr = device(&t.node, "anpr");
    // More reads than one search page holds, so the export must page through them.
    let reads: Vec<Value> = (0..5_200).map(|i| plate_read(&format!("x{i}"), &anpr, &format!("粤E{i:05}"))).collect();
    for chunk in reads.chunks(1000) {
        t.ingest(&hub, chunk).await;
    }
    t.ingest(&hub, &[plate_read("other", &anpr, "沪A00001")]).await;

    let (status, answer) = t.post_json("/api/v1/search/export", &analyst, for_case(json!({"plate": "粤E*"}))).await;
    assert_eq!(status, 202, "{answer}");
    let job = answer["job"].clone();
    assert_eq!(job["kind"], "search_export");
    let done = finish(&t, &analyst, &job).await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["progress"]["done"], 5_200, "{done}");
    assert_eq!(done["progress"]["total"], 5_200, "{done}");
    assert_eq!(done["result"]["rows"], 5_200, "{done}");
    assert_eq!(done["result"]["truncated"], false);
    let url = format!("{}{}", t.base, done["result"]["url"].as_str().unwrap());

    let (status, csv) = call("GET", url.clone(), Some(analyst.clone()), "text/plain", Vec::new()).await;
    assert_eq!(status, 200, "{csv}");
    let lines: Vec<&str> = csv.trim_end().split("\r\n").collect();
    assert_eq!(lines[0], "time,kind,source,plate,lon,lat,grid,id");
    assert_eq!(lines.len(), 5_201, "a header and every matching read");
    assert!(!csv.contains("沪A00001"), "only what the search matches");
    let ids: std::collections::HashSet<&str> = lines[1..].iter().map(|l| l.rsplit(',').next().unwrap()).collect();
    assert_eq!(ids.len(), 5_200, "no read twice across pages");

    // Someone else cannot fetch it, an administrator can; both downloads are audited.
    let (status, _) = call("GET", url.clone(), Some(duty.clone()), "text/plain", Vec::new()).await;
    assert_eq!(status, 404);
    let (status, _) = call("GET", url.clone(), Some(admin.clone()), "text/plain", Vec::new()).await;
    assert_eq!(status, 200);
    let (status, _) = call("GET", format!("{}/api/v1/exports/..%2Fstate.db", t.base), Some(admin.clone()), "text/plain", Vec::new()).await;
    assert_eq!(status, 404);
    let (_, audit) = t.get("/api/v1/audit?limit=200", &admin).await;
    let items = audit["items"].as_array().unwrap();
    let export = items.iter().find(|e| e["action"] == "search.export").expect("the export is audited");
    assert_eq!(export["detail"]["purpose"]["case_number"], "2026-117", "{export}");
    assert_eq!(export["detail"]["results"], 5_200, "{export}");
    assert_eq!(items.iter().filter(|e| e["action"] == "search.export.download").count(), 2);

    // A responder may not export.
    let community = t.node.city().units.iter().find(|u| u.kind == "community").unwrap().id.clone();
    t.node.create_user("warden", "warden-pass", Role::Responder, Some(&community)).unwrap();
    let warden = t.login("warden", "warden-pass").await;
    let (status, _) = t.post_json("/api/v1/search/export", &warden, json!({"plate": "粤E*"})).await;
    assert_eq!(status, 403);
}
