//! `geofence`: enter, exit, dwell and inside-during-a-window on a set of zones.
//!
//! Per key, the zones it was in at its last fix. A key seen for the first time inside a
//! zone counts as entering it. Dwell fires when the key's own later fix shows it has been
//! inside long enough, or when the watermark passes `enter + dwell`, whichever is first;
//! either way the alert is the same (time = the entering fix).

use cityward_model::{City, Event};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{detail, Keyed, Operator};
use crate::engine::{Cx, Fire, Interner};
use crate::rule::{parse_between, parse_utc_offset, GeofenceOn, RuleSpec};
use crate::zones::ZoneSets;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Stay {
    zone: u32,
    since_ms: i64,
    enter_id: Box<str>,
    #[serde(default)]
    fired: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct State {
    last_ms: i64,
    /// The latest fix: the place of an alert raised by a timer.
    last_point: (f64, f64),
    inside: Vec<Stay>,
}

pub(crate) struct GeofenceOp {
    set: usize,
    on: GeofenceOn,
    dwell_ms: i64,
    window: Option<(u32, u32)>,
    offset_s: i64,
    keys: Keyed<State>,
    now: Vec<u32>,
}

impl GeofenceOp {
    pub(crate) fn new(spec: &RuleSpec, city: &City, zones: &mut ZoneSets) -> Self {
        GeofenceOp {
            set: zones.register(city, &spec.zones, &spec.zone_kinds),
            on: spec.on.unwrap_or(GeofenceOn::Enter),
            dwell_ms: spec.dwell.map(|d| d.as_millis() as i64).unwrap_or(0),
            window: spec.between.as_deref().and_then(|b| parse_between(b).ok()),
            offset_s: spec
                .utc_offset
                .as_deref()
                .and_then(|o| parse_utc_offset(o).ok())
                .unwrap_or(0) as i64,
            keys: Keyed::new(),
            now: Vec::new(),
        }
    }

    fn in_window(&self, t: i64) -> bool {
        let Some((start, end)) = self.window else { return true };
        let minute = ((t.div_euclid(1000) + self.offset_s).rem_euclid(86_400) / 60) as u32;
        if start < end {
            minute >= start && minute < end
        } else {
            minute >= start || minute < end
        }
    }
}

fn zone_detail(city: &City, zone: u32, extra: Option<(&str, Value)>) -> serde_json::Map<String, Value> {
    let z = &city.zones[zone as usize];
    let mut d = detail([
        ("zone_name", Value::from(z.name.as_str())),
        ("zone_kind", Value::from(z.kind.as_str())),
    ]);
    if let Some((k, v)) = extra {
        d.insert(k.to_string(), v);
    }
    d
}

impl Operator for GeofenceOp {
    fn on_event(&mut self, cx: &mut Cx<'_>, key: u32, event: &Event, t: i64) {
        let Some((lon, lat)) = event.point() else { return };
        let city: &City = cx.city;
        let in_window = self.in_window(t);
        let mut now = std::mem::take(&mut self.now);
        cx.zones.get(self.set).with_containing(city, lon, lat, |z| {
            now.clear();
            now.extend_from_slice(z);
        });
        let st = match self.keys.map.get_mut(&key) {
            Some(st) => st,
            None if now.is_empty() => {
                // Nothing to remember for a key that is outside every zone (keeps state
                // to the keys near zones).
                self.now = now;
                return;
            }
            None => self.keys.map.entry(key).or_default(),
        };
        if t < st.last_ms {
            self.keys.out_of_order += 1;
            self.now = now;
            return;
        }
        st.last_ms = t;
        st.last_point = (lon, lat);
        let fire = |zone: u32, time_ms: i64, evidence: Vec<String>, d| Fire {
            scope: zone,
            time_ms,
            at_ms: t,
            point: Some((lon, lat)),
            grid: event.grid.as_deref(),
            zone: Some(city.zones[zone as usize].id.as_str()),
            evidence,
            detail: d,
            group: None,
        };
        // Exits.
        let mut i = 0;
        while i < st.inside.len() {
            if now.binary_search(&st.inside[i].zone).is_ok() {
                i += 1;
                continue;
            }
            let stay = st.inside.swap_remove(i);
            if self.on == GeofenceOn::Exit {
                let d = zone_detail(city, stay.zone, Some(("inside_s", Value::from((t - stay.since_ms) / 1000))));
                cx.fire(key, fire(stay.zone, t, vec![stay.enter_id.to_string(), event.id.clone()], d));
            }
        }
        // Enters and stays.
        for &zone in &now {
            match st.inside.iter_mut().find(|s| s.zone == zone) {
                None => {
                    st.inside.push(Stay {
                        zone,
                        since_ms: t,
                        enter_id: event.id.as_str().into(),
                        fired: false,
                    });
                    match self.on {
                        GeofenceOn::Enter => {
                            cx.fire(key, fire(zone, t, vec![event.id.clone()], zone_detail(city, zone, None)));
                        }
                        GeofenceOn::Dwell => cx.schedule(key, t + self.dwell_ms, zone),
                        _ => {}
                    }
                }
                Some(stay) => {
                    if self.on == GeofenceOn::Dwell && !stay.fired && t - stay.since_ms >= self.dwell_ms {
                        stay.fired = true;
                        let d = zone_detail(city, zone, Some(("dwell_s", Value::from(self.dwell_ms / 1000))));
                        let mut f = fire(zone, stay.since_ms, vec![stay.enter_id.to_string(), event.id.clone()], d);
                        f.at_ms = stay.since_ms + self.dwell_ms;
                        cx.fire(key, f);
                    }
                }
            }
            if self.on == GeofenceOn::Inside && in_window {
                cx.fire(key, fire(zone, t, vec![event.id.clone()], zone_detail(city, zone, None)));
            }
        }
        if st.inside.is_empty() {
            self.keys.map.remove(&key);
        }
        self.now = now;
    }

    fn on_timer(&mut self, cx: &mut Cx<'_>, key: u32, at: i64, zone: u32) {
        let dwell_ms = self.dwell_ms;
        let Some(st) = self.keys.map.get_mut(&key) else { return };
        let Some(stay) = st.inside.iter_mut().find(|s| s.zone == zone) else { return };
        if stay.fired || stay.since_ms + dwell_ms != at {
            return; // left and came back since: a newer timer covers the new stay
        }
        stay.fired = true;
        let city: &City = cx.city;
        let z = &city.zones[zone as usize];
        let point = Some(st.last_point);
        let fire = Fire {
            scope: zone,
            time_ms: stay.since_ms,
            at_ms: at,
            point,
            grid: point.and_then(|(lon, lat)| city.grid_at(lon, lat)).map(|g| g.id.as_str()),
            zone: Some(z.id.as_str()),
            evidence: vec![stay.enter_id.to_string()],
            detail: zone_detail(city, zone, Some(("dwell_s", Value::from(dwell_ms / 1000)))),
            group: None,
        };
        cx.fire(key, fire);
    }

    fn timers(&self, out: &mut Vec<(u32, i64, u32)>) {
        if self.on != GeofenceOn::Dwell {
            return;
        }
        for (&k, st) in &self.keys.map {
            for stay in st.inside.iter().filter(|s| !s.fired) {
                out.push((k, stay.since_ms + self.dwell_ms, stay.zone));
            }
        }
    }

    fn save(&self, keys: &Interner) -> Value {
        self.keys.save(keys)
    }

    fn load(&mut self, state: &Value, keys: &mut Interner) -> Result<(), String> {
        self.keys.load(state, keys)
    }

    fn state_len(&self) -> usize {
        self.keys.map.len()
    }

    fn out_of_order(&self) -> u64 {
        self.keys.out_of_order
    }
}
