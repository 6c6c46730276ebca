//! Reading events back out of the lake (and the WAL tail): search, an alert's evidence,
//! and the events of a time range for rule trials.
//!
//! - `POST /api/v1/search`: events by plate (whole, or partial with `*` and `?`, with the
//!   usual OCR confusions 0/D/Q/O, 8/B, 1/I, 5/S, 2/Z read as equal on request), vehicle
//!   colour and type, kind, time range and area (a GeoJSON polygon or a list of grids),
//!   newest first, paged by a cursor; with `?format=csv` the same page as CSV. A search of
//!   personal data carries a purpose and stays within its role's limits, or waits for a
//!   supervisor (see [`crate::purpose`]). Every search is written to the audit log with its
//!   filters, purpose and result size.
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
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::http::{require, ApiError, ApiQuery, Body, Caller, ALERT_NEED, ALERT_ROLES};
use crate::node::{Node, NodeError, Role, User};
use crate::purpose::{new_approval_id, over_limits, PersonalKinds, Purpose};
use cityward_store::SearchApproval;

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
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchRequest {
    /// A plate, whole or with `*` (any run of characters) and `?` (one character).
    #[serde(skip_serializing_if = "Option::is_none")]
    plate: Option<String>,
    /// Read characters that plate readers confuse (0/D/Q/O, 8/B, 1/I, 5/S, 2/Z) as equal.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    ocr_confusions: bool,
    /// Vehicle colour, as the read point reports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    color: Option<String>,
    /// Vehicle type, as the read point reports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    vehicle_type: Option<String>,
    /// One event kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    /// From (RFC 3339), inclusive.
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<String>,
    /// Until (RFC 3339), exclusive.
    #[serde(skip_serializing_if = "Option::is_none")]
    until: Option<String>,
    /// A GeoJSON Polygon or MultiPolygon geometry.
    #[serde(skip_serializing_if = "Option::is_none")]
    area: Option<Value>,
    /// Grid ids: only events in these grids.
    #[serde(skip_serializing_if = "Option::is_none")]
    grids: Option<Vec<String>>,
    /// Results per page (default 500, at most 5000).
    #[serde(skip_serializing)]
    limit: Option<usize>,
    /// The `next` of the previous page.
    #[serde(skip_serializing)]
    cursor: Option<String>,
    /// Why the search is made: `{"case_number": …, "legal_basis": …}`; required to reach
    /// personal data, and recorded in the audit log with the search.
    #[serde(skip_serializing_if = "Option::is_none")]
    purpose: Option<Value>,
    /// Runs the approved request with this id instead (with `limit` and `cursor`).
    #[serde(skip_serializing)]
    approval: Option<String>,
}

#[derive(Deserialize)]
struct FormatQuery {
    format: Option<String>,
}

/// A search made ready to run: SQL conditions and the exact area test, and what it reaches.
struct Plan {
    conditions: Vec<String>,
    area: Option<MultiPolygon>,
    limit: usize,
    cursor: Option<(DateTime<Utc>, String)>,
    /// It may return personal data (and so carries a purpose).
    personal: bool,
    /// For want of a purpose, personal data is left out of it.
    personal_left_out: bool,
    /// Its checked purpose.
    purpose: Option<Purpose>,
    /// Time it covers.
    span: std::time::Duration,
    /// Area it covers, km².
    area_km2: f64,
    /// Sharing grants whose data it reaches (another unit's).
    grants: Vec<String>,
}

/// Plate characters readers confuse: each character of a group matches all of them.
const OCR_CONFUSIONS: &[&str] = &["0DQO", "8B", "1I", "5S", "2Z"];

/// Quotes a SQL string literal.
pub(crate) fn quoted(text: &str) -> String {
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

/// Every spelling of a whole plate (no wildcards) that differs only in case — at most 64 —
/// so that an exact search is an equality; `None` for a pattern or too many letters.
fn exact_spellings(plate: &str) -> Option<Vec<String>> {
    let plate = plate.trim();
    if plate.is_empty() || plate.contains(['*', '?']) {
        return None;
    }
    let spellings = prefix_spellings(plate, false);
    // Cut short, the spellings are of a prefix only.
    let whole = plate.chars().count();
    spellings.first().is_some_and(|s| s.chars().count() == whole).then_some(spellings)
}

/// The SQL condition a search for `plate` runs: an equality for a whole plate, else a LIKE
/// (or, with `ocr_confusions`, a regular expression), narrowed by ranges of the literal
/// prefix so that the lake's plate-sorted files skip every row group the plate cannot be in.
/// Plates are stored as read, so every comparison ignores case.
pub fn plate_condition(plate: &str, ocr_confusions: bool) -> Result<String, NodeError> {
    if !ocr_confusions {
        if let Some(spellings) = exact_spellings(plate) {
            // Statistics and Bloom filters prune an equality by themselves.
            return Ok(format!("plate IN ({})", spellings.iter().map(|s| quoted(s)).collect::<Vec<_>>().join(", ")));
        }
    }
    let matches = if ocr_confusions {
        format!("regexp_like(upper(plate), {})", quoted(&plate_regex(plate)?))
    } else {
        format!("upper(plate) LIKE {} ESCAPE '\\'", quoted(&plate_pattern(plate)?))
    };
    let ranges: Vec<String> = prefix_spellings(plate, ocr_confusions)
        .iter()
        .filter_map(|prefix| {
            let end = successor(prefix)?;
            Some(format!("(plate >= {} AND plate < {})", quoted(prefix), quoted(&end)))
        })
        .collect();
    if ranges.is_empty() {
        return Ok(matches);
    }
    Ok(format!("({}) AND {matches}", ranges.join(" OR ")))
}

/// Most spellings of a plate's literal prefix that a search spells out.
const MAX_PREFIX_SPELLINGS: usize = 64;

/// Every spelling of the literal start of `plate` (up to its first wildcard) that it may be
/// stored as: both cases of each letter and, with `ocr_confusions`, every character it is
/// confused with. The prefix is cut short where the spellings would exceed 64; empty when
/// the plate starts with a wildcard.
fn prefix_spellings(plate: &str, ocr_confusions: bool) -> Vec<String> {
    let mut spellings = vec![String::new()];
    for c in plate.trim().chars().take_while(|c| !matches!(c, '*' | '?')) {
        let upper: String = c.to_uppercase().collect();
        let confused = match OCR_CONFUSIONS.iter().find(|g| ocr_confusions && g.contains(upper.as_str())) {
            Some(group) => group.chars().map(String::from).collect(),
            None => vec![upper],
        };
        let mut choices: Vec<String> = Vec::new();
        for choice in confused {
            for cased in [choice.to_uppercase(), choice.to_lowercase()] {
                if !choices.contains(&cased) {
                    choices.push(cased);
                }
            }
        }
        if spellings.len() * choices.len() > MAX_PREFIX_SPELLINGS {
            break;
        }
        spellings = spellings.iter().flat_map(|s| choices.iter().map(move |c| format!("{s}{c}"))).collect();
    }
    spellings.retain(|s| !s.is_empty());
    spellings
}

/// The least string above every string that starts with `prefix` (its last character
/// stepped up by one), so `plate >= prefix AND plate < successor` is "starts with".
fn successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (last as u32 + 1..=char::MAX as u32).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// A plate pattern as an anchored regular expression in which confusable characters match
/// each other.
fn plate_regex(plate: &str) -> Result<String, NodeError> {
    plate_pattern(plate)?;
    let mut re = String::from("^");
    for c in plate.trim().chars().flat_map(char::to_uppercase) {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            c => match OCR_CONFUSIONS.iter().find(|g| g.contains(c)) {
                Some(group) => {
                    re.push('[');
                    re.push_str(group);
                    re.push(']');
                }
                None if c.is_alphanumeric() => re.push(c),
                None => {
                    re.push('\\');
                    re.push(c);
                }
            },
        }
    }
    re.push('$');
    Ok(re)
}

impl SearchRequest {
    fn plan(&self, node: &Node) -> Result<Plan, NodeError> {
        let config = &node.config().search;
        let personal_kinds = PersonalKinds::of(node.events().lake().kinds(), config);
        let purpose = self.purpose.as_ref().map(|p| Purpose::parse(p, config)).transpose()?;
        let mut conditions = Vec::new();
        let columns = node.events().lake().schema();
        let attribute = |name: &str, what: &str| -> Result<(), NodeError> {
            match columns.field_with_name(name) {
                Ok(_) => Ok(()),
                Err(_) => Err(NodeError::Invalid(format!("no event kind of this node declares a `{name}` attribute; {what} search needs one"))),
            }
        };
        // Which filters reach personal data whatever the kind.
        let mut names_a_vehicle = Vec::new();
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
            attribute("plate", "plate")?;
            names_a_vehicle.push("plate");
            conditions.push(plate_condition(plate, self.ocr_confusions)?);
        } else if self.ocr_confusions {
            return Err(NodeError::Invalid("`ocr_confusions` applies to a `plate`; give one".into()));
        }
        for (name, value) in [("color", &self.color), ("vehicle_type", &self.vehicle_type)] {
            if let Some(value) = value {
                attribute(name, "this")?;
                if value.trim().is_empty() || value.chars().count() > 32 {
                    return Err(NodeError::Invalid(format!("`{name}` must be 1 to 32 characters")));
                }
                names_a_vehicle.push(name);
                conditions.push(format!("lower({name}) = {}", quoted(&value.trim().to_lowercase())));
            }
        }
        let since = time_field("since", self.since.as_deref())?;
        let until = time_field("until", self.until.as_deref())?;
        let now = Utc::now();
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
        let city = node.city();
        let mut area_km2 = area.as_ref().map_or_else(|| city_area_km2(&city), |a| a.area_m2() / 1e6);
        if let Some(grids) = &self.grids {
            if grids.is_empty() || grids.len() > 10_000 {
                return Err(NodeError::Invalid("`grids` must list 1 to 10,000 grid ids".into()));
            }
            let mut km2 = 0.0;
            for id in grids {
                let grid = city.grid(id).ok_or_else(|| NodeError::Invalid(format!("`grids`: no grid `{id}` in the city model")))?;
                km2 += grid.area.area_m2() / 1e6;
            }
            area_km2 = area_km2.min(km2);
            conditions.push(format!("grid IN ({})", grids.iter().map(|g| quoted(g)).collect::<Vec<_>>().join(", ")));
        }
        // What personal data the search reaches, and whether it may.
        let kind_personal = self.kind.as_deref().map(|k| personal_kinds.may_be_personal(k));
        let mut personal_left_out = false;
        let personal = match &purpose {
            None => {
                if let Some(what) = names_a_vehicle.first() {
                    return Err(NodeError::Invalid(format!(
                        "a search by `{what}` reaches personal data: give `purpose` with `case_number` and `legal_basis` (one of {})",
                        config.legal_bases.join(", ")
                    )));
                }
                if let Some(kind) = self.kind.as_deref().filter(|k| personal_kinds.wholly_personal(k)) {
                    return Err(NodeError::Invalid(format!(
                        "`{kind}` events are personal data: give `purpose` with `case_number` and `legal_basis` (one of {})",
                        config.legal_bases.join(", ")
                    )));
                }
                // Without a purpose, only what is not personal.
                let public = personal_kinds.public_rows();
                personal_left_out = public.is_some();
                conditions.extend(public);
                false
            }
            Some(_) => !names_a_vehicle.is_empty() || kind_personal.unwrap_or(!personal_kinds.kinds.is_empty()),
        };
        if personal && since.is_none() {
            return Err(NodeError::Invalid("a search of personal data covers a stated time range: give `since`".into()));
        }
        let span = match since {
            Some(s) => (until.unwrap_or(now) - s).to_std().unwrap_or_default(),
            None => std::time::Duration::MAX,
        };
        let limit = self.limit.unwrap_or(500);
        if limit == 0 || limit > MAX_PAGE {
            return Err(NodeError::Invalid(format!("`limit` must be 1 to {MAX_PAGE}, not {limit}")));
        }
        let cursor = self.cursor.as_deref().map(parse_cursor).transpose()?;
        Ok(Plan { conditions, area, limit, cursor, personal, personal_left_out, purpose, span, area_km2, grants: Vec::new() })
    }

    /// The audit record of this search (its filters and purpose; never its results).
    fn audit_detail(&self, user: &User, plan: &Plan, approval: Option<&str>) -> Value {
        let mut detail = json!(self);
        detail["area"] = json!(self.area.is_some());
        detail["unit"] = json!(user.unit);
        detail["personal"] = json!(plan.personal);
        detail["purpose"] = json!(plan.purpose);
        if let Some(a) = approval {
            detail["approval"] = json!(a);
        }
        if !plan.grants.is_empty() {
            detail["grants"] = json!(plan.grants);
        }
        detail
    }
}

/// The city's area in km²: its top regions, or unbounded when it has none.
fn city_area_km2(city: &cityward_model::City) -> f64 {
    let top: f64 = city.regions.iter().filter(|r| r.parent.is_none()).map(|r| r.area.area_m2()).sum();
    if top > 0.0 {
        top / 1e6
    } else {
        f64::INFINITY
    }
}

/// A search as asked, or — when it names an approval — the approved request, checked to be
/// the caller's, approved and not expired, with the body's `limit` and `cursor`.
fn resolve(node: &Node, user: &User, request: SearchRequest) -> Result<(SearchRequest, Option<String>), NodeError> {
    let Some(id) = request.approval.clone() else { return Ok((request, None)) };
    let asked = SearchRequest { limit: None, cursor: None, approval: None, ..request.clone() };
    if serde_json::to_value(&asked).map_err(|e| NodeError::Internal(e.to_string()))? != json!({}) {
        return Err(NodeError::Invalid("with `approval`, send only `limit` and `cursor`: the approved request says what is searched".into()));
    }
    let approval = crate::purpose::approval_for(node, user, &id)?;
    if approval.requested_by != user.username {
        return Err(NodeError::Forbidden(format!("search request `{id}` is {}'s; only its requester runs it", approval.requested_by)));
    }
    match approval.status.as_str() {
        "approved" => {}
        "pending" => return Err(NodeError::Conflict(format!("search request `{id}` waits for a supervisor's approval"))),
        _ => {
            return Err(NodeError::Forbidden(format!(
                "search request `{id}` was rejected by {}: {}",
                approval.decided_by.as_deref().unwrap_or("a supervisor"),
                approval.decision_note.as_deref().unwrap_or("")
            )))
        }
    }
    let valid_for = chrono::Duration::from_std(node.config().search.approval_valid_for).unwrap_or(chrono::Duration::MAX);
    if approval.decided_at.is_some_and(|at| Utc::now() > at + valid_for) {
        return Err(NodeError::Forbidden(format!("the approval of search request `{id}` has expired; ask again")));
    }
    let mut stored: SearchRequest = serde_json::from_value(approval.request)
        .map_err(|e| NodeError::Internal(format!("search request `{id}` is stored in a form this node cannot read: {e}")))?;
    stored.limit = request.limit;
    stored.cursor = request.cursor;
    Ok((stored, Some(id)))
}

/// Either a plan that may run now (with the approval it runs under), or the answer that it
/// waits for a supervisor.
enum Gate {
    Run(Plan, Option<String>),
    Waits(Value),
}

/// Plans a search for `user`: resolves an approval, checks purpose and limits, and stores
/// an approval request when the search goes beyond the role's limits.
fn gate(node: &Node, user: &User, request: SearchRequest) -> Result<(SearchRequest, Gate), NodeError> {
    let (request, approval) = resolve(node, user, request)?;
    let mut plan = request.plan(node)?;
    // A unit's member reaches its own region, and other units' data under a grant only.
    let reach = crate::grants::reach(node, user, plan.purpose.as_ref().map(|p| p.legal_basis.as_str()))?;
    plan.conditions.extend(reach.condition);
    plan.grants = reach.grants.into_iter().map(|g| g.id).collect();
    if !plan.personal || approval.is_some() {
        return Ok((request, Gate::Run(plan, approval)));
    }
    let reasons = over_limits(&node.config().search, user.role, plan.span, plan.area_km2);
    if reasons.is_empty() {
        return Ok((request, Gate::Run(plan, None)));
    }
    let stored = SearchApproval {
        id: new_approval_id()?,
        requested_by: user.username.clone(),
        unit: user.unit.clone(),
        requested_at: Utc::now(),
        request: json!(request),
        reasons,
        status: "pending".into(),
        decided_by: None,
        decided_at: None,
        decision_note: None,
    };
    node.state().add_search_approval(&stored)?;
    node.desk().audit(&user.username, "search.request", &stored.id, request.audit_detail(user, &plan, None));
    Ok((request, Gate::Waits(json!({ "approval": stored }))))
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
    let (request, gate) = {
        let (node, user) = (node.clone(), user.clone());
        crate::http::blocking(move || gate(&node, &user, search_request(&body)?)).await?
    };
    let (plan, approval) = match gate {
        Gate::Run(plan, approval) => (plan, approval),
        Gate::Waits(answer) => return Ok((StatusCode::ACCEPTED, Json(answer)).into_response()),
    };
    let (events, next) = run(&node, &plan).await?;
    let mut detail = request.audit_detail(&user, &plan, approval.as_deref());
    detail["results"] = json!(events.len());
    node.desk().audit(&user.username, if as_csv { "search.csv" } else { "search" }, "events", detail);
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
    // Say when personal data was left out, so that nobody takes the answer for all there is.
    Ok(Json(json!({"items": items, "next": next, "personal_data_left_out": plan.personal_left_out})).into_response())
}

fn exports_dir(node: &Node) -> std::path::PathBuf {
    node.config().node.data_dir.join("exports")
}

/// Parses a search body; the error shows what to send.
fn search_request(body: &[u8]) -> Result<SearchRequest, NodeError> {
    serde_json::from_slice(body).map_err(|e| {
        NodeError::Invalid(format!(
            "body must be {{\"plate\", \"kind\", \"since\", \"until\", \"area\", \"grids\", \"color\", \"vehicle_type\", \"ocr_confusions\", \"limit\", \"cursor\", \"purpose\", \"approval\"}} (all optional): {e}"
        ))
    })
}

async fn export(State(node): State<Arc<Node>>, Caller(user): Caller, body: Body) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.0?;
    require(&user, SEARCH_ROLES, SEARCH_NEED)?;
    let (request, gate) = {
        let (node, user) = (node.clone(), user.clone());
        crate::http::blocking(move || gate(&node, &user, search_request(&body)?)).await?
    };
    let (mut plan, approval) = match gate {
        Gate::Run(plan, approval) => (plan, approval),
        Gate::Waits(answer) => return Ok((StatusCode::ACCEPTED, Json(answer))),
    };
    plan.limit = MAX_PAGE;
    plan.cursor = None;
    let dir = exports_dir(&node);
    std::fs::create_dir_all(&dir)
        .map_err(|e| NodeError::Internal(format!("cannot create {}: {e}; check the data directory", dir.display())))?;
    forget_old_exports(&dir);
    let audit = request.audit_detail(&user, &plan, approval.as_deref());
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
    // Raised at a node below: its events stay there; ask it, on the record at both ends.
    if let (Some(origin), Some(tier)) = (crate::tier::foreign_origin(&row, &node.config().node.name), node.tier()) {
        let items = tier.ask_evidence(origin, &id, &user).await?;
        node.desk().audit(&user.username, "alert.evidence", &id, json!({"results": items.len(), "unit": user.unit, "from": origin}));
        return Ok(Json(json!({"items": items, "from": origin})));
    }
    let events = evidence_of(&node, &row).await?;
    // Evidence may hold plate reads (a hotlist match): each view is on the record.
    node.desk().audit(&user.username, "alert.evidence", &id, json!({"results": events.len(), "unit": user.unit}));
    Ok(Json(json!({"items": events})))
}

/// The events an alert names as its evidence, from this node's lake.
pub(crate) async fn evidence_of(node: &Arc<Node>, row: &cityward_store::AlertRow) -> Result<Vec<Value>, NodeError> {
    let ids: Vec<String> = row.body["evidence"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).map(quoted).collect())
        .unwrap_or_default();
    if ids.is_empty() {
        return Ok(Vec::new());
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
    let events = events_where(node, &conditions, "time, id", ids.len()).await?;
    Ok(events.iter().map(event_json).collect())
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
    fn a_whole_plate_is_every_spelling_of_its_case() {
        assert_eq!(exact_spellings("粤b1").unwrap(), ["粤B1", "粤b1"]);
        assert_eq!(exact_spellings("12").unwrap(), ["12"]);
        assert_eq!(exact_spellings("AB").unwrap().len(), 4);
        assert!(exact_spellings("粤B1*").is_none());
        assert!(exact_spellings("ABCDEFG").is_none(), "2^7 spellings: a LIKE instead");
    }

    #[test]
    fn a_partial_plate_is_narrowed_to_ranges_of_its_prefix() {
        assert_eq!(
            plate_condition("粤b1*", false).unwrap(),
            "((plate >= '粤B1' AND plate < '粤B2') OR (plate >= '粤b1' AND plate < '粤b2')) AND upper(plate) LIKE '粤B1%' ESCAPE '\\'"
        );
        assert_eq!(plate_condition("*12", false).unwrap(), "upper(plate) LIKE '%12' ESCAPE '\\'", "no prefix, no range");
        assert_eq!(plate_condition("粤B1", false).unwrap(), "plate IN ('粤B1', '粤b1')");
        // With confusions: 8/B and 1/I, each in both cases where it has them.
        assert_eq!(prefix_spellings("粤8I?", true), ["粤81", "粤8I", "粤8i", "粤B1", "粤BI", "粤Bi", "粤b1", "粤bI", "粤bi"]);
        // Too many spellings: the prefix stops where they would pass 64.
        let long = prefix_spellings("ABCDEFGH*", false);
        assert_eq!(long.len(), 64);
        assert!(long.iter().all(|p| p.chars().count() == 6));
        assert_eq!(successor("粤B9").unwrap(), "粤B:");
        assert_eq!(successor(&format!("A{}", char::MAX)).unwrap(), "B");
    }

    #[test]
    fn ocr_confusions_become_character_classes() {
        assert_eq!(plate_regex("粤b8o1*").unwrap(), "^粤[8B][8B][0DQO][1I].*$");
        assert_eq!(plate_regex("A?-3").unwrap(), "^A.\\-3$");
        assert!(plate_regex("*").is_err());
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
