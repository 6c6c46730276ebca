//! `cityward ingest`: bulk-load NDJSON or CSV files into a running node over HTTP, several
//! requests in flight, with a progress bar and a summary. Records are sent as read (no
//! parsing here): the node validates, and refused records come back with their line.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::config::Config::builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(300)))
            .build(),
    )
}

/// Logs in and returns a token.
pub fn login(base: &str, user: &str, password: &str) -> anyhow::Result<String> {
    let body = serde_json::json!({"username": user, "password": password}).to_string();
    let mut response = agent()
        .post(&format!("{base}/api/v1/login"))
        .header("Content-Type", "application/json")
        .send(body.as_bytes())
        .with_context(|| format!("cannot reach the node at {base}; is it running?"))?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    if status != 200 {
        bail!("login as `{user}` failed ({status}): {text}");
    }
    let value: Value = serde_json::from_str(&text)?;
    Ok(value["token"]
        .as_str()
        .context("login answer has no token")?
        .to_string())
}

/// Totals of one `cityward ingest` run.
#[derive(Default, Debug)]
pub struct Summary {
    /// Records stored.
    pub accepted: u64,
    /// Records already stored before (same id).
    pub duplicates: u64,
    /// Records refused.
    pub rejected: u64,
}

struct Batch {
    file: Arc<str>,
    first_line: u64,
    csv: bool,
    body: Vec<u8>,
}

/// Loads the files; prints the first refused records and a summary.
pub fn run(
    files: &[std::path::PathBuf],
    base: &str,
    token: Option<&str>,
    batch: usize,
    concurrency: usize,
    quiet: bool,
) -> anyhow::Result<Summary> {
    let total_bytes: u64 = files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .map(|m| m.len())
                .with_context(|| format!("cannot read {}", f.display()))
        })
        .sum::<anyhow::Result<u64>>()?;
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total_bytes)
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}")
            .expect("valid template"),
    );
    let summary = Arc::new(Mutex::new(Summary::default()));
    let shown = Arc::new(Mutex::new(0usize));
    let failure: Arc<Mutex<Option<String>>> = Arc::default();
    let (tx, rx) = mpsc::sync_channel::<Batch>(concurrency * 2);
    let rx = Arc::new(Mutex::new(rx));
    let started = Instant::now();
    let url = format!("{}/api/v1/events", base.trim_end_matches('/'));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (rx, summary, shown, failure, bar, url) = (
                rx.clone(),
                summary.clone(),
                shown.clone(),
                failure.clone(),
                bar.clone(),
                url.clone(),
            );
            let token = token.map(str::to_string);
            std::thread::spawn(move || {
                let agent = agent();
                loop {
                    let Ok(batch) = rx.lock().expect("queue lock").recv() else {
                        return;
                    };
                    if failure.lock().expect("lock").is_some() {
                        continue;
                    }
                    match send(&agent, &url, token.as_deref(), &batch) {
                        Ok(outcome) => {
                            let rejected =
                                outcome["rejected"].as_array().cloned().unwrap_or_default();
                            {
                                let mut s = summary.lock().expect("lock");
                                s.accepted += outcome["accepted"].as_u64().unwrap_or(0);
                                s.duplicates += outcome["duplicates"].as_u64().unwrap_or(0);
                                s.rejected += rejected.len() as u64;
                                bar.set_message(format!(
                                    "{} accepted, {} refused",
                                    s.accepted, s.rejected
                                ));
                            }
                            let mut shown = shown.lock().expect("lock");
                            for r in rejected {
                                if *shown >= 10 {
                                    break;
                                }
                                *shown += 1;
                                // The node numbers lines within the request; map back to the file.
                                let offset = if batch.csv { 1 } else { 0 };
                                let line =
                                    batch.first_line + r["line"].as_u64().unwrap_or(1) - 1 - offset;
                                let message = format!(
                                    "{}:{line}: {}{}",
                                    batch.file,
                                    r["field"]
                                        .as_str()
                                        .map(|f| format!("{f}: "))
                                        .unwrap_or_default(),
                                    r["reason"].as_str().unwrap_or("refused")
                                );
                                if bar.is_hidden() {
                                    eprintln!("{message}");
                                } else {
                                    bar.println(message);
                                }
                            }
                        }
                        Err(e) => *failure.lock().expect("lock") = Some(format!("{e:#}")),
                    }
                    bar.inc(batch.body.len() as u64);
                }
            })
        })
        .collect();

    for path in files {
        let name: Arc<str> = path.display().to_string().into();
        let csv = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut line_no = 0u64;
        let header: Option<Arc<str>> = if csv {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            line_no += 1;
            bar.inc(h.len() as u64);
            Some(h.into())
        } else {
            None
        };
        loop {
            let first_line = line_no + 1;
            let mut body = Vec::with_capacity(batch * 220);
            if let Some(h) = &header {
                body.extend_from_slice(h.as_bytes());
            }
            let mut n = 0;
            while n < batch {
                let before = body.len();
                let read = (&mut reader).take(16 << 20).read_until(b'\n', &mut body)?;
                if read == 0 {
                    break;
                }
                line_no += 1;
                if body[before..].iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                n += 1;
            }
            if n == 0 {
                break;
            }
            let b = Batch {
                file: name.clone(),
                first_line,
                csv,
                body,
            };
            if tx.send(b).is_err() {
                break;
            }
            if failure.lock().expect("lock").is_some() {
                break;
            }
        }
    }
    drop(tx);
    for w in workers {
        let _ = w.join();
    }
    bar.finish_and_clear();
    if let Some(e) = failure.lock().expect("lock").take() {
        bail!("{e}");
    }
    let s = std::mem::take(&mut *summary.lock().expect("lock"));
    let secs = started.elapsed().as_secs_f64();
    let records = s.accepted + s.duplicates + s.rejected;
    println!(
        "{} accepted, {} duplicates, {} refused in {:.1} s ({:.0} records/s){}",
        s.accepted,
        s.duplicates,
        s.rejected,
        secs,
        records as f64 / secs.max(1e-9),
        if s.rejected > 0 {
            "; refused records are in the node's dead-letter store (cityward deadletter list)"
        } else {
            ""
        }
    );
    Ok(s)
}

fn send(
    agent: &ureq::Agent,
    url: &str,
    token: Option<&str>,
    batch: &Batch,
) -> anyhow::Result<Value> {
    let content_type = if batch.csv {
        "text/csv"
    } else {
        "application/x-ndjson"
    };
    let mut attempt = 0;
    loop {
        let mut request = agent.post(url).header("Content-Type", content_type);
        if let Some(t) = token {
            request = request.header("Authorization", &format!("Bearer {t}"));
        }
        let result = request.send(&batch.body[..]);
        let mut response = match result {
            Ok(r) => r,
            // The node may be restarting; batches are idempotent by id, so try again.
            Err(_) if attempt < 5 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(200 << attempt));
                continue;
            }
            Err(e) => bail!("cannot reach {url}: {e}; is the node running?"),
        };
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_string()
            .unwrap_or_default();
        match status {
            200 | 422 => {
                return serde_json::from_str(&text).context("the node's answer is not JSON")
            }
            // Catching up with its backlog, or restarting: the batch is idempotent by id, so
            // send it again, for up to about two minutes.
            503 if attempt < 40 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(200 << attempt.min(4)));
            }
            401 | 403 => bail!(
                "the node refused the token ({status}): {text}; pass --token or --user/--password"
            ),
            _ => bail!(
                "{}:{}: the node answered {status}: {text}",
                batch.file,
                batch.first_line
            ),
        }
    }
}

/// `cityward deadletter resubmit`.
pub fn resubmit(base: &str, token: &str, id: i64, file: Option<&Path>) -> anyhow::Result<()> {
    let body = match file {
        Some(f) => std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?,
        None => Vec::new(),
    };
    let mut response = agent()
        .post(&format!(
            "{}/api/v1/deadletter/{id}/resubmit",
            base.trim_end_matches('/')
        ))
        .header("Authorization", &format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .send(&body[..])
        .with_context(|| format!("cannot reach the node at {base}"))?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    if status != 200 {
        bail!("dead letter {id} was not accepted ({status}): {text}");
    }
    println!("Dead letter {id} re-submitted: {text}");
    Ok(())
}
