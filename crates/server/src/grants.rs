//! Sharing between units, denied by default. A unit's member searches the events of the
//! unit's own region; another unit's data only under a sharing grant: which unit's data
//! (the owner), to which unit, which data classes, for which legal bases, until when. Every
//! search that reaches data under a grant names the grant in the audit log, and the
//! owner's members (and administrators and auditors) list those accesses.
//!
//! Routes: `GET /api/v1/grants`, `POST /api/v1/grants` (admin), `DELETE /api/v1/grants/{id}`
//! (admin), `GET /api/v1/grants/{id}/accesses`. Grants live in the state store (`meta` key
//! `sharing_grants`).

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use cityward_alerts::Jurisdiction;
use cityward_model::{parse_time, City, KindRegistry};
use cityward_store::StateStore;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::http::{blocking, require, ApiError, Body, Caller};
use crate::node::{Node, NodeError, Role, User};

const GRANTS_KEY: &str = "sharing_grants";

/// A sharing grant: `grantee` sees `owner`'s data of `classes`, for `purposes`, until
/// `until`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    /// `g` and 16 hex digits.
    pub id: String,
    /// The unit whose data is shared (its region's events).
    pub owner: String,
    /// The unit it is shared with.
    pub grantee: String,
    /// Data classes shared (a kind's `class`, e.g. `plate_read`).
    pub classes: Vec<String>,
    /// Legal bases a search under the grant must name; empty: also searches of data that is
    /// not personal, without a purpose.
    pub purposes: Vec<String>,
    /// Until (exclusive).
    pub until: DateTime<Utc>,
    /// Why (the agreement, the joint operation).
    pub reason: String,
    /// Who granted it.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// When it was revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Grant {
    fn in_force(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && now < self.until
    }
}

fn load(state: &dyn StateStore) -> Result<Vec<Grant>, NodeError> {
    crate::stored_list::load(state, GRANTS_KEY, "sharing grants")
}

/// The grids in a jurisdiction's regions.
fn grids_of(city: &City, scopes: &[String]) -> BTreeSet<String> {
    city.grids
        .iter()
        .filter(|g| city.region_chain(&g.region).iter().any(|r| scopes.contains(&format!("region:{}", r.id))))
        .map(|g| g.id.clone())
        .collect()
}

/// What of the city's events a user may search: all of it, or a SQL condition, and the
/// grants that condition uses.
pub(crate) struct Reach {
    /// `None`: the whole city.
    pub condition: Option<String>,
    /// Grants whose data the condition admits (for the audit log).
    pub grants: Vec<Grant>,
}

/// The events `user` may search with `legal_basis` (if any): their own unit's region, and
/// what grants in force give their unit for that basis.
pub(crate) fn reach(node: &Node, user: &User, legal_basis: Option<&str>) -> Result<Reach, NodeError> {
    let Jurisdiction::Scopes(scopes) = node.desk().jurisdiction(user) else {
        return Ok(Reach { condition: None, grants: Vec::new() });
    };
    let city = node.city();
    let quoted = |items: &mut dyn Iterator<Item = &String>| items.map(|s| crate::search::quoted(s)).collect::<Vec<_>>().join(", ");
    let own = grids_of(&city, &scopes);
    let mut parts = vec![if own.is_empty() { "FALSE".to_string() } else { format!("grid IN ({})", quoted(&mut own.iter())) }];
    let now = Utc::now();
    let mut used = Vec::new();
    let kinds: &KindRegistry = node.events().lake().kinds();
    for grant in load(node.state().as_ref())? {
        let for_me = user.unit.as_deref() == Some(grant.grantee.as_str()) && grant.in_force(now);
        let for_basis = match legal_basis {
            Some(b) => grant.purposes.iter().any(|p| p == b),
            None => grant.purposes.is_empty(),
        };
        if !for_me || !for_basis {
            continue;
        }
        let Jurisdiction::Scopes(owner_scopes) = Jurisdiction::of_unit(&city, &grant.owner) else { continue };
        let grids = grids_of(&city, &owner_scopes);
        let shared: Vec<String> = kinds.names().filter(|k| kinds.get(k).is_some_and(|s| grant.classes.contains(&s.class))).map(str::to_string).collect();
        if grids.is_empty() || shared.is_empty() {
            continue;
        }
        parts.push(format!("(grid IN ({}) AND kind IN ({}))", quoted(&mut grids.iter()), quoted(&mut shared.iter())));
        used.push(grant);
    }
    Ok(Reach { condition: Some(format!("({})", parts.join(" OR "))), grants: used })
}

/// The routes; `crate::http::router` merges them.
pub(crate) fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/api/v1/grants", get(list).post(grant))
        .route("/api/v1/grants/{id}", delete(revoke))
        .route("/api/v1/grants/{id}/accesses", get(accesses))
}

/// Whether `user` may see `grant` and its accesses: a member of either unit, an
/// administrator or an auditor.
fn may_see(user: &User, grant: &Grant) -> bool {
    matches!(user.role, Role::Admin | Role::Auditor) || user.unit.as_deref().is_some_and(|u| u == grant.owner || u == grant.grantee)
}

async fn list(State(node): State<Arc<Node>>, Caller(user): Caller) -> Result<Json<Value>, ApiError> {
    let grants = blocking(move || Ok(load(node.state().as_ref())?.into_iter().filter(|g| may_see(&user, g)).collect::<Vec<_>>())).await?;
    Ok(Json(json!({ "items": grants })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGrant {
    owner: String,
    grantee: String,
    classes: Vec<String>,
    #[serde(default)]
    purposes: Vec<String>,
    until: String,
    reason: String,
}

async fn grant(State(node): State<Arc<Node>>, Caller(user): Caller, body: Body) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.0?;
    require(&user, &[Role::Admin], "the admin role")?;
    let asked: NewGrant = serde_json::from_slice(&body).map_err(|e| {
        NodeError::Invalid(format!("body must be {{\"owner\", \"grantee\", \"classes\", \"purposes\", \"until\", \"reason\"}}: {e}"))
    })?;
    let city = node.city();
    for (name, unit) in [("owner", &asked.owner), ("grantee", &asked.grantee)] {
        if city.unit(unit).is_none() {
            return Err(NodeError::Invalid(format!("`{name}`: no unit `{unit}` in the city model")).into());
        }
    }
    if asked.owner == asked.grantee {
        return Err(NodeError::Invalid("`owner` and `grantee` are the same unit; a unit sees its own data".into()).into());
    }
    let declared: BTreeSet<String> = {
        let kinds = node.events().lake().kinds();
        kinds.names().filter_map(|k| kinds.get(k)).map(|s| s.class.clone()).collect()
    };
    if asked.classes.is_empty() || asked.classes.iter().any(|c| !declared.contains(c)) {
        return Err(NodeError::Invalid(format!("`classes` must list data classes of this node: {}", declared.into_iter().collect::<Vec<_>>().join(", "))).into());
    }
    let bases = &node.config().search.legal_bases;
    if let Some(p) = asked.purposes.iter().find(|p| !bases.contains(p)) {
        return Err(NodeError::Invalid(format!("`purposes`: `{p}` is not one of the legal bases: {}", bases.join(", "))).into());
    }
    let until = parse_time(&asked.until).ok_or_else(|| NodeError::Invalid(format!("`until` must be an RFC 3339 time, not `{}`", asked.until)))?;
    if until <= Utc::now() || asked.reason.trim().is_empty() {
        return Err(NodeError::Invalid("a grant needs an `until` in the future and a `reason`".into()).into());
    }
    let made = Grant {
        id: format!("g{}", crate::auth::random_hex(8)?),
        owner: asked.owner,
        grantee: asked.grantee,
        classes: asked.classes,
        purposes: asked.purposes,
        until,
        reason: asked.reason.trim().to_string(),
        created_by: user.username.clone(),
        created_at: Utc::now(),
        revoked_at: None,
    };
    let stored = made.clone();
    blocking(move || {
        crate::stored_list::change(node.state().as_ref(), GRANTS_KEY, "sharing grants", |grants: &mut Vec<Grant>| {
            grants.push(stored.clone());
            Ok(())
        })?;
        node.desk().audit(&user.username, "grant.create", &stored.id, json!(stored));
        Ok(())
    })
    .await?;
    Ok((StatusCode::CREATED, Json(json!(made))))
}

async fn revoke(State(node): State<Arc<Node>>, Caller(user): Caller, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    require(&user, &[Role::Admin], "the admin role")?;
    let revoked = blocking(move || {
        let revoked = crate::stored_list::change(node.state().as_ref(), GRANTS_KEY, "sharing grants", |grants: &mut Vec<Grant>| {
            let grant = grants
                .iter_mut()
                .find(|g| g.id == id && g.revoked_at.is_none())
                .ok_or_else(|| NodeError::NotFound(format!("no sharing grant `{id}` in force; list them at GET /api/v1/grants")))?;
            grant.revoked_at = Some(Utc::now());
            Ok(grant.clone())
        })?;
        node.desk().audit(&user.username, "grant.revoke", &id, json!({"owner": revoked.owner, "grantee": revoked.grantee}));
        Ok(revoked)
    })
    .await?;
    Ok(Json(json!(revoked)))
}

/// Every audited read under the grant, newest first: what the owner sees of the use of
/// its data.
async fn accesses(State(node): State<Arc<Node>>, Caller(user): Caller, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let items = blocking(move || {
        let grant = load(node.state().as_ref())?
            .into_iter()
            .find(|g| g.id == id && may_see(&user, g))
            .ok_or_else(|| NodeError::NotFound(format!("no sharing grant `{id}` you may see")))?;
        let mut found = crate::transparency::scan_audit(node.state().as_ref(), |e| {
            e.detail["grants"].as_array().is_some_and(|g| g.iter().any(|x| x == grant.id.as_str()))
        })?;
        found.reverse();
        Ok(found)
    })
    .await?;
    Ok(Json(json!({ "items": items })))
}
