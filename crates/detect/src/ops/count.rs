//! `count`: at least N matching events per group in a tumbling or sliding window.
//!
//! Events reach this operator in watermark order (time, then id), so the windows and the
//! evidence are the same whatever order events arrived in within the lateness allowance.

use std::collections::VecDeque;

use cityward_model::{City, Event};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{detail, Operator};
use crate::engine::{StateJson, Cx, Fire, Interner};
use crate::rule::{fnv1a, GroupBy, RuleSpec};
use crate::zones::ZoneSets;

type FastMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct Group {
    /// Tumbling: start of the current window. Sliding: unused.
    window_start: i64,
    /// (time, id) oldest first. Tumbling: the window's first events, as evidence. Sliding:
    /// the last `n` events in the window — enough to tell whether the window holds `n`
    /// (the `n`-th latest event is in it), and exactly the evidence when it first does, so a
    /// busy group holds `n` events, not every event of its window.
    events: VecDeque<(i64, Box<str>)>,
    /// Tumbling: events in the current window.
    count: u32,
    /// Fired for the current window (tumbling) or burst (sliding).
    fired: bool,
    /// Place of the latest event.
    point: Option<(f64, f64)>,
    grid: Option<String>,
    last_ms: i64,
}

pub(crate) struct CountOp {
    n: u32,
    window_ms: i64,
    sliding: bool,
    group: GroupBy,
    h3: Option<h3o::Resolution>,
    zone_set: Option<usize>,
    max_evidence: usize,
    groups: FastMap<Box<str>, Group>,
    next_sweep: i64,
    names: Vec<u32>,
}

impl CountOp {
    pub(crate) fn new(spec: &RuleSpec, city: &City, zones: &mut ZoneSets) -> Self {
        let group = spec.group.unwrap_or(GroupBy::Key);
        CountOp {
            n: spec.count.unwrap_or(1).max(1),
            window_ms: spec.window.map(|d| d.as_millis() as i64).unwrap_or(60_000).max(1),
            sliding: spec.sliding.unwrap_or(false),
            group,
            h3: h3o::Resolution::try_from(spec.h3_resolution.unwrap_or(9)).ok(),
            zone_set: (group == GroupBy::Zone).then(|| zones.register(city, &spec.zones, &[])),
            max_evidence: 20,
            groups: FastMap::default(),
            next_sweep: i64::MIN,
            names: Vec::new(),
        }
    }

    fn add(&mut self, cx: &mut Cx<'_>, key: u32, name: &str, zone: Option<u32>, event: &Event, t: i64) {
        let (n, window_ms, sliding, max_evidence) = (self.n, self.window_ms, self.sliding, self.max_evidence);
        let g = match self.groups.get_mut(name) {
            Some(g) => g,
            None => self.groups.entry(name.into()).or_default(),
        };
        g.point = event.point();
        g.grid = event.grid.clone();
        g.last_ms = t;
        let fire_now = if sliding {
            g.events.push_back((t, event.id.as_str().into()));
            while g.events.len() > n as usize || g.events.front().is_some_and(|(et, _)| *et <= t - window_ms) {
                g.events.pop_front();
            }
            if (g.events.len() as u32) < n {
                g.fired = false;
                false
            } else {
                !std::mem::replace(&mut g.fired, true)
            }
        } else {
            let start = t - t.rem_euclid(window_ms);
            if start != g.window_start || g.count == 0 {
                g.window_start = start;
                g.count = 0;
                g.events.clear();
                g.fired = false;
            }
            g.count += 1;
            if g.events.len() < max_evidence {
                g.events.push_back((t, event.id.as_str().into()));
            }
            g.count >= n && !std::mem::replace(&mut g.fired, true)
        };
        if !fire_now {
            return;
        }
        let city: &City = cx.city;
        let count = if sliding { g.events.len() as u32 } else { g.count };
        let first = g.events.front().map(|(t, _)| *t).unwrap_or(t);
        let mut d = detail([
            ("count", Value::from(count)),
            ("threshold", Value::from(n)),
            ("window_s", Value::from(window_ms / 1000)),
            ("group", Value::from(name)),
        ]);
        if !sliding {
            d.insert("window_start".into(), Value::from(crate::engine::ms_to_time(g.window_start).to_rfc3339()));
        }
        let fire = Fire {
            scope: fnv1a(&[name.as_bytes()]) as u32,
            time_ms: first,
            at_ms: t,
            point: g.point,
            grid: event.grid.as_deref(),
            zone: zone.map(|z| city.zones[z as usize].id.as_str()),
            evidence: g.events.iter().take(max_evidence).map(|(_, id)| id.to_string()).collect(),
            detail: d,
            group: (self.group != GroupBy::Key).then_some(name),
        };
        cx.fire(key, fire);
    }

    /// Drops groups with nothing in their window any more.
    fn sweep(&mut self, t: i64) {
        if t < self.next_sweep {
            return;
        }
        self.next_sweep = t + self.window_ms;
        let horizon = t - 2 * self.window_ms;
        self.groups.retain(|_, g| g.last_ms > horizon);
    }
}

/// The groups by name, sorted, so that equal state gives equal text.
fn save_groups(groups: &FastMap<Box<str>, Group>) -> StateJson {
    let mut sorted: Vec<(&str, &Group)> = groups.iter().map(|(k, g)| (&**k, g)).collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    StateJson::of(&super::SortedMap(sorted))
}

impl Operator for CountOp {
    fn on_event(&mut self, cx: &mut Cx<'_>, key: u32, event: &Event, t: i64) {
        self.sweep(t);
        match self.group {
            GroupBy::Key => {
                let name = cx.keys.name(key).to_string();
                self.add(cx, key, &name, None, event, t);
            }
            GroupBy::Grid => {
                let Some(grid) = event.grid.as_deref() else { return };
                self.add(cx, key, grid, None, event, t);
            }
            GroupBy::H3 => {
                let (Some((lon, lat)), Some(res)) = (event.point(), self.h3) else { return };
                let Ok(ll) = h3o::LatLng::new(lat, lon) else { return };
                let cell = ll.to_cell(res).to_string();
                self.add(cx, key, &cell, None, event, t);
            }
            GroupBy::Zone => {
                let (Some((lon, lat)), Some(set)) = (event.point(), self.zone_set) else { return };
                let city: &City = cx.city;
                let mut names = std::mem::take(&mut self.names);
                cx.zones.get(set).with_containing(city, lon, lat, |z| {
                    names.clear();
                    names.extend_from_slice(z);
                });
                for &z in &names {
                    let name = city.zones[z as usize].id.as_str();
                    self.add(cx, key, name, Some(z), event, t);
                }
                self.names = names;
            }
        }
    }

    fn save(&self, _keys: &Interner, _zones: &ZoneSets) -> StateJson {
        save_groups(&self.groups)
    }

    fn snapshot(&self) -> Option<super::LaterState> {
        // A group per grid or zone and rule: copied now, written later.
        let groups = self.groups.clone();
        Some(Box::new(move |_keys| save_groups(&groups)))
    }

    fn load(&mut self, state: &StateJson, _keys: &mut Interner, _zones: &ZoneSets) -> Result<(), String> {
        let loaded = serde_json::from_str::<super::MapEntries<Group>>(state.text()).map_err(|e| e.to_string())?;
        let (sliding, n) = (self.sliding, self.n as usize);
        self.groups = loaded
            .0
            .into_iter()
            .map(|(k, mut g)| {
                // Older checkpoints kept every event of a sliding window.
                if sliding {
                    let excess = g.events.len().saturating_sub(n);
                    g.events.drain(..excess);
                }
                (k.into_boxed_str(), g)
            })
            .collect();
        Ok(())
    }

    fn state_len(&self, _zones: &ZoneSets) -> usize {
        self.groups.len()
    }
}
