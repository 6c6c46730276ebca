//! Unit tests of the detection engine on hand-built cities and event sequences.
//!
//! Shared helpers live here; the tests are grouped by rule kind and concern in `tests/`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use cityward_model::city::{Device, Grid, Level, Region, Road, Zone};
use cityward_model::geo::{BBox, Geometry, MultiPolygon, Polygon};
use cityward_model::{City, Event};
use serde_json::{json, Map, Value};

use crate::{compile_rules, Alert, AlertBook, Engine, EngineConfig, Output, Rule};

mod absence;
mod checkpoint;
mod count;
mod determinism;
mod geofence;
mod match_hotlist;
mod motion;
mod rules;
mod sequence;
mod sql;
mod threshold;

/// Seconds after the test epoch (2026-03-02T00:00:00Z, a Monday).
pub(crate) fn at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap() + chrono::Duration::seconds(secs)
}

/// Milliseconds after the test epoch.
pub(crate) fn at_ms(ms: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap() + chrono::Duration::milliseconds(ms)
}

pub(crate) const MIN: i64 = 60;
pub(crate) const HOUR: i64 = 3600;

/// An event with its id set.
pub(crate) fn ev(id: &str, source: &str, kind: &str, secs: i64) -> Event {
    let mut e = Event::new(source, kind, at(secs));
    e.id = id.to_string();
    e
}

/// The same, with the event's grid set.
pub(crate) fn ev_grid(id: &str, source: &str, kind: &str, secs: i64, grid: &str) -> Event {
    let mut e = ev(id, source, kind, secs);
    e.grid = Some(grid.to_string());
    e
}

fn rect(x0: f64, y0: f64, x1: f64, y1: f64) -> Polygon {
    Polygon::rect(BBox::new(x0, y0, x1, y1))
}

fn zone(id: &str, kind: &str, geometry: Geometry, width_m: Option<f64>, props: Value) -> Zone {
    let properties: Map<String, Value> = match props {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    Zone {
        id: id.to_string(),
        name: format!("Zone {id}"),
        kind: kind.to_string(),
        geometry,
        width_m,
        properties,
    }
}

// Places in the test city (lon, lat).
/// Inside `school-a` (and grid g1).
pub(crate) const IN_SCHOOL_A: (f64, f64) = (121.405, 31.205);
/// Inside `school-b`.
pub(crate) const IN_SCHOOL_B: (f64, f64) = (121.425, 31.205);
/// Outside every zone (between the schools).
pub(crate) const OUTSIDE: (f64, f64) = (121.415, 31.205);
/// In the ring of `donut` (inside).
pub(crate) const IN_DONUT_RING: (f64, f64) = (121.442, 31.21);
/// In the hole of `donut` (outside).
pub(crate) const IN_DONUT_HOLE: (f64, f64) = (121.45, 31.21);
/// In the first part of the multipolygon `twin`.
pub(crate) const IN_TWIN_1: (f64, f64) = (121.475, 31.205);
/// In the second part of `twin`.
pub(crate) const IN_TWIN_2: (f64, f64) = (121.495, 31.205);
/// Between the two parts of `twin` (outside).
pub(crate) const BETWEEN_TWINS: (f64, f64) = (121.485, 31.205);

/// A small city: one district, two grids, zones of every shape the rules use, two roads
/// and one registered device.
///
/// Zones:
/// - `school-a`, `school-b`: kind `school`, rectangles;
/// - `donut`: kind `restricted`, a rectangle with a rectangular hole;
/// - `twin`: kind `depot`, a MultiPolygon of two rectangles;
/// - `slow` (speed_limit_kmh 30) containing `slower` (speed_limit_kmh 20): kind `limit`;
/// - `route-1` along lat 31.30 and `route-2` along lat 31.32, lon 121.40–121.45: corridors
///   100 m wide;
/// - `tri`: kind `tri`, a triangle (121.6,31.2) (121.7,31.2) (121.6,31.3).
///
/// Roads: `r-fast` (80 km/h) along lat 31.35, `r-slow` (40 km/h) along lat 31.36, both
/// lon 121.40–121.45.
pub(crate) fn city() -> City {
    let region = Region {
        id: "d1".into(),
        name: "District 1".into(),
        level: Level::District,
        parent: None,
        area: rect(121.3, 31.1, 121.8, 31.5).into(),
    };
    let grids = vec![
        Grid {
            id: "g1".into(),
            region: "d1".into(),
            area: rect(121.3, 31.1, 121.55, 31.5).into(),
        },
        Grid {
            id: "g2".into(),
            region: "d1".into(),
            area: rect(121.55, 31.1, 121.8, 31.5).into(),
        },
    ];
    let zones = vec![
        zone("school-a", "school", Geometry::Polygon(rect(121.40, 31.20, 121.41, 31.21)), None, json!({})),
        zone("school-b", "school", Geometry::Polygon(rect(121.42, 31.20, 121.43, 31.21)), None, json!({})),
        zone(
            "donut",
            "restricted",
            Geometry::Polygon(Polygon::new(
                vec![(121.44, 31.20), (121.46, 31.20), (121.46, 31.22), (121.44, 31.22)],
                vec![vec![(121.445, 31.205), (121.455, 31.205), (121.455, 31.215), (121.445, 31.215)]],
            )),
            None,
            json!({}),
        ),
        zone(
            "twin",
            "depot",
            Geometry::MultiPolygon(MultiPolygon::new(vec![
                rect(121.47, 31.20, 121.48, 31.21),
                rect(121.49, 31.20, 121.50, 31.21),
            ])),
            None,
            json!({}),
        ),
        zone("slow", "limit", Geometry::Polygon(rect(121.40, 31.25, 121.42, 31.27)), None, json!({"speed_limit_kmh": 30})),
        zone("slower", "limit", Geometry::Polygon(rect(121.405, 31.255, 121.41, 31.26)), None, json!({"speed_limit_kmh": 20.0})),
        zone("route-1", "corridor", Geometry::LineString(vec![(121.40, 31.30), (121.45, 31.30)]), Some(100.0), json!({})),
        zone("route-2", "corridor", Geometry::LineString(vec![(121.40, 31.32), (121.45, 31.32)]), Some(100.0), json!({})),
        zone(
            "tri",
            "tri",
            Geometry::Polygon(Polygon::new(vec![(121.6, 31.2), (121.7, 31.2), (121.6, 31.3)], vec![])),
            None,
            json!({}),
        ),
    ];
    let roads = vec![
        Road {
            id: "r-fast".into(),
            name: "Fast road".into(),
            speed_limit_kmh: 80.0,
            class: "arterial".into(),
            line: vec![(121.40, 31.35), (121.45, 31.35)],
        },
        Road {
            id: "r-slow".into(),
            name: "Slow road".into(),
            speed_limit_kmh: 40.0,
            class: "local".into(),
            line: vec![(121.40, 31.36), (121.45, 31.36)],
        },
    ];
    let devices = vec![Device {
        id: "dev-1".into(),
        kind: "smoke".into(),
        lon: 121.405,
        lat: 31.205,
        grid: "g1".into(),
        owner_unit: None,
    }];
    City::from_parts(vec![region], grids, zones, roads, vec![], devices).expect("the test city is valid")
}

/// Rules compiled against the test city; panics with the error.
pub(crate) fn rules(yaml: &str) -> Vec<Rule> {
    compile_rules(yaml, None, &city()).unwrap_or_else(|e| panic!("rules do not compile: {e}"))
}

/// The default engine config with the given lateness.
pub(crate) fn config(lateness_s: u64) -> EngineConfig {
    EngineConfig {
        lateness: Duration::from_secs(lateness_s),
        ..EngineConfig::default()
    }
}

/// An engine over the test city with default config (5 s lateness).
pub(crate) fn engine(yaml: &str) -> Engine {
    Engine::new(EngineConfig::default(), Arc::new(city()), rules(yaml))
}

/// An engine with the given config.
pub(crate) fn engine_with(config: EngineConfig, yaml: &str) -> Engine {
    Engine::new(config, Arc::new(city()), rules(yaml))
}

/// Processes the events and returns what the engine said.
pub(crate) fn feed(engine: &mut Engine, events: &[Event]) -> Vec<Output> {
    for e in events {
        engine.process(e);
    }
    engine.drain()
}

/// Processes the events, then finishes with a horizon, and returns every output.
pub(crate) fn run_all(engine: &mut Engine, events: &[Event], horizon_s: u64) -> Vec<Output> {
    for e in events {
        engine.process(e);
    }
    engine.finish(Duration::from_secs(horizon_s));
    engine.drain()
}

/// The raised alerts among outputs, in order.
pub(crate) fn raised(outputs: &[Output]) -> Vec<Alert> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Raised(a) => Some(a.clone()),
            _ => None,
        })
        .collect()
}

/// The raised alerts of one rule.
pub(crate) fn raised_by(outputs: &[Output], rule: &str) -> Vec<Alert> {
    raised(outputs).into_iter().filter(|a| a.rule == rule).collect()
}

/// Cleared outputs: (alert id, time).
pub(crate) fn cleared(outputs: &[Output]) -> Vec<(String, DateTime<Utc>)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Cleared { alert, time } => Some((alert.clone(), *time)),
            _ => None,
        })
        .collect()
}

/// Repeated outputs: (alert id, count, evidence).
pub(crate) fn repeated(outputs: &[Output]) -> Vec<(String, u64, Vec<String>)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Repeated { alert, count, evidence, .. } => Some((alert.clone(), *count, evidence.clone())),
            _ => None,
        })
        .collect()
}

/// The final state of every alert, in the book's deterministic order.
pub(crate) fn book(outputs: Vec<Output>) -> Vec<Alert> {
    let mut book = AlertBook::new();
    for o in outputs {
        book.apply(o, 20);
    }
    book.into_sorted()
}

/// Rule, key, time, evidence and id of an alert.
pub(crate) type Essence = (String, String, DateTime<Utc>, Vec<String>, String);

/// The comparable essence of alerts: rule, key, time, evidence, id.
pub(crate) fn essence(alerts: &[Alert]) -> Vec<Essence> {
    alerts
        .iter()
        .map(|a| (a.rule.clone(), a.key.clone(), a.time, a.evidence.clone(), a.id.clone()))
        .collect()
}

/// Evidence ids as `&str`s, for short assertions.
pub(crate) fn ids(alert: &Alert) -> Vec<&str> {
    alert.evidence.iter().map(String::as_str).collect()
}
