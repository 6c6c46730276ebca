//! The harness shared by the API tests: an in-process node on a bound port with a
//! generated small city and one user per role, and blocking HTTP calls run off the runtime.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use cityward_model::city::Device;
use cityward_server::{Node, NodeConfig, Role};
use serde_json::{json, Value};

pub struct TestNode {
    pub node: Arc<Node>,
    pub base: String,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

pub async fn start(mutate: impl FnOnce(&mut NodeConfig)) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let city = cityward_sim::generate_city(3, cityward_sim::Size::Small);
    let city_dir = dir.path().join("city-src");
    city.write(&city_dir).unwrap();
    let mut config = NodeConfig::default();
    config.node.data_dir = dir.path().join("data");
    config.city.dir = Some(city_dir);
    mutate(&mut config);
    let node = Node::open(config).await.unwrap();
    // Nodes sharing one state store (PostgreSQL) find the users there already.
    let add = |name: &str, password: &str, role: Role, unit: Option<&str>| match node.create_user(name, password, role, unit) {
        Ok(_) | Err(cityward_server::NodeError::Conflict(_)) => {}
        Err(e) => panic!("user {name}: {e}"),
    };
    add("admin", "admin-pass", Role::Admin, None);
    add("analyst", "analyst-pass", Role::Analyst, Some("police-city"));
    add("sensorhub", "ingest-pass", Role::Ingest, None);
    add("duty", "duty-pass", Role::Dispatcher, Some("unit-city"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel();
    tokio::spawn(cityward_server::serve_on(node.clone(), listener, async {
        let _ = stopped.await;
    }));
    TestNode {
        node,
        base,
        _dir: dir,
        stop: Some(stop),
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A blocking HTTP call run off the async runtime: (status, body).
pub async fn call(method: &'static str, url: String, token: Option<String>, content_type: &'static str, body: Vec<u8>) -> (u16, String) {
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::new_with_config(
            ureq::config::Config::builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(20)))
                .build(),
        );
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut response = match method {
            "GET" | "DELETE" => {
                let mut r = if method == "GET" { agent.get(&url) } else { agent.delete(&url) };
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call().unwrap()
            }
            _ => {
                let mut r = if method == "PUT" { agent.put(&url) } else { agent.post(&url) };
                r = r.header("Content-Type", content_type);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.send(&body[..]).unwrap()
            }
        };
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap_or_default())
    })
    .await
    .unwrap()
}

pub fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

impl TestNode {
    pub async fn login(&self, user: &str, password: &str) -> String {
        let (status, body) = call(
            "POST",
            format!("{}/api/v1/login", self.base),
            None,
            "application/json",
            json!({"username": user, "password": password}).to_string().into_bytes(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        parse(&body)["token"].as_str().unwrap().to_string()
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let (status, body) = call("GET", format!("{}{path}", self.base), Some(token.into()), "", vec![]).await;
        (status, if body.is_empty() { Value::Null } else { parse(&body) })
    }

    pub async fn delete(&self, path: &str, token: &str) -> (u16, String) {
        call("DELETE", format!("{}{path}", self.base), Some(token.into()), "", vec![]).await
    }

    pub async fn put_rule(&self, id: &str, query: &str, token: &str, yaml: bool, body: &str) -> (u16, Value) {
        let ct = if yaml { "application/yaml" } else { "application/json" };
        let (status, body) = call(
            "PUT",
            format!("{}/api/v1/rules/{id}{query}", self.base),
            Some(token.into()),
            ct,
            body.as_bytes().to_vec(),
        )
        .await;
        (status, parse(&body))
    }

    /// Installs a JSON rule as admin; panics unless it is stored.
    pub async fn install(&self, admin: &str, rule: Value) {
        let id = rule["id"].as_str().unwrap().to_string();
        let (status, body) = self.put_rule(&id, "", admin, false, &rule.to_string()).await;
        assert_eq!(status, 200, "{body}");
    }

    pub async fn post_json(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        let (status, text) = call(
            "POST",
            format!("{}{path}", self.base),
            Some(token.into()),
            "application/json",
            body.to_string().into_bytes(),
        )
        .await;
        (status, parse(&text))
    }

    /// Posts events (NDJSON); panics unless every one is accepted.
    pub async fn ingest(&self, token: &str, events: &[Value]) {
        let body = events.iter().map(Value::to_string).collect::<Vec<_>>().join("\n");
        let (status, text) = call(
            "POST",
            format!("{}/api/v1/events", self.base),
            Some(token.into()),
            "application/x-ndjson",
            body.into_bytes(),
        )
        .await;
        assert_eq!(status, 200, "{text}");
        let outcome = parse(&text);
        assert_eq!(outcome["accepted"].as_u64(), Some(events.len() as u64), "{outcome}");
    }

    /// Polls `GET /api/v1/alerts` until an alert satisfies `pred` (10 s at most).
    pub async fn wait_alert(&self, token: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let items = self.alerts(token).await;
            if let Some(a) = items.iter().find(|a| pred(a)) {
                return a.clone();
            }
            assert!(Instant::now() < deadline, "no alert {what} within 10 s; alerts: {items:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every alert (one page of up to 1000 is plenty here).
    pub async fn alerts(&self, token: &str) -> Vec<Value> {
        let (status, page) = self.get("/api/v1/alerts?limit=1000", token).await;
        assert_eq!(status, 200, "{page}");
        page["items"].as_array().unwrap().clone()
    }

    /// Waits until the detection stage has applied WAL records up to `next_seq`.
    pub async fn wait_applied(&self, token: &str, next_seq: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, st) = self.get("/api/v1/detect/status", token).await;
            assert_eq!(status, 200, "{st}");
            if st["next_seq"].as_u64().unwrap() >= next_seq {
                return st;
            }
            assert!(Instant::now() < deadline, "detection did not reach {next_seq}: {st}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub fn now() -> String {
    cityward_model::format_time(&chrono::Utc::now())
}

pub fn device(node: &Node, kind: &str) -> Device {
    node.city()
        .devices
        .iter()
        .find(|d| d.kind == kind)
        .unwrap_or_else(|| panic!("the generated city has no {kind} device"))
        .clone()
}

pub fn smoke(id: &str, source: &str, alarm: bool, temperature_c: f64) -> Value {
    json!({"id": id, "source": source, "kind": "smoke", "time": now(),
           "attrs": {"alarm": alarm, "temperature_c": temperature_c, "value": 0.2}})
}

pub fn plate_read(id: &str, anpr: &Device, plate: &str) -> Value {
    json!({"id": id, "source": anpr.id, "kind": "plate_read", "time": now(),
           "lon": anpr.lon, "lat": anpr.lat, "attrs": {"plate": plate, "confidence": 0.9}})
}

/// Percent-encodes a path segment (UTF-8 bytes).
pub fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}


/// Runs a Python check (`python3 -c SCRIPT` with `input` on stdin); `None` when the
/// validator packages are missing and CI did not ask for them (`.ci/run` installs them and
/// sets `CITYWARD_REQUIRE_SERVICES`, which makes their absence a failure).
pub fn python_check(needs: &str, script: &str, input: &str) -> Option<Result<String, String>> {
    use std::io::Write;
    let present = std::process::Command::new("python3")
        .args(["-c", &format!("import {needs}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        if std::env::var("CITYWARD_REQUIRE_SERVICES").is_ok() {
            panic!("python3 cannot import {needs}; .ci/run installs it with pip");
        }
        eprintln!("skipped: python3 cannot import {needs} (pip install {needs})");
        return None;
    }
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Some(if out.status.success() { Ok(text) } else { Err(text) })
}
