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
