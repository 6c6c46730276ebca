//! "Try on the last 24 hours": a rule run over stored events before it is saved.
//!
//! `POST /api/v1/rules/trial` (the rule as YAML or JSON, `?hours=` 1–168, default 24)
//! checks the rule against the city at once (400 with the error, as saving would give)
//! and starts a job: a fresh engine with only that rule reads the window hour by hour
//! from the lake and the WAL tail, oldest first, reporting events applied of the events
//! in the window. Its result: how many alerts the rule would have raised, per grid, and
//! the first 1,000 with their place. Nothing is stored and nothing is notified.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use chrono::{Duration, Utc};
use cityward_detect::{parse_rule, Engine, EngineConfig, Output};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::{require, ApiError, ApiQuery, Body, Caller, RULE_NEED, RULE_ROLES};
use crate::node::{Node, NodeError};
use crate::search::{count_where, events_where};

/// Alerts listed in a result at most (the count covers them all).
const LISTED: usize = 1000;
/// Events read per step at most: a busier hour is read in slices of this many.
const STEP_ROWS: usize = 200_000;

#[derive(Deserialize)]
struct TrialQuery {
    hours: Option<u32>,
}

/// The trial route; `crate::http::router` merges it.
pub(crate) fn routes() -> Router<Arc<Node>> {
    Router::new().route("/api/v1/rules/trial", post(start))
}

async fn start(
    State(node): State<Arc<Node>>,
    Caller(user): Caller,
    ApiQuery(q): ApiQuery<TrialQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.0?;
    require(&user, RULE_ROLES, RULE_NEED)?;
    let hours = q.hours.unwrap_or(24);
    if !(1..=168).contains(&hours) {
        return Err(NodeError::Invalid(format!("`hours` must be 1 to 168, not {hours}")).into());
    }
    let text = std::str::from_utf8(&body).map_err(|_| NodeError::Invalid("the rule must be UTF-8 text".into()))?;
    let yaml = !headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    let spec = parse_rule(text, yaml).map_err(|e| NodeError::Invalid(format!("the rule is not valid: {e}")))?;
    let rule = spec.compile(&node.city()).map_err(|e| NodeError::Invalid(e.to_string()))?;
    let hotlists = crate::rules::load_hotlists(node.state().as_ref())?;
    let lateness = node.config().detect.lateness;
    let max_evidence = node.config().detect.max_evidence;
    let job = node.jobs().start("rule_trial", &user, |job| {
        let node = node.clone();
        async move {
            let until = Utc::now();
            let since = until - Duration::hours(hours as i64);
            let window = |from: chrono::DateTime<Utc>, to: chrono::DateTime<Utc>| {
                vec![
                    format!("time >= TIMESTAMP '{}'", cityward_model::format_time(&from)),
                    format!("time < TIMESTAMP '{}'", cityward_model::format_time(&to)),
                ]
            };
            job.set_total(count_where(&node, &window(since, until)).await?);
            let mut engine = Engine::new(
                EngineConfig { lateness, max_evidence, ..EngineConfig::default() },
                node.city(),
                vec![rule.clone()],
            );
            engine.set_hotlists(hotlists);
            let mut outputs = Vec::new();
            let mut events_read = 0u64;
            for hour in 0..hours as i64 {
                let from = since + Duration::hours(hour);
                let to = (from + Duration::hours(1)).min(until);
                let mut conditions = window(from, to);
                let mut after: Option<(chrono::DateTime<Utc>, String)> = None;
                loop {
                    if let Some((t, id)) = &after {
                        conditions.truncate(2);
                        let t = cityward_model::format_time(t);
                        conditions.push(format!("(time > TIMESTAMP '{t}' OR (time = TIMESTAMP '{t}' AND id > '{}'))", id.replace('\'', "''")));
                    }
                    let events = events_where(&node, &conditions, "time, id", STEP_ROWS).await?;
                    let full = events.len() == STEP_ROWS;
                    after = events.last().map(|e| (e.time, e.id.clone()));
                    let n = events.len() as u64;
                    // The engine is CPU work: off the async workers.
                    engine = tokio::task::spawn_blocking(move || {
                        for event in &events {
                            engine.process(event);
                        }
                        engine
                    })
                    .await
                    .map_err(|e| NodeError::Internal(format!("rule trial stopped: {e}")))?;
                    engine.drain_into(&mut outputs);
                    events_read += n;
                    job.advance(n);
                    if !full {
                        break;
                    }
                }
            }
            // Timers (absence, dwell) up to the end of the window.
            engine.advance_to(until);
            engine.drain_into(&mut outputs);
            Ok(summary(&rule.spec.id, hours, events_read, outputs))
        }
    })?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "job": job }))))
}

/// What the trial found.
fn summary(rule: &str, hours: u32, events: u64, outputs: Vec<Output>) -> Value {
    let mut by_grid: BTreeMap<String, u64> = BTreeMap::new();
    let mut items = Vec::new();
    let mut alerts = 0u64;
    for output in outputs {
        if let Output::Raised(alert) = output {
            alerts += 1;
            *by_grid.entry(alert.grid.clone().unwrap_or_default()).or_default() += 1;
            if items.len() < LISTED {
                items.push(json!({
                    "id": alert.id, "time": cityward_model::format_time(&alert.time), "lon": alert.lon, "lat": alert.lat,
                    "grid": alert.grid, "severity": alert.severity.as_str(), "title": alert.title, "key": alert.key,
                }));
            }
        }
    }
    let mut grids: Vec<(String, u64)> = by_grid.into_iter().collect();
    grids.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    json!({
        "rule": rule,
        "hours": hours,
        "events": events,
        "alerts": alerts,
        "by_grid": grids.iter().map(|(g, n)| json!({"grid": if g.is_empty() { Value::Null } else { json!(g) }, "alerts": n})).collect::<Vec<_>>(),
        "items": items,
    })
}
