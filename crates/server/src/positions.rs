//! Where the moving things are now, for the live map: the last `gps` fix of every source,
//! taken from the node's bus of stored events and kept in memory only (the events
//! themselves are in the WAL and the lake).
//!
//! `GET /api/v1/city/positions` answers a GeoJSON FeatureCollection of the fixes of the
//! last ten minutes in the caller's jurisdiction: responders (registered for dispatch,
//! with their unit and availability) and vehicles (with class, speed and heading, never a
//! plate). The console polls it every second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Duration, Utc};
use cityward_alerts::{grid_scopes, Jurisdiction};
use cityward_model::{format_time, Event};
use serde_json::{json, Value};

use crate::http::{blocking, require, ApiError, Caller, ALERT_NEED, ALERT_ROLES};
use crate::node::Node;

/// Fixes older than this are not shown (the vehicle parked, or its tracker went quiet).
const FRESH_MINUTES: i64 = 10;
/// Sources kept at most; past it, fixes older than [`FRESH_MINUTES`] are dropped first.
const MAX_SOURCES: usize = 200_000;

/// The last fix of one source.
#[derive(Debug, Clone)]
struct Fix {
    time: DateTime<Utc>,
    lon: f64,
    lat: f64,
    grid: Option<String>,
    speed_kmh: Option<f64>,
    heading: Option<f64>,
    class: Option<String>,
}

/// Last fixes by source.
#[derive(Default)]
pub(crate) struct Positions {
    fixes: Mutex<HashMap<String, Fix>>,
}

impl Positions {
    /// Takes the `gps` fixes of stored events (a fix older than the one kept is ignored).
    pub(crate) fn apply(&self, events: &[Event]) {
        let mut fixes = self.fixes.lock().expect("positions lock");
        for e in events.iter().filter(|e| e.kind == "gps") {
            let (Some(lon), Some(lat)) = (e.lon, e.lat) else { continue };
            if fixes.get(&e.source).is_some_and(|f| f.time > e.time) {
                continue;
            }
            let number = |k: &str| e.attrs.get(k).and_then(Value::as_f64);
            let fix = Fix {
                time: e.time,
                lon,
                lat,
                grid: e.grid.clone(),
                speed_kmh: number("speed_kmh"),
                heading: number("heading"),
                class: e.attrs.get("class").and_then(Value::as_str).map(str::to_string),
            };
            fixes.insert(e.source.clone(), fix);
        }
        if fixes.len() > MAX_SOURCES {
            let cut = Utc::now() - Duration::minutes(FRESH_MINUTES);
            fixes.retain(|_, f| f.time >= cut);
        }
    }

    /// The fresh fixes as GeoJSON features; `responder` tells a registered responder's
    /// unit and availability, `visible` whether a grid is in the caller's jurisdiction.
    fn features(&self, now: DateTime<Utc>, responder: impl Fn(&str) -> Option<(String, String)>, visible: impl Fn(Option<&str>) -> bool) -> Vec<Value> {
        let cut = now - Duration::minutes(FRESH_MINUTES);
        let fixes = self.fixes.lock().expect("positions lock");
        fixes
            .iter()
            .filter(|(_, f)| f.time >= cut)
            .filter_map(|(id, f)| {
                let properties = match responder(id) {
                    Some((unit, status)) => json!({
                        "id": id, "kind": "responder", "time": format_time(&f.time), "unit": unit,
                        "available": status == "available", "status": status, "speed_kmh": f.speed_kmh, "heading": f.heading,
                    }),
                    None if visible(f.grid.as_deref()) => json!({
                        "id": id, "kind": "vehicle", "time": format_time(&f.time), "class": f.class,
                        "speed_kmh": f.speed_kmh, "heading": f.heading,
                    }),
                    None => return None,
                };
                Some(json!({"type": "Feature", "id": id, "geometry": {"type": "Point", "coordinates": [f.lon, f.lat]}, "properties": properties}))
            })
            .collect()
    }
}

/// Follows the node's stored events until it stops.
pub(crate) async fn run(node: Arc<Node>) {
    let mut bus = node.subscribe();
    loop {
        match bus.recv().await {
            Ok(batch) => node.positions().apply(&batch.events),
            // Missed batches: the next fixes of those sources put them right.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// The positions route; `crate::http::router` merges it.
pub(crate) fn routes() -> Router<Arc<Node>> {
    Router::new().route("/api/v1/city/positions", get(positions))
}

async fn positions(State(node): State<Arc<Node>>, Caller(user): Caller) -> Result<Response, ApiError> {
    require(&user, ALERT_ROLES, ALERT_NEED)?;
    let body = blocking(move || {
        let city = node.city();
        let jurisdiction = node.desk().jurisdiction(&user);
        let responders = crate::dispatch::Dispatch::of(&node)?.responders_seen_by(&city, &jurisdiction);
        let visible_grids: std::collections::HashSet<&str> = city
            .grids
            .iter()
            .filter(|g| matches!(jurisdiction, Jurisdiction::City) || jurisdiction.sees(&grid_scopes(&city, &g.id)))
            .map(|g| g.id.as_str())
            .collect();
        let whole_city = matches!(jurisdiction, Jurisdiction::City);
        let features = node.positions().features(
            Utc::now(),
            |id| responders.get(id).cloned(),
            |grid| whole_city || grid.is_some_and(|g| visible_grids.contains(g)),
        );
        Ok(json!({"type": "FeatureCollection", "features": features}).to_string())
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "application/geo+json")], body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix(source: &str, secs: i64, lon: f64) -> Event {
        let mut e = Event::new(source, "gps", Utc::now() - Duration::seconds(secs));
        e.lon = Some(lon);
        e.lat = Some(31.2);
        e.grid = Some("g-1".into());
        e.attrs.insert("plate".into(), json!("沪A12345"));
        e.attrs.insert("class".into(), json!("hazmat"));
        e
    }

    #[test]
    fn the_last_fix_wins_and_an_older_one_arriving_late_does_not_move_it_back() {
        let p = Positions::default();
        p.apply(&[fix("truck-1", 20, 121.0), fix("truck-1", 10, 121.1)]);
        p.apply(&[fix("truck-1", 15, 121.05)]);
        let f = p.features(Utc::now(), |_| None, |_| true);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0]["geometry"]["coordinates"][0], 121.1);
        assert_eq!(f[0]["properties"]["class"], "hazmat");
        assert!(f[0]["properties"].get("plate").is_none(), "no plate on the map");
    }

    #[test]
    fn stale_fixes_and_other_jurisdictions_are_left_out_responders_are_tagged() {
        let p = Positions::default();
        p.apply(&[fix("truck-1", 60 * 11, 121.0), fix("truck-2", 5, 121.0), fix("r-1", 5, 121.0)]);
        let responder = |id: &str| (id == "r-1").then(|| ("u-1".to_string(), "available".to_string()));
        let f = p.features(Utc::now(), responder, |_| false);
        assert_eq!(f.len(), 1, "truck-1 is stale, truck-2 outside: {f:?}");
        assert_eq!(f[0]["properties"]["kind"], "responder");
        assert_eq!(f[0]["properties"]["available"], true);
    }
}
