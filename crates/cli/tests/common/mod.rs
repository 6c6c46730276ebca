//! What the multi-process tests share: `cityward serve` processes driven over HTTP.

#![allow(dead_code)] // each test binary uses its own part

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub fn cityward() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cityward"))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(ureq::config::Config::builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(20))).build())
}

/// Waits until `done`, failing the test after `timeout`; how long it took.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

/// A `cityward serve --config CONFIG` process listening on `port`, logged in as
/// `admin`/`admin-pass`; SIGKILLed when dropped so a failing test leaves none behind.
pub struct Served {
    pub name: String,
    pub config: PathBuf,
    pub port: u16,
    child: Option<Child>,
    token: String,
}

impl Served {
    /// Not started yet.
    pub fn new(name: &str, config: PathBuf, port: u16) -> Served {
        Served { name: name.into(), config, port, child: None, token: String::new() }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the process (`CITYWARD_LOG` from `TEST_NODE_LOG`, default warn), waits until
    /// it listens, and logs in.
    pub fn start(&mut self) {
        let child = cityward()
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("CITYWARD_LOG", std::env::var("TEST_NODE_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "{} did not start listening", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
        let (status, body) = self.call("POST", "/api/v1/login", Some(json!({"username": "admin", "password": "admin-pass"})));
        assert_eq!(status, 200, "login at {}: {body}", self.name);
        self.token = body["token"].as_str().unwrap().to_string();
    }

    /// Stops the process as an operator would (SIGTERM), and waits until it has exited.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let sent = Command::new("kill").args(["-TERM", &c.id().to_string()]).status().unwrap();
            assert!(sent.success(), "kill -TERM {}", self.name);
            let status = c.wait().unwrap();
            assert!(status.success(), "{} exited with {status} after SIGTERM", self.name);
        }
    }

    pub fn sigkill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// An API call as admin: status and JSON body (or the text, when not JSON).
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base());
        let auth = format!("Bearer {}", self.token);
        let a = agent();
        let result = match (method, body) {
            ("GET", _) => a.get(&url).header("Authorization", &auth).call(),
            ("PUT", Some(b)) => a.put(&url).header("Authorization", &auth).header("Content-Type", "application/json").send(b.to_string().as_bytes()),
            (_, Some(b)) => a.post(&url).header("Authorization", &auth).header("Content-Type", "application/json").send(b.to_string().as_bytes()),
            (_, None) => a.post(&url).header("Authorization", &auth).send(&b""[..]),
        };
        let mut r = result.unwrap_or_else(|e| panic!("{method} {path} at {}: {e}", self.name));
        let text = r.body_mut().read_to_string().unwrap();
        (r.status().as_u16(), serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Posts events as NDJSON (open intake).
    pub fn post_events(&self, events: &[Value]) -> Result<(), String> {
        let body: Vec<String> = events.iter().map(Value::to_string).collect();
        match agent().post(&format!("{}/api/v1/events", self.base())).header("Content-Type", "application/x-ndjson").send(body.join("\n").as_bytes()) {
            Ok(r) if r.status() == 200 => Ok(()),
            Ok(r) => Err(format!("status {}", r.status())),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Every alert the node lists, all pages; an alert listed twice fails the test.
    pub fn all_alerts(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut ids = std::collections::BTreeSet::new();
        let mut path = "/api/v1/alerts?limit=1000".to_string();
        loop {
            let (status, page) = self.call("GET", &path, None);
            assert_eq!(status, 200, "{page}");
            for a in page["items"].as_array().unwrap() {
                assert!(ids.insert(a["id"].as_str().unwrap_or("").to_string()), "alert {} listed twice at {}", a["id"], self.name);
                out.push(a.clone());
            }
            match page["next"].as_str() {
                Some(next) => path = format!("/api/v1/alerts?limit=1000&cursor={next}"),
                None => return out,
            }
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.sigkill();
    }
}
