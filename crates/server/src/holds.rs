//! Legal holds: the data of a case kept past its retention. An administrator places a hold
//! (case number, reason, kinds, time range) and releases it; retention skips every day
//! partition a hold in force covers, and its plan and report say which case keeps what.
//! Holds live in the state store (`meta` key `legal_holds`), so a restarted node and
//! `cityward retention plan` see the same ones.
//!
//! Routes: `GET /api/v1/holds` (admin, auditor), `POST /api/v1/holds` and
//! `DELETE /api/v1/holds/{id}` (admin); both changes are audited.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use chrono::Utc;
use cityward_model::parse_time;
use cityward_store::{LegalHold, StateStore};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::{blocking, require, ApiError, Body, Caller};
use crate::node::{Node, NodeError, Role};

/// The `meta` key holding the holds (a JSON array).
const HOLDS_KEY: &str = "legal_holds";

/// Every hold ever placed (released ones included), oldest first.
pub fn load_holds(state: &dyn StateStore) -> Result<Vec<LegalHold>, NodeError> {
    crate::stored_list::load(state, HOLDS_KEY, "legal holds")
}

/// The routes; `crate::http::router` merges them.
pub(crate) fn routes() -> Router<Arc<Node>> {
    Router::new().route("/api/v1/holds", get(list).post(place)).route("/api/v1/holds/{id}", delete(release))
}

async fn list(State(node): State<Arc<Node>>, Caller(user): Caller) -> Result<Json<Value>, ApiError> {
    require(&user, &[Role::Admin, Role::Auditor], "the admin or auditor role")?;
    let holds = blocking(move || load_holds(node.state().as_ref())).await?;
    Ok(Json(json!({"items": holds})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewHold {
    case_number: String,
    reason: String,
    #[serde(default)]
    kinds: Vec<String>,
    since: String,
    until: String,
}

async fn place(State(node): State<Arc<Node>>, Caller(user): Caller, body: Body) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.0?;
    require(&user, &[Role::Admin], "the admin role")?;
    let asked: NewHold = serde_json::from_slice(&body).map_err(|e| {
        NodeError::Invalid(format!("body must be {{\"case_number\", \"reason\", \"since\", \"until\", \"kinds\": [optional]}}: {e}"))
    })?;
    let time = |name: &str, text: &str| {
        parse_time(text).ok_or_else(|| NodeError::Invalid(format!("`{name}` must be an RFC 3339 time like 2026-10-01T00:00:00Z, not `{text}`")))
    };
    let (since, until) = (time("since", &asked.since)?, time("until", &asked.until)?);
    if since >= until {
        return Err(NodeError::Invalid("`since` must be before `until`".into()).into());
    }
    if asked.case_number.trim().is_empty() || asked.reason.trim().is_empty() {
        return Err(NodeError::Invalid("`case_number` and `reason` must say which case the data is held for, and why".into()).into());
    }
    let kinds = node.events().lake().kinds();
    if let Some(unknown) = asked.kinds.iter().find(|k| kinds.get(k).is_none()) {
        return Err(NodeError::Invalid(format!("`kinds`: `{unknown}` is not a declared event kind")).into());
    }
    let hold = LegalHold {
        id: format!("h{}", crate::auth::random_hex(8)?),
        case_number: asked.case_number.trim().to_string(),
        reason: asked.reason.trim().to_string(),
        kinds: asked.kinds,
        since,
        until,
        created_by: user.username.clone(),
        created_at: Utc::now(),
        released_at: None,
        released_by: None,
    };
    let stored = hold.clone();
    blocking(move || {
        crate::stored_list::change(node.state().as_ref(), HOLDS_KEY, "legal holds", |holds: &mut Vec<LegalHold>| {
            holds.push(stored.clone());
            Ok(())
        })?;
        node.desk().audit(&user.username, "hold.place", &stored.id, json!(stored));
        Ok(())
    })
    .await?;
    Ok((StatusCode::CREATED, Json(json!(hold))))
}

async fn release(State(node): State<Arc<Node>>, Caller(user): Caller, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    require(&user, &[Role::Admin], "the admin role")?;
    let released = blocking(move || {
        let released = crate::stored_list::change(node.state().as_ref(), HOLDS_KEY, "legal holds", |holds: &mut Vec<LegalHold>| {
            let hold = holds
                .iter_mut()
                .find(|h| h.id == id && h.released_at.is_none())
                .ok_or_else(|| NodeError::NotFound(format!("no legal hold `{id}` in force; list them at GET /api/v1/holds")))?;
            hold.released_at = Some(Utc::now());
            hold.released_by = Some(user.username.clone());
            Ok(hold.clone())
        })?;
        node.desk().audit(&user.username, "hold.release", &id, json!({"case_number": released.case_number}));
        Ok(released)
    })
    .await?;
    Ok(Json(json!(released)))
}
