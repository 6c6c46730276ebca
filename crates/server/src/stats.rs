//! The dashboard's figures: `GET /api/v1/stats?since=&until=&bucket=hour|day`, over the
//! alerts the caller may see that were raised in the range (default: the last 24 hours).
//!
//! - `alerts_over_time`: alerts per time bucket and category;
//! - `alerts_by_region`: alerts per region of their grid (the finest level);
//! - `deadline_compliance`: per owning unit, acknowledgements and arrivals that fell due,
//!   and how many were on time (an alert still inside its deadline is not counted yet);
//! - `false_alarm_rate`: per device type, alerts closed and those closed as false alarms;
//! - `devices`: devices in the caller's jurisdiction per type, and those with an open
//!   `device.offline` ticket.
//!
//! `GET /api/v1/city/devices/health` lists the devices in the caller's jurisdiction that
//! have an open maintenance ticket: `offline` (a `device.offline` ticket) or `fault` (any
//! other, such as a low battery); every other device is taken as healthy. The console's
//! map colours and marks devices by it.
//!
//! Figures come from the alert rows (their `handling`); nothing is kept for them.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Duration, DurationRound, Utc};
use cityward_alerts::{grid_scopes, AlertClass, Case, Jurisdiction, Status};
use cityward_model::{format_time, parse_time, City};
use cityward_store::{AlertFilter, AlertRow, PageRequest};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::desk::case_of;
use crate::http::{blocking, require, ApiError, ApiQuery, Caller, ALERT_NEED, ALERT_ROLES};
use crate::node::{Node, NodeError, User};

/// Alerts read at most for one answer (the answer says when it stopped there).
const MAX_ALERTS: usize = 200_000;
/// The disposition of a false alarm.
const FALSE_ALARM: &str = "false_alarm";

/// The stats route; `crate::http::router` merges it.
pub(crate) fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/city/devices/health", get(devices_health))
}

/// The `since` and `until` of a query (RFC 3339): by default the 24 hours up to now.
pub(crate) fn time_range(since: Option<&str>, until: Option<&str>) -> Result<(DateTime<Utc>, DateTime<Utc>), NodeError> {
    let time = |name: &str, text: Option<&str>| -> Result<Option<DateTime<Utc>>, NodeError> {
        text.map(|t| parse_time(t).ok_or_else(|| NodeError::Invalid(format!("`{name}` must be an RFC 3339 time, not `{t}`")))).transpose()
    };
    let until = time("until", until)?.unwrap_or_else(Utc::now);
    let since = time("since", since)?.unwrap_or(until - Duration::hours(24));
    if since >= until {
        return Err(NodeError::Invalid("`since` must be before `until`".into()));
    }
    Ok((since, until))
}

async fn devices_health(State(node): State<Arc<Node>>, Caller(user): Caller) -> Result<Json<Value>, ApiError> {
    require(&user, ALERT_ROLES, ALERT_NEED)?;
    let (tickets, truncated) = blocking(move || open_tickets(&node, &user)).await?;
    let list = |health: &str| tickets.iter().filter(|(_, h)| **h == health).map(|(d, _)| d.clone()).collect::<Vec<_>>();
    Ok(Json(json!({"offline": list("offline"), "fault": list("fault"), "truncated": truncated})))
}

/// Devices with an open maintenance ticket the user may see, each `offline` or `fault`
/// (an offline ticket wins over others for the same device).
fn open_tickets(node: &Node, user: &User) -> Result<(BTreeMap<String, &'static str>, bool), NodeError> {
    let open: Vec<String> = Status::ALL.iter().filter(|s| s.is_open()).map(|s| s.as_str().to_string()).collect();
    let filter = AlertFilter { statuses: open, class: Some(AlertClass::Maintenance.as_str().into()), ..AlertFilter::default() };
    let (rows, truncated) = read_alerts(node, user, filter)?;
    let mut devices = BTreeMap::new();
    for row in rows {
        let health = if row.category == "device.offline" { "offline" } else { "fault" };
        let entry = devices.entry(row.key).or_insert(health);
        if health == "offline" {
            *entry = health;
        }
    }
    Ok((devices, truncated))
}

#[derive(Deserialize)]
struct StatsQuery {
    since: Option<String>,
    until: Option<String>,
    bucket: Option<String>,
}

async fn stats(State(node): State<Arc<Node>>, Caller(user): Caller, ApiQuery(q): ApiQuery<StatsQuery>) -> Result<Json<Value>, ApiError> {
    require(&user, ALERT_ROLES, ALERT_NEED)?;
    let (since, until) = time_range(q.since.as_deref(), q.until.as_deref())?;
    let bucket = match q.bucket.as_deref() {
        None | Some("hour") => Duration::hours(1),
        Some("day") => Duration::days(1),
        Some(other) => return Err(NodeError::Invalid(format!("`bucket` must be hour or day, not `{other}`")).into()),
    };
    if (until - since).num_seconds() / bucket.num_seconds() > 2000 {
        return Err(NodeError::Invalid("more than 2,000 buckets; choose a shorter range or `bucket=day`".into()).into());
    }
    Ok(Json(blocking(move || figures(&node, &user, since, until, bucket)).await?))
}

/// Every alert `user` sees that `filter` selects, up to [`MAX_ALERTS`]; true when cut there.
pub(crate) fn read_alerts(node: &Node, user: &User, mut filter: AlertFilter) -> Result<(Vec<AlertRow>, bool), NodeError> {
    filter.scopes = node.desk().jurisdiction(user).scopes().map(<[String]>::to_vec);
    let mut rows = Vec::new();
    let mut page = PageRequest::first(1000);
    loop {
        let got = node.state().list_alerts(&filter, &page)?;
        rows.extend(got.items);
        if rows.len() >= MAX_ALERTS {
            rows.truncate(MAX_ALERTS);
            return Ok((rows, true));
        }
        match got.next {
            Some(next) => page = PageRequest::after(next, 1000),
            None => return Ok((rows, false)),
        }
    }
}

/// When the first step named `action` happened.
fn first(case: &Case, action: &str) -> Option<DateTime<Utc>> {
    case.timeline.iter().find(|s| s.action == action).map(|s| s.at)
}

#[derive(Default)]
struct Compliance {
    ack_total: u64,
    ack_met: u64,
    arrive_total: u64,
    arrive_met: u64,
}

impl Compliance {
    /// Counts one deadline: met when done by `due`, missed when not done and `due` passed.
    fn count(total: &mut u64, met: &mut u64, done: Option<DateTime<Utc>>, due: DateTime<Utc>, now: DateTime<Utc>) {
        match done {
            Some(at) => {
                *total += 1;
                if at <= due {
                    *met += 1;
                }
            }
            None if now > due => *total += 1,
            None => {}
        }
    }
}

fn figures(node: &Node, user: &User, since: DateTime<Utc>, until: DateTime<Utc>, bucket: Duration) -> Result<Value, NodeError> {
    let city = node.city();
    let now = Utc::now();
    let (rows, cut) = read_alerts(node, user, AlertFilter { since: Some(since), until: Some(until), ..AlertFilter::default() })?;
    let mut over_time: BTreeMap<(DateTime<Utc>, String), u64> = BTreeMap::new();
    let mut by_region: BTreeMap<String, u64> = BTreeMap::new();
    let mut compliance: BTreeMap<String, Compliance> = BTreeMap::new();
    let mut closed: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for row in &rows {
        let start = row.time.duration_trunc(bucket).unwrap_or(row.time);
        *over_time.entry((start, row.category.clone())).or_default() += 1;
        if let Some(region) = row.grid.as_deref().and_then(|g| city.grid(g)).map(|g| g.region.clone()) {
            *by_region.entry(region).or_default() += 1;
        }
        let Some(case) = case_of(row) else { continue };
        if case.status == Status::Suppressed {
            continue;
        }
        if let Some(owner) = &case.owner {
            let raised = case.timeline.first().map_or(row.time, |s| s.at);
            let c = compliance.entry(owner.clone()).or_default();
            let d = &case.deadlines;
            let ack_due = raised + Duration::from_std(d.ack).unwrap_or_default();
            let arrive_due = raised + Duration::from_std(d.arrive).unwrap_or_default();
            Compliance::count(&mut c.ack_total, &mut c.ack_met, first(&case, "ack"), ack_due, now);
            Compliance::count(&mut c.arrive_total, &mut c.arrive_met, first(&case, "arrive"), arrive_due, now);
        }
        if let Some(disposition) = &case.disposition {
            let device_type = city.device(&row.key).map_or_else(|| "(no device)".to_string(), |d| d.kind.clone());
            let entry = closed.entry(device_type).or_default();
            entry.0 += 1;
            if disposition == FALSE_ALARM {
                entry.1 += 1;
            }
        }
    }
    let devices = device_health(node, user, &city)?;
    Ok(json!({
        "since": format_time(&since),
        "until": format_time(&until),
        "alerts": rows.len(),
        "truncated": cut,
        "alerts_over_time": over_time.iter().map(|((t, c), n)| json!({"bucket": format_time(t), "category": c, "count": n})).collect::<Vec<_>>(),
        "alerts_by_region": by_region.iter().map(|(r, n)| json!({
            "region": r, "name": city.region(r).map(|x| x.name.clone()), "count": n,
        })).collect::<Vec<_>>(),
        "deadline_compliance": compliance.iter().map(|(u, c)| json!({
            "unit": u, "name": city.unit(u).map(|x| x.name.clone()),
            "ack_total": c.ack_total, "ack_met": c.ack_met, "arrive_total": c.arrive_total, "arrive_met": c.arrive_met,
        })).collect::<Vec<_>>(),
        "false_alarm_rate": closed.iter().map(|(t, (n, f))| json!({"device_type": t, "closed": n, "false_alarms": f})).collect::<Vec<_>>(),
        "devices": devices,
    }))
}

/// Devices the user sees per type, and those with an open offline ticket.
fn device_health(node: &Node, user: &User, city: &City) -> Result<Value, NodeError> {
    let jurisdiction = node.desk().jurisdiction(user);
    let visible: HashSet<&str> = city
        .grids
        .iter()
        .filter(|g| matches!(jurisdiction, Jurisdiction::City) || jurisdiction.sees(&grid_scopes(city, &g.id)))
        .map(|g| g.id.as_str())
        .collect();
    let (tickets, _) = open_tickets(node, user)?;
    let offline: HashSet<&str> = tickets.iter().filter(|(_, h)| **h == "offline").map(|(d, _)| d.as_str()).collect();
    let mut by_type: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for d in city.devices.iter().filter(|d| visible.contains(d.grid.as_str())) {
        let entry = by_type.entry(d.kind.as_str()).or_default();
        entry.0 += 1;
        if offline.contains(d.id.as_str()) {
            entry.1 += 1;
        }
    }
    let total: u64 = by_type.values().map(|v| v.0).sum();
    let down: u64 = by_type.values().map(|v| v.1).sum();
    Ok(json!({
        "total": total,
        "offline": down,
        "by_type": by_type.iter().map(|(t, (n, o))| json!({"device_type": t, "total": n, "offline": o})).collect::<Vec<_>>(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_counts_once_it_is_met_or_missed() {
        let due = parse_time("2026-12-04T08:10:00Z").unwrap();
        let before = parse_time("2026-12-04T08:05:00Z").unwrap();
        let after = parse_time("2026-12-04T08:15:00Z").unwrap();
        let (mut total, mut met) = (0, 0);
        Compliance::count(&mut total, &mut met, Some(before), due, after);
        assert_eq!((total, met), (1, 1), "done in time");
        Compliance::count(&mut total, &mut met, Some(after), due, after);
        assert_eq!((total, met), (2, 1), "done late");
        Compliance::count(&mut total, &mut met, None, due, after);
        assert_eq!((total, met), (3, 1), "not done, and due passed");
        Compliance::count(&mut total, &mut met, None, due, before);
        assert_eq!((total, met), (3, 1), "not done, still in time: not counted yet");
    }
}
