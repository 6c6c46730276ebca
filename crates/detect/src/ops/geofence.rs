//! `geofence`: enter, exit, dwell and inside-during-a-window on a set of zones.
//!
//! Where each key is (the zones it was in at its last fix) is kept once per group of
//! geofence rules with the same zones, `when` and `key` (a [`Tracker`] in `zones.rs`): the
//! first rule of the group to see an event works out the key's transition, the others read
//! it. A key seen for the first time inside a zone counts as entering it. Dwell fires when
//! the key's own later fix (inside, or the first one outside) shows it was inside long
//! enough, or when the watermark passes `enter + dwell`, whichever is first; either way the
//! alert is the same (time, place and evidence of the entering fix).

use std::collections::{BTreeSet, HashSet};

use cityward_model::{City, Event};
use serde_json::Value;

use super::{detail, Operator};
use crate::engine::{StateJson, Cx, Fire, Interner};
use crate::rule::{parse_between, parse_utc_offset, GeofenceOn, Rule};
use crate::zones::{Stay, ZoneSets};

pub(crate) struct GeofenceOp {
    tracker: usize,
    on: GeofenceOn,
    dwell_ms: i64,
    window: Option<(u32, u32)>,
    offset_s: i64,
    /// Dwell: the (key, zone) stays this rule has already fired for.
    fired: HashSet<(u32, u32), ahash::RandomState>,
}

impl GeofenceOp {
    pub(crate) fn new(rule: &Rule, city: &City, zones: &mut ZoneSets) -> Self {
        let spec = &rule.spec;
        let set = zones.register(city, &spec.zones, &spec.zone_kinds);
        let when = rule.when.as_ref().map(|w| w.source()).unwrap_or("");
        let tracker = zones.tracker_for(set, when, rule.key.source());
        let on = spec.on.unwrap_or(GeofenceOn::Enter);
        let dwell_ms = spec.dwell.map(|d| d.as_millis() as i64).unwrap_or(0);
        GeofenceOp {
            tracker,
            on,
            dwell_ms,
            window: spec.between.as_deref().and_then(|b| parse_between(b).ok()),
            offset_s: spec
                .utc_offset
                .as_deref()
                .and_then(|o| parse_utc_offset(o).ok())
                .unwrap_or(0) as i64,
            fired: HashSet::default(),
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

/// Tells one zone's alerts from another's for the same rule and key: a hash of the zone's
/// id, so it survives a city whose zones come in another order.
pub(crate) fn zone_scope(city: &City, zone: u32) -> u32 {
    crate::rule::fnv1a(&[city.zones[zone as usize].id.as_bytes()]) as u32
}

fn dwell_fire<'a>(city: &'a City, stay: &'a Stay, dwell_ms: i64) -> Fire<'a> {
    let place = Some(stay.enter_point);
    Fire {
        scope: zone_scope(city, stay.zone),
        time_ms: stay.since_ms,
        at_ms: stay.since_ms + dwell_ms,
        point: place,
        grid: stay.enter_grid.as_deref(),
        zone: Some(city.zones[stay.zone as usize].id.as_str()),
        evidence: vec![stay.enter_id.to_string()],
        detail: detail([("dwell_s", Value::from(dwell_ms / 1000))]),
        group: None,
    }
}

impl Operator for GeofenceOp {
    fn on_event(&mut self, cx: &mut Cx<'_>, key: u32, event: &Event, t: i64) {
        let Some((lon, lat)) = event.point() else { return };
        let city: &City = cx.city;
        let zones: &ZoneSets = cx.zones;
        let mut tracker = zones.tracker(self.tracker).borrow_mut();
        tracker.update(cx.event_seq, key, t, (lon, lat), event, zones, city);
        let Some(diff) = tracker.diff() else { return };
        let fire = |zone: u32, time_ms: i64, evidence: Vec<String>, d| Fire {
            scope: zone_scope(city, zone),
            time_ms,
            at_ms: t,
            point: Some((lon, lat)),
            grid: event.grid.as_deref(),
            zone: Some(city.zones[zone as usize].id.as_str()),
            evidence,
            detail: d,
            group: None,
        };
        match self.on {
            GeofenceOn::Enter => {
                for &zone in &diff.entered {
                    cx.fire(key, fire(zone, t, vec![event.id.clone()], Default::default()));
                }
            }
            GeofenceOn::Exit => {
                for stay in &diff.exited {
                    let d = detail([("inside_s", Value::from((t - stay.since_ms) / 1000))]);
                    cx.fire(key, fire(stay.zone, t, vec![stay.enter_id.to_string(), event.id.clone()], d));
                }
            }
            GeofenceOn::Dwell => {
                // However a dwell is found — this fix, the exit fix, or the watermark — the
                // alert is the same: evidence and place of the entering fix.
                for stay in &diff.exited {
                    let was_fired = self.fired.remove(&(key, stay.zone));
                    if !was_fired && t - stay.since_ms >= self.dwell_ms {
                        cx.fire(key, dwell_fire(city, stay, self.dwell_ms));
                    }
                }
                for &zone in &diff.entered {
                    cx.schedule(key, t + self.dwell_ms, zone);
                }
                for stay in tracker.inside(key) {
                    if t - stay.since_ms >= self.dwell_ms && self.fired.insert((key, stay.zone)) {
                        cx.fire(key, dwell_fire(city, stay, self.dwell_ms));
                    }
                }
            }
            GeofenceOn::Inside => {
                if self.in_window(t) {
                    for stay in tracker.inside(key) {
                        cx.fire(key, fire(stay.zone, t, vec![event.id.clone()], Default::default()));
                    }
                }
            }
        }
    }

    fn on_timer(&mut self, cx: &mut Cx<'_>, key: u32, at: i64, zone: u32) {
        let city: &City = cx.city;
        let zones: &ZoneSets = cx.zones;
        let tracker = zones.tracker(self.tracker).borrow();
        let Some(stay) = tracker.inside(key).iter().find(|s| s.zone == zone) else { return };
        if stay.since_ms + self.dwell_ms != at || !self.fired.insert((key, zone)) {
            return; // left and came back since (a newer timer covers the new stay), or fired
        }
        cx.fire(key, dwell_fire(city, stay, self.dwell_ms));
    }

    fn timers(&self, zones: &ZoneSets, out: &mut Vec<(u32, i64, u32)>) {
        if self.on != GeofenceOn::Dwell {
            return;
        }
        zones.tracker(self.tracker).borrow().for_each_stay(|key, stay| {
            if !self.fired.contains(&(key, stay.zone)) {
                out.push((key, stay.since_ms + self.dwell_ms, stay.zone));
            }
        });
    }

    fn save(&self, keys: &Interner, zones: &ZoneSets) -> StateJson {
        // Where keys are belongs to the shared tracker (saved by the engine); a rule keeps
        // only the dwell stays it has raised, by key name and zone id.
        let fired: BTreeSet<(&str, &str)> = self
            .fired
            .iter()
            .map(|&(k, z)| (keys.name(k), zones.zone_id(z)))
            .collect();
        StateJson::of(&fired)
    }

    fn load(&mut self, state: &StateJson, keys: &mut Interner, zones: &ZoneSets) -> Result<(), String> {
        let fired: Vec<(String, String)> = serde_json::from_str(state.text()).map_err(|e| e.to_string())?;
        self.fired = fired
            .into_iter()
            .filter_map(|(k, z)| Some((keys.intern(&k), zones.zone_index(&z)?)))
            .collect();
        Ok(())
    }

    fn tracker(&self) -> Option<usize> {
        Some(self.tracker)
    }

    fn join(&mut self, zones: &ZoneSets, watermark_ms: i64) {
        // Joining a group whose keys are already placed (a rule added or changed at run
        // time, or restored without its own state): stays whose dwell was already complete —
        // by the key's last fix or by the watermark — are taken as raised, not raised again.
        if self.on != GeofenceOn::Dwell {
            return;
        }
        let dwell_ms = self.dwell_ms;
        let fired = &mut self.fired;
        zones.tracker(self.tracker).borrow().for_each_stay_with_time(|key, stay, last_ms| {
            if last_ms.max(watermark_ms) - stay.since_ms >= dwell_ms {
                fired.insert((key, stay.zone));
            }
        });
    }

    fn state_len(&self, zones: &ZoneSets) -> usize {
        zones.tracker(self.tracker).borrow().len()
    }

    fn out_of_order(&self, zones: &ZoneSets) -> u64 {
        zones.tracker(self.tracker).borrow().out_of_order()
    }
}
