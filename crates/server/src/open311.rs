//! Open311 GeoReport v2 (<http://wiki.open311.org/GeoReport_v2/>) for residents and
//! call-takers: the configured service types, new service requests, and their status.
//!
//! A service request is an alert like any other. `POST /open311/v2/requests.json` raises an
//! alert of rule `open311` whose key is the service code and whose category and severity
//! come from the service (`[open311]` in the configuration); the desk routes it to the unit
//! responsible for its place, and its deadlines run. Reading a request back maps that alert
//! to GeoReport's two states (`closed` once the alert is resolved or closed, `open` before),
//! names the owning unit as the agency responsible, and shows the latest note a person wrote
//! on it as `status_notes` — so notes on these alerts are public.
//!
//! The endpoints are public, as GeoReport intends; `api_key` and `jurisdiction_id` are
//! accepted and not checked (one jurisdiction, residents without keys). What a reporter
//! tells about themselves (email, phone, name, device and account ids) is kept in the alert
//! under `open311.reporter` for the staff who handle it, and never answered here. Every
//! resource comes as `.json` or `.xml`; errors are GeoReport's `[{"code", "description"}]`
//! (`<errors><error>…` in XML) with a description that says what to change.
//!
//! The router cannot match a parameter followed by a suffix (`{id}.json`), so
//! `/services/{file}` and `/requests/{file}` take `ID.json` or `ID.xml` and split it here.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Json, Router};
use chrono::{DateTime, Utc};
use cityward_model::{format_time, parse_time, City};
use cityward_store::{AlertFilter, AlertRow, PageRequest, StateStore};
use serde_json::{json, Map, Value};

use crate::config::Open311Service;
use crate::node::{Node, NodeError};

/// The rule id of every alert raised from a service request.
const RULE: &str = "open311";
/// GeoReport's limit on a description, in characters.
const MAX_DESCRIPTION_CHARS: usize = 4000;
/// The limit on every other text field, in characters.
const MAX_FIELD_CHARS: usize = 500;
/// Bodies of these public endpoints are small; anything larger is refused early.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// The widest span a list may cover, and the span it covers by default (GeoReport v2).
const MAX_SPAN_DAYS: i64 = 90;
/// The most requests a list answers (GeoReport v2).
const MAX_LISTED: usize = 1000;
/// Fields a reporter tells about themselves: stored for the staff, never answered.
const REPORTER_FIELDS: [&str; 6] = ["email", "phone", "first_name", "last_name", "device_id", "account_id"];
/// Fields that describe the problem and are answered back.
const PUBLIC_FIELDS: [&str; 4] = ["description", "address_string", "address_id", "media_url"];
/// Fields accepted and not used: one jurisdiction, and no keys needed to report.
const IGNORED_FIELDS: [&str; 2] = ["api_key", "jurisdiction_id"];

/// The Open311 routes; `crate::http::router` merges them.
pub(crate) fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/open311/v2/services.json", get(list_services))
        .route("/open311/v2/services.xml", get(list_services))
        .route("/open311/v2/services/{file}", get(service_definition))
        .route("/open311/v2/requests.json", get(list_requests).post(create_request))
        .route("/open311/v2/requests.xml", get(list_requests).post(create_request))
        .route("/open311/v2/requests/{file}", get(get_request))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
}

// ---------------------------------------------------------------------------------------
// Formats and errors.
// ---------------------------------------------------------------------------------------

/// The answer's format, from the path's extension (`.xml`; anything else answers JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Xml,
}

impl Format {
    fn of(path: &str) -> Format {
        if path.ends_with(".xml") {
            Format::Xml
        } else {
            Format::Json
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Format {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(Format::of(parts.uri.path()))
    }
}

/// An error in GeoReport's format: `[{"code": STATUS, "description": …}]`.
#[derive(Debug)]
struct Open311Error {
    format: Format,
    status: StatusCode,
    description: String,
}

impl Open311Error {
    fn new(format: Format, status: StatusCode, description: impl Into<String>) -> Self {
        Open311Error { format, status, description: description.into() }
    }

    fn bad(format: Format, description: impl Into<String>) -> Self {
        Open311Error::new(format, StatusCode::BAD_REQUEST, description)
    }

    fn from_node(format: Format, e: NodeError) -> Self {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(error = %e, "Open311 request failed.");
        }
        Open311Error::new(format, status, e.to_string())
    }
}

impl IntoResponse for Open311Error {
    fn into_response(self) -> Response {
        let code = json!(self.status.as_u16());
        let error = vec![("code", code), ("description", json!(self.description))];
        answer(self.format, self.status, "errors", "error", vec![error])
    }
}

/// Runs a blocking node call (state store I/O) off the async workers.
async fn blocking<T: Send + 'static>(
    format: Format,
    f: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
) -> Result<T, Open311Error> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(|e| Open311Error::from_node(format, e)),
        Err(e) => Err(Open311Error::from_node(format, NodeError::Internal(e.to_string()))),
    }
}

/// An input echoed in an error, cut short.
fn shown(text: &str) -> String {
    const MAX: usize = 64;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// Answers: one list of records, as a JSON array or as XML elements.
// ---------------------------------------------------------------------------------------

/// A GeoReport object: its fields in the order the specification lists them.
type Record = Vec<(&'static str, Value)>;

/// `records` as a JSON array of objects, or as `<root><item>…</item>…</root>`.
fn answer(format: Format, status: StatusCode, root: &str, item: &str, records: Vec<Record>) -> Response {
    match format {
        Format::Json => {
            let items = records
                .into_iter()
                .map(|r| Value::Object(r.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
                .collect();
            (status, Json(Value::Array(items))).into_response()
        }
        Format::Xml => {
            let mut out = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
            out.push_str(&format!("<{root}>\n"));
            for record in records {
                out.push_str(&format!("  <{item}>\n"));
                for (name, value) in record {
                    out.push_str("    ");
                    xml_element(&mut out, name, &value);
                    out.push('\n');
                }
                out.push_str(&format!("  </{item}>\n"));
            }
            out.push_str(&format!("</{root}>\n"));
            xml_response(status, out)
        }
    }
}

fn xml_response(status: StatusCode, xml: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/xml; charset=utf-8")], xml).into_response()
}

/// `<name>value</name>`; `<name/>` for null.
fn xml_element(out: &mut String, name: &str, value: &Value) {
    let text = match value {
        Value::Null => {
            out.push_str(&format!("<{name}/>"));
            return;
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    out.push_str(&format!("<{name}>"));
    cityward_alerts::xml_escape(out, &text);
    out.push_str(&format!("</{name}>"));
}

// ---------------------------------------------------------------------------------------
// Services.
// ---------------------------------------------------------------------------------------

fn service_record(s: &Open311Service) -> Record {
    let keywords = if s.keywords.is_empty() { Value::Null } else { json!(s.keywords.join(", ")) };
    vec![
        ("service_code", json!(s.code)),
        ("service_name", json!(s.name)),
        ("description", json!(s.description)),
        // No service defines attributes: everything goes in the description.
        ("metadata", json!(false)),
        // The request is routed and visible to its unit the moment it is posted.
        ("type", json!("realtime")),
        ("keywords", keywords),
        ("group", json!(s.group)),
    ]
}

fn services_list(node: &Node) -> String {
    node.config().open311.services.iter().map(|s| s.code.as_str()).collect::<Vec<_>>().join(", ")
}

async fn list_services(State(node): State<Arc<Node>>, format: Format) -> Response {
    let records = node.config().open311.services.iter().map(service_record).collect();
    answer(format, StatusCode::OK, "services", "service", records)
}

/// The definition of a service: its code and its attributes, of which there are none.
async fn service_definition(
    State(node): State<Arc<Node>>,
    format: Format,
    file: Result<Path<String>, PathRejection>,
) -> Result<Response, Open311Error> {
    let file = path_file(format, file)?;
    let code = resource_id(format, &file)?;
    let Some(service) = node.config().open311.services.iter().find(|s| s.code == code) else {
        return Err(Open311Error::new(
            format,
            StatusCode::NOT_FOUND,
            format!(
                "service_code `{}` is not offered here; the codes are {} (GET /open311/v2/services.json)",
                shown(code),
                services_list(&node)
            ),
        ));
    };
    Ok(match format {
        Format::Json => Json(json!({"service_code": service.code, "attributes": []})).into_response(),
        Format::Xml => {
            let mut out = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<service_definition>\n  ");
            xml_element(&mut out, "service_code", &json!(service.code));
            out.push_str("\n  <attributes/>\n</service_definition>\n");
            xml_response(StatusCode::OK, out)
        }
    })
}

fn path_file(format: Format, file: Result<Path<String>, PathRejection>) -> Result<String, Open311Error> {
    file.map(|Path(f)| f).map_err(|e| Open311Error::bad(format, format!("the path could not be read: {}", e.body_text())))
}

/// `ID` of `ID.json` or `ID.xml`.
fn resource_id(format: Format, file: &str) -> Result<&str, Open311Error> {
    file.strip_suffix(".json")
        .or_else(|| file.strip_suffix(".xml"))
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            Open311Error::new(
                format,
                StatusCode::NOT_FOUND,
                format!("`{}` is not a resource here; ask for ID.json or ID.xml", shown(file)),
            )
        })
}

// ---------------------------------------------------------------------------------------
// Posting a request.
// ---------------------------------------------------------------------------------------

/// The fields of a posted request, from the query string and the body (form-encoded as
/// GeoReport says, or a JSON object), in the order given.
struct Submission {
    format: Format,
    fields: Vec<(String, String)>,
}

impl FromRequest<Arc<Node>> for Submission {
    type Rejection = Open311Error;

    async fn from_request(request: Request, node: &Arc<Node>) -> Result<Self, Open311Error> {
        let format = Format::of(request.uri().path());
        let body_error = |status: StatusCode, text: String| {
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                Open311Error::new(format, status, format!("the request is larger than {} KiB; shorten the description", MAX_BODY_BYTES / 1024))
            } else {
                Open311Error::bad(format, format!("the body could not be read: {text}"))
            }
        };
        let Query(mut fields) = Query::<Vec<(String, String)>>::try_from_uri(request.uri())
            .map_err(|e: QueryRejection| Open311Error::bad(format, format!("the query string could not be read: {}", e.body_text())))?;
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
        match content_type.as_deref() {
            Some("application/x-www-form-urlencoded") => {
                let Form(body) = Form::<Vec<(String, String)>>::from_request(request, node)
                    .await
                    .map_err(|e| body_error(e.status(), e.body_text()))?;
                fields.extend(body);
            }
            Some(t) if t == "application/json" || t.ends_with("+json") => {
                let Json(body) = Json::<Value>::from_request(request, node)
                    .await
                    .map_err(|e| body_error(e.status(), e.body_text()))?;
                fields.extend(json_fields(body).map_err(|d| Open311Error::bad(format, d))?);
            }
            other => {
                let body = Bytes::from_request(request, node).await.map_err(|e| body_error(e.status(), e.body_text()))?;
                if !body.iter().all(u8::is_ascii_whitespace) {
                    return Err(Open311Error::new(
                        format,
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        format!(
                            "a body of type `{}` cannot be read; send the fields as application/x-www-form-urlencoded (or a JSON object as application/json)",
                            shown(other.unwrap_or("none"))
                        ),
                    ));
                }
            }
        }
        Ok(Submission { format, fields })
    }
}

/// The fields of a JSON object, as a form would carry them (numbers as text; `attribute`
/// an object of codes).
fn json_fields(body: Value) -> Result<Vec<(String, String)>, String> {
    let Value::Object(map) = body else {
        return Err("the JSON body must be an object such as {\"service_code\": \"pothole\", \"lat\": 31.23, \"long\": 121.47}".into());
    };
    let scalar = |v: Value| match v {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let mut out = Vec::new();
    for (key, value) in map {
        match value {
            Value::Null => {}
            Value::Object(attributes) if key == "attribute" => {
                for (code, v) in attributes {
                    let values = match v {
                        Value::Array(items) => items,
                        other => vec![other],
                    };
                    for v in values {
                        let v = scalar(v).ok_or_else(|| format!("attribute `{}` must be text or a number", shown(&code)))?;
                        out.push((format!("attribute[{code}]"), v));
                    }
                }
            }
            other => {
                let v = scalar(other).ok_or_else(|| format!("`{}` must be text or a number", shown(&key)))?;
                out.push((key, v));
            }
        }
    }
    Ok(out)
}

/// A checked service request, ready to become an alert.
#[derive(Debug)]
struct NewRequest<'a> {
    service: &'a Open311Service,
    /// (lon, lat), WGS84.
    point: Option<(f64, f64)>,
    /// Description, address and media: answered back.
    public: BTreeMap<&'static str, String>,
    /// What the reporter told about themselves: kept for the staff only.
    reporter: BTreeMap<&'static str, String>,
}

/// Checks the posted fields against the offered services and the city.
fn parse_submission<'a>(
    fields: &[(String, String)],
    services: &'a [Open311Service],
    city: &City,
) -> Result<NewRequest<'a>, String> {
    let codes = || services.iter().map(|s| s.code.as_str()).collect::<Vec<_>>().join(", ");
    let mut given: BTreeMap<&'static str, String> = BTreeMap::new();
    let known = ["service_code", "lat", "long"].into_iter().chain(PUBLIC_FIELDS).chain(REPORTER_FIELDS).chain(IGNORED_FIELDS);
    let known: Vec<&'static str> = known.collect();
    for (key, value) in fields {
        if key.starts_with("attribute[") {
            return Err(format!(
                "`{}`: these services define no attributes (metadata is false); put the details in description",
                shown(key)
            ));
        }
        let Some(name) = known.iter().copied().find(|k| k == key) else {
            return Err(format!(
                "`{}` is not a GeoReport v2 field; send service_code, lat and long (or address_string), description, media_url, and optionally email, phone, first_name, last_name",
                shown(key)
            ));
        };
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        if given.insert(name, value.to_string()).is_some() {
            return Err(format!("`{name}` is given twice; send each field once"));
        }
    }
    for (name, value) in &given {
        let limit = if *name == "description" { MAX_DESCRIPTION_CHARS } else { MAX_FIELD_CHARS };
        if value.chars().count() > limit {
            return Err(format!("{name} is longer than {limit} characters; shorten it"));
        }
        if value.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) {
            return Err(format!("{name} contains control characters; send plain text"));
        }
    }

    let service = match given.get("service_code") {
        None => return Err(format!("service_code is required; choose one of {} (GET /open311/v2/services.json)", codes())),
        Some(code) => services.iter().find(|s| &s.code == code).ok_or_else(|| {
            format!("service_code `{}` is not offered here; choose one of {} (GET /open311/v2/services.json)", shown(code), codes())
        })?,
    };

    let point = match (given.get("lat"), given.get("long")) {
        (Some(lat), Some(lon)) => {
            let lat = degrees("lat", lat, "31.2304")?;
            let lon = degrees("long", lon, "121.4737")?;
            let swapped = if city.contains(lat, lon) { "; lat and long look swapped" } else { "" };
            if lat.abs() > 90.0 || lon.abs() > 180.0 {
                return Err(format!(
                    "lat {lat}, long {lon} is out of range: lat must be between -90 and 90 degrees, long between -180 and 180{swapped}"
                ));
            }
            if !city.contains(lon, lat) {
                let b = city.bbox();
                return Err(format!(
                    "the place lat {lat}, long {lon} is outside the area this service covers (lat {:.4} to {:.4}, long {:.4} to {:.4}){swapped}",
                    b.min_lat, b.max_lat, b.min_lon, b.max_lon
                ));
            }
            Some((lon, lat))
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err("lat and long go together: send both, in WGS84 decimal degrees (or an address_string instead)".into())
        }
        (None, None) => None,
    };
    if point.is_none() && !given.contains_key("address_string") {
        return Err(if given.contains_key("address_id") {
            "address_id cannot be looked up here (there is no address registry); send lat and long, or address_string".into()
        } else {
            "a location is required: send lat and long (WGS84 decimal degrees), or address_string".into()
        });
    }
    if let Some(url) = given.get("media_url") {
        let uri_char = |c: char| c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=%".contains(c);
        let scheme = url.starts_with("https://") || url.starts_with("http://");
        if !scheme || !url.chars().all(uri_char) {
            return Err("media_url must be an http:// or https:// URL without spaces (percent-encode other characters)".into());
        }
    }
    if let Some(email) = given.get("email") {
        // Never echoed: a reporter's contact details stay out of answers, errors included.
        let plausible = email.len() <= 254 && !email.contains(char::is_whitespace) && email.split_once('@').is_some_and(|(a, b)| !a.is_empty() && !b.is_empty());
        if !plausible {
            return Err("email is not an email address (name@example.org); correct it or leave it out".into());
        }
    }
    let pick = |names: &[&'static str]| -> BTreeMap<&'static str, String> {
        names.iter().filter_map(|n| given.get(n).map(|v| (*n, v.clone()))).collect()
    };
    Ok(NewRequest { service, point, public: pick(&PUBLIC_FIELDS), reporter: pick(&REPORTER_FIELDS) })
}

/// A latitude or longitude in decimal degrees.
fn degrees(name: &str, text: &str, example: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("{name} `{}` is not a number; send WGS84 decimal degrees such as {name}={example}", shown(text)))
}

/// A new request id: `r` and 16 hex digits (detection's alerts are `a…`).
fn new_request_id() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    format!("r{}", hex::encode(bytes))
}

/// The alert a request becomes (routed and stored by the desk).
fn alert_row(request: &NewRequest<'_>, id: String, grid: Option<String>, now: DateTime<Utc>) -> AlertRow {
    let service = request.service;
    let time = format_time(&now);
    let mut open311 = Map::new();
    open311.insert("service_code".into(), json!(service.code));
    for (name, value) in &request.public {
        // GeoReport takes `address_string` and answers `address`.
        let name = if *name == "address_string" { "address" } else { name };
        open311.insert(name.into(), json!(value));
    }
    if !request.reporter.is_empty() {
        open311.insert("reporter".into(), json!(request.reporter));
    }
    let mut body = json!({
        "id": id, "rule": RULE, "key": service.code, "time": time, "fired_at": time,
        "severity": service.severity.as_str(), "category": service.category, "title": service.name,
        "grid": grid, "evidence": [], "count": 1, "open311": open311,
    });
    if let (Some((lon, lat)), Some(o)) = (request.point, body.as_object_mut()) {
        o.insert("lon".into(), json!(lon));
        o.insert("lat".into(), json!(lat));
    }
    AlertRow {
        id,
        rule: RULE.into(),
        key: service.code.clone(),
        status: "new".into(),
        severity: service.severity.as_str().into(),
        category: service.category.clone(),
        time: now,
        grid,
        body,
        updated_at: now,
        scopes: Vec::new(),
        // A resident's report is about something happening in the city, not a device.
        class: "incident".into(),
        incident: None,
    }
}

async fn create_request(
    State(node): State<Arc<Node>>,
    submission: Result<Submission, Open311Error>,
) -> Result<Response, Open311Error> {
    let answer = match submission {
        Ok(s) => create(&node, s).await,
        Err(e) => Err(e),
    };
    let outcome = if answer.is_ok() { "created" } else { "refused" };
    node.metrics().add("cityward_open311_requests_total", &[("outcome", outcome)], 1.0);
    answer
}

async fn create(node: &Arc<Node>, submission: Submission) -> Result<Response, Open311Error> {
    let format = submission.format;
    let city = node.city();
    let request = parse_submission(&submission.fields, &node.config().open311.services, &city)
        .map_err(|d| Open311Error::bad(format, d))?;
    let grid = request.point.and_then(|(lon, lat)| city.grid_at(lon, lat)).map(|g| g.id.clone());
    let row = alert_row(&request, new_request_id(), grid, Utc::now());
    let desk_node = node.clone();
    let stored = blocking(format, move || desk_node.desk().raise(row)).await?;
    let agency = agency(&city, &stored.body);
    tracing::info!(id = %stored.id, service = %stored.key, owner = stored.body["handling"]["owner"].as_str().unwrap_or("none"), "Open311 service request raised.");
    let follow = format!("follow it at /open311/v2/requests/{}.json", stored.id);
    let notice = match agency {
        Some(unit) => format!("Thank you. {unit} answers for this place and has your report; {follow}."),
        None => format!("Thank you. Your report is recorded for the city's duty desk; {follow}."),
    };
    let record = vec![("service_request_id", json!(stored.id)), ("service_notice", json!(notice))];
    Ok(answer(format, StatusCode::OK, "service_requests", "request", vec![record]))
}

// ---------------------------------------------------------------------------------------
// Reading requests back.
// ---------------------------------------------------------------------------------------

/// Resolved and closed alerts are closed requests; every other status is open.
fn is_closed(alert_status: &str) -> bool {
    matches!(alert_status, "resolved" | "closed")
}

/// The name of the unit that owns the alert.
fn agency(city: &City, body: &Value) -> Option<String> {
    let owner = body["handling"]["owner"].as_str()?;
    Some(city.unit(owner).map_or_else(|| owner.to_string(), |u| u.name.clone()))
}

/// The latest note a person wrote on the alert (the system's routing and escalation notes
/// are internal).
fn status_notes(body: &Value) -> Option<&str> {
    body["handling"]["timeline"]
        .as_array()?
        .iter()
        .rev()
        .filter(|step| step["actor"].as_str().is_some_and(|a| a != "system"))
        .find_map(|step| step["note"].as_str().map(str::trim).filter(|n| !n.is_empty()))
}

/// The alert as a GeoReport request. Only public fields are read: nothing of
/// `open311.reporter` can reach an answer.
fn request_record(row: &AlertRow, city: &City) -> Record {
    let body = &row.body;
    let o = &body["open311"];
    let text = |v: &Value| v.as_str().map_or(Value::Null, |s| json!(s));
    let number = |v: &Value| v.as_f64().map_or(Value::Null, |n| json!(n));
    vec![
        ("service_request_id", json!(row.id)),
        ("status", json!(if is_closed(&row.status) { "closed" } else { "open" })),
        ("status_notes", status_notes(body).map_or(Value::Null, |n| json!(n))),
        ("service_name", text(&body["title"])),
        ("service_code", json!(row.key)),
        ("description", text(&o["description"])),
        ("agency_responsible", agency(city, body).map_or(Value::Null, Value::String)),
        ("service_notice", Value::Null),
        ("requested_datetime", json!(format_time(&row.time))),
        ("updated_datetime", json!(format_time(&row.updated_at))),
        ("expected_datetime", Value::Null),
        ("address", text(&o["address"])),
        ("address_id", text(&o["address_id"])),
        ("zipcode", Value::Null),
        ("lat", number(&body["lat"])),
        ("long", number(&body["lon"])),
        ("media_url", text(&o["media_url"])),
    ]
}

/// One request, as GeoReport answers it: a list of one.
async fn get_request(
    State(node): State<Arc<Node>>,
    format: Format,
    file: Result<Path<String>, PathRejection>,
) -> Result<Response, Open311Error> {
    let file = path_file(format, file)?;
    let id = resource_id(format, &file)?.to_string();
    let store = node.clone();
    let lookup = id.clone();
    let row = blocking(format, move || Ok(store.state().alert(&lookup)?)).await?;
    let Some(row) = row.filter(|r| r.rule == RULE) else {
        return Err(Open311Error::new(
            format,
            StatusCode::NOT_FOUND,
            format!("service request `{}` does not exist; check the service_request_id you were given", shown(&id)),
        ));
    };
    Ok(answer(format, StatusCode::OK, "service_requests", "request", vec![request_record(&row, &node.city())]))
}

/// Which requests a list answers.
#[derive(Debug, PartialEq)]
struct ListFilter {
    /// `service_request_id`: these, whatever the other arguments say.
    ids: Vec<String>,
    /// `service_code`: any of these (empty: any).
    codes: Vec<String>,
    /// `status`: open ones, closed ones (both or neither: all).
    open: bool,
    closed: bool,
    /// Requested within [start, end].
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

/// Reads the query of `GET /open311/v2/requests.json`. Lists may repeat a parameter or give
/// it comma-separated; parameters GeoReport does not define are ignored.
fn parse_filter(pairs: &[(String, String)], now: DateTime<Utc>) -> Result<ListFilter, String> {
    let span = chrono::Duration::days(MAX_SPAN_DAYS);
    let mut f = ListFilter { ids: Vec::new(), codes: Vec::new(), open: false, closed: false, start: now - span, end: now };
    let (mut start, mut end) = (None, None);
    for (key, value) in pairs {
        let items = || value.split(',').map(str::trim).filter(|v| !v.is_empty()).map(String::from);
        match key.as_str() {
            "service_request_id" => f.ids.extend(items()),
            "service_code" => f.codes.extend(items()),
            "status" => {
                for s in items() {
                    match s.as_str() {
                        "open" => f.open = true,
                        "closed" => f.closed = true,
                        other => {
                            return Err(format!("status `{}` is not a GeoReport status; use open, closed, or both (status=open,closed)", shown(other)))
                        }
                    }
                }
            }
            "start_date" | "end_date" => {
                let time = parse_time(value.trim()).ok_or_else(|| {
                    format!("{key} `{}` is not a date-time; send RFC 3339 with an offset, e.g. 2026-11-22T08:00:00Z", shown(value))
                })?;
                let slot = if key == "start_date" { &mut start } else { &mut end };
                if slot.replace(time).is_some() {
                    return Err(format!("`{key}` is given twice; send it once"));
                }
            }
            _ => {}
        }
    }
    if f.ids.len() > MAX_LISTED {
        return Err(format!("{} service_request_id values were given; ask for at most {MAX_LISTED} at a time", f.ids.len()));
    }
    (f.start, f.end) = match (start, end) {
        (Some(s), Some(e)) => (s, e),
        (Some(s), None) => (s, s + span),
        (None, Some(e)) => (e - span, e),
        (None, None) => (f.start, f.end),
    };
    if f.end < f.start {
        return Err("end_date is before start_date; swap them".into());
    }
    if f.end - f.start > span {
        return Err(format!(
            "start_date to end_date spans {} days; a query may span at most {MAX_SPAN_DAYS} days, so narrow the range",
            (f.end - f.start).num_days()
        ));
    }
    Ok(f)
}

/// The requests `filter` selects, newest first, at most [`MAX_LISTED`].
///
/// The state store lists alerts newest first but cannot select by rule or time, so this
/// walks the alerts from the newest, skips those after `end` and stops at the first before
/// `start`; the status filter is handed to the store.
fn find_requests(state: &dyn StateStore, city: &City, f: &ListFilter) -> Result<Vec<Record>, NodeError> {
    if !f.ids.is_empty() {
        let mut out = Vec::new();
        for id in &f.ids {
            if let Some(row) = state.alert(id)?.filter(|r| r.rule == RULE) {
                out.push(request_record(&row, city));
            }
        }
        return Ok(out);
    }
    let statuses = if f.open == f.closed {
        Vec::new()
    } else {
        cityward_alerts::Status::ALL
            .iter()
            .map(|s| s.as_str())
            .filter(|s| is_closed(s) == f.closed)
            .map(String::from)
            .collect()
    };
    let filter = AlertFilter { statuses, ..AlertFilter::default() };
    let mut page = PageRequest::first(cityward_store::MAX_PAGE_LIMIT);
    let mut out = Vec::new();
    loop {
        let got = state.list_alerts(&filter, &page)?;
        for row in &got.items {
            if row.time > f.end {
                continue;
            }
            if row.time < f.start {
                return Ok(out);
            }
            if row.rule == RULE && (f.codes.is_empty() || f.codes.contains(&row.key)) {
                out.push(request_record(row, city));
                if out.len() == MAX_LISTED {
                    return Ok(out);
                }
            }
        }
        match got.next {
            Some(next) => page = PageRequest::after(next, cityward_store::MAX_PAGE_LIMIT),
            None => return Ok(out),
        }
    }
}

async fn list_requests(
    State(node): State<Arc<Node>>,
    format: Format,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, Open311Error> {
    let Query(pairs) = query.map_err(|e| Open311Error::bad(format, format!("the query string could not be read: {}", e.body_text())))?;
    let filter = parse_filter(&pairs, Utc::now()).map_err(|d| Open311Error::bad(format, d))?;
    let store = node.clone();
    let records = blocking(format, move || find_requests(store.state().as_ref(), &store.city(), &filter)).await?;
    Ok(answer(format, StatusCode::OK, "service_requests", "request", records))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Open311Config;

    fn city() -> City {
        cityward_sim::generate_city(3, cityward_sim::Size::Small)
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_form_becomes_a_request_with_the_reporter_kept_apart() {
        let city = city();
        let d = &city.devices[0];
        let services = Open311Config::default().services;
        let (lat, lon) = (d.lat.to_string(), d.lon.to_string());
        let fields = pairs(&[
            ("service_code", "pothole"),
            ("lat", &lat),
            ("long", &lon),
            ("description", "  deep hole  "),
            ("email", "someone@example.org"),
            ("first_name", ""),
            ("api_key", "ignored"),
        ]);
        let r = parse_submission(&fields, &services, &city).unwrap();
        assert_eq!(r.service.code, "pothole");
        assert_eq!(r.point, Some((d.lon, d.lat)));
        assert_eq!(r.public.get("description").map(String::as_str), Some("deep hole"));
        assert_eq!(r.reporter.get("email").map(String::as_str), Some("someone@example.org"));
        assert!(!r.reporter.contains_key("first_name"), "empty fields count as absent");

        let row = alert_row(&r, "r0".into(), Some(d.grid.clone()), Utc::now());
        assert_eq!((row.rule.as_str(), row.key.as_str(), row.category.as_str()), ("open311", "pothole", "traffic.pothole"));
        assert_eq!(row.body["open311"]["reporter"]["email"], "someone@example.org");
        let answered = Value::Object(request_record(&row, &city).into_iter().map(|(k, v)| (k.to_string(), v)).collect());
        assert!(!answered.to_string().contains("someone@example.org"), "{answered}");
        assert_eq!(answered["description"], "deep hole");
        assert_eq!(answered["status"], "open");
    }

    #[test]
    fn bad_fields_are_refused_with_what_to_change() {
        let city = city();
        let services = Open311Config::default().services;
        let d = &city.devices[0];
        let (lat, lon) = (d.lat.to_string(), d.lon.to_string());
        let refused = |items: &[(&str, &str)]| parse_submission(&pairs(items), &services, &city).unwrap_err();
        assert!(refused(&[("lat", &lat), ("long", &lon)]).contains("service_code is required"));
        assert!(refused(&[("service_code", "nope"), ("lat", &lat), ("long", &lon)]).contains("choose one of fire_exit_blocked"));
        assert!(refused(&[("service_code", "pothole")]).contains("a location is required"));
        assert!(refused(&[("service_code", "pothole"), ("address_id", "42")]).contains("no address registry"));
        assert!(refused(&[("service_code", "pothole"), ("lat", &lat)]).contains("lat and long go together"));
        assert!(refused(&[("service_code", "pothole"), ("lat", "north"), ("long", &lon)]).contains("lat `north` is not a number"));
        assert!(refused(&[("service_code", "pothole"), ("lat", "91"), ("long", &lon)]).contains("out of range"));
        assert!(refused(&[("service_code", "pothole"), ("lat", "NaN"), ("long", &lon)]).contains("is not a number"));
        let swapped = refused(&[("service_code", "pothole"), ("lat", &lon), ("long", &lat)]);
        assert!(swapped.contains("out of range") && swapped.contains("look swapped"), "{swapped}");
        assert!(refused(&[("service_code", "pothole"), ("lat", "0"), ("long", "0")]).contains("outside the area"));
        assert!(refused(&[("service_code", "pothole"), ("lng", &lon)]).contains("`lng` is not a GeoReport v2 field"));
        assert!(refused(&[("service_code", "pothole"), ("service_code", "pothole")]).contains("given twice"));
        assert!(refused(&[("service_code", "pothole"), ("attribute[x]", "1")]).contains("define no attributes"));
        let long = "x".repeat(MAX_DESCRIPTION_CHARS + 1);
        assert!(refused(&[("service_code", "pothole"), ("address_string", "Main St"), ("description", &long)]).contains("longer than 4000"));
        let bad_email = refused(&[("service_code", "pothole"), ("address_string", "Main St"), ("email", "me at home")]);
        assert!(bad_email.contains("not an email address") && !bad_email.contains("me at home"), "{bad_email}");
        assert!(refused(&[("service_code", "pothole"), ("address_string", "Main St"), ("media_url", "javascript:x")]).contains("media_url"));
        // An address alone is a location.
        parse_submission(&pairs(&[("service_code", "pothole"), ("address_string", "Main St")]), &services, &city).unwrap();
    }

    #[test]
    fn json_bodies_read_like_forms() {
        let fields = json_fields(json!({"service_code": "pothole", "lat": 31.5, "email": null, "attribute": {"size": ["a", 2]}})).unwrap();
        assert_eq!(
            fields,
            pairs(&[("attribute[size]", "a"), ("attribute[size]", "2"), ("lat", "31.5"), ("service_code", "pothole")])
        );
        assert!(json_fields(json!([1])).unwrap_err().contains("must be an object"));
        assert!(json_fields(json!({"lat": [1]})).unwrap_err().contains("`lat` must be text or a number"));
    }

    #[test]
    fn list_filters_default_to_ninety_days_and_refuse_wider_spans() {
        let now = Utc::now();
        let f = parse_filter(&[], now).unwrap();
        assert_eq!((f.end, f.end - f.start), (now, chrono::Duration::days(90)));
        let f = parse_filter(&pairs(&[("status", "open"), ("service_code", "a,b"), ("service_code", "c")]), now).unwrap();
        assert!(f.open && !f.closed);
        assert_eq!(f.codes, ["a", "b", "c"]);
        let f = parse_filter(&pairs(&[("start_date", "2026-01-01T00:00:00+08:00")]), now).unwrap();
        assert_eq!(f.end - f.start, chrono::Duration::days(90));
        assert!(parse_filter(&pairs(&[("status", "pending")]), now).unwrap_err().contains("not a GeoReport status"));
        assert!(parse_filter(&pairs(&[("start_date", "yesterday")]), now).unwrap_err().contains("RFC 3339"));
        let wide = pairs(&[("start_date", "2026-01-01T00:00:00Z"), ("end_date", "2026-06-01T00:00:00Z")]);
        assert!(parse_filter(&wide, now).unwrap_err().contains("at most 90 days"));
        let reversed = pairs(&[("start_date", "2026-02-01T00:00:00Z"), ("end_date", "2026-01-01T00:00:00Z")]);
        assert!(parse_filter(&reversed, now).unwrap_err().contains("before start_date"));
    }

    #[test]
    fn xml_carries_any_text() {
        let mut out = String::new();
        xml_element(&mut out, "description", &json!("<a & 'b'>\u{1}\n"));
        assert_eq!(out, "<description>&lt;a &amp; &apos;b&apos;&gt;\u{FFFD}\n</description>");
        let mut out = String::new();
        xml_element(&mut out, "lat", &Value::Null);
        assert_eq!(out, "<lat/>");
    }

    #[test]
    fn the_default_services_pass_their_own_check() {
        Open311Config::default().check().unwrap();
        let mut twice = Open311Config::default();
        twice.services.push(twice.services[0].clone());
        assert!(twice.check().unwrap_err().contains("used twice"));
    }
}
