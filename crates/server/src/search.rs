//! Reading events back out of the lake (and the WAL tail): search, an alert's evidence,
//! and the events of a time range for rule trials.
//!
//! - `POST /api/v1/search`: events by plate (whole, or partial with `*` and `?`), kind,
//!   time range and area (a GeoJSON polygon), newest first, paged by a cursor; with
//!   `?format=csv` the same page as CSV. Every search is written to the audit log with
//!   its filters and result size.
//! - `POST /api/v1/search/export`: every event a search matches (newest first, at most
//!   200,000) as a CSV file, written by a job: it answers `202` with the job, whose
//!   progress `GET /api/v1/jobs/{id}` shows; the finished job names
//!   `GET /api/v1/exports/{job}.csv`, which only the user who started it (or an
//!   administrator) downloads, while the job is kept (an hour after it ended). Audited
//!   when it starts (`search.export`) and on each download (`search.export.download`).
//! - `GET /api/v1/alerts/{id}/evidence`: the evidence events of an alert the caller sees.
//!
//! Filters become SQL over the `events` table; values are checked and quoted here, never
//! pasted. The area's bounding box is a SQL condition, the polygon itself is tested here.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use cityward_model::geo::{Geometry, MultiPolygon};
use cityward_model::{format_time, parse_time, Event};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::http::{require, ApiError, ApiQuery, Body, Caller, ALERT_NEED, ALERT_ROLES};
use crate::node::{Node, NodeError, Role};

/// Who may search events (not responders: they see their alerts' evidence only).
const SEARCH_ROLES: &[Role] = &[Role::Admin, Role::Analyst, Role::Dispatcher];
const SEARCH_NEED: &str = "role `admin`, `analyst` or `dispatcher`";
/// Largest page.
const MAX_PAGE: usize = 5000;
/// Most events one export writes.
const MAX_EXPORT: usize = 200_000;
/// How long an export file is kept on disk (its job is forgotten after an hour).
const KEEP_EXPORTS: std::time::Duration = std::time::Duration::from_secs(2 * 3600);
/// The columns read back into events.
const EVENT_COLUMNS: &str = "id, source, kind, time, lon, lat, grid, unit, attrs";

/// The search routes; `crate::http::router` merges them.
pub(crate) fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/api/v1/search", post(search))
        .route("/api/v1/search/export", post(export))
        .route("/api/v1/exports/{file}", get(exported))
        .route("/api/v1/alerts/{id}/evidence", get(evidence))
}

/// A search as the API takes it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchRequest {
    /// A plate, whole or with `*` (any run of characters) and `?` (one character).
    plate: Option<String>,
    /// One event kind.
    kind: Option<String>,
    /// From (RFC 3339), inclusive.
    since: Option<String>,
    /// Until (RFC 3339), exclusive.
    until: Option<String>,
    /// A GeoJSON Polygon or MultiPolygon geometry.
    area: Option<Value>,
    /// Results per page (default 500, at most 5000).
    limit: Option<usize>,
    /// The `next` of the previous page.
    cursor: Option<String>,
    /// Why the search is made: `{"case_number": …, "legal_basis": …}`; recorded in the
    /// audit log with the search.
    purpose: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
struct FormatQuery {
    format: Option<String>,
}

/// A search made ready to run: SQL conditions and the exact area test.
struct Plan {
    conditions: Vec<String>,
    area: Option<MultiPolygon>,
    limit: usize,
    cursor: Option<(DateTime<Utc>, String)>,
}

/// Quotes a SQL string literal.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn timestamp(t: &DateTime<Utc>) -> String {
    format!("TIMESTAMP '{}'", format_time(t))
}

fn time_field(name: &str, text: Option<&str>) -> Result<Option<DateTime<Utc>>, NodeError> {
    text.map(|t| {
        parse_time(t).ok_or_else(|| NodeError::Invalid(format!("`{name}` must be an RFC 3339 time like 2026-12-04T08:00:00Z, not `{t}`")))
    })
    .transpose()
}

/// A plate pattern as a SQL LIKE pattern (`\` escapes the LIKE wildcards the plate holds).
fn plate_pattern(plate: &str) -> Result<String, NodeError> {
    let plate = plate.trim();
    if plate.is_empty() || plate.chars().count() > 32 {
        return Err(NodeError::Invalid("`plate` must be 1 to 32 characters, with `*` and `?` as wildcards".into()));
    }
    if plate.chars().all(|c| c == '*' || c == '?') {
        return Err(NodeError::Invalid(format!("`plate` `{plate}` is only wildcards; give at least one character of the plate")));
    }
    let mut like = String::new();
    for c in plate.chars() {
        match c {
            '*' => like.push('%'),
            '?' => like.push('_'),
            '%' | '_' | '\\' => {
                like.push('\\');
                like.push(c);
            }
            c => like.extend(c.to_uppercase()),
        }
    }
    Ok(like)
}

impl SearchRequest {
    fn plan(&self, node: &Node) -> Result<Plan, NodeError> {
        let mut conditions = Vec::new();
        if let Some(kind) = &self.kind {
            let kinds = node.events().lake().kinds();
            if kinds.get(kind).is_none() {
                return Err(NodeError::Invalid(format!(
                    "`kind` `{kind}` is not a declared event kind; the kinds are {}",
                    kinds.names().collect::<Vec<_>>().join(", ")
                )));
            }
            conditions.push(format!("kind = {}", quoted(kind)));
        }
        if let Some(plate) = &self.plate {
            let like = plate_pattern(plate)?;
            if node.events().lake().schema().field_with_name("plate").is_err() {
                return Err(NodeError::Invalid("no event kind of this node declares a `plate` attribute; plate search needs one".into()));
            }
            // Plates are stored as read; compare without case.
            conditions.push(format!("upper(plate) LIKE {} ESCAPE '\\'", quoted(&like)));
        }
        let since = time_field("since", self.since.as_deref())?;
        let until = time_field("until", self.until.as_deref())?;
        if let (Some(s), Some(u)) = (since, until) {
            if s >= u {
                return Err(NodeError::Invalid(format!("`since` ({}) must be before `until` ({})", format_time(&s), format_time(&u))));
            }
        }
        if let Some(s) = since {
            conditions.push(format!("time >= {}", timestamp(&s)));
        }
        if let Some(u) = until {
            conditions.push(format!("time < {}", timestamp(&u)));
        }
        let area = match &self.area {
            None => None,
            Some(v) => {
                let geometry = Geometry::from_geojson(v).map_err(|e| NodeError::Invalid(format!("`area`: {e}")))?;
                let area = geometry.to_multi_polygon().ok_or_else(|| {
                    NodeError::Invalid(format!("`area` must be a Polygon or MultiPolygon, not a {}", geometry.type_name()))
                })?;
                let b = area.bbox();
                conditions.push(format!(
                    "lon BETWEEN {} AND {} AND lat BETWEEN {} AND {}",
                    b.min_lon, b.max_lon, b.min_lat, b.max_lat
                ));
                Some(area)
            }
        };
        let limit = self.limit.unwrap_or(500);
        if limit == 0 || limit > MAX_PAGE {
            return Err(NodeError::Invalid(format!("`limit` must be 1 to {MAX_PAGE}, not {limit}")));
        }
        let cursor = self.cursor.as_deref().map(parse_cursor).transpose()?;
        Ok(Plan { conditions, area, limit, cursor })
    }
}

/// A cursor is the time and id of the last result given.
fn parse_cursor(text: &str) -> Result<(DateTime<Utc>, String), NodeError> {
    let bad = || NodeError::Invalid(format!("`cursor` `{text}` is not one this node gave; use the `next` of the previous page"));
    let (time, id) = text.split_once('|').ok_or_else(bad)?;
    Ok((parse_time(time).ok_or_else(bad)?, id.to_string()))
}

/// An event from a row of [`EVENT_COLUMNS`].
fn event_of(row: &[Value]) -> Option<Event> {
    let text = |i: usize| row.get(i).and_then(Value::as_str).map(str::to_string);
    let mut event = Event::new(text(1)?, text(2)?, parse_time(row.get(3)?.as_str()?)?);
    event.id = text(0)?;
    event.lon = row.get(4).and_then(Value::as_f64);
    event.lat = row.get(5).and_then(Value::as_f64);
    event.grid = text(6);
    event.unit = text(7);
    event.attrs = text(8).and_then(|a| serde_json::from_str(&a).ok()).unwrap_or_default();
    Some(event)
}

/// Events matching SQL `conditions`, in the given order, at most `max_rows`.
pub(crate) async fn events_where(node: &Node, conditions: &[String], order: &str, max_rows: usize) -> Result<Vec<Event>, NodeError> {
    let filter = if conditions.is_empty() { String::new() } else { format!(" WHERE {}", conditions.join(" AND ")) };
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events{filter} ORDER BY {order} LIMIT {max_rows}");
    let result = node.events().sql(&sql, max_rows).await?;
    Ok(result.rows.iter().filter_map(|r| event_of(r)).collect())
}

/// Counts the events matching SQL `conditions`.
pub(crate) async fn count_where(node: &Node, conditions: &[String]) -> Result<u64, NodeError> {
    let filter = if conditions.is_empty() { String::new() } else { format!(" WHERE {}", conditions.join(" AND ")) };
    let result = node.events().sql(&format!("SELECT count(*) FROM events{filter}"), 1).await?;
    Ok(result.rows.first().and_then(|r| r.first()).and_then(Value::as_u64).unwrap_or(0))
}

/// One page of a search, newest first, and the cursor of the next.
async fn run(node: &Node, plan: &Plan) -> Result<(Vec<Event>, Option<String>), NodeError> {
    let mut found = Vec::new();
    let mut cursor = plan.cursor.clone();
    // With an area, the SQL prefilter is its box: read on until the page is full.
    let chunk = if plan.area.is_some() { (plan.limit * 4).min(20_000) } else { plan.limit + 1 };
    loop {
        let mut conditions = plan.conditions.clone();
        if let Some((time, id)) = &cursor {
            conditions.push(format!("(time < {t} OR (time = {t} AND id < {}))", quoted(id), t = timestamp(time)));
        }
        let events = events_where(node, &conditions, "time DESC, id DESC", chunk).await?;
        let exhausted = events.len() < chunk;
        if let Some(last) = events.last() {
            cursor = Some((last.time, last.id.clone()));
        }
        for event in events {
            let inside = match (&plan.area, event.lon, event.lat) {
                (None, _, _) => true,
                (Some(area), Some(lon), Some(lat)) => area.contains(lon, lat),
                _ => false,
            };
            if inside {
                if found.len() == plan.limit {
                    let last: &Event = &found[found.len() - 1];
                    return Ok((found.clone(), Some(format!("{}|{}", format_time(&last.time), last.id))));
                }
                found.push(event);
            }
        }
        if exhausted {
            return Ok((found, None));
        }
    }
}

fn event_json(e: &Event) -> Value {
    json!({
        "id": e.id, "time": format_time(&e.time), "kind": e.kind, "source": e.source,
        "lon": e.lon, "lat": e.lat, "grid": e.grid, "unit": e.unit, "attrs": e.attrs,
    })
}

/// A CSV field, quoted when it must be (RFC 4180).
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

const CSV_HEADER: &str = "time,kind,source,plate,lon,lat,grid,id\r\n";

fn csv(events: &[Event]) -> String {
    let mut out = String::from(CSV_HEADER);
    csv_rows(&mut out, events);
    out
}

fn csv_rows(out: &mut String, events: &[Event]) {
    for e in events {
        let plate = e.attrs.get("plate").and_then(Value::as_str).unwrap_or("");
        let num = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
        let fields = [
            format_time(&e.time),
            e.kind.clone(),
            e.source.clone(),
            plate.to_string(),
            num(e.lon),
            num(e.lat),
            e.grid.clone().unwrap_or_default(),
            e.id.clone(),
        ];
        out.push_str(&fields.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","));
        out.push_str("\r\n");
    }
}

async fn search(
    State(node): State<Arc<Node>>,
    Caller(user): Caller,
    ApiQuery(q): ApiQuery<FormatQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    let body = body.0?;
    require(&user, SEARCH_ROLES, SEARCH_NEED)?;
    let as_csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => return Err(NodeError::Invalid(format!("`format` must be json or csv, not `{other}`")).into()),
    };
    let request = search_request(&body)?;
    let plan = request.plan(&node)?;
    let (events, next) = run(&node, &plan).await?;
    node.desk().audit(
        &user.username,
        if as_csv { "search.export" } else { "search" },
        "events",
        json!({
            "plate": request.plate, "kind": request.kind, "since": request.since, "until": request.until,
            "area": request.area.is_some(), "purpose": request.purpose, "results": events.len(),
        }),
    );
    if as_csv {
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (header::CONTENT_DISPOSITION, "attachment; filename=\"cityward-search.csv\""),
            ],
            csv(&events),
        )
            .into_response());
    }
    let items: Vec<Value> = events.iter().map(event_json).collect();
    Ok(Json(json!({"items": items, "next": next})).into_response())
}

fn exports_dir(node: &Node) -> std::path::PathBuf {
    node.config().node.data_dir.join("exports")
}

/// Parses a search body; the error shows what to send.
fn search_request(body: &[u8]) -> Result<SearchRequest, NodeError> {
    serde_json::from_slice(body).map_err(|e| {
        NodeError::Invalid(format!(
            "body must be {{\"plate\", \"kind\", \"since\", \"until\", \"area\", \"limit\", \"cursor\", \"purpose\"}} (all optional): {e}"
        ))
    })
}

async fn export(State(node): State<Arc<Node>>, Caller(user): Caller, body: Body) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.0?;
    require(&user, SEARCH_ROLES, SEARCH_NEED)?;
    let request = search_request(&body)?;
    let mut plan = request.plan(&node)?;
    plan.limit = MAX_PAGE;
    plan.cursor = None;
    let dir = exports_dir(&node);
    std::fs::create_dir_all(&dir)
        .map_err(|e| NodeError::Internal(format!("cannot create {}: {e}; check the data directory", dir.display())))?;
    forget_old_exports(&dir);
    let audit = json!({
        "plate": request.plate, "kind": request.kind, "since": request.since, "until": request.until,
        "area": request.area.is_some(), "purpose": request.purpose,
    });
    let job = node.jobs().start("search_export", &user, |job| {
        let (node, user) = (node.clone(), user.clone());
        async move {
            // With an area the count is of its bounding box: an upper bound.
            job.set_total(count_where(&node, &plan.conditions).await?.min(MAX_EXPORT as u64));
            let file = exports_dir(&node).join(format!("{}.csv", job.id()));
            let mut text = String::from(CSV_HEADER);
            let mut rows = 0usize;
            let truncated = loop {
                let (events, next) = run(&node, &plan).await?;
                let take = events.len().min(MAX_EXPORT - rows);
                csv_rows(&mut text, &events[..take]);
                rows += take;
                job.advance(take as u64);
                match next {
                    _ if rows >= MAX_EXPORT => break next.is_some() || take < events.len(),
                    Some(next) => plan.cursor = Some(parse_cursor(&next)?),
                    None => break false,
                }
            };
            let written = file.clone();
            tokio::task::spawn_blocking(move || std::fs::write(&written, text))
                .await
                .map_err(|e| NodeError::Internal(e.to_string()))?
                .map_err(|e| NodeError::Internal(format!("cannot write {}: {e}; check the disk", file.display())))?;
            let mut detail = audit;
            detail["results"] = json!(rows);
            node.desk().audit(&user.username, "search.export", "events", detail);
            Ok(json!({"rows": rows, "truncated": truncated, "url": format!("/api/v1/exports/{}.csv", job.id())}))
        }
    })?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "job": job }))))
}

/// Deletes export files older than [`KEEP_EXPORTS`] (their jobs are gone).
fn forget_old_exports(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let old = entry.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).is_some_and(|age| age > KEEP_EXPORTS);
        if old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

async fn exported(State(node): State<Arc<Node>>, Caller(user): Caller, Path(file): Path<String>) -> Result<Response, ApiError> {
    let job = file.strip_prefix('j').and_then(|_| file.strip_suffix(".csv")).filter(|j| j[1..].chars().all(|c| c.is_ascii_hexdigit()));
    let Some(job) = job else {
        return Err(NodeError::NotFound(format!("no export `{file}`; its name is the job's id and .csv")).into());
    };
    // Only the job's owner (or an administrator) sees the job, and so its file.
    let state = node.jobs().get(&user, job)?;
    if state["state"] != "done" || state["kind"] != "search_export" {
        return Err(NodeError::NotFound(format!("job `{job}` has no finished export; follow it at GET /api/v1/jobs/{job}")).into());
    }
    let path = exports_dir(&node).join(&file);
    let text = tokio::fs::read(&path)
        .await
        .map_err(|_| NodeError::NotFound(format!("the export of job `{job}` is no longer on disk; run it again")))?;
    node.desk().audit(&user.username, "search.export.download", "events", json!({"job": job, "bytes": text.len()}));
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"cityward-search.csv\""),
        ],
        text,
    )
        .into_response())
}

async fn evidence(State(node): State<Arc<Node>>, Caller(user): Caller, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    require(&user, ALERT_ROLES, ALERT_NEED)?;
    let desk = node.desk().clone();
    let who = user.clone();
    let alert_id = id.clone();
    let row = crate::http::blocking(move || desk.read(&who, &alert_id)).await?;
    let ids: Vec<String> = row.body["evidence"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).map(quoted).collect())
        .unwrap_or_default();
    if ids.is_empty() {
        return Ok(Json(json!({"items": []})));
    }
    // Evidence lies between the alert's first event and its last change: the time range
    // lets the lake skip every other day's files.
    let from = row.time - chrono::Duration::days(1);
    let to = row.updated_at.max(row.time) + chrono::Duration::minutes(1);
    let conditions = vec![
        format!("id IN ({})", ids.join(", ")),
        format!("time >= {}", timestamp(&from)),
        format!("time <= {}", timestamp(&to)),
    ];
    let events = events_where(&node, &conditions, "time, id", ids.len()).await?;
    Ok(Json(json!({"items": events.iter().map(event_json).collect::<Vec<_>>()})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plate_wildcards_become_like_patterns_and_like_characters_are_escaped() {
        assert_eq!(plate_pattern("粤b12*").unwrap(), "粤B12%");
        assert_eq!(plate_pattern("A?C").unwrap(), "A_C");
        assert_eq!(plate_pattern("A%_\\").unwrap(), "A\\%\\_\\\\");
        assert!(plate_pattern("**").unwrap_err().to_string().contains("only wildcards"));
        assert!(plate_pattern("").is_err());
    }

    #[test]
    fn quotes_cannot_leave_a_literal() {
        assert_eq!(quoted("x' OR 1=1 --"), "'x'' OR 1=1 --'");
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
    }

    #[test]
    fn a_cursor_is_time_and_id() {
        let (t, id) = parse_cursor("2026-12-04T08:00:00Z|e1").unwrap();
        assert_eq!(format_time(&t), "2026-12-04T08:00:00.000Z");
        assert_eq!(id, "e1");
        assert!(parse_cursor("nonsense").is_err());
    }
}
