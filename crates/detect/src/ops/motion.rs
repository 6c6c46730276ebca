//! Operators over a moving key's fixes: `speed`, `corridor` and `fatigue`.

use std::collections::HashMap;

use cityward_model::geo::haversine_m;
use cityward_model::{City, Event};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{detail, fire_at, round1, Keyed, Operator};
use crate::engine::{StateJson, Cx, Interner};
use crate::rule::{LimitFrom, RuleSpec};
use crate::zones::ZoneSets;

/// Longest gap between two fixes over which a speed is derived from their distance.
const MAX_DERIVE_GAP_MS: i64 = 300_000;

/// The speed at a fix: the attribute when the event has it, else derived from the
/// previous fix of the same key.
fn speed_kmh(event: &Event, attr: &str, prev: Option<(i64, (f64, f64))>, t: i64) -> Option<f64> {
    if let Some(v) = event.attr_f64(attr) {
        return Some(v);
    }
    let (pt, pp) = prev?;
    let p = event.point()?;
    let dt = t - pt;
    (dt > 0 && dt <= MAX_DERIVE_GAP_MS).then(|| haversine_m(pp, p) / (dt as f64 / 1000.0) * 3.6)
}

/// An episode of a condition holding: since when, first evidence, fired yet.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct Episode {
    since_ms: i64,
    first_id: String,
    fired: bool,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct SpeedState {
    last_ms: i64,
    last_point: Option<(f64, f64)>,
    over: Option<Episode>,
}

/// `speed`: over the limit for at least `for`.
pub(crate) struct SpeedOp {
    limit_from: LimitFrom,
    limit_kmh: f64,
    tolerance: f64,
    road_within_m: f64,
    speed_attr: String,
    zone_set: Option<usize>,
    for_ms: i64,
    keys: Keyed<SpeedState>,
}

impl SpeedOp {
    pub(crate) fn new(spec: &RuleSpec, city: &City, zones: &mut ZoneSets) -> Self {
        let limit_from = spec.limit_from.unwrap_or(LimitFrom::Rule);
        if limit_from == LimitFrom::Road {
            zones.ensure_roads(city);
        }
        SpeedOp {
            limit_from,
            limit_kmh: spec.limit_kmh.unwrap_or(f64::INFINITY),
            tolerance: spec.tolerance_kmh.unwrap_or(0.0),
            road_within_m: spec.road_within_m.unwrap_or(30.0),
            speed_attr: spec.speed_attr.clone().unwrap_or_else(|| "speed_kmh".into()),
            zone_set: (!spec.zones.is_empty()).then(|| zones.register(city, &spec.zones, &[])),
            for_ms: spec.for_.map(|d| d.as_millis() as i64).unwrap_or(0),
            keys: Keyed::new(),
        }
    }

    /// The limit at a point and where it came from, or `None` where the rule does not apply.
    fn limit_at(&self, cx: &Cx<'_>, p: (f64, f64)) -> Option<(f64, String)> {
        let city: &City = cx.city;
        let zones_here = |f: &mut dyn FnMut(&[u32])| {
            if let Some(set) = self.zone_set {
                cx.zones.get(set).with_containing(city, p.0, p.1, |z| f(z));
            }
        };
        match self.limit_from {
            LimitFrom::Rule => {
                if self.zone_set.is_some() {
                    let mut inside = false;
                    zones_here(&mut |z| inside = !z.is_empty());
                    if !inside {
                        return None;
                    }
                }
                Some((self.limit_kmh, "rule".into()))
            }
            LimitFrom::Zone => {
                let mut best: Option<(f64, String)> = None;
                zones_here(&mut |z| {
                    for &zi in z {
                        let zone = &city.zones[zi as usize];
                        if let Some(l) = zone.properties.get("speed_limit_kmh").and_then(Value::as_f64) {
                            if best.as_ref().is_none_or(|(b, _)| l < *b) {
                                best = Some((l, format!("zone {}", zone.id)));
                            }
                        }
                    }
                });
                best
            }
            LimitFrom::Road => {
                let (ri, _) = cx.zones.roads()?.nearest(city, p.0, p.1, self.road_within_m)?;
                let road = &city.roads[ri as usize];
                Some((road.speed_limit_kmh, format!("road {}", road.id)))
            }
        }
    }
}

impl Operator for SpeedOp {
    fn on_event(&mut self, cx: &mut Cx<'_>, key: u32, event: &Event, t: i64) {
        let Some(p) = event.point() else { return };
        let prev = {
            let st = self.keys.get_or_default(key);
            if t < st.last_ms {
                self.keys.out_of_order += 1;
                return;
            }
            let prev = st.last_point.map(|lp| (st.last_ms, lp));
            st.last_ms = t;
            st.last_point = Some(p);
            prev
        };
        let speed = speed_kmh(event, &self.speed_attr, prev, t);
        let limit = speed.and_then(|_| self.limit_at(cx, p));
        let st = self.keys.get_mut(key).expect("inserted above");
        let (Some(speed), Some((limit, from))) = (speed, limit) else {
            st.over = None;
            return;
        };
        if speed <= limit + self.tolerance {
            st.over = None;
            return;
        }
        let ep = st.over.get_or_insert_with(|| Episode {
            since_ms: t,
            first_id: event.id.clone(),
            fired: false,
        });
        if !ep.fired && t - ep.since_ms >= self.for_ms {
            ep.fired = true;
            let mut evidence = vec![ep.first_id.clone()];
            if ep.first_id != event.id {
                evidence.push(event.id.clone());
            }
            let d = detail([
                ("speed_kmh", round1(speed)),
                ("limit_kmh", Value::from(limit)),
                ("limit_from", Value::from(from)),
                ("over_s", Value::from((t - ep.since_ms) / 1000)),
            ]);
            let since = ep.since_ms;
            cx.fire(key, fire_at(event, 0, since, t, evidence, d));
        }
    }

    super::keyed_state_methods!();
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct CorridorState {
    last_ms: i64,
    off: Option<Episode>,
}

/// `corridor`: a key assigned to a corridor is off it by more than `off_m` for `for`.
pub(crate) struct CorridorOp {
    fixed: Option<u32>,
    attr: Option<String>,
    zone_index: HashMap<String, u32>,
    off_m: f64,
    for_ms: i64,
    keys: Keyed<CorridorState>,
}

impl CorridorOp {
    pub(crate) fn new(spec: &RuleSpec, city: &City) -> Self {
        let zone_index: HashMap<String, u32> = city
            .zones
            .iter()
            .enumerate()
            .filter(|(_, z)| z.is_corridor())
            .map(|(i, z)| (z.id.clone(), i as u32))
            .collect();
        CorridorOp {
            fixed: spec.corridor.as_ref().and_then(|c| zone_index.get(c).copied()),
            attr: spec.corridor_attr.clone(),
            zone_index,
            off_m: spec.off_m.unwrap_or(0.0),
            for_ms: spec.for_.map(|d| d.as_millis() as i64).unwrap_or(0),
            keys: Keyed::new(),
        }
    }
}

impl Operator for CorridorOp {
    fn on_event(&mut self, cx: &mut Cx<'_>, key: u32, event: &Event, t: i64) {
        let Some(p) = event.point() else { return };
        // The key's corridor: named by the event's attribute, else the rule's.
        let corridor = self
            .attr
            .as_deref()
            .and_then(|a| event.attr_str(a))
            .and_then(|id| self.zone_index.get(id).copied())
            .or(self.fixed);
        let Some(zi) = corridor else { return };
        let city: &City = cx.city;
        let zone = &city.zones[zi as usize];
        let half = zone.width_m.unwrap_or(0.0) / 2.0;
        let beyond = zone.geometry.distance_m(p) - half;
        let st = self.keys.get_or_default(key);
        if t < st.last_ms {
            self.keys.out_of_order += 1;
            return;
        }
        st.last_ms = t;
        if beyond <= self.off_m {
            st.off = None;
            return;
        }
        let ep = st.off.get_or_insert_with(|| Episode {
            since_ms: t,
            first_id: event.id.clone(),
            fired: false,
        });
        if !ep.fired && t - ep.since_ms >= self.for_ms {
            ep.fired = true;
            let mut evidence = vec![ep.first_id.clone()];
            if ep.first_id != event.id {
                evidence.push(event.id.clone());
            }
            let d = detail([
                ("off_corridor_m", round1(beyond)),
                ("allowed_m", Value::from(self.off_m)),
                ("off_s", Value::from((t - ep.since_ms) / 1000)),
            ]);
            let mut fire = fire_at(event, super::geofence::zone_scope(city, zi), ep.since_ms, t, evidence, d);
            fire.zone = Some(zone.id.as_str());
            cx.fire(key, fire);
        }
    }

    super::keyed_state_methods!();
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct FatigueState {
    last_ms: i64,
    last_point: Option<(f64, f64)>,
    /// Start of the current driving period.
    driving: Option<Episode>,
    /// Start of the current stop.
    stopped_since: Option<i64>,
}

/// `fatigue`: continuous driving longer than `limit` without a rest of at least `rest`.
///
/// Driving time runs from the first moving fix after a rest; stops shorter than `rest`
/// do not end it. A gap between fixes of at least `rest` counts as a rest (the vehicle
/// was parked with its tracker asleep).
pub(crate) struct FatigueOp {
    limit_ms: i64,
    rest_ms: i64,
    moving_kmh: f64,
    speed_attr: String,
    keys: Keyed<FatigueState>,
}

impl FatigueOp {
    pub(crate) fn new(spec: &RuleSpec) -> Self {
        FatigueOp {
            limit_ms: spec.limit.map(|d| d.as_millis() as i64).unwrap_or(4 * 3_600_000),
            rest_ms: spec.rest.map(|d| d.as_millis() as i64).unwrap_or(20 * 60_000),
            moving_kmh: spec.moving_kmh.unwrap_or(5.0),
            speed_attr: spec.speed_attr.clone().unwrap_or_else(|| "speed_kmh".into()),
            keys: Keyed::new(),
        }
    }
}

impl Operator for FatigueOp {
    fn on_event(&mut self, cx: &mut Cx<'_>, key: u32, event: &Event, t: i64) {
        let st = self.keys.get_or_default(key);
        if t < st.last_ms {
            self.keys.out_of_order += 1;
            return;
        }
        let prev = st.last_point.map(|lp| (st.last_ms, lp));
        let gap = if st.last_ms == 0 { 0 } else { t - st.last_ms };
        st.last_ms = t;
        if let Some(p) = event.point() {
            st.last_point = Some(p);
        }
        if gap >= self.rest_ms {
            st.driving = None;
            st.stopped_since = None;
        }
        let Some(speed) = speed_kmh(event, &self.speed_attr, prev, t) else { return };
        if speed < self.moving_kmh {
            let since = *st.stopped_since.get_or_insert(t);
            if t - since >= self.rest_ms {
                st.driving = None;
            }
            return;
        }
        if st.stopped_since.take().is_some_and(|s| t - s >= self.rest_ms) {
            st.driving = None;
        }
        let ep = st.driving.get_or_insert_with(|| Episode {
            since_ms: t,
            first_id: event.id.clone(),
            fired: false,
        });
        if !ep.fired && t - ep.since_ms >= self.limit_ms {
            ep.fired = true;
            let d = detail([
                ("driving_min", Value::from((t - ep.since_ms) / 60_000)),
                ("limit_min", Value::from(self.limit_ms / 60_000)),
                ("rest_min", Value::from(self.rest_ms / 60_000)),
            ]);
            let evidence = vec![ep.first_id.clone(), event.id.clone()];
            let since = ep.since_ms;
            cx.fire(key, fire_at(event, 0, since, t, evidence, d));
        }
    }

    super::keyed_state_methods!();
}
