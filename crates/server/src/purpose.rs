//! Purpose-bound search: which events are personal data, what a search of them must say
//! about why it is made, how far each role may search on its own, and the requests beyond
//! that which wait for a supervisor.
//!
//! - Personal data: events of the classes in `[search] personal_classes` (plate reads,
//!   vehicle GPS), except GPS of the regulated fleets named in `regulated_vehicle_classes`
//!   (hazardous goods, heavy trucks, school buses, the city's own patrols).
//! - A search that reaches personal data carries `purpose: {case_number, legal_basis}`, the
//!   basis one of `legal_bases`; a free-text note alone is refused. Without a purpose, a
//!   search sees only the events that are not personal.
//! - `[search.limits.ROLE]` bound the time span and area one search of personal data may
//!   cover. A search beyond them is stored as an approval request (`202`), which a
//!   supervisor (a flag on the user) approves or rejects with a reason; the requester then
//!   runs it by its id (`"approval": "sa…"`) until it expires.
//! - The SQL API and SQL rules see only the events that are not personal: searches and
//!   hotlist matches are the only ways to plate data.
//!
//! Routes: `GET /api/v1/search/approvals`, `GET /api/v1/search/approvals/{id}`,
//! `POST /api/v1/search/approvals/{id}/approve|reject`. Every decision is audited.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use cityward_model::{format_duration, KindRegistry};
use cityward_store::{PageRequest, SearchApproval};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::http::{blocking, page_size, ApiError, ApiQuery, Body, Caller};
use crate::node::{Node, NodeError, Role, User};

/// `[search]`: who may search personal data, why, and how far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchSection {
    /// The legal bases a search of personal data may name (the city's own list, from its
    /// data-protection rules).
    pub legal_bases: Vec<String>,
    /// Data classes (a kind's `class`) whose events are personal data.
    pub personal_classes: Vec<String>,
    /// Values of the `class` attribute (of kinds that have one, e.g. `gps`) whose events are
    /// not personal: regulated fleets and the city's own vehicles.
    pub regulated_vehicle_classes: Vec<String>,
    /// How long an approved request may be run.
    #[serde(with = "cityward_model::duration_serde")]
    pub approval_valid_for: Duration,
    /// Per role: how far one search of personal data may reach without approval. A role
    /// without an entry has no limit.
    pub limits: BTreeMap<String, RoleLimit>,
}

/// `[search.limits.ROLE]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RoleLimit {
    /// Longest time range (`until - since`).
    #[serde(with = "cityward_model::duration_serde::option", skip_serializing_if = "Option::is_none")]
    pub max_span: Option<Duration>,
    /// Largest area in km² (a drawn polygon, the grids listed, or the whole city when
    /// neither is given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_area_km2: Option<f64>,
}

impl Default for SearchSection {
    fn default() -> Self {
        let strings = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
        let day = 86_400;
        let limit = |days: u64, km2: Option<f64>| RoleLimit { max_span: Some(Duration::from_secs(days * day)), max_area_km2: km2 };
        SearchSection {
            legal_bases: strings(&["criminal_investigation", "missing_person", "traffic_enforcement", "emergency_response", "court_order"]),
            personal_classes: strings(&["plate_read", "vehicle_gps"]),
            regulated_vehicle_classes: strings(&["hazmat", "heavy", "school_bus", "patrol"]),
            approval_valid_for: Duration::from_secs(7 * day),
            limits: [
                ("admin", limit(30, None)),
                ("analyst", limit(7, None)),
                ("dispatcher", limit(1, Some(25.0))),
            ]
            .into_iter()
            .map(|(role, l)| (role.to_string(), l))
            .collect(),
        }
    }
}

impl SearchSection {
    /// Checks the section; the error names the setting.
    pub fn check(&self) -> Result<(), String> {
        if self.legal_bases.is_empty() {
            return Err("search.legal_bases is empty; list the legal bases a search of personal data may name".into());
        }
        if let Some(b) = self.legal_bases.iter().find(|b| b.trim().is_empty() || b.len() > 64) {
            return Err(format!("search.legal_bases: `{b}` must be 1 to 64 characters"));
        }
        for (role, limit) in &self.limits {
            if Role::parse(role).is_none() {
                return Err(format!("search.limits.{role}: `{role}` is not a role; use admin, analyst or dispatcher"));
            }
            if limit.max_span.is_some_and(|d| d.is_zero()) || limit.max_area_km2.is_some_and(|a| !(a > 0.0)) {
                return Err(format!("search.limits.{role}: max_span and max_area_km2 must be more than 0 (leave one out for no limit)"));
            }
        }
        if self.approval_valid_for.is_zero() {
            return Err("search.approval_valid_for must be longer than 0s, e.g. \"7d\"".into());
        }
        Ok(())
    }
}

/// Why a search of personal data is made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Purpose {
    /// The case (incident, investigation, court file) the search is for.
    pub case_number: String,
    /// One of `[search] legal_bases`.
    pub legal_basis: String,
    /// Anything else the searcher wants on the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Purpose {
    /// The purpose of a search body, checked against the configured bases.
    pub(crate) fn parse(value: &Value, config: &SearchSection) -> Result<Purpose, NodeError> {
        let bases = config.legal_bases.join(", ");
        let purpose: Purpose = serde_json::from_value(value.clone()).map_err(|e| {
            NodeError::Invalid(format!(
                "`purpose` must be {{\"case_number\": …, \"legal_basis\": one of {bases}, \"note\": optional}}; a free-text purpose alone is not accepted ({e})"
            ))
        })?;
        let case = purpose.case_number.trim();
        if case.is_empty() || case.chars().count() > 64 || case.chars().any(char::is_control) {
            return Err(NodeError::Invalid("`purpose.case_number` must be the case's number, 1 to 64 characters".into()));
        }
        if !config.legal_bases.contains(&purpose.legal_basis) {
            return Err(NodeError::Invalid(format!(
                "`purpose.legal_basis` `{}` is not one of this city's legal bases: {bases}",
                purpose.legal_basis
            )));
        }
        if purpose.note.as_ref().is_some_and(|n| n.chars().count() > 1000) {
            return Err(NodeError::Invalid("`purpose.note` is longer than 1000 characters".into()));
        }
        Ok(Purpose { case_number: case.to_string(), ..purpose })
    }
}

/// Which kinds hold personal data, under a node's kinds and `[search]`.
pub(crate) struct PersonalKinds {
    /// Kinds of a personal class.
    pub kinds: Vec<String>,
    /// Those of them with a `class` attribute: their regulated vehicles are not personal.
    pub with_vehicle_class: Vec<String>,
    regulated: Vec<String>,
}

impl PersonalKinds {
    pub(crate) fn of(kinds: &KindRegistry, config: &SearchSection) -> PersonalKinds {
        let mut personal = PersonalKinds { kinds: Vec::new(), with_vehicle_class: Vec::new(), regulated: config.regulated_vehicle_classes.clone() };
        for name in kinds.names() {
            let schema = kinds.get(name).expect("a listed kind");
            if config.personal_classes.contains(&schema.class) {
                personal.kinds.push(name.to_string());
                if schema.attrs.contains_key("class") {
                    personal.with_vehicle_class.push(name.to_string());
                }
            }
        }
        personal
    }

    /// Whether every event of `kind` is personal (it has no regulated exceptions).
    pub(crate) fn wholly_personal(&self, kind: &str) -> bool {
        self.kinds.iter().any(|k| k == kind) && !self.with_vehicle_class.iter().any(|k| k == kind)
    }

    /// Whether events of `kind` may be personal.
    pub(crate) fn may_be_personal(&self, kind: &str) -> bool {
        self.kinds.iter().any(|k| k == kind)
    }

    /// A SQL condition over `events` that holds for the rows that are not personal data;
    /// `None` when no kind is personal.
    pub(crate) fn public_rows(&self) -> Option<String> {
        if self.kinds.is_empty() {
            return None;
        }
        let list = |items: &[String]| items.iter().map(|k| crate::search::quoted(k)).collect::<Vec<_>>().join(", ");
        let mut condition = format!("(kind IS NULL OR kind NOT IN ({}))", list(&self.kinds));
        if !self.with_vehicle_class.is_empty() && !self.regulated.is_empty() {
            condition = format!(
                "({condition} OR (kind IN ({}) AND \"class\" IN ({})))",
                list(&self.with_vehicle_class),
                list(&self.regulated)
            );
        }
        Some(condition)
    }
}

/// Which of `role`'s limits a search of personal data covering `span` and `area_km2` goes
/// beyond, in words; empty when it may run.
pub(crate) fn over_limits(config: &SearchSection, role: Role, span: Duration, area_km2: f64) -> Vec<String> {
    let Some(limit) = config.limits.get(role.as_str()) else { return Vec::new() };
    let mut reasons = Vec::new();
    if let Some(max) = limit.max_span {
        if span > max {
            reasons.push(format!(
                "it spans {}; the {} role may search {} without approval",
                format_duration(span),
                role.as_str(),
                format_duration(max)
            ));
        }
    }
    if let Some(max) = limit.max_area_km2 {
        if area_km2 > max {
            reasons.push(format!(
                "it covers {area_km2:.1} km²; the {} role may search {max} km² without approval (draw an area or list grids)",
                role.as_str()
            ));
        }
    }
    reasons
}

/// The approval routes; `crate::http::router` merges them.
pub(crate) fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/api/v1/search/approvals", get(list))
        .route("/api/v1/search/approvals/{id}", get(one))
        .route("/api/v1/search/approvals/{id}/{decision}", post(decide))
}

/// A new approval request's id.
pub(crate) fn new_approval_id() -> Result<String, NodeError> {
    Ok(format!("sa{}", crate::auth::random_hex(8)?))
}

/// Who sees a request: its requester, supervisors, auditors and administrators.
fn may_see(user: &User, approval: &SearchApproval) -> bool {
    approval.requested_by == user.username || user.supervisor || matches!(user.role, Role::Admin | Role::Auditor)
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

async fn list(State(node): State<Arc<Node>>, Caller(user): Caller, ApiQuery(q): ApiQuery<ListQuery>) -> Result<Json<Value>, ApiError> {
    if let Some(s) = q.status.as_deref().filter(|s| !["pending", "approved", "rejected"].contains(s)) {
        return Err(NodeError::Invalid(format!("`status` must be pending, approved or rejected, not `{s}`")).into());
    }
    let limit = page_size(q.limit)?;
    let page = match q.cursor {
        Some(c) => PageRequest::after(c, limit),
        None => PageRequest::first(limit),
    };
    // Everyone else sees their own requests only.
    let sees_all = user.supervisor || matches!(user.role, Role::Admin | Role::Auditor);
    let own = (!sees_all).then(|| user.username.clone());
    let got = blocking(move || Ok(node.state().list_search_approvals(q.status.as_deref(), own.as_deref(), &page)?)).await?;
    Ok(Json(json!({"items": got.items, "next": got.next})))
}

/// The request `id` if `user` may see it.
pub(crate) fn approval_for(node: &Node, user: &User, id: &str) -> Result<SearchApproval, NodeError> {
    let missing = || NodeError::NotFound(format!("no search approval request `{id}`; list yours at GET /api/v1/search/approvals"));
    let approval = node.state().search_approval(id)?.ok_or_else(missing)?;
    if !may_see(user, &approval) {
        return Err(missing());
    }
    Ok(approval)
}

async fn one(State(node): State<Arc<Node>>, Caller(user): Caller, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let approval = blocking(move || approval_for(&node, &user, &id)).await?;
    Ok(Json(json!(approval)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Decision {
    reason: String,
}

async fn decide(
    State(node): State<Arc<Node>>,
    Caller(user): Caller,
    Path((id, decision)): Path<(String, String)>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let body = body.0?;
    let status = match decision.as_str() {
        "approve" => "approved",
        "reject" => "rejected",
        other => return Err(NodeError::NotFound(format!("no action `{other}` on a search approval request; use approve or reject")).into()),
    };
    if !user.supervisor {
        return Err(NodeError::Forbidden(format!(
            "only a supervisor may {decision} a search; `{}` is not one (an administrator marks supervisors with `cityward user supervisor`)",
            user.username
        ))
        .into());
    }
    let Decision { reason } = serde_json::from_slice(&body)
        .map_err(|e| NodeError::Invalid(format!("body must be {{\"reason\": \"…\"}}: {e}")))?;
    if reason.trim().is_empty() {
        return Err(NodeError::Invalid("`reason` must say why the search is approved or rejected".into()).into());
    }
    let decided = blocking(move || {
        let approval = approval_for(&node, &user, &id)?;
        if approval.requested_by == user.username {
            return Err(NodeError::Forbidden("a supervisor may not decide their own search request; ask another supervisor".into()));
        }
        let decided = node.state().decide_search_approval(&id, status, &user.username, Utc::now(), reason.trim())?;
        node.desk().audit(
            &user.username,
            &format!("search.{decision}"),
            &id,
            json!({"requested_by": decided.requested_by, "purpose": decided.request.get("purpose"), "reason": reason.trim()}),
        );
        Ok(decided)
    })
    .await?;
    Ok(Json(json!(decided)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_purpose_needs_a_case_and_a_listed_basis() {
        let config = SearchSection::default();
        let ok = Purpose::parse(&json!({"case_number": " 2026-117 ", "legal_basis": "court_order"}), &config).unwrap();
        assert_eq!(ok.case_number, "2026-117");
        let free_text = Purpose::parse(&json!({"note": "looking for my neighbour"}), &config).unwrap_err().to_string();
        assert!(free_text.contains("free-text purpose alone"), "{free_text}");
        let basis = Purpose::parse(&json!({"case_number": "1", "legal_basis": "curiosity"}), &config).unwrap_err().to_string();
        assert!(basis.contains("court_order"), "lists the bases: {basis}");
        assert!(Purpose::parse(&json!({"case_number": " ", "legal_basis": "court_order"}), &config).is_err());
    }

    #[test]
    fn personal_kinds_follow_the_class_and_spare_regulated_fleets() {
        let personal = PersonalKinds::of(&KindRegistry::builtin(), &SearchSection::default());
        assert!(personal.wholly_personal("plate_read"));
        assert!(personal.may_be_personal("gps") && !personal.wholly_personal("gps"));
        assert!(!personal.may_be_personal("smoke"));
        let rows = personal.public_rows().unwrap();
        assert!(rows.contains("'plate_read'") && rows.contains("\"class\" IN ('hazmat'"), "{rows}");
    }

    #[test]
    fn limits_name_what_is_exceeded() {
        let config = SearchSection::default();
        let day = Duration::from_secs(86_400);
        assert!(over_limits(&config, Role::Analyst, 7 * day, 1e6).is_empty(), "analysts have no area limit");
        let reasons = over_limits(&config, Role::Dispatcher, 2 * day, 40.0);
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons[0].contains("2d") && reasons[1].contains("25 km²"), "{reasons:?}");
        assert!(over_limits(&config, Role::Auditor, 365 * day, 1e9).is_empty(), "no entry, no limit");
        let mut bad = SearchSection::default();
        bad.limits.insert("mayor".into(), RoleLimit::default());
        assert!(bad.check().unwrap_err().contains("mayor"));
    }
}
