//! End-to-end tests of a node over a bound port: intake, bad input, dead letters,
//! duplicates, compaction, SQL, auth, metrics — and MQTT against the real broker.

use std::io::Write;
use std::time::Duration;

use cityward_server::{Node, NodeConfig};
use serde_json::{json, Value};

mod common;
use common::*;

/// Posts an NDJSON body to `POST /api/v1/events`.
async fn post_ndjson(base: &str, token: Option<String>, body: Vec<u8>) -> (u16, String) {
    call(
        "POST",
        format!("{base}/api/v1/events"),
        token,
        "application/x-ndjson",
        body,
    )
    .await
}

async fn login(base: &str, user: &str, password: &str) -> String {
    let (status, body) = call(
        "POST",
        format!("{base}/api/v1/login"),
        None,
        "application/json",
        json!({"username": user, "password": password})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn sql(base: &str, token: &str, query: &str) -> Value {
    let (status, body) = call(
        "POST",
        format!("{base}/api/v1/sql"),
        Some(token.into()),
        "application/json",
        json!({"sql": query}).to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn gps(id: &str, lon: f64, lat: f64) -> String {
    format!(
        r#"{{"id":"{id}","source":"truck-1","kind":"gps","time":"{}","lon":{lon},"lat":{lat},"attrs":{{"speed_kmh":42.5,"class":"hazmat"}}}}"#,
        now()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_refuses_bad_records_keeps_good_ones_and_queries_them() {
    let t = start(|c| c.ingest.max_body_bytes = 1 << 20).await;
    let city = t.node.city();
    let device = &city.devices[0];
    let (lon, lat) = (device.lon, device.lat);
    let expected_grid = city
        .grid_at(lon, lat)
        .expect("a device lies in a grid")
        .id
        .clone();
    let admin = login(&t.base, "admin", "admin-pass").await;
    let hub = login(&t.base, "sensorhub", "ingest-pass").await;

    // No token, wrong role.
    let (status, body) = post_ndjson(&t.base, None, gps("x", lon, lat).into_bytes()).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"code\":\"unauthorized\""));

    let body = [
        gps("e1", lon, lat),
        "{not json".to_string(),
        format!(r#"{{"id":"e2","source":"cam-9","kind":"video_event","time":"{}","attrs":{{"event_type":"loitering","face_image":"AAAA"}}}}"#, now()),
        format!(r#"{{"id":"e3","source":"s","kind":"teleport","time":"{}"}}"#, now()),
        gps("e4", 2.35, 48.85),
        r#"{"id":"e5","source":"s","kind":"smoke","time":"2099-01-01T00:00:00Z"}"#.to_string(),
        gps("e6", lon, lat),
    ]
    .join("\n");
    let (status, text) = post_ndjson(&t.base, Some(hub.clone()), body.into_bytes()).await;
    assert_eq!(status, 200, "{text}");
    let outcome: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(outcome["accepted"], 2);
    let rejected = outcome["rejected"].as_array().unwrap();
    let lines: Vec<u64> = rejected
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, vec![2, 3, 4, 5, 6]);
    assert_eq!(rejected[1]["code"], "personal_data");
    assert_eq!(rejected[1]["field"], "attrs.face_image");
    assert_eq!(rejected[3]["code"], "outside_city");
    assert_eq!(rejected[4]["field"], "time");

    // The refused records are in the dead-letter store, newest first, with their reasons.
    let (status, text) = call(
        "GET",
        format!("{}/api/v1/deadletter?limit=10", t.base),
        Some(admin.clone()),
        "",
        vec![],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let letters: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(letters["items"].as_array().unwrap().len(), 5);
    let outside = letters["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["line"] == 5)
        .unwrap()
        .clone();
    assert!(outside["reason"]
        .as_str()
        .unwrap()
        .contains("outside the city"));
    // A dispatcher may not read them.
    let duty = login(&t.base, "duty", "duty-pass").await;
    let (status, _) = call(
        "GET",
        format!("{}/api/v1/deadletter", t.base),
        Some(duty.clone()),
        "",
        vec![],
    )
    .await;
    assert_eq!(status, 403);

    // Corrected and re-submitted, it is stored.
    let (status, text) = call(
        "POST",
        format!("{}/api/v1/deadletter/{}/resubmit", t.base, outside["id"]),
        Some(admin.clone()),
        "application/json",
        gps("e4", lon, lat).into_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{text}");

    // Repeating ids stores nothing twice; the answer says so.
    let again = format!("{}\n{}\n", gps("e1", lon, lat), gps("e7", lon, lat));
    let (status, text) = post_ndjson(&t.base, Some(hub.clone()), again.into_bytes()).await;
    assert_eq!(status, 200);
    let outcome: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (outcome["accepted"].as_u64(), outcome["duplicates"].as_u64()),
        (Some(1), Some(1))
    );

    // A JSON array, gzip-compressed.
    let array = format!("[{}, {}]", gps("e8", lon, lat), gps("e9", lon, lat));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(array.as_bytes()).unwrap();
    let (status, text) = call(
        "POST",
        format!("{}/api/v1/events", t.base),
        Some(hub.clone()),
        "application/json",
        gz.finish().unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["accepted"], 2);

    // Everything is queryable while still in the WAL, enriched with its grid...
    let q = "SELECT count(*) AS n, count(DISTINCT id) AS ids, min(grid) AS g FROM events";
    let result = sql(&t.base, &admin, q).await;
    assert_eq!(result["rows"][0][0], 6, "{result}");
    assert_eq!(result["rows"][0][1], 6);
    assert_eq!(result["rows"][0][2], expected_grid.as_str());
    // ...and after compaction into Parquet, exactly the same.
    assert!(t.node.events().compact(true).await.unwrap() >= 1);
    let after = sql(&t.base, &admin, q).await;
    assert_eq!(after["rows"], result["rows"]);
    let typed = sql(
        &t.base,
        &admin,
        "SELECT speed_kmh, class FROM events WHERE id = 'e9'",
    )
    .await;
    assert_eq!(typed["rows"][0], json!([42.5, "hazmat"]));
    assert!(t
        .node
        .events()
        .lake()
        .files()
        .unwrap()
        .iter()
        .any(|f| f.kind == "gps"));

    // SQL is read-only and admin-only.
    let (status, text) = call(
        "POST",
        format!("{}/api/v1/sql", t.base),
        Some(admin.clone()),
        "application/json",
        json!({"sql": "DROP TABLE events"}).to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    let (status, _) = call(
        "POST",
        format!("{}/api/v1/sql", t.base),
        Some(duty),
        "application/json",
        json!({"sql": "SELECT 1"}).to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 403);

    // Oversized bodies are refused as a whole with 413.
    let (status, text) = post_ndjson(&t.base, Some(hub), vec![b' '; (1 << 20) + 4096]).await;
    assert_eq!(status, 413, "{text}");
    assert!(
        text.contains("\"code\":\"too_large\"") && text.contains("ingest.max_body_bytes"),
        "{text}"
    );

    // Health and metrics.
    let (status, text) = call("GET", format!("{}/healthz", t.base), None, "", vec![]).await;
    assert_eq!(status, 200, "{text}");
    let (_, metrics) = call("GET", format!("{}/metrics", t.base), None, "", vec![]).await;
    assert!(
        metrics.contains("cityward_ingest_events_accepted_total{channel=\"http\",kind=\"gps\"} 6"),
        "{metrics}"
    );
    assert!(metrics.contains(
        "cityward_ingest_events_rejected_total{channel=\"http\",reason=\"personal_data\"} 1"
    ));
    assert!(metrics.contains("cityward_ingest_events_duplicate_total{channel=\"http\"} 1"));
    assert!(metrics.contains("cityward_wal_fsyncs_total"));
}

fn broker_up() -> bool {
    let up = std::net::TcpStream::connect_timeout(
        &"127.0.0.1:1883".parse().unwrap(),
        Duration::from_millis(300),
    )
    .is_ok();
    if !up && std::env::var("CITYWARD_REQUIRE_SERVICES").is_ok() {
        panic!("Mosquitto is not listening on 127.0.0.1:1883; .ci/run starts it");
    }
    up
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_messages_are_mapped_stored_and_acknowledged() {
    if !broker_up() {
        eprintln!("skipped: no MQTT broker on 127.0.0.1:1883");
        return;
    }
    let prefix = format!("cwtest{}", std::process::id());
    let filter = format!("{prefix}/gas/+/data");
    let client_id = format!("{prefix}-node");
    let t = start(move |c| {
        c.mqtt.enabled = true;
        c.mqtt.client_id = client_id;
        c.mqtt.topics = vec![toml::from_str(&format!(
            r#"
            filter = "{filter}"
            kind = "gas"
            source_topic_level = 2
            time_field = "ts"
            time_format = "epoch_ms"
            lon_field = "lng"
            crs = "gcj02"
            [rename]
            ppm = "value"
            "#
        ))
        .unwrap()];
    })
    .await;
    let city = t.node.city();
    let device = city
        .devices
        .iter()
        .find(|d| d.kind == "gas")
        .unwrap_or(&city.devices[0])
        .clone();
    let (glon, glat) = cityward_model::wgs84_to_gcj02(device.lon, device.lat);
    let admin = login(&t.base, "admin", "admin-pass").await;
    // Wait for the subscription, then publish with the real command-line client.
    let mut stored = false;
    for attempt in 0..40 {
        let ts = chrono::Utc::now().timestamp_millis();
        let payload = format!(
            r#"{{"id":"mq-{attempt}","ts":{ts},"ppm":412.5,"lng":{glon},"lat":{glat},"alarm":true}}"#
        );
        let topic = format!("{prefix}/gas/{}/data", device.id);
        let ok = std::process::Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                "1883",
                "-q",
                "1",
                "-t",
                &topic,
                "-m",
                &payload,
            ])
            .status()
            .expect("mosquitto_pub runs (apt-get install mosquitto-clients)");
        assert!(ok.success());
        tokio::time::sleep(Duration::from_millis(250)).await;
        let r = sql(
            &t.base,
            &admin,
            "SELECT source, value, alarm, lon, lat, unit FROM events WHERE kind = 'gas'",
        )
        .await;
        if let Some(row) = r["rows"].as_array().and_then(|rows| rows.first()) {
            assert_eq!(row[0], device.id.as_str());
            assert_eq!(row[1], 412.5);
            assert_eq!(row[2], true);
            assert!(
                (row[3].as_f64().unwrap() - device.lon).abs() < 1e-7,
                "stored in WGS84: {row}"
            );
            assert!((row[4].as_f64().unwrap() - device.lat).abs() < 1e-7);
            assert_eq!(row[5].as_str(), device.owner_unit.as_deref());
            stored = true;
            break;
        }
    }
    assert!(stored, "no MQTT message reached the lake");
    // A payload that does not fit the mapping goes to the dead-letter store, channel mqtt.
    let topic = format!("{prefix}/gas/{}/data", device.id);
    std::process::Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-q",
            "1",
            "-t",
            &topic,
            "-m",
            "{\"ppm\": 1}",
        ])
        .status()
        .unwrap();
    let mut found = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, text) = call(
            "GET",
            format!("{}/api/v1/deadletter?channel=mqtt", t.base),
            Some(admin.clone()),
            "",
            vec![],
        )
        .await;
        let v: Value = serde_json::from_str(&text).unwrap();
        if let Some(item) = v["items"].as_array().and_then(|i| i.first()) {
            assert!(item["reason"].as_str().unwrap().contains("`ts`"), "{item}");
            found = true;
            break;
        }
    }
    assert!(found, "the unmappable MQTT payload was not dead-lettered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinds_that_require_registered_sources_refuse_unknown_ones_by_line() {
    let t = start(|c| c.ingest.require_registered = vec!["smoke".into()]).await;
    let city = t.node.city();
    let sensor = city
        .devices
        .iter()
        .find(|d| d.kind == "smoke")
        .expect("the small city has smoke sensors")
        .clone();
    let hub = login(&t.base, "sensorhub", "ingest-pass").await;
    let now = now();
    let body = format!(
        "{{\"source\":\"{}\",\"kind\":\"smoke\",\"time\":\"{now}\",\"attrs\":{{\"value\":0.4}}}}\n\
         {{\"source\":\"not-registered\",\"kind\":\"smoke\",\"time\":\"{now}\",\"attrs\":{{\"value\":0.4}}}}\n",
        sensor.id
    );
    let (status, text) = post_ndjson(&t.base, Some(hub), body.into_bytes()).await;
    assert_eq!(status, 200, "{text}");
    let outcome: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(outcome["accepted"], 1);
    let reject = &outcome["rejected"][0];
    assert_eq!(
        (reject["line"].as_u64(), reject["code"].as_str()),
        (Some(2), Some("unregistered_source")),
        "{reject}"
    );
    // The registered sensor's event took its place and unit from the registry.
    let admin = login(&t.base, "admin", "admin-pass").await;
    let r = sql(
        &t.base,
        &admin,
        "SELECT lon, lat, grid, unit FROM events WHERE kind = 'smoke'",
    )
    .await;
    assert_eq!(r["rows"][0][0].as_f64(), Some(sensor.lon));
    assert_eq!(r["rows"][0][2].as_str(), Some(sensor.grid.as_str()));
    assert_eq!(r["rows"][0][3].as_str(), sensor.owner_unit.as_deref());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_stored_before_a_restart_are_still_duplicates_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::default();
    config.node.data_dir = dir.path().to_path_buf();
    let event = |id: &str| {
        let mut e =
            cityward_model::Event::new("door-1", "door", chrono::Utc::now()).with("open", true);
        e.id = id.to_string();
        e
    };
    let node = Node::open(config.clone()).await.unwrap();
    node.ingest_events(
        vec![event("in-lake-1"), event("in-lake-2")],
        cityward_server::Channel::Internal,
    )
    .await
    .unwrap();
    node.events().compact(true).await.unwrap();
    node.ingest_events(vec![event("in-wal-1")], cityward_server::Channel::Internal)
        .await
        .unwrap();
    node.shutdown().await;
    drop(node);

    let node = Node::open(config).await.unwrap();
    let outcome = node
        .ingest_events(
            vec![event("in-lake-1"), event("in-wal-1"), event("new-1")],
            cityward_server::Channel::Internal,
        )
        .await
        .unwrap();
    assert_eq!((outcome.accepted, outcome.duplicates), (1, 2));
    let count = node.sql("SELECT count(*) FROM events", 10).await.unwrap();
    assert_eq!(count["rows"][0][0], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wal_backlog_beyond_its_limit_answers_retry_later() {
    let t = start(|c| c.wal.max_backlog_bytes = 1).await;
    let hub = login(&t.base, "sensorhub", "ingest-pass").await;
    let body = format!(
        r#"{{"source":"d","kind":"door","time":"{}","attrs":{{"open":true}}}}"#,
        now()
    );
    let (status, text) = post_ndjson(&t.base, Some(hub), body.into_bytes()).await;
    assert_eq!(status, 503, "{text}");
    assert!(
        text.contains("\"code\":\"unavailable\"") && text.contains("wal.max_backlog_bytes"),
        "{text}"
    );
}
