//! Dispatch at the node: the registry of responders, their positions from their own devices,
//! and recommendations of whom to send to an alert.
//!
//! Responders are registered through the API (`PUT /api/v1/responders/{id}` with their unit,
//! name and availability) by an administrator or by a dispatcher whose jurisdiction holds the
//! unit; the registry is kept as JSON in the state store's meta table under
//! [`REGISTRY_KEY`]. A responder's id is the `source` of their device's events: [`run`]
//! follows the node's bus of stored events and takes the position of every `gps` event from
//! a registered responder. Only the last position is kept, in memory (the events themselves
//! are in the lake like any others); after a restart a responder counts again from their
//! next fix. Availability is set by the responder themself (a `responder` user whose name is
//! the responder id) or by a dispatcher (`POST /api/v1/responders/{id}/status`).
//!
//! `GET /api/v1/alerts/{id}/recommendations?k=5` answers the `k` available responders with a
//! fresh position nearest to the alert's place by travel time over the city's roads (see
//! `cityward_alerts::recommend`), for whoever may see the alert. The road network is built
//! from the city on first use and again after the city changes.
//!
//! The state is opened on first use ([`Dispatch::of`]) and kept by the node.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use cityward_alerts::{recommend, Availability, DispatchConfig, Jurisdiction, Responders, RoadNetwork};
use cityward_model::{City, Event};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::http::{blocking, require, ApiError, Caller, ALERT_NEED, ALERT_ROLES};
use crate::node::{Node, NodeError, Role, User};

/// The state store's meta key of the responder registry.
const REGISTRY_KEY: &str = "responders";

/// The most responders one recommendation answers.
const MAX_K: usize = 50;

/// The longest responder id, in characters.
const MAX_ID_CHARS: usize = 128;

/// The dispatch routes; `crate::http::router` merges them.
pub(crate) fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/api/v1/responders", get(list_responders))
        .route("/api/v1/responders/{id}", put(put_responder))
        .route("/api/v1/responders/{id}/status", post(set_status))
        .route("/api/v1/alerts/{id}/recommendations", get(recommendations))
}

/// A registered responder as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Registered {
    id: String,
    unit: String,
    name: String,
    status: Availability,
    #[serde(with = "cityward_model::event::rfc3339")]
    changed_at: DateTime<Utc>,
    changed_by: String,
}

/// The dispatch state of one node.
pub(crate) struct Dispatch {
    config: DispatchConfig,
    /// As stored under [`REGISTRY_KEY`], by id; held while the stored copy is written.
    registry: Mutex<BTreeMap<String, Registered>>,
    /// Availability and last positions; held only briefly (the event bus applies to it).
    live: Mutex<Responders>,
    /// The road network and the city it was built from.
    roads: Mutex<Option<(Arc<City>, Arc<RoadNetwork>)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Dispatch {
    /// The dispatch state of `node`, opened (the registry read from the state store) on
    /// first use. Blocking on first use.
    pub(crate) fn of(node: &Arc<Node>) -> Result<Arc<Dispatch>, NodeError> {
        if let Some(d) = node.dispatch_slot().get() {
            return Ok(d.clone());
        }
        let d = Arc::new(Dispatch::open(node, node.config().dispatch.clone())?);
        Ok(node.dispatch_slot().get_or_init(|| d).clone())
    }

    fn open(node: &Node, config: DispatchConfig) -> Result<Dispatch, NodeError> {
        let stored: Vec<Registered> = match node.state().meta_get(REGISTRY_KEY)? {
            Some(text) => serde_json::from_str(&text).map_err(|e| {
                NodeError::Internal(format!("the stored responder registry (meta `{REGISTRY_KEY}`) is unreadable: {e}"))
            })?,
            None => Vec::new(),
        };
        let mut live = Responders::new(config.clone());
        for r in &stored {
            live.register(&r.id, &r.unit, &r.name, r.status);
        }
        tracing::info!(responders = stored.len(), "Responder registry loaded.");
        Ok(Dispatch {
            config,
            registry: Mutex::new(stored.into_iter().map(|r| (r.id.clone(), r)).collect()),
            live: Mutex::new(live),
            roads: Mutex::new(None),
        })
    }

    /// The road network of `city`, built on first use for each city.
    fn roads(&self, city: Arc<City>) -> Arc<RoadNetwork> {
        let mut roads = lock(&self.roads);
        match &*roads {
            Some((built_for, net)) if Arc::ptr_eq(built_for, &city) => net.clone(),
            _ => {
                let started = std::time::Instant::now();
                let net = Arc::new(RoadNetwork::new(&city.roads, &self.config));
                tracing::info!(
                    nodes = net.node_count(),
                    segments = net.edge_count(),
                    ms = started.elapsed().as_millis() as u64,
                    "Road network for dispatch built."
                );
                *roads = Some((city, net.clone()));
                net
            }
        }
    }

    /// Takes the positions of registered responders from stored events; answers how many.
    fn apply(&self, events: &[Event]) -> usize {
        if !events.iter().any(|e| e.kind == "gps") {
            return 0;
        }
        let mut live = lock(&self.live);
        events.iter().filter(|e| live.apply(e)).count()
    }

    /// Changes the registry, stores it, and then applies the change to the live state.
    fn store<T>(
        &self,
        node: &Node,
        change: impl FnOnce(&mut BTreeMap<String, Registered>) -> Result<T, NodeError>,
    ) -> Result<T, NodeError> {
        let mut registry = lock(&self.registry);
        let mut next = registry.clone();
        let out = change(&mut next)?;
        let list: Vec<&Registered> = next.values().collect();
        let text = serde_json::to_string(&list).map_err(|e| NodeError::Internal(e.to_string()))?;
        node.state().meta_set(REGISTRY_KEY, &text)?;
        let mut live = lock(&self.live);
        for r in next.values() {
            live.register(&r.id, &r.unit, &r.name, r.status);
        }
        *registry = next;
        Ok(out)
    }

    /// The responders of the units `jurisdiction` holds: id → (unit, availability).
    pub(crate) fn responders_seen_by(&self, city: &City, jurisdiction: &Jurisdiction) -> std::collections::HashMap<String, (String, String)> {
        lock(&self.registry)
            .values()
            .filter(|r| covers(city, jurisdiction, &r.unit))
            .map(|r| (r.id.clone(), (r.unit.clone(), r.status.as_str().to_string())))
            .collect()
    }

    /// The responder as the API shows it.
    fn view(&self, r: &Registered, now: DateTime<Utc>) -> Value {
        let live = lock(&self.live);
        let known = live.get(&r.id);
        let fix = known.and_then(|k| k.fix);
        let age = known.and_then(|k| k.age(now));
        json!({
            "id": r.id,
            "unit": r.unit,
            "name": r.name,
            "status": r.status,
            "position": fix,
            "age_s": age.map(|a| a.as_secs()),
            "stale": known.is_none_or(|k| live.is_stale(k, now)),
            "changed_at": cityward_model::format_time(&r.changed_at),
            "changed_by": r.changed_by,
        })
    }
}

/// Whether `jurisdiction` holds `unit`: the unit itself, or a unit whose region lies in it.
fn covers(city: &City, jurisdiction: &Jurisdiction, unit: &str) -> bool {
    let mut scopes = vec![format!("unit:{unit}")];
    if let Some(region) = city.unit(unit).and_then(|u| u.region.as_deref()) {
        scopes.extend(city.region_chain(region).iter().map(|r| format!("region:{}", r.id)));
    }
    jurisdiction.sees(&scopes)
}

fn check_id(id: &str) -> Result<(), NodeError> {
    if id.trim().is_empty() || id.chars().count() > MAX_ID_CHARS || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(NodeError::Invalid(format!(
            "responder id `{}` is not usable; use the `source` of the responder's device events: 1 to {MAX_ID_CHARS} characters, no spaces",
            id.chars().take(64).collect::<String>()
        )));
    }
    Ok(())
}

/// The body of `PUT /api/v1/responders/{id}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResponderBody {
    /// The unit the responder belongs to (a unit of the city).
    unit: String,
    /// Display name (the id when absent).
    name: Option<String>,
    /// `available` (default), `busy` or `off_duty`.
    status: Option<String>,
}

/// The body of `POST /api/v1/responders/{id}/status`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusBody {
    /// `available`, `busy` or `off_duty`.
    status: String,
}

/// Registers or changes responder `id` for `user`; answers whether it is new, and the view.
fn register(node: &Arc<Node>, user: &User, id: &str, body: ResponderBody) -> Result<(bool, Value), NodeError> {
    check_id(id)?;
    let city = node.city();
    if city.unit(&body.unit).is_none() {
        let some: Vec<&str> = city.units.iter().take(3).map(|u| u.id.as_str()).collect();
        return Err(NodeError::Invalid(format!(
            "unit `{}` is not a unit of the city; use the id of a unit in units.csv (such as {})",
            body.unit,
            some.join(", ")
        )));
    }
    let status = Availability::parse(body.status.as_deref().unwrap_or("available")).map_err(NodeError::Invalid)?;
    let name = body.name.map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).unwrap_or_else(|| id.to_string());
    let jurisdiction = node.desk().jurisdiction(user);
    if !covers(&city, &jurisdiction, &body.unit) {
        return Err(NodeError::Forbidden(format!(
            "unit `{}` is outside your jurisdiction; register responders of your own units, or ask an admin",
            body.unit
        )));
    }
    let dispatch = Dispatch::of(node)?;
    let now = Utc::now();
    let (created, stored) = dispatch.store(node, |registry| {
        if let Some(old) = registry.get(id) {
            if !covers(&city, &jurisdiction, &old.unit) {
                return Err(NodeError::Forbidden(format!(
                    "responder `{id}` belongs to unit `{}`, outside your jurisdiction; ask a dispatcher of that unit or an admin",
                    old.unit
                )));
            }
        }
        let r = Registered { id: id.to_string(), unit: body.unit.clone(), name, status, changed_at: now, changed_by: user.username.clone() };
        let created = registry.insert(id.to_string(), r.clone()).is_none();
        Ok((created, r))
    })?;
    tracing::info!(responder = %id, unit = %stored.unit, status = stored.status.as_str(), user = %user.username, "Responder registered.");
    node.desk().audit(&user.username, "responder.put", id, json!({"unit": stored.unit, "name": stored.name, "status": stored.status}));
    Ok((created, dispatch.view(&stored, now)))
}

/// Sets the availability of responder `id` for `user`: an admin, a dispatcher whose
/// jurisdiction holds the responder's unit, or the responder themself.
fn change_status(node: &Arc<Node>, user: &User, id: &str, status: &str) -> Result<Value, NodeError> {
    let status = Availability::parse(status).map_err(NodeError::Invalid)?;
    let city = node.city();
    let jurisdiction = node.desk().jurisdiction(user);
    let dispatch = Dispatch::of(node)?;
    let now = Utc::now();
    let stored = dispatch.store(node, |registry| {
        let missing = || NodeError::NotFound(format!("no responder `{id}` in your jurisdiction; register one with PUT /api/v1/responders/{{id}}"));
        let r = registry.get_mut(id).ok_or_else(missing)?;
        let may = match user.role {
            Role::Admin => true,
            Role::Dispatcher if covers(&city, &jurisdiction, &r.unit) => true,
            Role::Dispatcher => return Err(missing()),
            Role::Responder => user.username == id,
            _ => false,
        };
        if !may {
            return Err(NodeError::Forbidden(format!(
                "only responder `{id}` themself (a responder user named `{id}`), a dispatcher of their unit or an admin may set their availability"
            )));
        }
        r.status = status;
        r.changed_at = now;
        r.changed_by = user.username.clone();
        Ok(r.clone())
    })?;
    tracing::info!(responder = %id, status = status.as_str(), user = %user.username, "Responder availability changed.");
    node.desk().audit(&user.username, "responder.status", id, json!({"status": status}));
    Ok(dispatch.view(&stored, now))
}

/// The responders of the units in `user`'s jurisdiction.
fn list(node: &Arc<Node>, user: &User) -> Result<Value, NodeError> {
    let city = node.city();
    let jurisdiction = node.desk().jurisdiction(user);
    let dispatch = Dispatch::of(node)?;
    let now = Utc::now();
    let registry = lock(&dispatch.registry).clone();
    let items: Vec<Value> =
        registry.values().filter(|r| covers(&city, &jurisdiction, &r.unit)).map(|r| dispatch.view(r, now)).collect();
    Ok(json!({"items": items, "next": null}))
}

/// The `k` nearest available responders to alert `id`, if `user` may see it.
fn recommend_for(node: &Arc<Node>, user: &User, id: &str, k: usize) -> Result<Value, NodeError> {
    let alert = node.alert(user, id)?;
    let (Some(lon), Some(lat)) = (alert.get("lon").and_then(Value::as_f64), alert.get("lat").and_then(Value::as_f64)) else {
        return Err(NodeError::Conflict(format!(
            "alert `{id}` has no place (no lon/lat), so no responder can be measured to it; choose responders yourself and send them with POST /api/v1/alerts/{id}/dispatch"
        )));
    };
    let dispatch = Dispatch::of(node)?;
    let roads = dispatch.roads(node.city());
    let candidates = lock(&dispatch.live).candidates(Utc::now());
    let recs = recommend(&roads, &dispatch.config, (lon, lat), &candidates, k);
    node.metrics().add("cityward_dispatch_recommendations_total", &[("by", recs.by.as_str())], 1.0);
    Ok(json!({"alert": id, "lon": lon, "lat": lat, "by": recs.by, "items": recs.items, "next": null}))
}

/// Follows the node's stored events and takes responders' positions from them, until the
/// node stops.
pub(crate) async fn run(node: Arc<Node>) {
    let mut bus = node.subscribe();
    let opened = {
        let node = node.clone();
        tokio::task::spawn_blocking(move || {
            let dispatch = Dispatch::of(&node)?;
            // Built now rather than at the first request.
            dispatch.roads(node.city());
            Ok::<_, NodeError>(dispatch)
        })
        .await
    };
    let dispatch = match opened {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "Dispatch could not start; responders' positions are not followed. Fix the registry and restart the node.");
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "Dispatch could not start; responders' positions are not followed. Restart the node.");
            return;
        }
    };
    loop {
        match bus.recv().await {
            Ok(batch) => {
                let taken = dispatch.apply(&batch.events);
                if taken > 0 {
                    node.metrics().add("cityward_dispatch_positions_total", &[], taken as f64);
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(batches = missed, "Dispatch fell behind the event bus; responders' positions catch up with their next fixes.");
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Handlers.
// ---------------------------------------------------------------------------------------

const REGISTRY_ROLES: &[Role] = &[Role::Admin, Role::Dispatcher];
const LIST_ROLES: &[Role] = &[Role::Admin, Role::Dispatcher, Role::Responder];

/// A JSON body, or an error that shows what to send.
fn json_body<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>, shape: &str) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(status, "too_large", format!("the body is too large; send {shape}"))
        } else {
            ApiError::new(status, "invalid_input", format!("the body could not be read: {rejection}; send {shape}"))
        }
    })?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", format!("the body is not valid: {e}; send {shape}")))
}

async fn list_responders(State(node): State<Arc<Node>>, Caller(user): Caller) -> Result<Json<Value>, ApiError> {
    require(&user, LIST_ROLES, "the admin, dispatcher or responder role")?;
    Ok(Json(blocking(move || list(&node, &user)).await?))
}

async fn put_responder(
    State(node): State<Arc<Node>>,
    Caller(user): Caller,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require(&user, REGISTRY_ROLES, "the admin or dispatcher role")?;
    let body: ResponderBody =
        json_body(body, r#"{"unit": "UNIT ID", "name": "…", "status": "available|busy|off_duty"}"#)?;
    let (created, view) = blocking(move || register(&node, &user, &id, body)).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(view)))
}

async fn set_status(
    State(node): State<Arc<Node>>,
    Caller(user): Caller,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    require(&user, LIST_ROLES, "the admin, dispatcher or responder role")?;
    let body: StatusBody = json_body(body, r#"{"status": "available|busy|off_duty"}"#)?;
    Ok(Json(blocking(move || change_status(&node, &user, &id, &body.status)).await?))
}

async fn recommendations(
    State(node): State<Arc<Node>>,
    Caller(user): Caller,
    Path(id): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    require(&user, ALERT_ROLES, ALERT_NEED)?;
    let bad_k = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            format!("`k` is how many responders to recommend: a whole number from 1 to {MAX_K}, e.g. ?k=5"),
        )
    };
    let Query(query) = query.map_err(|_| bad_k())?;
    let k = match query.get("k") {
        None => 5,
        Some(text) => text.trim().parse::<usize>().ok().filter(|k| (1..=MAX_K).contains(k)).ok_or_else(bad_k)?,
    };
    Ok(Json(blocking(move || recommend_for(&node, &user, &id, k)).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jurisdiction_holds_its_own_unit_and_the_units_of_its_regions() {
        let city = cityward_sim::generate_city(3, cityward_sim::Size::Small);
        let community = city.units.iter().find(|u| u.kind == "community").unwrap();
        let region = community.region.clone().unwrap();
        let district = city.region_chain(&region).last().unwrap().id.clone();
        let district_unit = format!("unit-{district}");
        let fire = format!("fire-{district}");
        let of = |unit: &str| Jurisdiction::of_unit(&city, unit);
        assert!(covers(&city, &of(&district_unit), &fire), "a district office holds its district's brigade");
        assert!(covers(&city, &of(&district_unit), &community.id), "and the communities in it");
        assert!(!covers(&city, &of(&community.id), &fire), "a community does not hold its district's brigade");
        assert!(covers(&city, &of(&community.id), &community.id));
        assert!(!covers(&city, &of(&district_unit), "fire-city"), "nor a region the city-wide command");
        assert!(covers(&city, &Jurisdiction::City, "fire-city"));
    }

    #[test]
    fn responder_ids_are_event_sources() {
        assert!(check_id("engine-7").is_ok());
        assert!(check_id("消防-7").is_ok());
        for bad in ["", " ", "engine 7", &"x".repeat(MAX_ID_CHARS + 1)] {
            let err = check_id(bad).unwrap_err().to_string();
            assert!(err.contains("no spaces"), "{bad:?}: {err}");
        }
    }
}
