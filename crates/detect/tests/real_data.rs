//! The detection engine on real data: a day's GPS fixes of the buses of one Liverpool route,
//! and the district polygons of Ningbo and Shanghai (in GCJ-02).
//!
//! Every expectation here is computed in this file, independently of the crate: point in
//! polygon by our own ray casting, speeds by our own haversine, and the enter/exit, dwell,
//! speeding and fatigue rules re-derived from their documented semantics. The engine's
//! alerts must match exactly: keys, zones, times, places and evidence ids.
//!
//! Data, copied from the project's shared real-data folder into `tests/data/real/` (its README's
//! source lines, kept as it asks):
//!
//! | folder | what | source and licence | notes |
//! |---|---|---|---|
//! | `liverpool_bus/route14_outbound.csv` | 1,533 GPS fixes of one bus on route 14, Liverpool, 2026-01-26 | UK Bus Open Data Service, Crown copyright, Open Government Licence (via the movingpandas-examples repository, BSD-3) | WGS84; fixes ~20 s apart; real GPS noise, stops and gaps |
//! | `china_districts/ningbo_330200.json`, `shanghai_310000.json` | district polygons of Ningbo and Shanghai (GeoJSON, MultiPolygon, with `adcode`, `name`, `level`, `parent`) | Aliyun DataV atlas, via the GeoMapData_CN repository | coordinates are **GCJ-02**, not WGS84: convert before testing GPS against them |
//!
//! (The bus file in fact holds 8 vehicles on 16 trips; fixes are keyed by `vehicle_id`.
//! Its timestamps are UK local time, which is UTC in January.)

use std::collections::{BTreeMap, HashMap, HashSet};
use std::f64::consts::PI;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use cityward_detect::{compile_rules, Alert, AlertBook, Engine, EngineConfig, EngineStats, Output};
use cityward_model::city::Zone;
use cityward_model::geo::Geometry;
use cityward_model::{gcj02_to_wgs84, wgs84_to_gcj02, City, Crs, Event};
use serde_json::{json, Map, Value};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/real");

fn data_file(rel: &str) -> PathBuf {
    let path = PathBuf::from(DATA).join(rel);
    assert!(
        path.is_file(),
        "real data file {} is missing: these tests read crates/detect/tests/data/real/",
        path.display()
    );
    path
}

fn ms_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().expect("a valid time")
}

// ---------------------------------------------------------------------------------------
// Our own geometry (deliberately not the crate's).
// ---------------------------------------------------------------------------------------

type Pt = (f64, f64);

/// The sphere of `cityward_model::geo` (IUGG mean radius), so derived speeds are comparable.
const EARTH_R: f64 = 6_371_008.8;
const M_PER_DEG: f64 = EARTH_R * PI / 180.0;

fn haversine(a: Pt, b: Pt) -> f64 {
    let (p1, p2) = (a.1.to_radians(), b.1.to_radians());
    let dp = p2 - p1;
    let dl = (b.0 - a.0).to_radians();
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_R * h.sqrt().asin()
}

/// The point `east` metres east and `north` metres north of `p`.
fn offset(p: Pt, east: f64, north: f64) -> Pt {
    (
        p.0 + east / (M_PER_DEG * p.1.to_radians().cos()),
        p.1 + north / M_PER_DEG,
    )
}

/// Even-odd ray casting towards +x; the ring may be open or closed.
fn ray_cast(ring: &[Pt], p: Pt) -> bool {
    let n = ring.len();
    if n < 3 {
        return false;
    }
    let mut inside = false;
    let mut j = n - 1;
    for i in 0..n {
        let (xi, yi) = ring[i];
        let (xj, yj) = ring[j];
        if (yi > p.1) != (yj > p.1) {
            let x_cross = xi + (p.1 - yi) / (yj - yi) * (xj - xi);
            if p.0 < x_cross {
                inside = !inside;
            }
        }
        j = i;
    }
    inside
}

/// Distance in metres from `p` to the segment `a`–`b`, in a flat projection around `p`.
fn segment_distance(p: Pt, a: Pt, b: Pt) -> f64 {
    let kx = M_PER_DEG * p.1.to_radians().cos();
    let (ax, ay) = ((a.0 - p.0) * kx, (a.1 - p.1) * M_PER_DEG);
    let (bx, by) = ((b.0 - p.0) * kx, (b.1 - p.1) * M_PER_DEG);
    let (dx, dy) = (bx - ax, by - ay);
    let len2 = dx * dx + dy * dy;
    let t = if len2 == 0.0 {
        0.0
    } else {
        (-(ax * dx + ay * dy) / len2).clamp(0.0, 1.0)
    };
    (ax + t * dx).hypot(ay + t * dy)
}

/// An area: parts, each a list of rings, exterior first (holes after).
#[derive(Debug, Clone)]
struct Area {
    parts: Vec<Vec<Vec<Pt>>>,
    bbox: (f64, f64, f64, f64),
}

impl Area {
    fn new(parts: Vec<Vec<Vec<Pt>>>) -> Area {
        let mut bbox = (
            f64::INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        );
        for p in parts.iter().flat_map(|rings| rings[0].iter()) {
            bbox = (
                bbox.0.min(p.0),
                bbox.1.min(p.1),
                bbox.2.max(p.0),
                bbox.3.max(p.1),
            );
        }
        Area { parts, bbox }
    }

    fn in_bbox(&self, p: Pt, margin_deg: f64) -> bool {
        p.0 >= self.bbox.0 - margin_deg
            && p.1 >= self.bbox.1 - margin_deg
            && p.0 <= self.bbox.2 + margin_deg
            && p.1 <= self.bbox.3 + margin_deg
    }

    fn contains(&self, p: Pt) -> bool {
        self.in_bbox(p, 0.0)
            && self
                .parts
                .iter()
                .any(|rings| rings.iter().filter(|r| ray_cast(r, p)).count() % 2 == 1)
    }

    fn edge_distance(&self, p: Pt) -> f64 {
        let mut best = f64::INFINITY;
        for ring in self.parts.iter().flatten() {
            for i in 0..ring.len() {
                let a = ring[i];
                let b = ring[(i + 1) % ring.len()];
                best = best.min(segment_distance(p, a, b));
            }
        }
        best
    }

    /// The area as a crate zone geometry (one polygon or a multipolygon).
    fn geometry(&self) -> Geometry {
        let value = json!({
            "type": "MultiPolygon",
            "coordinates": self.parts.iter().map(|rings| {
                rings.iter().map(|ring| {
                    let mut r: Vec<Value> = ring.iter().map(|p| json!([p.0, p.1])).collect();
                    if ring.first() != ring.last() {
                        r.push(json!([ring[0].0, ring[0].1]));
                    }
                    r
                }).collect::<Vec<_>>()
            }).collect::<Vec<_>>(),
        });
        Geometry::from_geojson(&value).expect("a valid multipolygon")
    }
}

// ---------------------------------------------------------------------------------------
// The engine, run over events.
// ---------------------------------------------------------------------------------------

struct Run {
    outputs: Vec<Output>,
    stats: EngineStats,
}

fn run(city: &Arc<City>, yaml: &str, events: &[Event]) -> Run {
    let rules =
        compile_rules(yaml, None, city).unwrap_or_else(|e| panic!("rules do not compile: {e}"));
    let mut engine = Engine::new(EngineConfig::default(), Arc::clone(city), rules);
    for e in events {
        engine.process(e);
    }
    engine.finish(Duration::ZERO);
    let outputs = engine.drain();
    Run {
        outputs,
        stats: engine.stats(),
    }
}

fn alerts(outputs: &[Output]) -> Vec<Alert> {
    let mut book = AlertBook::new();
    for o in outputs {
        book.apply(o.clone(), EngineConfig::default().max_evidence);
    }
    book.into_sorted()
}

fn zone(id: &str, kind: &str, area: &Area, properties: Map<String, Value>) -> Zone {
    Zone {
        id: id.to_string(),
        name: id.to_string(),
        kind: kind.to_string(),
        geometry: area.geometry(),
        width_m: None,
        properties,
    }
}

fn city_of(zones: Vec<Zone>) -> Arc<City> {
    Arc::new(City::from_parts(vec![], vec![], zones, vec![], vec![], vec![]).expect("a valid city"))
}

/// An alert as the tests compare it.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
struct Exp {
    rule: String,
    key: String,
    time_ms: i64,
    fired_ms: i64,
    zone: Option<String>,
    evidence: Vec<String>,
    lon: f64,
    lat: f64,
}

impl Exp {
    fn of(a: &Alert) -> Exp {
        Exp {
            rule: a.rule.clone(),
            key: a.key.clone(),
            time_ms: a.time.timestamp_millis(),
            fired_ms: a.fired_at.timestamp_millis(),
            zone: a.zone.clone(),
            evidence: a.evidence.clone(),
            lon: a.lon.expect("alert has a place"),
            lat: a.lat.expect("alert has a place"),
        }
    }
}

fn sorted(mut v: Vec<Exp>) -> Vec<Exp> {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v
}

fn assert_same(what: &str, expected: Vec<Exp>, actual: Vec<Exp>) {
    let (expected, actual) = (sorted(expected), sorted(actual));
    if expected == actual {
        return;
    }
    let missing: Vec<&Exp> = expected
        .iter()
        .filter(|e| !actual.contains(e))
        .take(8)
        .collect();
    let extra: Vec<&Exp> = actual
        .iter()
        .filter(|a| !expected.contains(a))
        .take(8)
        .collect();
    panic!(
        "{what}: {} alerts expected, the engine gave {}\nexpected but missing (first 8): {missing:#?}\ngiven but not expected (first 8): {extra:#?}",
        expected.len(),
        actual.len()
    );
}

fn brief(a: &Alert) -> String {
    format!(
        "{} {} key {} zone {:?} time {} fired {} at ({:?}, {:?}) evidence {:?}",
        a.rule,
        a.id,
        a.key,
        a.zone,
        a.time.format("%H:%M:%S"),
        a.fired_at.format("%H:%M:%S"),
        a.lon,
        a.lat,
        a.evidence
    )
}

fn of_rule(alerts: &[Alert], rule: &str) -> Vec<Exp> {
    alerts
        .iter()
        .filter(|a| a.rule == rule)
        .map(Exp::of)
        .collect()
}

fn point(e: &Event) -> Pt {
    e.point().expect("a fix has a place")
}

// ---------------------------------------------------------------------------------------
// Independent models of the rules.
// ---------------------------------------------------------------------------------------

/// Enter and exit alerts of a geofence rule over `zones`, from each key's fixes in the order
/// given (a key seen first inside a zone enters it).
fn model_transitions(
    events: &[Event],
    zones: &[(&str, &Area)],
    enter_rule: &str,
    exit_rule: &str,
) -> Vec<Exp> {
    let mut inside: HashMap<&str, BTreeMap<usize, (i64, String)>> = HashMap::new();
    let mut out = Vec::new();
    for e in events {
        let p = point(e);
        let t = e.time.timestamp_millis();
        let now: Vec<usize> = (0..zones.len())
            .filter(|&z| zones[z].1.contains(p))
            .collect();
        let st = inside.entry(e.source.as_str()).or_default();
        let left: Vec<usize> = st.keys().copied().filter(|z| !now.contains(z)).collect();
        for z in left {
            let (_, enter_id) = st.remove(&z).expect("inside");
            out.push(Exp {
                rule: exit_rule.into(),
                key: e.source.clone(),
                time_ms: t,
                fired_ms: t,
                zone: Some(zones[z].0.into()),
                evidence: vec![enter_id, e.id.clone()],
                lon: p.0,
                lat: p.1,
            });
        }
        for z in now {
            if st.contains_key(&z) {
                continue;
            }
            st.insert(z, (t, e.id.clone()));
            out.push(Exp {
                rule: enter_rule.into(),
                key: e.source.clone(),
                time_ms: t,
                fired_ms: t,
                zone: Some(zones[z].0.into()),
                evidence: vec![e.id.clone()],
                lon: p.0,
                lat: p.1,
            });
        }
    }
    out
}

/// Dwell alerts of a geofence rule over the events of a run.
///
/// A stay is a run of a key's fixes inside a zone, ended by its first fix outside. It
/// raises a dwell alert when it lasted at least `dwell`: its exit fix (or, still inside at
/// the end, the run's newest event time, to which the run's end moves the watermark) is at
/// or after enter + dwell. The alert is the same however the engine noticed it: time,
/// evidence and place of the entering fix, fired at enter + dwell.
fn model_dwell(
    events: &[Event],
    zones: &[(&str, &Area)],
    dwell_ms: i64,
    _lateness_ms: i64,
    rule: &str,
) -> Vec<Exp> {
    struct Stay {
        key: String,
        zone: usize,
        since: i64,
        enter_id: String,
        enter_point: (f64, f64),
        end: Option<i64>,
    }
    let run_end = events.iter().map(|e| e.time.timestamp_millis()).max().unwrap_or(i64::MIN);
    let mut stays: Vec<Stay> = Vec::new();
    let mut open: HashMap<(String, usize), usize> = HashMap::new();
    for e in events {
        let p = point(e);
        let t = e.time.timestamp_millis();
        for (z, (_, area)) in zones.iter().enumerate() {
            let slot = (e.source.clone(), z);
            match (area.contains(p), open.get(&slot).copied()) {
                (true, Some(_)) => {}
                (true, None) => {
                    open.insert(slot, stays.len());
                    stays.push(Stay {
                        key: e.source.clone(),
                        zone: z,
                        since: t,
                        enter_id: e.id.clone(),
                        enter_point: p,
                        end: None,
                    });
                }
                (false, Some(s)) => {
                    stays[s].end = Some(t);
                    open.remove(&slot);
                }
                (false, None) => {}
            }
        }
    }
    let mut out = Vec::new();
    for s in &stays {
        let due = s.since + dwell_ms;
        if s.end.unwrap_or(run_end) < due {
            continue;
        }
        out.push(Exp {
            rule: rule.into(),
            key: s.key.clone(),
            time_ms: s.since,
            fired_ms: due,
            zone: Some(zones[s.zone].0.into()),
            evidence: vec![s.enter_id.clone()],
            lon: s.enter_point.0,
            lat: s.enter_point.1,
        });
    }
    out
}

/// The gap rule of derived speeds: only over 0 < dt ≤ 300 s.
const MAX_DERIVE_GAP_MS: i64 = 300_000;

/// Speeds derived from each key's previous fix, per event (in the order given).
fn derived_speeds(events: &[Event]) -> Vec<Option<f64>> {
    let mut prev: HashMap<&str, (i64, Pt)> = HashMap::new();
    events
        .iter()
        .map(|e| {
            let t = e.time.timestamp_millis();
            let p = point(e);
            let speed = prev.get(e.source.as_str()).and_then(|&(pt, pp)| {
                let dt = t - pt;
                (dt > 0 && dt <= MAX_DERIVE_GAP_MS)
                    .then(|| haversine(pp, p) / (dt as f64 / 1000.0) * 3.6)
            });
            prev.insert(e.source.as_str(), (t, p));
            speed
        })
        .collect()
}

/// Speeding episodes: a run of a key's fixes whose derived speed is over the limit, ended
/// by a fix at or under it or without a derivable speed. One alert per episode once it has
/// lasted `for_ms` (time = first fix over, fired at the fix that completes `for`).
fn model_speed(events: &[Event], limit: f64, for_ms: i64, rule: &str) -> Vec<Exp> {
    struct Ep {
        since: i64,
        first: String,
        fired: bool,
    }
    let speeds = derived_speeds(events);
    let mut over: HashMap<&str, Ep> = HashMap::new();
    let mut out = Vec::new();
    for (e, speed) in events.iter().zip(speeds) {
        let t = e.time.timestamp_millis();
        match speed {
            Some(v) if v > limit => {}
            _ => {
                over.remove(e.source.as_str());
                continue;
            }
        }
        let ep = over.entry(e.source.as_str()).or_insert_with(|| Ep {
            since: t,
            first: e.id.clone(),
            fired: false,
        });
        if !ep.fired && t - ep.since >= for_ms {
            ep.fired = true;
            let mut evidence = vec![ep.first.clone()];
            if ep.first != e.id {
                evidence.push(e.id.clone());
            }
            let p = point(e);
            out.push(Exp {
                rule: rule.into(),
                key: e.source.clone(),
                time_ms: ep.since,
                fired_ms: t,
                zone: None,
                evidence,
                lon: p.0,
                lat: p.1,
            });
        }
    }
    out
}

/// Fatigue, from the rules documented on `FatigueOp`: driving time runs from the first
/// moving fix (derived speed ≥ `moving`) after a rest; a rest is a stop (fixes under
/// `moving`) lasting at least `rest` from its first slow fix, or a gap between fixes of at
/// least `rest`; shorter stops do not end the driving period. A fix without a derivable
/// speed changes nothing (beyond the gap rule). One alert per driving period once it has
/// lasted `limit`, evidence: the first moving fix and the fix that reached the limit.
fn model_fatigue(
    events: &[Event],
    limit_ms: i64,
    rest_ms: i64,
    moving: f64,
    rule: &str,
) -> Vec<Exp> {
    #[derive(Default)]
    struct St {
        last: Option<i64>,
        driving: Option<(i64, String, bool)>,
        stopped_since: Option<i64>,
    }
    let speeds = derived_speeds(events);
    let mut state: HashMap<&str, St> = HashMap::new();
    let mut out = Vec::new();
    for (e, speed) in events.iter().zip(speeds) {
        let t = e.time.timestamp_millis();
        let st = state.entry(e.source.as_str()).or_default();
        if st.last.is_some_and(|l| t - l >= rest_ms) {
            st.driving = None;
            st.stopped_since = None;
        }
        st.last = Some(t);
        let Some(v) = speed else { continue };
        if v < moving {
            let since = *st.stopped_since.get_or_insert(t);
            if t - since >= rest_ms {
                st.driving = None;
            }
            continue;
        }
        if st.stopped_since.take().is_some_and(|s| t - s >= rest_ms) {
            st.driving = None;
        }
        let d = st.driving.get_or_insert_with(|| (t, e.id.clone(), false));
        if !d.2 && t - d.0 >= limit_ms {
            d.2 = true;
            let p = point(e);
            out.push(Exp {
                rule: rule.into(),
                key: e.source.clone(),
                time_ms: d.0,
                fired_ms: t,
                zone: None,
                evidence: vec![d.1.clone(), e.id.clone()],
                lon: p.0,
                lat: p.1,
            });
        }
    }
    out
}

/// Repeat suppression with period `period_ms`: each firing (in `fired_ms` order per key
/// and zone) either raises an alert or, within the period of the open alert's last firing,
/// counts on it. Returns each raising firing with the firings counted on it, in order.
fn model_suppression(firings: &[Exp], period_ms: i64) -> Vec<(Exp, Vec<Exp>)> {
    let mut firings = firings.to_vec();
    firings.sort_by_key(|f| f.fired_ms);
    let mut open: HashMap<(String, Option<String>), (usize, i64)> = HashMap::new();
    let mut groups: Vec<(Exp, Vec<Exp>)> = Vec::new();
    for f in firings {
        let slot = (f.key.clone(), f.zone.clone());
        match open.get_mut(&slot) {
            Some((g, last)) if f.fired_ms < *last + period_ms => {
                *last = (*last).max(f.fired_ms);
                groups[*g].1.push(f);
            }
            _ => {
                open.insert(slot, (groups.len(), f.fired_ms));
                groups.push((f, Vec::new()));
            }
        }
    }
    groups
}

// ---------------------------------------------------------------------------------------
// The Liverpool buses.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Fix {
    id: String,
    id_num: u64,
    vehicle: String,
    trip: String,
    t: i64,
    lon: f64,
    lat: f64,
}

/// The file quotes some fields; none holds a comma or a quote.
fn split_csv(line: &str) -> Vec<String> {
    line.split(',')
        .map(|f| f.trim().trim_matches('"').to_string())
        .collect()
}

fn load_bus() -> Vec<Fix> {
    let text =
        std::fs::read_to_string(data_file("liverpool_bus/route14_outbound.csv")).expect("readable");
    let mut lines = text.lines();
    let header = split_csv(lines.next().expect("a header"));
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column `{name}`"))
    };
    let (c_id, c_vehicle, c_trip, c_time, c_lat, c_lon) = (
        col("id"),
        col("vehicle_id"),
        col("trip_id"),
        col("timestamp"),
        col("latitude"),
        col("longitude"),
    );
    let mut fixes = Vec::new();
    for (n, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let f = split_csv(line);
        assert_eq!(
            f.len(),
            header.len(),
            "line {} has {} fields",
            n + 2,
            f.len()
        );
        // UK local time; in January that is UTC.
        let t = NaiveDateTime::parse_from_str(&f[c_time], "%Y-%m-%d %H:%M:%S")
            .unwrap_or_else(|e| panic!("line {}: bad timestamp {}: {e}", n + 2, f[c_time]))
            .and_utc()
            .timestamp_millis();
        fixes.push(Fix {
            id: f[c_id].clone(),
            id_num: f[c_id].parse().expect("numeric id"),
            vehicle: f[c_vehicle].clone(),
            trip: f[c_trip].clone(),
            t,
            lon: f[c_lon].parse().expect("longitude"),
            lat: f[c_lat].parse().expect("latitude"),
        });
    }
    assert_eq!(fixes.len(), 1533, "the README promises 1,533 fixes");
    let ids: HashSet<&str> = fixes.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(ids.len(), fixes.len(), "fix ids are unique");
    fixes
}

/// The fixes as the engine should see them: in event-time order (ties by id), as events of
/// kind `gps` from each vehicle. The file itself is ordered by trip, not by time.
fn bus_events(fixes: &[Fix]) -> Vec<Event> {
    let mut fixes = fixes.to_vec();
    fixes.sort_by_key(|f| (f.t, f.id_num));
    fixes
        .iter()
        .map(|f| {
            let mut e = Event::new(f.vehicle.clone(), "gps", ms_time(f.t))
                .at(f.lon, f.lat)
                .with("trip_id", f.trip.clone());
            e.id = f.id.clone();
            e
        })
        .collect()
}

struct BusZones {
    /// (id, kind, area)
    zones: Vec<(&'static str, &'static str, Area)>,
}

impl BusZones {
    fn new(fixes: &[Fix]) -> BusZones {
        let at = |id: &str| {
            let f = fixes
                .iter()
                .find(|f| f.id == id)
                .unwrap_or_else(|| panic!("no fix {id}"));
            (f.lon, f.lat)
        };
        let square = |c: Pt, half: f64| {
            vec![
                offset(c, -half, -half),
                offset(c, half, -half),
                offset(c, half, half),
                offset(c, -half, half),
            ]
        };
        // The route's start (Queen Square bus station), where buses stand before leaving.
        let queen_square = Area::new(vec![vec![square(at("23836989"), 150.0)]]);
        // A diamond (edges not along the axes) on West Derby Road.
        let c = at("23870515");
        let diamond = Area::new(vec![vec![vec![
            offset(c, 0.0, -220.0),
            offset(c, 220.0, 0.0),
            offset(c, 0.0, 220.0),
            offset(c, -220.0, 0.0),
        ]]]);
        // A square with a square hole around the road: inside, in the hole, inside again.
        let c = at("23903137");
        let ring = Area::new(vec![vec![
            square(c, 400.0),
            square(offset(c, 15.0, -10.0), 120.0),
        ]]);
        // The route's end (Petherick Road).
        let petherick = Area::new(vec![vec![square(at("23954467"), 150.0)]]);
        BusZones {
            zones: vec![
                ("queen-square", "terminus", queen_square),
                ("mid-diamond", "checkpoint", diamond),
                ("ring-hole", "checkpoint", ring),
                ("petherick", "terminus", petherick),
            ],
        }
    }

    fn city(&self) -> Arc<City> {
        city_of(
            self.zones
                .iter()
                .map(|(id, kind, area)| zone(id, kind, area, Map::new()))
                .collect(),
        )
    }

    fn all(&self) -> Vec<(&str, &Area)> {
        self.zones.iter().map(|(id, _, a)| (*id, a)).collect()
    }

    fn of_kind(&self, kind: &str) -> Vec<(&str, &Area)> {
        self.zones
            .iter()
            .filter(|z| z.1 == kind)
            .map(|(id, _, a)| (*id, a))
            .collect()
    }
}

const BUS_GEOFENCE_RULES: &str = r#"
rules:
  - id: bus-enter
    kind: geofence
    category: transport.geofence
    on: enter
    zones: [queen-square, mid-diamond, ring-hole, petherick]
    suppress: 0s
  - id: bus-exit
    kind: geofence
    category: transport.geofence
    on: exit
    zones: [queen-square, mid-diamond, ring-hole, petherick]
    suppress: 0s
  - id: terminus-layover
    kind: geofence
    category: transport.layover
    on: dwell
    dwell: 4m
    zone_kinds: [terminus]
    suppress: 0s
"#;

const LAYOVER_MS: i64 = 4 * 60_000;
const LATENESS_MS: i64 = 5_000;

fn check_bus_geofence(zones: &BusZones, events: &[Event], run: &Run, what: &str) {
    assert_eq!(run.stats.late, 0, "{what}: no event may be late");
    for (rule, st) in &run.stats.rules {
        assert_eq!(
            st.out_of_order, 0,
            "{what}: rule {rule} saw events out of order"
        );
    }
    let got = alerts(&run.outputs);
    let geofence_ids: HashSet<&str> = got
        .iter()
        .filter(|a| a.rule.starts_with("bus-") || a.rule == "terminus-layover")
        .map(|a| a.id.as_str())
        .collect();
    assert!(
        run.outputs
            .iter()
            .all(|o| matches!(o, Output::Raised(_)) || !geofence_ids.contains(o.alert_id())),
        "{what}: with `suppress: 0s` every firing raises an alert"
    );
    let expected = model_transitions(events, &zones.all(), "bus-enter", "bus-exit");
    let (enters, exits): (Vec<Exp>, Vec<Exp>) =
        expected.into_iter().partition(|e| e.rule == "bus-enter");
    assert_same(
        &format!("{what}: enter"),
        enters,
        of_rule(&got, "bus-enter"),
    );
    assert_same(&format!("{what}: exit"), exits, of_rule(&got, "bus-exit"));
    let dwell = model_dwell(
        events,
        &zones.of_kind("terminus"),
        LAYOVER_MS,
        LATENESS_MS,
        "terminus-layover",
    );
    assert_same(
        &format!("{what}: dwell"),
        dwell,
        of_rule(&got, "terminus-layover"),
    );
    // What the models do not cover: the time inside on exit, the dwell, the id's form.
    for a in &got {
        assert!(
            a.id.len() == 28 && a.id.starts_with('a'),
            "alert id {}",
            a.id
        );
        if a.rule == "terminus-layover" {
            assert_eq!(
                a.detail.get("dwell_s"),
                Some(&json!(LAYOVER_MS / 1000)),
                "{a:?}"
            );
        }
        if a.rule == "bus-exit" {
            let enter = events
                .iter()
                .find(|e| e.id == a.evidence[0])
                .expect("entering fix");
            let inside_s = (a.time - enter.time).num_seconds();
            assert_eq!(a.detail.get("inside_s"), Some(&json!(inside_s)), "{a:?}");
        }
    }
    let ids: HashSet<&str> = got.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids.len(), got.len(), "{what}: alert ids are distinct");
}

#[test]
fn bus_geofence_enter_exit_and_layover_match_an_independent_walk() {
    let fixes = load_bus();
    let events = bus_events(&fixes);
    let zones = BusZones::new(&fixes);
    // No fix lies within a few centimetres of a zone edge, where two point-in-polygon
    // implementations may honestly disagree.
    for e in &events {
        for (id, _, area) in &zones.zones {
            let d = area.edge_distance(point(e));
            assert!(d > 0.05, "fix {} is {d} m from an edge of {id}", e.id);
        }
    }
    let city = zones.city();
    let run = run(&city, BUS_GEOFENCE_RULES, &events);
    check_bus_geofence(&zones, &events, &run, "time order");

    // The data really exercises the rules: every zone is entered and left, the hole of the
    // ring zone is crossed, and layovers fire by both routes (a later fix, the watermark).
    let got = alerts(&run.outputs);
    let count = |rule: &str, zone: &str| {
        got.iter()
            .filter(|a| a.rule == rule && a.zone.as_deref() == Some(zone))
            .count()
    };
    for (id, _, _) in &zones.zones {
        assert!(
            count("bus-enter", id) >= 5,
            "zone {id}: {} enters",
            count("bus-enter", id)
        );
        assert!(
            count("bus-exit", id) >= 5,
            "zone {id}: {} exits",
            count("bus-exit", id)
        );
    }
    // Some fixes fall in the hole of the ring zone, so passages through it enter it twice.
    let ring = &zones
        .zones
        .iter()
        .find(|z| z.0 == "ring-hole")
        .expect("ring")
        .2;
    let hole = &ring.parts[0][1];
    let in_hole = events.iter().filter(|e| ray_cast(hole, point(e))).count();
    let trips_in_ring: HashSet<(&str, &str)> = events
        .iter()
        .filter(|e| ring.contains(point(e)))
        .map(|e| (e.source.as_str(), e.attr_str("trip_id").expect("trip")))
        .collect();
    assert!(in_hole > 5, "{in_hole} fixes in the hole");
    assert!(
        count("bus-enter", "ring-hole") > trips_in_ring.len(),
        "{} enters of the ring zone on {} trips",
        count("bus-enter", "ring-hole"),
        trips_in_ring.len()
    );
    let layovers: Vec<&Alert> = got
        .iter()
        .filter(|a| a.rule == "terminus-layover")
        .collect();
    let by_timer = layovers.iter().filter(|a| a.evidence.len() == 1).count();
    assert!(layovers.len() >= 5, "{} layovers", layovers.len());
    eprintln!(
        "bus geofence: {} enters, {} exits, {} layovers ({} raised by the watermark)",
        got.iter().filter(|a| a.rule == "bus-enter").count(),
        got.iter().filter(|a| a.rule == "bus-exit").count(),
        layovers.len(),
        by_timer
    );
    // A key first seen inside a zone enters it: the first fix of each vehicle at Queen Square.
    let first_of_4733 = events
        .iter()
        .find(|e| e.source == "4733")
        .expect("vehicle 4733");
    assert!(got.iter().any(|a| a.rule == "bus-enter"
        && a.key == "4733"
        && a.evidence == vec![first_of_4733.id.clone()]
        && a.zone.as_deref() == Some("queen-square")));
}

// ---------------------------------------------------------------------------------------

const LIMIT_KMH: f64 = 40.0;

const BUS_MOTION_RULES: &str = r#"
rules:
  - id: speed-40
    kind: speed
    category: transport.speeding
    limit_kmh: 40
    suppress: 0s
  - id: speed-30-for-20s
    kind: speed
    category: transport.speeding
    limit_kmh: 30
    for: 20s
    suppress: 0s
  - id: speed-40-suppressed
    kind: speed
    category: transport.speeding
    limit_kmh: 40
  - id: fatigue-20m
    kind: fatigue
    category: transport.fatigue
    limit: 20m
    rest: 3m
    moving_kmh: 5
    suppress: 0s
"#;

#[test]
fn bus_speeding_and_fatigue_match_an_independent_calculation() {
    let fixes = load_bus();
    let events = bus_events(&fixes);
    // No derived speed is so close to a threshold that rounding could decide it.
    for v in derived_speeds(&events).into_iter().flatten() {
        for limit in [LIMIT_KMH, 30.0, 5.0] {
            assert!(
                (v - limit).abs() > 1e-6,
                "speed {v} km/h sits on a threshold"
            );
        }
    }
    let city = city_of(vec![]);
    let run = run(&city, BUS_MOTION_RULES, &events);
    assert_eq!(run.stats.late, 0);
    let got = alerts(&run.outputs);

    let speeding = model_speed(&events, LIMIT_KMH, 0, "speed-40");
    assert!(speeding.len() >= 20, "{} speeding episodes", speeding.len());
    assert_same(
        "speed, no `for`",
        speeding.clone(),
        of_rule(&got, "speed-40"),
    );
    for a in got.iter().filter(|a| a.rule == "speed-40") {
        // The reported speed is that of the firing fix, to 0.1 km/h.
        let v = a
            .detail
            .get("speed_kmh")
            .and_then(Value::as_f64)
            .expect("speed_kmh");
        assert!(v > LIMIT_KMH && v < 120.0, "{a:?}");
        assert_eq!(
            a.detail.get("limit_kmh").and_then(Value::as_f64),
            Some(LIMIT_KMH)
        );
        assert_eq!(a.detail.get("limit_from"), Some(&json!("rule")));
    }
    // Over 40 km/h no bus keeps it up for two fixes; over 30 km/h some do, for 20 s.
    assert!(model_speed(&events, LIMIT_KMH, 20_000, "x").is_empty());
    let episodes_30 = model_speed(&events, 30.0, 0, "x").len();
    let speeding_20s = model_speed(&events, 30.0, 20_000, "speed-30-for-20s");
    assert!(
        speeding_20s.len() >= 10 && speeding_20s.len() < episodes_30,
        "{} of {episodes_30} episodes over 30 km/h last 20 s",
        speeding_20s.len(),
    );
    assert_same(
        "speed, for 20s",
        speeding_20s.clone(),
        of_rule(&got, "speed-30-for-20s"),
    );

    // The same episodes under the default 10-minute repeat suppression: a firing within
    // 10 minutes of the open alert's last firing counts on it instead of raising.
    let firings: Vec<Exp> = speeding
        .iter()
        .map(|e| Exp {
            rule: "speed-40-suppressed".into(),
            ..e.clone()
        })
        .collect();
    let groups = model_suppression(&firings, 600_000);
    assert!(
        groups.iter().any(|(_, r)| !r.is_empty()),
        "some vehicle speeds twice within 10 minutes"
    );
    let raised_out: Vec<Exp> = run
        .outputs
        .iter()
        .filter_map(|o| match o {
            Output::Raised(a) if a.rule == "speed-40-suppressed" => Some(Exp::of(a)),
            _ => None,
        })
        .collect();
    assert_same(
        "speed, suppressed: raised",
        groups.iter().map(|g| g.0.clone()).collect(),
        raised_out,
    );
    let key_of: HashMap<&str, &str> = run
        .outputs
        .iter()
        .filter_map(|o| match o {
            Output::Raised(a) if a.rule == "speed-40-suppressed" => {
                Some((a.id.as_str(), a.key.as_str()))
            }
            _ => None,
        })
        .collect();
    let mut got_repeated: Vec<(String, i64, u64, Vec<String>)> = run
        .outputs
        .iter()
        .filter_map(|o| match o {
            Output::Repeated {
                alert,
                time,
                count,
                evidence,
            } => key_of.get(alert.as_str()).map(|k| {
                (
                    k.to_string(),
                    time.timestamp_millis(),
                    *count,
                    evidence.clone(),
                )
            }),
            _ => None,
        })
        .collect();
    let mut want_repeated: Vec<(String, i64, u64, Vec<String>)> = groups
        .iter()
        .flat_map(|(_, reps)| {
            reps.iter()
                .enumerate()
                .map(|(i, e)| (e.key.clone(), e.fired_ms, i as u64 + 2, e.evidence.clone()))
        })
        .collect();
    got_repeated.sort();
    want_repeated.sort();
    assert_eq!(
        got_repeated, want_repeated,
        "speed, suppressed: repeats (key, time, count, evidence)"
    );
    // The alert book folds the repeats into their alert: count, and evidence up to the cap.
    let max_evidence = EngineConfig::default().max_evidence;
    let mut want_book: Vec<(String, i64, u64, Vec<String>)> = groups
        .iter()
        .map(|(first, reps)| {
            let mut evidence = first.evidence.clone();
            for id in reps.iter().flat_map(|r| r.evidence.iter()) {
                if evidence.len() < max_evidence && !evidence.contains(id) {
                    evidence.push(id.clone());
                }
            }
            (
                first.key.clone(),
                first.time_ms,
                1 + reps.len() as u64,
                evidence,
            )
        })
        .collect();
    let mut got_book: Vec<(String, i64, u64, Vec<String>)> = got
        .iter()
        .filter(|a| a.rule == "speed-40-suppressed")
        .map(|a| {
            (
                a.key.clone(),
                a.time.timestamp_millis(),
                a.count,
                a.evidence.clone(),
            )
        })
        .collect();
    want_book.sort();
    got_book.sort();
    assert_eq!(
        got_book, want_book,
        "speed, suppressed: alerts after the book applies the repeats"
    );

    let fatigue = model_fatigue(&events, 20 * 60_000, 3 * 60_000, 5.0, "fatigue-20m");
    assert!(
        !fatigue.is_empty(),
        "some bus drives 20 minutes without a 3-minute rest"
    );
    assert_same("fatigue", fatigue.clone(), of_rule(&got, "fatigue-20m"));
    for a in got.iter().filter(|a| a.rule == "fatigue-20m") {
        let minutes = (a.fired_at - a.time).num_minutes();
        assert_eq!(a.detail.get("driving_min"), Some(&json!(minutes)), "{a:?}");
        assert!(minutes >= 20);
    }
    eprintln!(
        "bus motion: {} speeding episodes over 40 km/h, {} over 30 km/h lasting 20 s, {} fatigue alerts",
        speeding.len(),
        speeding_20s.len(),
        fatigue.len()
    );
}

// ---------------------------------------------------------------------------------------

/// Moves events of different vehicles past each other, never so far that one arrives
/// behind the watermark (newest time so far minus the lateness). Each vehicle's own fixes
/// keep their order. Deterministic (a fixed LCG).
fn shuffle_within_lateness(
    events: &[Event],
    lateness_ms: i64,
    mut seed: u64,
) -> (Vec<Event>, usize) {
    let mut ev = events.to_vec();
    let mut swaps = 0;
    for _pass in 0..6 {
        let mut max_before = i64::MIN;
        for i in 0..ev.len().saturating_sub(1) {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let (ta, tb) = (
                ev[i].time.timestamp_millis(),
                ev[i + 1].time.timestamp_millis(),
            );
            if ev[i].source != ev[i + 1].source
                && ta >= max_before.max(tb) - lateness_ms
                && (seed >> 40) & 1 == 1
            {
                ev.swap(i, i + 1);
                swaps += 1;
            }
            max_before = max_before.max(ev[i].time.timestamp_millis());
        }
    }
    // Nothing is late, and every vehicle's fixes are still in time order.
    let mut max = i64::MIN;
    let mut last: HashMap<&str, i64> = HashMap::new();
    for e in &ev {
        let t = e.time.timestamp_millis();
        assert!(
            max == i64::MIN || t >= max - lateness_ms,
            "shuffle made {} late",
            e.id
        );
        max = max.max(t);
        let l = last.entry(e.source.as_str()).or_insert(i64::MIN);
        assert!(t > *l, "shuffle reordered a vehicle's fixes");
        *l = t;
    }
    (ev, swaps)
}

#[test]
fn bus_alerts_are_deterministic_across_runs() {
    let fixes = load_bus();
    let events = bus_events(&fixes);
    let zones = BusZones::new(&fixes);
    let city = zones.city();
    let rules = format!(
        "{BUS_GEOFENCE_RULES}{}",
        BUS_MOTION_RULES.trim_start().trim_start_matches("rules:\n")
    );
    let first = run(&city, &rules, &events);
    let second = run(&city, &rules, &events);
    assert!(first.outputs.len() > 100);
    assert_eq!(
        first.outputs, second.outputs,
        "the same events in the same order give the same outputs"
    );
    assert_eq!(first.stats, second.stats);
}

#[test]
fn bus_alerts_do_not_depend_on_interleaving_within_the_lateness() {
    let fixes = load_bus();
    let events = bus_events(&fixes);
    let zones = BusZones::new(&fixes);
    let city = zones.city();
    let vehicles: HashSet<&str> = events.iter().map(|e| e.source.as_str()).collect();
    assert!(vehicles.len() > 1);
    let (shuffled, swaps) = shuffle_within_lateness(&events, LATENESS_MS, 0x5eed);
    assert!(swaps > 50, "only {swaps} swaps");
    let rules = format!(
        "{BUS_GEOFENCE_RULES}{}",
        BUS_MOTION_RULES.trim_start().trim_start_matches("rules:\n")
    );
    let base = run(&city, &rules, &events);
    let other = run(&city, &rules, &shuffled);
    assert_eq!(other.stats.late, 0);
    // Per-key rules see each key's fixes in the same order: the same alerts.
    let a = alerts(&base.outputs);
    let b = alerts(&other.outputs);
    for rule in [
        "bus-enter",
        "bus-exit",
        "speed-40",
        "speed-30-for-20s",
        "speed-40-suppressed",
        "fatigue-20m",
    ] {
        let (x, y): (Vec<&Alert>, Vec<&Alert>) = (
            a.iter().filter(|z| z.rule == rule).collect(),
            b.iter().filter(|z| z.rule == rule).collect(),
        );
        assert_eq!(x, y, "rule {rule} depends on the interleaving of vehicles");
    }
    // Layovers: the engine still matches the model for the order it saw.
    check_bus_geofence(&zones, &shuffled, &other, "shuffled");
    let key = |a: &Alert| {
        (
            a.id.clone(),
            a.key.clone(),
            a.zone.clone(),
            a.time,
            a.fired_at,
        )
    };
    let x: Vec<_> = a
        .iter()
        .filter(|z| z.rule == "terminus-layover")
        .map(key)
        .collect();
    let y: Vec<_> = b
        .iter()
        .filter(|z| z.rule == "terminus-layover")
        .map(key)
        .collect();
    assert_eq!(
        x, y,
        "layover alerts (id, key, zone, times) depend on the interleaving"
    );
}

/// The dwell alert's evidence and place depend on whether a later fix of the key or the
/// watermark (moved by other keys' events) noticed the dwell first, so moving another
/// vehicle's fix 4 s ahead (within the lateness) changes them, though the module docs say
/// "either way the alert is the same". Here: vehicle 4841 entered Queen Square at 16:30:11
/// (due 16:34:11); in time order its own fix of 16:34:17 fires the dwell (evidence: both
/// fixes, place: the 16:34:17 fix); when 4733's fix of 16:34:21 comes first the watermark
/// (16:34:16) fires it (evidence: the entering fix only, place: the 16:34:04 fix).
#[test]
fn bus_layover_alerts_are_identical_under_interleaving() {
    let fixes = load_bus();
    let events = bus_events(&fixes);
    let zones = BusZones::new(&fixes);
    let city = zones.city();
    let (shuffled, _) = shuffle_within_lateness(&events, LATENESS_MS, 0x5eed);
    let a = alerts(&run(&city, BUS_GEOFENCE_RULES, &events).outputs);
    let b = alerts(&run(&city, BUS_GEOFENCE_RULES, &shuffled).outputs);
    let only_a: Vec<String> = a.iter().filter(|x| !b.contains(x)).map(brief).collect();
    let only_b: Vec<String> = b.iter().filter(|x| !a.contains(x)).map(brief).collect();
    assert!(
        only_a.is_empty() && only_b.is_empty(),
        "in time order only: {only_a:#?}\nshuffled only: {only_b:#?}"
    );
}

// ---------------------------------------------------------------------------------------
// Ningbo and Shanghai districts, GCJ-02.
// ---------------------------------------------------------------------------------------

struct District {
    adcode: i64,
    name: String,
    /// GCJ-02, as in the file.
    center: Pt,
    centroid: Pt,
    raw: Area,
    wgs: Area,
}

fn pt(v: &Value) -> Pt {
    (v[0].as_f64().expect("lon"), v[1].as_f64().expect("lat"))
}

fn load_districts(file: &str) -> Vec<District> {
    let text =
        std::fs::read_to_string(data_file(&format!("china_districts/{file}"))).expect("readable");
    let doc: Value = serde_json::from_str(&text).expect("GeoJSON");
    let features = doc["features"].as_array().expect("features");
    features
        .iter()
        .map(|f| {
            let p = &f["properties"];
            assert_eq!(f["geometry"]["type"], "MultiPolygon");
            let parts: Vec<Vec<Vec<Pt>>> = f["geometry"]["coordinates"]
                .as_array()
                .expect("polygons")
                .iter()
                .map(|poly| {
                    poly.as_array()
                        .expect("rings")
                        .iter()
                        .map(|ring| ring.as_array().expect("ring").iter().map(pt).collect())
                        .collect()
                })
                .collect();
            let wgs = parts
                .iter()
                .map(|rings| {
                    rings
                        .iter()
                        .map(|ring| {
                            ring.iter()
                                .map(|&(lon, lat)| gcj02_to_wgs84(lon, lat))
                                .collect()
                        })
                        .collect()
                })
                .collect();
            District {
                adcode: p["adcode"].as_i64().expect("adcode"),
                name: p["name"].as_str().expect("name").to_string(),
                center: pt(&p["center"]),
                centroid: pt(&p["centroid"]),
                raw: Area::new(parts),
                wgs: Area::new(wgs),
            }
        })
        .collect()
}

/// Districts as zones of kind `district`, with their converted (WGS84) or raw (GCJ-02)
/// geometry.
fn district_city(ds: &[District], converted: bool) -> Arc<City> {
    city_of(
        ds.iter()
            .map(|d| {
                let mut props = Map::new();
                props.insert("adcode".into(), json!(d.adcode));
                let mut z = zone(
                    &d.adcode.to_string(),
                    "district",
                    if converted { &d.wgs } else { &d.raw },
                    props,
                );
                z.name = d.name.clone();
                z
            })
            .collect(),
    )
}

fn containing(ds: &[District], p: Pt, converted: bool) -> Vec<String> {
    ds.iter()
        .filter(|d| {
            if converted {
                d.wgs.contains(p)
            } else {
                d.raw.contains(p)
            }
        })
        .map(|d| d.adcode.to_string())
        .collect()
}

/// Metres from `p` to the nearest edge of any district, raw or converted (districts whose
/// box is far away are skipped).
fn clearance(ds: &[District], p: Pt) -> f64 {
    ds.iter()
        .flat_map(|d| [&d.raw, &d.wgs])
        .filter(|a| a.in_bbox(p, 0.02))
        .map(|a| a.edge_distance(p))
        .fold(f64::INFINITY, f64::min)
}

const DISTRICT_INSIDE: &str = r#"
rules:
  - id: district-inside
    kind: geofence
    category: admin.district
    on: inside
    zone_kinds: [district]
    suppress: 0s
"#;

fn probe_event(source: String, k: usize, p: Pt) -> Event {
    let mut e =
        Event::new(source, "gps", ms_time(1_772_416_800_000 + k as i64 * 1000)).at(p.0, p.1);
    e.id = format!("probe-{k}");
    e
}

/// Zones each probe was reported inside, by the probe's source.
fn inside_by_source(outputs: &[Output]) -> HashMap<String, Vec<String>> {
    let mut by: HashMap<String, Vec<String>> = HashMap::new();
    for a in alerts(outputs) {
        by.entry(a.key.clone())
            .or_default()
            .push(a.zone.clone().expect("zone"));
    }
    for zones in by.values_mut() {
        zones.sort();
    }
    by
}

#[test]
fn district_centroids_converted_from_gcj02_fall_in_their_own_district_only() {
    for file in ["ningbo_330200.json", "shanghai_310000.json"] {
        let ds = load_districts(file);
        assert!(ds.len() >= 10, "{file}: {} districts", ds.len());
        let city = district_city(&ds, true);
        let mut events = Vec::new();
        let mut want: HashMap<String, Vec<String>> = HashMap::new();
        for d in &ds {
            for (label, gcj) in [("centroid", d.centroid), ("center", d.center)] {
                // What intake does with an event tagged `crs: gcj02`.
                let p = Crs::Gcj02.to_wgs84(gcj.0, gcj.1);
                assert_ne!(p, gcj, "GCJ-02 shifts points in China");
                let source = format!("{}-{label}", d.adcode);
                let expected = containing(&ds, p, true);
                assert_eq!(
                    expected,
                    vec![d.adcode.to_string()],
                    "{file}: {} {label} ({}) by our own test",
                    d.adcode,
                    d.name
                );
                assert!(clearance(&ds, p) > 50.0);
                want.insert(source.clone(), expected);
                events.push(probe_event(source, events.len(), p));
            }
        }
        let out = run(&city, DISTRICT_INSIDE, &events);
        let got = inside_by_source(&out.outputs);
        assert_eq!(got, want, "{file}: districts of the centroids and centres");
    }
}

struct Probe {
    district: usize,
    p: Pt,
    /// true: inside the converted district but not the raw one; false: the reverse.
    in_converted: bool,
}

/// Points within a few hundred metres of a district's edge where the converted and the
/// raw polygon disagree about the district, at least 25 m from every edge.
fn boundary_probes(ds: &[District]) -> Vec<Probe> {
    let mut probes = Vec::new();
    for (di, d) in ds.iter().enumerate() {
        let mut found = [false, false];
        'search: for rings in &d.wgs.parts {
            for v in rings[0].iter().step_by(3) {
                for dist in [120.0, 250.0] {
                    for k in 0..8 {
                        let a = k as f64 * PI / 4.0;
                        let p = offset(*v, dist * a.cos(), dist * a.sin());
                        let conv = containing(ds, p, true);
                        let raw = containing(ds, p, false);
                        let me = d.adcode.to_string();
                        let kind = if conv == [me.clone()] && !raw.contains(&me) {
                            0
                        } else if raw == [me.clone()] && !conv.contains(&me) {
                            1
                        } else {
                            continue;
                        };
                        if found[kind] || clearance(ds, p) < 25.0 {
                            continue;
                        }
                        found[kind] = true;
                        probes.push(Probe {
                            district: di,
                            p,
                            in_converted: kind == 0,
                        });
                        if found == [true, true] {
                            break 'search;
                        }
                    }
                }
            }
        }
        assert_eq!(
            found,
            [true, true],
            "no disagreeing point found near {} ({})",
            d.adcode,
            d.name
        );
    }
    probes
}

#[test]
fn gcj02_conversion_decides_points_near_district_boundaries() {
    for file in ["ningbo_330200.json", "shanghai_310000.json"] {
        let ds = load_districts(file);
        let probes = boundary_probes(&ds);
        let mut events = Vec::new();
        let (mut want_conv, mut want_raw) = (HashMap::new(), HashMap::new());
        for (k, pr) in probes.iter().enumerate() {
            let d = &ds[pr.district];
            // The raw polygon is right in its own datum: the point's GCJ-02 coordinates are
            // inside it exactly when the WGS84 point is inside the converted polygon.
            let g = wgs84_to_gcj02(pr.p.0, pr.p.1);
            assert_eq!(
                d.raw.contains(g),
                pr.in_converted,
                "{file}: probe {k} near {}",
                d.name
            );
            assert_eq!(d.wgs.contains(pr.p), pr.in_converted);
            let source = format!("probe-{k}");
            let (conv, raw) = (containing(&ds, pr.p, true), containing(&ds, pr.p, false));
            if !conv.is_empty() {
                want_conv.insert(source.clone(), conv);
            }
            if !raw.is_empty() {
                want_raw.insert(source.clone(), raw);
            }
            events.push(probe_event(source, k, pr.p));
        }
        let got_conv =
            inside_by_source(&run(&district_city(&ds, true), DISTRICT_INSIDE, &events).outputs);
        let got_raw =
            inside_by_source(&run(&district_city(&ds, false), DISTRICT_INSIDE, &events).outputs);
        assert_eq!(got_conv, want_conv, "{file}: converted zones");
        assert_eq!(got_raw, want_raw, "{file}: raw GCJ-02 zones");
        // And the two disagree on every probe about the district it was found for.
        for (k, pr) in probes.iter().enumerate() {
            let me = ds[pr.district].adcode.to_string();
            let source = format!("probe-{k}");
            let in_conv = got_conv.get(&source).is_some_and(|z| z.contains(&me));
            let in_raw = got_raw.get(&source).is_some_and(|z| z.contains(&me));
            assert_eq!(
                (in_conv, in_raw),
                (pr.in_converted, !pr.in_converted),
                "{file}: probe {k}"
            );
        }
        eprintln!(
            "{file}: {} boundary probes, converted and raw zones disagree on each",
            probes.len()
        );
    }
}

const DISTRICT_TRANSITIONS: &str = r#"
rules:
  - id: district-exit
    kind: geofence
    category: admin.district
    on: exit
    zone_kinds: [district]
    suppress: 0s
  - id: district-enter
    kind: geofence
    category: admin.district
    on: enter
    zone_kinds: [district]
    suppress: 0s
"#;

fn trace_events(source: &str, points: &[Pt]) -> Vec<Event> {
    points
        .iter()
        .enumerate()
        .map(|(k, &p)| {
            let mut e = Event::new(
                source,
                "gps",
                ms_time(1_772_416_800_000 + k as i64 * 10_000),
            )
            .at(p.0, p.1);
            e.id = format!("{source}-{k:03}");
            e
        })
        .collect()
}

#[test]
fn a_vehicle_crossing_from_haishu_to_jiangbei_exits_then_enters_at_the_crossing_fix() {
    let ds = load_districts("ningbo_330200.json");
    let a = ds.iter().position(|d| d.adcode == 330203).expect("Haishu");
    let b = ds
        .iter()
        .position(|d| d.adcode == 330205)
        .expect("Jiangbei");
    let (code_a, code_b) = (ds[a].adcode.to_string(), ds[b].adcode.to_string());
    // Edges the two districts share (the same vertices, converted the same way).
    let key = |p: Pt| (p.0.to_bits(), p.1.to_bits());
    let mut edges_a = HashSet::new();
    for ring in ds[a].wgs.parts.iter().flatten() {
        for w in ring.windows(2) {
            edges_a.insert((key(w[0]), key(w[1])));
            edges_a.insert((key(w[1]), key(w[0])));
        }
    }
    let mut shared: Vec<(Pt, Pt)> = ds[b]
        .wgs
        .parts
        .iter()
        .flatten()
        .flat_map(|ring| ring.windows(2).map(|w| (w[0], w[1])))
        .filter(|(p, q)| edges_a.contains(&(key(*p), key(*q))))
        .collect();
    assert!(shared.len() >= 10, "Haishu and Jiangbei share a border");
    shared.sort_by(|x, y| haversine(y.0, y.1).total_cmp(&haversine(x.0, x.1)));
    // A straight drive across the middle of the longest shared edge that is a clean
    // crossing: 16 fixes 20 m apart in Haishu only, then 15 in Jiangbei only.
    let offsets: Vec<f64> = (0..31).map(|k| -310.0 + 20.0 * k as f64).collect();
    let mut trace = None;
    for (p, q) in &shared {
        let m = ((p.0 + q.0) / 2.0, (p.1 + q.1) / 2.0);
        let kx = p.1.to_radians().cos();
        let (dx, dy) = ((q.0 - p.0) * kx, q.1 - p.1);
        let len = dx.hypot(dy);
        for sign in [1.0, -1.0] {
            let n = (-dy / len * sign, dx / len * sign);
            let pts: Vec<Pt> = offsets
                .iter()
                .map(|s| offset(m, s * n.0, s * n.1))
                .collect();
            let clean = pts.iter().zip(&offsets).all(|(&x, &s)| {
                let want = if s < 0.0 { &code_a } else { &code_b };
                containing(&ds, x, true) == [want.clone()] && clearance(&ds, x) > 5.0
            });
            if clean {
                trace = Some(pts);
                break;
            }
        }
        if trace.is_some() {
            break;
        }
    }
    let pts = trace.expect("a shared edge with room for a clean crossing");
    let events = trace_events("nb-car", &pts);
    let city = district_city(&ds, true);
    let out = run(&city, DISTRICT_TRANSITIONS, &events);
    let got: Vec<Exp> = out
        .outputs
        .iter()
        .map(|o| match o {
            Output::Raised(a) => Exp::of(a),
            other => panic!("unexpected output {other:?}"),
        })
        .collect();
    let at = |k: usize| events[k].time.timestamp_millis();
    let exp = |rule: &str, zone: &str, k: usize, evidence: Vec<&str>| Exp {
        rule: rule.into(),
        key: "nb-car".into(),
        time_ms: at(k),
        fired_ms: at(k),
        zone: Some(zone.into()),
        evidence: evidence.into_iter().map(String::from).collect(),
        lon: pts[k].0,
        lat: pts[k].1,
    };
    // In output order: enter Haishu at the first fix; at fix 16, the first across the
    // border, exit Haishu (the exit rule comes first in the file) and enter Jiangbei.
    assert_eq!(
        got,
        vec![
            exp("district-enter", &code_a, 0, vec!["nb-car-000"]),
            exp(
                "district-exit",
                &code_a,
                16,
                vec!["nb-car-000", "nb-car-016"]
            ),
            exp("district-enter", &code_b, 16, vec!["nb-car-016"]),
        ]
    );
    let ex = alerts(&out.outputs)
        .into_iter()
        .find(|a| a.rule == "district-exit")
        .expect("exit");
    assert_eq!(ex.detail.get("inside_s"), Some(&json!(160)));
    // The model agrees (a check of the model more than of the engine).
    let zones: Vec<(String, &Area)> = ds.iter().map(|d| (d.adcode.to_string(), &d.wgs)).collect();
    let zref: Vec<(&str, &Area)> = zones.iter().map(|(id, a)| (id.as_str(), *a)).collect();
    assert_same(
        "crossing",
        model_transitions(&events, &zref, "district-enter", "district-exit"),
        got,
    );
}

#[test]
fn a_drive_across_ningbo_gives_the_district_transitions_of_an_independent_walk() {
    let ds = load_districts("ningbo_330200.json");
    let start = ds
        .iter()
        .find(|d| d.adcode == 330203)
        .expect("Haishu")
        .center;
    let end = ds
        .iter()
        .find(|d| d.adcode == 330206)
        .expect("Beilun")
        .center;
    let (start, end) = (
        gcj02_to_wgs84(start.0, start.1),
        gcj02_to_wgs84(end.0, end.1),
    );
    // ~100 m steps; a fix within a metre of an edge is nudged along the line.
    let n = (haversine(start, end) / 100.0).ceil() as usize;
    let pts: Vec<Pt> = (0..=n)
        .map(|k| {
            let mut f = k as f64 / n as f64;
            let mut p = (
                start.0 + (end.0 - start.0) * f,
                start.1 + (end.1 - start.1) * f,
            );
            while clearance(&ds, p) < 1.0 {
                f += 0.0001;
                p = (
                    start.0 + (end.0 - start.0) * f,
                    start.1 + (end.1 - start.1) * f,
                );
            }
            p
        })
        .collect();
    let events = trace_events("nb-drive", &pts);
    let zones: Vec<(String, &Area)> = ds.iter().map(|d| (d.adcode.to_string(), &d.wgs)).collect();
    let zref: Vec<(&str, &Area)> = zones.iter().map(|(id, a)| (id.as_str(), *a)).collect();
    let expected = model_transitions(&events, &zref, "district-enter", "district-exit");
    let districts: HashSet<&str> = expected.iter().filter_map(|e| e.zone.as_deref()).collect();
    assert!(
        districts.len() >= 3,
        "the drive crosses several districts: {districts:?}"
    );
    let out = run(&district_city(&ds, true), DISTRICT_TRANSITIONS, &events);
    assert_same(
        "drive across Ningbo",
        expected.clone(),
        alerts(&out.outputs).iter().map(Exp::of).collect(),
    );
    eprintln!(
        "drive across Ningbo: {} fixes, {} transitions through {:?}",
        events.len(),
        expected.len(),
        districts
    );
}

/// A vehicle's fix that arrives after a newer fix of the same vehicle (within the
/// lateness, so not late) is "older than an event already applied for the same key" and is
/// not applied to keyed state (`RuleStats::out_of_order`). The geofence operator forgets a
/// key once it is outside all its zones, and with it the key's last time, so such a fix is
/// applied when the newer fix was outside every zone: a second enter and exit.
#[test]
fn a_stale_fix_of_a_vehicle_that_has_left_every_zone_is_not_applied() {
    let fixes = load_bus();
    let events = bus_events(&fixes);
    let zones = BusZones::new(&fixes);
    let qs = &zones.zones[0].2;
    // Vehicle 4733 leaving Queen Square: its last fix inside (k) and first outside (k + 1).
    let own: Vec<Event> = events
        .iter()
        .filter(|e| e.source == "4733")
        .cloned()
        .collect();
    let k = own
        .windows(2)
        .position(|w| qs.contains(point(&w[0])) && !qs.contains(point(&w[1])))
        .expect("a departure");
    // Fix k is delayed in transit: it arrives after fix k + 1, re-timed to 3 s before it
    // (inside the 5 s lateness, so not late).
    let mut stale = own[k].clone();
    stale.time = own[k + 1].time - chrono::Duration::seconds(3);
    let mut stream: Vec<Event> = own[..k].to_vec();
    stream.push(own[k + 1].clone());
    stream.push(stale);
    stream.extend(own[k + 2..].iter().cloned());
    let in_order: Vec<Event> = stream
        .iter()
        .filter(|e| e.id != own[k].id)
        .cloned()
        .collect();
    let expected = model_transitions(&in_order, &zones.all(), "bus-enter", "bus-exit");
    let out = run(&zones.city(), BUS_GEOFENCE_RULES, &stream);
    assert_eq!(out.stats.late, 0);
    let got: Vec<Exp> = alerts(&out.outputs)
        .iter()
        .filter(|a| a.rule != "terminus-layover")
        .map(Exp::of)
        .collect();
    assert_same("a stale fix after leaving every zone", expected, got);
    assert_eq!(out.stats.rules["bus-enter"].out_of_order, 1);
}
