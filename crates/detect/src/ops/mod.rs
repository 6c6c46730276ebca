//! One operator per rule kind. Each keeps its state per key and reports firings through
//! [`Cx`]; the engine decides the order events and timers reach it.

use std::collections::BTreeMap;

use cityward_model::{City, Event};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::engine::{Cx, Fire, Interner};
use crate::rule::{Rule, RuleKind};
use crate::zones::ZoneSets;

mod absence;
mod count;
mod geofence;
mod motion;
mod sequence;
mod simple;
mod threshold;

type FastMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

/// A rule kind's runtime.
pub(crate) trait Operator: Send {
    /// An event for `key` that passed the rule's `when`; `t` is its time in ms.
    fn on_event(&mut self, cx: &mut Cx<'_>, key: u32, event: &Event, t: i64);
    /// A timer scheduled with [`Cx::schedule`] came due.
    fn on_timer(&mut self, _cx: &mut Cx<'_>, _key: u32, _at: i64, _aux: u32) {}
    /// Every timer the operator expects, as (key, at, aux): used to rebuild the timer
    /// queue after a restore or a rule change.
    fn timers(&self, _zones: &ZoneSets, _out: &mut Vec<(u32, i64, u32)>) {}
    /// Called when the operator starts on state it did not build (a rule added or changed
    /// at run time, or restored without its own checkpointed state), with the watermark.
    fn join(&mut self, _zones: &ZoneSets, _watermark_ms: i64) {}
    /// The shared geofence tracker the operator uses, if any.
    fn tracker(&self) -> Option<usize> {
        None
    }
    /// The keyed state, by key name.
    fn save(&self, keys: &Interner, zones: &ZoneSets) -> Value;
    /// Loads state written by `save`.
    fn load(&mut self, state: &Value, keys: &mut Interner, zones: &ZoneSets) -> Result<(), String>;
    /// How many keys (or groups) have state.
    fn state_len(&self, zones: &ZoneSets) -> usize;
    /// Events older than one already applied for their key.
    fn out_of_order(&self, _zones: &ZoneSets) -> u64 {
        0
    }
}

/// Per-key state of type `S`, with the save/load every operator needs.
pub(crate) struct Keyed<S> {
    pub map: FastMap<u32, S>,
    pub out_of_order: u64,
}

impl<S: Serialize + DeserializeOwned> Keyed<S> {
    pub fn new() -> Self {
        Keyed {
            map: FastMap::default(),
            out_of_order: 0,
        }
    }

    pub fn save(&self, keys: &Interner) -> Value {
        let sorted: BTreeMap<&str, &S> = self.map.iter().map(|(k, s)| (keys.name(*k), s)).collect();
        serde_json::to_value(sorted).unwrap_or(Value::Null)
    }

    pub fn load(&mut self, state: &Value, keys: &mut Interner) -> Result<(), String> {
        let loaded: BTreeMap<String, S> = serde_json::from_value(state.clone()).map_err(|e| e.to_string())?;
        self.map.clear();
        for (k, s) in loaded {
            self.map.insert(keys.intern(&k), s);
        }
        Ok(())
    }
}

/// Builds the operator of a rule.
pub(crate) fn new_operator(rule: &Rule, city: &City, zones: &mut ZoneSets) -> Box<dyn Operator> {
    let spec = &rule.spec;
    match spec.kind {
        RuleKind::Match => Box::new(simple::MatchOp),
        RuleKind::Hotlist => Box::new(simple::HotlistOp::new(spec)),
        RuleKind::Sql => Box::new(simple::SqlOp),
        RuleKind::Threshold => Box::new(threshold::ThresholdOp::new(spec)),
        RuleKind::Absence => Box::new(absence::AbsenceOp::new(spec)),
        RuleKind::Geofence => Box::new(geofence::GeofenceOp::new(rule, city, zones)),
        RuleKind::Speed => Box::new(motion::SpeedOp::new(spec, city, zones)),
        RuleKind::Corridor => Box::new(motion::CorridorOp::new(spec, city)),
        RuleKind::Fatigue => Box::new(motion::FatigueOp::new(spec)),
        RuleKind::Count => Box::new(count::CountOp::new(spec, city, zones)),
        RuleKind::Sequence => Box::new(sequence::SequenceOp::new(rule)),
    }
}

/// A firing at one event, with the event's place.
pub(crate) fn fire_at<'a>(
    event: &'a Event,
    scope: u32,
    time_ms: i64,
    at_ms: i64,
    evidence: Vec<String>,
    detail: Map<String, Value>,
) -> Fire<'a> {
    Fire {
        scope,
        time_ms,
        at_ms,
        point: event.point(),
        grid: event.grid.as_deref(),
        zone: None,
        evidence,
        detail,
        group: None,
    }
}

/// A JSON object from pairs.
pub(crate) fn detail<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Rounds for display in alert details (0.1 precision).
pub(crate) fn round1(x: f64) -> Value {
    serde_json::Number::from_f64((x * 10.0).round() / 10.0)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}
