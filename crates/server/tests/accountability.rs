//! Accountability over HTTP against an in-process node: searches of personal data carry a
//! case and a legal basis, stay within their role's limits or wait for a supervisor, the
//! SQL API never reaches plate reads, and the audit log and transparency report show it.

mod common;

use cityward_server::Role;
use common::*;
use serde_json::{json, Value};

fn ago(hours: i64) -> String {
    cityward_model::format_time(&(chrono::Utc::now() - chrono::Duration::hours(hours)))
}

fn purpose() -> Value {
    json!({"case_number": "2026-117", "legal_basis": "criminal_investigation"})
}

fn gps(id: &str, at: &cityward_model::city::Device, class: &str, plate: &str) -> Value {
    json!({"id": id, "source": format!("veh-{id}"), "kind": "gps", "time": now(), "lon": at.lon, "lat": at.lat,
           "attrs": {"speed_kmh": 30.0, "class": class, "plate": plate}})
}

/// The event ids in one lake file, read straight from the Parquet file.
fn parquet_ids(path: &std::path::Path) -> Vec<String> {
    use datafusion::arrow::array::AsArray;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap()).unwrap().build().unwrap();
    let mut ids = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let column = batch.column_by_name("id").unwrap().as_string::<i32>();
        ids.extend(column.iter().map(|id| id.unwrap().to_string()));
    }
    ids
}

fn ids(page: &Value) -> Vec<String> {
    let mut v: Vec<String> = page["items"].as_array().unwrap_or(&Vec::new()).iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
    v.sort();
    v
}

fn message(answer: &Value) -> String {
    answer["error"]["message"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_is_searched_only_with_a_case_and_a_legal_basis_and_never_through_sql() {
    let t = start(|_| {}).await;
    let hub = t.login("sensorhub", "ingest-pass").await;
    let analyst = t.login("analyst", "analyst-pass").await;
    let admin = t.login("admin", "admin-pass").await;
    let anpr = device(&t.node, "anpr");
    let mut read = plate_read("r1", &anpr, "粤B80I23");
    read["attrs"]["color"] = json!("white");
    read["attrs"]["vehicle_type"] = json!("sedan");
    t.ingest(
        &hub,
        &[read, plate_read("r2", &anpr, "沪A55555"), smoke("s1", &device(&t.node, "smoke").id, false, 21.0), gps("g1", &anpr, "hazmat", "粤C00001"), gps("g2", &anpr, "car", "粤C00002")],
    )
    .await;
    let search = |body: Value| {
        let (t, analyst) = (&t, analyst.clone());
        async move { t.post_json("/api/v1/search", &analyst, body).await }
    };

    // A plate without a purpose, a free-text purpose, an unknown basis, no time range.
    for (body, needles) in [
        (json!({"plate": "粤B80I23", "since": ago(1)}), vec!["case_number", "legal_basis", "criminal_investigation"]),
        (json!({"plate": "粤B80I23", "since": ago(1), "purpose": {"note": "checking on my neighbour"}}), vec!["free-text purpose alone"]),
        (json!({"plate": "粤B80I23", "since": ago(1), "purpose": {"case_number": "1", "legal_basis": "curiosity"}}), vec!["curiosity", "court_order"]),
        (json!({"plate": "粤B80I23", "purpose": purpose()}), vec!["since"]),
        (json!({"kind": "plate_read", "since": ago(1)}), vec!["personal data", "case_number"]),
        (json!({"color": "white", "since": ago(1)}), vec!["`color`", "purpose"]),
    ] {
        let (status, answer) = search(body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        for needle in needles {
            assert!(message(&answer).contains(needle), "{body}: `{needle}` not in {answer}");
        }
    }

    // With them: by plate, with OCR confusions on request, by colour and type, by grid.
    let with = |mut body: Value| {
        body["purpose"] = purpose();
        body["since"] = json!(ago(1));
        body
    };
    let (status, page) = search(with(json!({"plate": "粤B80I23"}))).await;
    assert_eq!((status, ids(&page)), (200, vec!["r1".to_string()]), "{page}");
    let (_, page) = search(with(json!({"plate": "粤BB0123"}))).await;
    assert!(ids(&page).is_empty(), "as typed, B is not 8 and 1 is not I: {page}");
    let (status, page) = search(with(json!({"plate": "粤BB0123", "ocr_confusions": true}))).await;
    assert_eq!((status, ids(&page)), (200, vec!["r1".to_string()]), "8/B and 1/I read as equal: {page}");
    let (_, page) = search(with(json!({"plate": "粤B8D*", "ocr_confusions": true}))).await;
    assert_eq!(ids(&page), ["r1"], "0/D with a wildcard: {page}");
    let (_, page) = search(with(json!({"color": "White", "vehicle_type": "sedan"}))).await;
    assert_eq!(ids(&page), ["r1"], "{page}");
    let grid = t.node.city().grid_at(anpr.lon, anpr.lat).expect("the reader is in a grid").id.clone();
    let (status, page) = search(with(json!({"kind": "plate_read", "grids": [grid]}))).await;
    assert_eq!((status, ids(&page)), (200, vec!["r1".to_string(), "r2".to_string()]), "{page}");
    let (status, answer) = search(with(json!({"kind": "plate_read", "grids": ["no-such-grid"]}))).await;
    assert_eq!(status, 400);
    assert!(message(&answer).contains("no-such-grid"), "{answer}");

    // Without a purpose: what is not personal, including the regulated fleet's GPS.
    let (status, page) = search(json!({})).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page), ["g1", "s1"], "no plate reads and no private car: {page}");
    assert_eq!(page["personal_data_left_out"], true);
    let (_, page) = search(json!({"kind": "gps"})).await;
    assert_eq!(ids(&page), ["g1"]);
    let (_, page) = search(with(json!({"kind": "gps"}))).await;
    assert_eq!(ids(&page), ["g1", "g2"], "with a purpose, every vehicle");

    // The SQL API holds no personal data at all, whatever the query.
    let (status, answer) = t
        .post_json("/api/v1/sql", &admin, json!({"sql": "SELECT kind, count(*) AS n FROM events GROUP BY kind ORDER BY kind"}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["rows"], json!([["gps", 1], ["smoke", 1]]), "{answer}");
    let (_, answer) = t.post_json("/api/v1/sql", &admin, json!({"sql": "SELECT count(*) FROM events WHERE plate LIKE '%B80I23'"})).await;
    assert_eq!(answer["rows"], json!([[0]]), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_beyond_the_role_limits_waits_for_a_supervisor_who_is_not_the_requester() {
    let t = start(|_| {}).await;
    let hub = t.login("sensorhub", "ingest-pass").await;
    let analyst = t.login("analyst", "analyst-pass").await;
    let duty = t.login("duty", "duty-pass").await;
    t.node.create_user("sup", "sup-pass", Role::Analyst, None).unwrap();
    t.node.state().set_supervisor("sup", true).unwrap();
    let sup = t.login("sup", "sup-pass").await;
    let anpr = device(&t.node, "anpr");
    t.ingest(&hub, &[plate_read("r1", &anpr, "粤B12345")]).await;

    // A dispatcher may search one day city-wide-small areas; three days wait for approval.
    let asked = json!({"plate": "粤B12345", "since": ago(72), "purpose": purpose()});
    let (status, answer) = t.post_json("/api/v1/search", &duty, asked.clone()).await;
    assert_eq!(status, 202, "{answer}");
    let approval = &answer["approval"];
    assert_eq!(approval["status"], "pending");
    assert_eq!(approval["requested_by"], "duty");
    let reasons = approval["reasons"].to_string();
    assert!(reasons.contains("dispatcher") && reasons.contains("without approval"), "{reasons}");
    let id = approval["id"].as_str().unwrap().to_string();
    let run = |token: String, body: Value| {
        let t = &t;
        async move { t.post_json("/api/v1/search", &token, body).await }
    };

    let (status, answer) = run(duty.clone(), json!({"approval": id})).await;
    assert_eq!(status, 409, "still pending: {answer}");
    let decide = |token: String, action: &str, body: Value| {
        let (t, path) = (&t, format!("/api/v1/search/approvals/{id}/{action}"));
        async move { t.post_json(&path, &token, body).await }
    };
    let (status, answer) = decide(duty.clone(), "approve", json!({"reason": "urgent"})).await;
    assert_eq!(status, 403, "not a supervisor: {answer}");
    assert!(message(&answer).contains("supervisor"), "{answer}");
    let (status, _) = decide(analyst.clone(), "approve", json!({"reason": "ok"})).await;
    assert_eq!(status, 403);
    let (status, answer) = decide(sup.clone(), "approve", json!({"reason": " "})).await;
    assert_eq!(status, 400, "a decision gives its reason: {answer}");

    // The supervisor sees every pending request; the dispatcher their own.
    let (_, pending) = t.get("/api/v1/search/approvals?status=pending", &sup).await;
    assert_eq!(ids(&pending), [id.clone()]);
    let (_, own) = t.get("/api/v1/search/approvals", &analyst).await;
    assert!(ids(&own).is_empty(), "not the analyst's: {own}");

    let (status, decided) = decide(sup.clone(), "approve", json!({"reason": "case file 2026-117 seen"})).await;
    assert_eq!(status, 200, "{decided}");
    assert_eq!((decided["status"].as_str(), decided["decided_by"].as_str()), (Some("approved"), Some("sup")));
    let (status, _) = decide(sup.clone(), "reject", json!({"reason": "changed my mind"})).await;
    assert_eq!(status, 409, "decided once");

    // Only the requester runs it, as approved, with nothing added.
    let (status, page) = run(duty.clone(), json!({"approval": id, "limit": 10})).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page), ["r1"]);
    let (status, _) = run(analyst.clone(), json!({"approval": id})).await;
    assert_eq!(status, 404, "another user does not even see it");
    let (status, answer) = run(duty.clone(), json!({"approval": id, "plate": "*"})).await;
    assert_eq!(status, 400, "{answer}");

    // A rejected request stays rejected, with the supervisor's reason.
    let (_, second) = t.post_json("/api/v1/search", &duty, asked).await;
    let second = second["approval"]["id"].as_str().unwrap().to_string();
    let (status, _) = t.post_json(&format!("/api/v1/search/approvals/{second}/reject"), &sup, json!({"reason": "no case file"})).await;
    assert_eq!(status, 200);
    let (status, answer) = run(duty.clone(), json!({"approval": second})).await;
    assert_eq!(status, 403);
    assert!(message(&answer).contains("no case file"), "{answer}");

    // Within the limits (one hour), the dispatcher searches at once.
    let (status, page) = run(duty.clone(), json!({"plate": "粤B12345", "since": ago(1), "purpose": purpose(), "area": {"type": "Polygon", "coordinates": [[[anpr.lon - 0.01, anpr.lat - 0.01], [anpr.lon + 0.01, anpr.lat - 0.01], [anpr.lon + 0.01, anpr.lat + 0.01], [anpr.lon - 0.01, anpr.lat - 0.01]]]}})).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page), ["r1"]);

    // Everything is on the record, and the chain holds.
    t.node.create_user("aud", "aud-pass", Role::Auditor, None).unwrap();
    let aud = t.login("aud", "aud-pass").await;
    let (_, log) = t.get("/api/v1/audit?limit=100", &aud).await;
    let actions: Vec<&str> = log["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for wanted in ["search.request", "search.approve", "search.reject", "search"] {
        assert!(actions.contains(&wanted), "`{wanted}` in {actions:?}");
    }
    let ran = log["items"].as_array().unwrap().iter().find(|e| e["action"] == "search" && e["detail"]["approval"] == id.as_str());
    assert!(ran.is_some(), "the run names its approval: {log}");
    let (status, head) = t.get("/api/v1/audit/head", &aud).await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(head["intact"], true, "{head}");
    assert!(head["entries"].as_u64().unwrap() >= 5, "{head}");
    let (status, report) = t.get("/api/v1/audit/transparency", &aud).await;
    assert_eq!(status, 200, "{report}");
    let text = report.to_string();
    assert!(!text.contains("粤B") && !text.contains("2026-117"), "aggregates only: {text}");
    let personal = report["personal_searches"].as_array().unwrap();
    let by_duty: u64 = personal.iter().filter(|r| r["unit"] == "unit-city" && r["legal_basis"] == "criminal_investigation").map(|r| r["count"].as_u64().unwrap()).sum();
    assert_eq!(by_duty, 2, "the approved run and the one within limits: {report}");
    let (status, _) = t.get("/api/v1/audit/transparency", &duty).await;
    assert_eq!(status, 403, "auditors and administrators only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_expired_data_from_search_sql_and_the_lake_but_keeps_what_a_legal_hold_covers() {
    let t = start(|c| {
        c.lake.retention.insert("smoke".into(), std::time::Duration::from_secs(86_400));
        // No approval needed here: this test is about retention.
        c.search.limits.clear();
    })
    .await;
    let hub = t.login("sensorhub", "ingest-pass").await;
    let admin = t.login("admin", "admin-pass").await;
    let analyst = t.login("analyst", "analyst-pass").await;
    let anpr = device(&t.node, "anpr");
    let smoke_id = device(&t.node, "smoke").id;
    let days_ago = |d: i64| chrono::Utc::now() - chrono::Duration::days(d);
    let at = |mut event: Value, d: i64| {
        event["time"] = json!(cityward_model::format_time(&days_ago(d)));
        event
    };
    t.ingest(
        &hub,
        &[
            at(plate_read("held", &anpr, "粤B11111"), 40),
            at(plate_read("expired", &anpr, "粤B22222"), 45),
            at(plate_read("matched", &anpr, "粤B44444"), 45),
            plate_read("fresh", &anpr, "粤B33333"),
            at(smoke("old-smoke", &smoke_id, false, 20.0), 3),
            smoke("new-smoke", &smoke_id, false, 20.0),
        ],
    )
    .await;
    t.node.events().compact(true).await.unwrap();
    // "matched" was on a hotlist: it is the evidence of an alert, kept a year
    // ([lake.retention_evidence]) while the rest of its day goes after 30 days.
    let alert = cityward_store::AlertRow {
        id: "a-hotlist".into(),
        rule: "stolen-plates".into(),
        key: "粤B44444".into(),
        status: "closed".into(),
        severity: "high".into(),
        category: "traffic.hotlist".into(),
        time: days_ago(45),
        grid: None,
        body: json!({"evidence": ["matched"]}),
        updated_at: days_ago(45),
        scopes: Vec::new(),
        class: "incident".into(),
        incident: None,
    };
    t.node.state().insert_alert(&alert).unwrap();

    // The case's day of plate reads is held.
    let day = days_ago(40).date_naive();
    let hold = json!({"case_number": "2026-117", "reason": "court order 88/2026", "kinds": ["plate_read"],
                      "since": format!("{day}T00:00:00Z"), "until": format!("{}T00:00:00Z", day.succ_opt().unwrap())});
    let (status, _) = t.post_json("/api/v1/holds", &analyst, hold.clone()).await;
    assert_eq!(status, 403, "administrators place holds");
    let (status, answer) = t.post_json("/api/v1/holds", &admin, json!({"case_number": "x", "reason": "y", "since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"})).await;
    assert_eq!(status, 400, "{answer}");
    let (status, placed) = t.post_json("/api/v1/holds", &admin, hold).await;
    assert_eq!(status, 201, "{placed}");

    let deleted = t.node.run_retention().await.unwrap();
    assert_eq!(deleted, 2, "the unheld expired plate read and the old smoke reading");

    let search = json!({"kind": "plate_read", "since": cityward_model::format_time(&days_ago(60)), "purpose": purpose()});
    let (status, page) = t.post_json("/api/v1/search", &analyst, search.clone()).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page), ["fresh", "held", "matched"], "expired data is gone from search; held data and an alert's evidence are not");
    let (_, answer) = t.post_json("/api/v1/sql", &admin, json!({"sql": "SELECT id FROM events WHERE kind = 'smoke' ORDER BY id"})).await;
    assert_eq!(answer["rows"], json!([["new-smoke"]]), "and from SQL: {answer}");
    let lake_days: Vec<String> = t.node.events().lake().files().unwrap().iter().map(|f| format!("{}/{}", f.kind, f.day)).collect();
    let (_, rows) = t.post_json("/api/v1/search", &analyst, json!({"plate": "粤B22222", "since": cityward_model::format_time(&days_ago(60)), "purpose": purpose()})).await;
    assert_eq!(ids(&rows), Vec::<String>::new(), "and by plate: {rows}");
    let expired_day: Vec<_> = t.node.events().lake().files().unwrap().into_iter().filter(|f| f.day == days_ago(45).date_naive()).collect();
    assert_eq!(expired_day.len(), 1, "the day is rewritten with its evidence only: {expired_day:?}");
    let in_file = parquet_ids(&expired_day[0].path);
    assert_eq!(in_file, ["matched"], "and the expired read is gone from the lake file itself");
    assert!(lake_days.contains(&format!("plate_read/{day}")), "the held day's file stays: {lake_days:?}");

    // Released, the held day goes at the next run; both changes are on the record.
    let id = placed["id"].as_str().unwrap();
    let (status, released) = call("DELETE", format!("{}/api/v1/holds/{id}", t.base), Some(admin.clone()), "application/json", Vec::new()).await;
    assert_eq!(status, 200, "{released}");
    assert_eq!(t.node.run_retention().await.unwrap(), 1);
    let (_, page) = t.post_json("/api/v1/search", &analyst, search).await;
    assert_eq!(ids(&page), ["fresh", "matched"]);
    let (_, log) = t.get("/api/v1/audit?action=hold.&limit=10", &admin).await;
    let actions: Vec<&str> = log["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["hold.release", "hold.place"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_sees_another_units_data_only_under_a_grant_and_the_owner_sees_each_access() {
    // Role limits are another test's subject: none here.
    let t = start(|c| c.search.limits.clear()).await;
    let hub = t.login("sensorhub", "ingest-pass").await;
    let admin = t.login("admin", "admin-pass").await;
    let city = t.node.city();
    // Two community units, and a place in each one's region.
    let communities: Vec<_> = city.units.iter().filter(|u| u.kind == "community" && u.region.is_some()).take(3).cloned().collect();
    assert_eq!(communities.len(), 3, "the test city has community units");
    let place_in = |unit: &cityward_model::city::Unit| {
        let region = unit.region.clone().unwrap();
        let grid = city.grids.iter().find(|g| city.region_chain(&g.region).iter().any(|r| r.id == region)).expect("a grid in the region");
        let b = grid.area.bbox();
        let (lon, lat) = ((b.min_lon + b.max_lon) / 2.0, (b.min_lat + b.max_lat) / 2.0);
        assert!(grid.area.contains(lon, lat), "the grid's centre is inside it");
        (lon, lat)
    };
    let (a, b, c) = (&communities[0], &communities[1], &communities[2]);
    let anpr = device(&t.node, "anpr");
    let read = |id: &str, (lon, lat): (f64, f64), plate: &str| {
        json!({"id": id, "source": anpr.id, "kind": "plate_read", "time": now(), "lon": lon, "lat": lat, "attrs": {"plate": plate}})
    };
    t.ingest(&hub, &[read("ra", place_in(a), "粤A00001"), read("rb", place_in(b), "粤A00002")]).await;
    for (name, unit) in [("da", a), ("db", b), ("dc", c)] {
        t.node.create_user(name, "pw-secret", Role::Dispatcher, Some(&unit.id)).unwrap();
    }
    let da = t.login("da", "pw-secret").await;
    let db = t.login("db", "pw-secret").await;
    let dc = t.login("dc", "pw-secret").await;
    let body = json!({"kind": "plate_read", "since": ago(1), "purpose": {"case_number": "J-1", "legal_basis": "criminal_investigation"}});

    // Deny by default: each unit finds its own region's read only.
    let (status, page) = t.post_json("/api/v1/search", &da, body.clone()).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page), ["ra"]);
    let (_, page) = t.post_json("/api/v1/search", &db, body.clone()).await;
    assert_eq!(ids(&page), ["rb"]);

    // B shares its plate reads with A, for criminal investigations, until tomorrow.
    let until = cityward_model::format_time(&(chrono::Utc::now() + chrono::Duration::days(1)));
    let grant = json!({"owner": b.id, "grantee": a.id, "classes": ["plate_read"], "purposes": ["criminal_investigation"], "until": until, "reason": "joint operation 7"});
    let (status, _) = t.post_json("/api/v1/grants", &da, grant.clone()).await;
    assert_eq!(status, 403, "a unit does not grant itself another's data");
    let (status, answer) = t.post_json("/api/v1/grants", &admin, json!({"owner": b.id, "grantee": a.id, "classes": ["faces"], "until": until, "reason": "x"})).await;
    assert_eq!(status, 400, "{answer}");
    let (status, made) = t.post_json("/api/v1/grants", &admin, grant).await;
    assert_eq!(status, 201, "{made}");
    let grant_id = made["id"].as_str().unwrap().to_string();

    let (_, page) = t.post_json("/api/v1/search", &da, body.clone()).await;
    assert_eq!(ids(&page), ["ra", "rb"], "under the grant, for its purpose: {page}");
    let mut other_basis = body.clone();
    other_basis["purpose"]["legal_basis"] = json!("traffic_enforcement");
    let (_, page) = t.post_json("/api/v1/search", &da, other_basis).await;
    assert_eq!(ids(&page), ["ra"], "not for another purpose");
    let (_, page) = t.post_json("/api/v1/search", &dc, body.clone()).await;
    assert!(ids(&page).is_empty(), "nor for a third unit: {page}");

    // The owner sees every access under its grant; the third unit does not see the grant.
    let (status, seen) = t.get(&format!("/api/v1/grants/{grant_id}/accesses"), &db).await;
    assert_eq!(status, 200, "{seen}");
    let accesses = seen["items"].as_array().unwrap();
    assert_eq!(accesses.len(), 1, "the search for its purpose, not the other one: {seen}");
    assert_eq!((accesses[0]["actor"].as_str(), accesses[0]["detail"]["purpose"]["case_number"].as_str()), (Some("da"), Some("J-1")));
    let (status, _) = t.get(&format!("/api/v1/grants/{grant_id}/accesses"), &dc).await;
    assert_eq!(status, 404);
    let (_, listed) = t.get("/api/v1/grants", &dc).await;
    assert_eq!(listed["items"], json!([]));

    // Revoked, the data is out of reach again.
    let (status, _) = call("DELETE", format!("{}/api/v1/grants/{grant_id}", t.base), Some(admin.clone()), "application/json", Vec::new()).await;
    assert_eq!(status, 200);
    let (_, page) = t.post_json("/api/v1/search", &da, body).await;
    assert_eq!(ids(&page), ["ra"]);
}
