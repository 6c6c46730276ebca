//! The HTTP API (DESIGN.md, "HTTP API"): routes, the bearer-token extractor, and one
//! [`ApiError`] type that answers `{"error": {"code", "message"}}` with a fitting status.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::node::{Channel, Node, NodeError, Role, User};

/// An error answered to an API caller: a stable code, a message saying what to do, a status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn unauthorized() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this call needs `Authorization: Bearer TOKEN`; get a token from POST /api/v1/login",
        )
    }

    fn forbidden(role: Role, need: &str) -> Self {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("role `{}` may not do this; it needs {need}", role.as_str()),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response()
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        let (status, code) = match e.status() {
            400 => (StatusCode::BAD_REQUEST, "invalid_input"),
            401 => (StatusCode::UNAUTHORIZED, "unauthorized"),
            403 => (StatusCode::FORBIDDEN, "forbidden"),
            404 => (StatusCode::NOT_FOUND, "not_found"),
            409 => (StatusCode::CONFLICT, "conflict"),
            413 => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            503 => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        // A 503 is back-pressure the client retries, not a failure of the node.
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(error = %e, "Request failed.");
        }
        ApiError::new(status, code, e.to_string())
    }
}

/// The caller, from `Authorization: Bearer TOKEN`.
pub struct Caller(pub User);

impl FromRequestParts<Arc<Node>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, node: &Arc<Node>) -> Result<Self, ApiError> {
        let header_token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Browsers' EventSource cannot set headers: the live stream also takes
        // `?access_token=` (and only it, so tokens stay out of other URLs and logs).
        let query_token = (parts.uri.path() == "/api/v1/alerts/stream")
            .then(|| parts.uri.query())
            .flatten()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("access_token=")));
        let token = header_token
            .or(query_token)
            .ok_or_else(ApiError::unauthorized)?
            .trim()
            .to_string();
        let node = node.clone();
        let user = blocking(move || node.authenticate(&token)).await?;
        user.map(Caller).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the token is unknown or expired; log in again at POST /api/v1/login",
            )
        })
    }
}

/// Query parameters, or the API error naming the one that could not be read.
pub struct ApiQuery<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state).await.map(|Query(q)| ApiQuery(q)).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_input",
                format!("{}; the parameters are described at /api/openapi.json", e.body_text()),
            )
        })
    }
}

/// A request body, or the API error for one that could not be read (too large, cut off).
pub struct Body(pub(crate) Result<Bytes, ApiError>);

impl<S: Send + Sync> axum::extract::FromRequest<S> for Body {
    type Rejection = std::convert::Infallible;

    async fn from_request(
        request: axum::extract::Request,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Body(Bytes::from_request(request, state).await.map_err(|rejection| {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(status, "too_large",
                    "the body is larger than ingest.max_body_bytes; send smaller batches or raise the limit")
            } else {
                ApiError::new(status, "invalid_input", format!("the body could not be read: {rejection}"))
            }
        })))
    }
}

/// All routes of a node.
pub fn router(node: Arc<Node>) -> Router {
    let body_limit = node.config().ingest.max_body_bytes;
    Router::new()
        .route("/", get(console))
        .route("/assets/{file}", get(console_asset))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/openapi.json", get(openapi))
        .route("/api/v1/login", post(login))
        .route("/api/v1/status", get(status))
        .route("/api/v1/events", post(post_events))
        .route("/api/v1/deadletter", get(list_deadletter))
        .route("/api/v1/deadletter/{id}", get(get_deadletter))
        .route(
            "/api/v1/deadletter/{id}/resubmit",
            post(resubmit_deadletter),
        )
        .route("/api/v1/sql", post(sql))
        .route("/api/v1/rules", get(list_rules))
        .route(
            "/api/v1/rules/{id}",
            get(get_rule).put(put_rule).delete(delete_rule),
        )
        .route("/api/v1/hotlists", get(list_hotlists))
        .route("/api/v1/hotlists/{list}/entries", post(put_hotlist_entry))
        .route(
            "/api/v1/hotlists/{list}/entries/{value}",
            axum::routing::delete(delete_hotlist_entry),
        )
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/alerts/stream", get(crate::live::alert_stream))
        .route("/api/v1/alerts/{id}", get(get_alert))
        .route("/api/v1/alerts/{id}/cap", get(alert_cap))
        .route("/api/v1/alerts/{id}/{action}", post(act_on_alert))
        .route("/api/v1/routing", get(get_routing).put(put_routing))
        .route("/api/v1/incidents/{id}", get(get_incident))
        .route("/api/v1/silences", get(list_silences).post(add_silence))
        .route("/api/v1/audit", get(list_audit))
        .route("/api/v1/tokens", get(list_tokens).post(add_token))
        .route("/api/v1/tokens/{id}", axum::routing::delete(revoke_token))
        .route("/api/v1/webhooks", get(list_webhooks).post(add_webhook))
        .route("/api/v1/webhooks/deliveries", get(list_deliveries))
        .route("/api/v1/webhooks/deliveries/{id}/replay", post(replay_delivery))
        .route("/api/v1/webhooks/{id}", axum::routing::delete(remove_webhook))
        .route("/api/v1/silences/{id}", axum::routing::delete(end_silence))
        .route("/api/v1/routing/history", get(routing_history))
        .route("/api/v1/detect/status", get(detect_status))
        .merge(crate::open311::routes())
        .merge(crate::dispatch::routes())
        .merge(crate::city_api::routes())
        .merge(crate::search::routes())
        .merge(crate::purpose::routes())
        .merge(crate::holds::routes())
        .merge(crate::grants::routes())
        .merge(crate::transparency::routes())
        .merge(crate::trial::routes())
        .merge(crate::jobs::routes())
        .merge(crate::stats::routes())
        .merge(crate::positions::routes())
        .merge(crate::heat::routes())
        .merge(crate::photos::routes())
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(node)
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such path; the API is described at /api/openapi.json",
    )
}

/// The console (built from `console/` with `npm run build`; the built files are committed,
/// so a Rust build needs no Node).
async fn console() -> Html<&'static str> {
    Html(include_str!("../../../console/dist/index.html"))
}

async fn console_asset(Path(file): Path<String>) -> Response {
    let (body, kind): (&'static [u8], &str) = match file.as_str() {
        "console.js" => (include_bytes!("../../../console/dist/assets/console.js"), "text/javascript; charset=utf-8"),
        "console.css" => (include_bytes!("../../../console/dist/assets/console.css"), "text/css; charset=utf-8"),
        _ => return not_found().await.into_response(),
    };
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

async fn healthz(State(node): State<Arc<Node>>) -> Response {
    let health = node.health();
    let status = if health["status"] == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(health)).into_response()
}

async fn metrics(State(node): State<Arc<Node>>) -> Response {
    node.refresh_gauges();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        node.metrics().render(),
    )
        .into_response()
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

#[derive(Deserialize)]
struct LoginBody {
    username: String,
    password: String,
}

async fn login(State(node): State<Arc<Node>>, body: Body) -> Result<Json<Value>, ApiError> {
    let body = body.0?;
    let body: LoginBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            format!("login body must be {{\"username\": …, \"password\": …}}: {e}"),
        )
    })?;
    let token = blocking(move || node.login(&body.username, &body.password)).await?;
    Ok(Json(
        json!({"token": token.token, "role": token.role.as_str(), "expires_at": token.expires_at}),
    ))
}

async fn status(State(node): State<Arc<Node>>, _caller: Caller) -> Json<Value> {
    Json(node.status())
}

async fn post_events(
    State(node): State<Arc<Node>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = body.0?;
    if !node.config().auth.open_ingest {
        let mut parts = axum::http::Request::new(()).into_parts().0;
        parts.headers = headers.clone();
        let Caller(user) = Caller::from_request_parts(&mut parts, &node).await?;
        if !matches!(user.role, Role::Admin | Role::Ingest) {
            return Err(ApiError::forbidden(user.role, "role `ingest` or `admin`"));
        }
    }
    let csv = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/csv"));
    let outcome = node.ingest_body(&body, Channel::Http, csv).await?;
    let status = if outcome.accepted == 0 && outcome.duplicates == 0 && !outcome.rejected.is_empty()
    {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((status, Json(outcome)).into_response())
}

#[derive(Deserialize)]
struct DeadletterQuery {
    cursor: Option<String>,
    limit: Option<usize>,
    channel: Option<String>,
    pending: Option<bool>,
}

async fn list_deadletter(
    State(node): State<Arc<Node>>,
    Caller(user): Caller,
    ApiQuery(q): ApiQuery<DeadletterQuery>,
) -> Result<Json<Value>, ApiError> {
    require(
        &user,
        &[Role::Admin, Role::Analyst],
        "role `admin` or `analyst`",
    )?;
    let page = blocking(move || {
        node.deadletters(
            q.cursor,
            q.limit.unwrap_or(100).min(1000),
            q.channel,
            q.pending.unwrap_or(false),
        )
    })
    .await?;
    Ok(Json(page))
}

async fn get_deadletter(
    State(node): State<Arc<Node>>,
    Caller(user): Caller,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    require(
        &user,
        &[Role::Admin, Role::Analyst],
        "role `admin` or `analyst`",
    )?;
    let item = blocking(move || node.deadletter(id)).await?;
    Ok(Json(item))
}

async fn resubmit_deadletter(
    State(node): State<Arc<Node>>,
    Caller(user): Caller,
    Path(id): Path<i64>,
    body: Body,
) -> Result<Response, ApiError> {
    let body = body.0?;
    require(
        &user,
        &[Role::Admin, Role::Analyst],
        "role `admin` or `analyst`",
    )?;
    let outcome = node.resubmit(id, &body).await?;
    let status = if outcome.accepted + outcome.duplicates > 0 {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok((status, Json(outcome)).into_response())
}

#[derive(Deserialize)]
struct SqlBody {
    sql: String,
    #[serde(default)]
    max_rows: Option<usize>,
}

async fn sql(
    State(node): State<Arc<Node>>,
    Caller(user): Caller,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let body = body.0?;
    require(&user, &[Role::Admin], "role `admin`")?;
    let body: SqlBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            format!("body must be {{\"sql\": \"SELECT …\"}}: {e}"),
        )
    })?;
    let result = node
        .sql(&body.sql, body.max_rows.unwrap_or(10_000).min(1_000_000))
        .await?;
    Ok(Json(result))
}

pub(crate) const RULE_ROLES: &[Role] = &[Role::Admin, Role::Analyst];
pub(crate) const RULE_NEED: &str = "role `admin` or `analyst`";
pub(crate) const ALERT_ROLES: &[Role] = &[Role::Admin, Role::Analyst, Role::Dispatcher, Role::Responder, Role::Auditor, Role::Reader];
pub(crate) const ALERT_NEED: &str = "a console role (admin, analyst, dispatcher, responder or auditor) or a read token";

async fn list_rules(State(node): State<Arc<Node>>, Caller(user): Caller) -> Result<Json<Value>, ApiError> {
    require(&user, ALERT_ROLES, ALERT_NEED)?;
    Ok(Json(blocking(move || node.list_rules(&user)).await?))
}

async fn get_rule(
    State(node): State<Arc<Node>>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require(&user, ALERT_ROLES, ALERT_NEED)?;
    Ok(Json(blocking(move || node.get_rule(&id)).await?))
}

#[derive(Deserialize)]
struct VersionQuery {
    /// Optimistic concurrency: the version the caller last read (0: must not exist yet).
    version: Option<i64>,
}

async fn put_rule(
    State(node): State<Arc<Node>>,
    Caller(user): Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<VersionQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let body = body.0?;
    require(&user, RULE_ROLES, RULE_NEED)?;
    let yaml = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("yaml"));
    let text = String::from_utf8(body.to_vec()).map_err(|_| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", "the rule must be UTF-8 text (JSON, or YAML with Content-Type: application/yaml)")
    })?;
    Ok(Json(blocking(move || node.put_rule(&id, &text, yaml, &user, q.version)).await?))
}

async fn delete_rule(
    State(node): State<Arc<Node>>,
    Caller(user): Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<VersionQuery>,
) -> Result<StatusCode, ApiError> {
    require(&user, RULE_ROLES, RULE_NEED)?;
    blocking(move || node.delete_rule(&id, q.version)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_hotlists(State(node): State<Arc<Node>>, Caller(user): Caller) -> Result<Json<Value>, ApiError> {
    require(&user, RULE_ROLES, RULE_NEED)?;
    Ok(Json(blocking(move || node.hotlists()).await?))
}

async fn put_hotlist_entry(
    State(node): State<Arc<Node>>,
    Caller(user): Caller,
    Path(list): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let body = body.0?;
    require(&user, RULE_ROLES, RULE_NEED)?;
    let input: crate::rules::HotlistEntryInput = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            format!("body must be {{\"value\": …, \"reason\": …, \"expires\": \"RFC 3339\", \"owner\": …}}: {e}"),
        )
    })?;
    Ok(Json(blocking(move || node.put_hotlist_entry(&list, input, &user)).await?))
}

async fn delete_hotlist_entry(
    State(node): State<Arc<Node>>,
    Caller(user): Caller,
    Path((list, value)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    require(&user, RULE_ROLES, RULE_NEED)?;
    blocking(move || node.delete_hotlist_entry(&list, &value)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct AlertQuery {
    status: Option<String>,
    class: Option<String>,
    severity: Option<String>,
    category: Option<String>,
    region: Option<String>,
    since: Option<String>,
    until: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

/// `a,b` as a list (absent or empty: none).
fn comma_list(text: Option<&str>) -> Vec<String> {
    text.map(|s| s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
        .unwrap_or_default()
}

fn query_time(name: &str, text: Option<&str>) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    text.map(|t| {
        cityward_model::parse_time(t).ok_or_else(|| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", format!("`{name}` must be an RFC 3339 time like 2026-12-04T08:00:00Z, not `{t}`"))
        })
    })
    .transpose()
}

async fn list_alerts(
    State(node): State<Arc<Node>>,
    Caller(user): Caller,
    ApiQuery(q): ApiQuery<AlertQuery>,
) -> Result<Json<Value>, ApiError> {
    require(&user, ALERT_ROLES, ALERT_NEED)?;
    let limit = page_size(q.limit)?;
    if let Some(region) = &q.region {
        if node.city().region(region).is_none() {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", format!("`region` `{region}` is not a region of the city")));
        }
    }
    // `status=assigned,escalated` lists alerts in any of them; likewise severity and category.
    let filter = cityward_store::AlertFilter {
        statuses: comma_list(q.status.as_deref()),
        severities: comma_list(q.severity.as_deref()),
        categories: comma_list(q.category.as_deref()),
        class: q.class,
        within: q.region.map(|r| format!("region:{r}")),
        since: query_time("since", q.since.as_deref())?,
        until: query_time("until", q.until.as_deref())?,
        ..cityward_store::AlertFilter::default()
    };
    Ok(Json(blocking(move || node.alerts(&user, filter, q.cursor, limit)).await?))
}

async fn get_alert(
    State(node): State<Arc<Node>>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require(&user, ALERT_ROLES, ALERT_NEED)?;
    Ok(Json(blocking(move || node.alert(&user, &id)).await?))
}

async fn alert_cap(
    State(node): State<Arc<Node>>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require(&user, ALERT_ROLES, ALERT_NEED)?;
    let xml = blocking(move || node.desk().cap(&user, &id)).await?;
    Ok(([(header::CONTENT_TYPE, "application/cap+xml; charset=utf-8")], xml).into_response())
}

/// The body of `POST /api/v1/alerts/{id}/{action}`; which fields count depends on the action.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    /// What was done or found; required to close and to transfer.
    note: Option<String>,
    /// `close`: one of the configured disposition codes.
    disposition: Option<String>,
    /// `transfer`: the receiving unit.
    to: Option<String>,
    /// `dispatch`: the responders sent.
    #[serde(default)]
    responders: Vec<String>,
}

async fn act_on_alert(
    State(node): State<Arc<Node>>,
    Caller(user): Caller,
    Path((id, action)): Path<(String, String)>,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    use cityward_alerts::Action;
    require(&user, ALERT_ROLES, ALERT_NEED)?;
    let body = body?;
    let b: ActionBody = if body.iter().all(u8::is_ascii_whitespace) {
        ActionBody::default()
    } else {
        json_body(&body, "the action body", "JSON such as {\"note\": \"…\"}")?
    };
    let missing = |field: &str, what: &str| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", format!("`{action}` needs `{field}`: {what}"))
    };
    let parsed = match action.as_str() {
        "claim" => Action::Claim,
        "ack" => Action::Ack,
        "dispatch" => Action::Dispatch { responders: b.responders.clone() },
        "arrive" => Action::Arrive,
        "resolve" => Action::Resolve,
        "close" => Action::Close {
            disposition: b.disposition.clone().ok_or_else(|| missing("disposition", "one of the configured disposition codes"))?,
        },
        "reopen" => Action::Reopen,
        "transfer" => Action::Transfer { to: b.to.clone().ok_or_else(|| missing("to", "the id of the receiving unit"))? },
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("`{other}` is not an alert action; use one of {}", Action::NAMES.join(", ")),
            ))
        }
    };
    Ok(Json(blocking(move || node.act_on_alert(&user, &id, &parsed, b.note.as_deref())).await?))
}

async fn get_incident(
    State(node): State<Arc<Node>>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require(&user, ALERT_ROLES, ALERT_NEED)?;
    Ok(Json(blocking(move || node.desk().incident(&user, &id)).await?))
}

const ADMIN: &[Role] = &[Role::Admin];

#[derive(Deserialize)]
struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

async fn list_audit(
    State(node): State<Arc<Node>>,
    Caller(user): Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    require(&user, &[Role::Admin, Role::Auditor], "the auditor or admin role")?;
    let limit = page_size(q.limit)?;
    let page = match q.cursor {
        Some(c) => cityward_store::PageRequest::after(c, limit),
        None => cityward_store::PageRequest::first(limit),
    };
    let got = blocking(move || Ok(node.state().list_audit(q.actor.as_deref(), q.action.as_deref(), &page)?)).await?;
    Ok(Json(json!({"items": got.items, "next": got.next})))
}

/// The body of `POST /api/v1/tokens`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    /// The machine's name (its user name).
    name: String,
    /// `ingest` or `read`.
    scope: crate::auth::TokenScope,
    /// For `read`: the unit whose jurisdiction it reads (none: the whole city).
    unit: Option<String>,
    /// How long the token works (default 365).
    days: Option<i64>,
}

async fn list_tokens(State(node): State<Arc<Node>>, Caller(user): Caller) -> Result<Json<Value>, ApiError> {
    require(&user, ADMIN, "the admin role")?;
    Ok(Json(blocking(move || crate::auth::list_api_tokens(node.state().as_ref())).await?))
}

async fn add_token(
    State(node): State<Arc<Node>>,
    Caller(user): Caller,
    Body(body): Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require(&user, ADMIN, "the admin role")?;
    let body = body?;
    let b: TokenBody = json_body(&body, "the token request", "{\"name\": \"sensor-gateway\", \"scope\": \"ingest\" or \"read\"}")?;
    let created = blocking(move || {
        if let Some(u) = &b.unit {
            if node.city().unit(u).is_none() {
                return Err(NodeError::Invalid(format!("unit `{u}` is not in the city's units.csv")));
            }
        }
        let days = chrono::Duration::days(b.days.unwrap_or(365));
        let created = crate::auth::create_api_token(node.state().as_ref(), &b.name, b.scope, b.unit.as_deref(), days)?;
        tracing::info!(name = %b.name, scope = ?b.scope, user = %user.username, "API token issued.");
        node.desk().audit(&user.username, "token.issue", created["id"].as_str().unwrap_or(""), json!({"name": b.name, "scope": created["scope"], "unit": b.unit}));
        Ok(created)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn revoke_token(
    State(node): State<Arc<Node>>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require(&user, ADMIN, "the admin role")?;
    let who = user.username.clone();
    let revoked = id.clone();
    blocking(move || {
        crate::auth::revoke_api_token(node.state().as_ref(), &id)?;
        node.desk().audit(&who, "token.revoke", &id, json!({}));
        Ok(())
    })
    .await?;
    tracing::info!(token = %revoked, user = %user.username, "API token revoked.");
    Ok(StatusCode::NO_CONTENT)
}

async fn list_webhooks(State(node): State<Arc<Node>>, Caller(user): Caller) -> Result<Json<Value>, ApiError> {
    require(&user, ADMIN, "the admin role")?;
    Ok(Json(node.desk().webhooks()))
}

async fn add_webhook(
    State(node): State<Arc<Node>>,
    Caller(user): Caller,
    Body(body): Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require(&user, ADMIN, "the admin role")?;
    let body = body?;
    let hook: cityward_alerts::Webhook = json_body(&body, "the webhook", "{\"url\": \"http://…\", \"secret\": \"16+ characters\", \"unit\" and/or \"category\"}")?;
    let stored = blocking(move || node.desk().add_webhook(&user, hook)).await?;
    Ok((StatusCode::CREATED, Json(stored)))
}

async fn remove_webhook(
    State(node): State<Arc<Node>>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require(&user, ADMIN, "the admin role")?;
    blocking(move || node.desk().remove_webhook(&user, &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct DeliveryQuery {
    webhook: Option<String>,
    status: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

async fn list_deliveries(
    State(node): State<Arc<Node>>,
    Caller(user): Caller,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> Result<Json<Value>, ApiError> {
    require(&user, ADMIN, "the admin role")?;
    if let Some(s) = &q.status {
        if !["pending", "delivered", "failed"].contains(&s.as_str()) {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", format!("status `{s}` is not a delivery status; use pending, delivered or failed")));
        }
    }
    let limit = page_size(q.limit)?;
    let page = match q.cursor {
        Some(c) => cityward_store::PageRequest::after(c, limit),
        None => cityward_store::PageRequest::first(limit),
    };
    let got = blocking(move || Ok(node.state().list_deliveries(q.webhook.as_deref(), q.status.as_deref(), &page)?)).await?;
    Ok(Json(json!({"items": got.items, "next": got.next})))
}

async fn replay_delivery(
    State(node): State<Arc<Node>>,
    Caller(user): Caller,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    require(&user, ADMIN, "the admin role")?;
    let delivery = blocking(move || Ok(node.state().replay_delivery(id, chrono::Utc::now())?)).await?;
    tracing::info!(delivery = id, user = %user.username, "Webhook delivery replayed.");
    Ok(Json(json!(delivery)))
}

async fn list_silences(State(node): State<Arc<Node>>, Caller(user): Caller) -> Result<Json<Value>, ApiError> {
    require(&user, ALERT_ROLES, ALERT_NEED)?;
    Ok(Json(node.desk().silences()))
}

async fn add_silence(
    State(node): State<Arc<Node>>,
    Caller(user): Caller,
    Body(body): Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require(&user, &[Role::Admin, Role::Dispatcher], "the admin or dispatcher role")?;
    let body = body?;
    let silence: cityward_alerts::Silence = json_body(&body, "the silence", "{\"category\" or \"rule\", \"source\", \"region\", \"grid\", \"reason\", \"expires\": RFC 3339}")?;
    let stored = blocking(move || node.desk().add_silence(&user, silence)).await?;
    Ok((StatusCode::CREATED, Json(stored)))
}

async fn end_silence(
    State(node): State<Arc<Node>>,
    Caller(user): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require(&user, &[Role::Admin, Role::Dispatcher], "the admin or dispatcher role")?;
    Ok(Json(blocking(move || node.desk().end_silence(&user, &id)).await?))
}

async fn get_routing(State(node): State<Arc<Node>>, Caller(user): Caller) -> Result<Json<Value>, ApiError> {
    require(&user, ALERT_ROLES, ALERT_NEED)?;
    Ok(Json(blocking(move || Ok(node.desk().routing())).await?))
}

async fn routing_history(State(node): State<Arc<Node>>, Caller(user): Caller) -> Result<Json<Value>, ApiError> {
    require(&user, ALERT_ROLES, ALERT_NEED)?;
    Ok(Json(blocking(move || node.desk().routing_history(100)).await?))
}

/// The body of `PUT /api/v1/routing`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutingBody {
    /// The whole new table.
    entries: Vec<cityward_alerts::RouteEntry>,
    /// Why it changes (kept with the version).
    note: String,
    /// Optimistic concurrency: the version the caller last read.
    expected_version: Option<u64>,
}

async fn put_routing(
    State(node): State<Arc<Node>>,
    Caller(user): Caller,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    require(&user, &[Role::Admin], "the admin role")?;
    let body = body?;
    let b: RoutingBody = json_body(&body, "the routing table", "{\"entries\": [{\"category\", \"region\" or \"grid\", \"unit\"}], \"note\": \"why\"}")?;
    let table = cityward_alerts::RoutingTable { version: 0, entries: b.entries };
    Ok(Json(blocking(move || node.desk().set_routing(&user, table, &b.note, b.expected_version)).await?))
}

async fn detect_status(State(node): State<Arc<Node>>, Caller(user): Caller) -> Result<Json<Value>, ApiError> {
    require(&user, RULE_ROLES, RULE_NEED)?;
    Ok(Json(node.detect_status()))
}

/// Runs a blocking node call (state store I/O) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(ApiError::from)
}

/// The page size asked for: 100 when not given, else 1 to 1000.
pub(crate) fn page_size(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(100),
        Some(n @ 1..=1000) => Ok(n),
        Some(n) => Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", format!("limit {n} is out of range; ask for 1 to 1000 items"))),
    }
}

/// Parses a JSON body; the error names what was wrong and shows what to send.
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8], what: &str, shape: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", format!("{what} is not valid: {e}; send {shape}")))
}

pub(crate) fn require(user: &User, roles: &[Role], need: &str) -> Result<(), ApiError> {
    if roles.contains(&user.role) {
        Ok(())
    } else {
        Err(ApiError::forbidden(user.role, need))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// (path, method) of every route registered in [`super::router`] and in the Open311
    /// and dispatch routes it merges, read from the source files.
    fn registered() -> BTreeSet<(String, String)> {
        let source = include_str!("http.rs");
        let start = source.find("pub fn router(").expect("router");
        let end = start + source[start..].find(".fallback(").expect("fallback");
        let mut out = BTreeSet::new();
        routes_in(&source[start..end], &mut out);
        assert!(source[start..end].contains(".merge(crate::open311::routes())"), "the router no longer merges the Open311 routes");
        let merged = [
            ("open311", include_str!("open311.rs")),
            ("dispatch", include_str!("dispatch.rs")),
            ("city_api", include_str!("city_api.rs")),
            ("search", include_str!("search.rs")),
            ("trial", include_str!("trial.rs")),
            ("jobs", include_str!("jobs.rs")),
            ("stats", include_str!("stats.rs")),
            ("positions", include_str!("positions.rs")),
            ("heat", include_str!("heat.rs")),
            ("photos", include_str!("photos.rs")),
            ("purpose", include_str!("purpose.rs")),
            ("holds", include_str!("holds.rs")),
            ("grants", include_str!("grants.rs")),
            ("transparency", include_str!("transparency.rs")),
        ];
        for (file, _) in &merged[1..] {
            assert!(source[start..end].contains(&format!(".merge(crate::{file}::routes())")), "the router no longer merges the {file} routes");
        }
        for (file, source) in merged
        {
            let start = source.find("pub(crate) fn routes(").unwrap_or_else(|| panic!("{file} routes"));
            let end = start + source[start..].find("\n}\n").unwrap_or_else(|| panic!("the end of {file}::routes"));
            routes_in(&source[start..end], &mut out);
        }
        out
    }

    /// Adds the (path, method) of every `.route(…)` call in `source`.
    fn routes_in(source: &str, out: &mut BTreeSet<(String, String)>) {
        for part in source.split(".route(").skip(1) {
            let path = part.split('"').nth(1).expect("a quoted path").to_string();
            let calls = &part[path.len() + 2..];
            for method in ["get", "post", "put", "delete"] {
                let called = [" ", ".", "::", "("].iter().any(|before| calls.contains(&format!("{before}{method}(")));
                if called && path != "/" && !path.starts_with("/assets/") {
                    out.insert((path.clone(), method.to_string()));
                }
            }
        }
    }

    #[test]
    fn the_openapi_document_describes_exactly_the_routes_served() {
        let doc: serde_json::Value = serde_json::from_str(include_str!("openapi.json")).expect("openapi.json parses");
        assert_eq!(doc["openapi"].as_str().map(|v| v.starts_with("3.")), Some(true));
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                documented.insert((path.clone(), method.clone()));
            }
        }
        let served = registered();
        assert!(served.len() > 20, "the route parser found too little: {served:?}");
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(undocumented.is_empty(), "routes missing from openapi.json: {undocumented:?}");
        assert!(unserved.is_empty(), "openapi.json describes routes not served: {unserved:?}");
    }
}
