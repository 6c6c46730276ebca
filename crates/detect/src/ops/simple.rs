//! Stateless operators: `match` and `hotlist` (and `sql`, which runs on a schedule
//! outside the event path).

use cityward_model::Event;
use serde_json::Value;

use super::{detail, fire_at, Operator};
use crate::zones::ZoneSets;
use crate::engine::{StateJson, Cx, Interner};
use crate::rule::RuleSpec;

/// `match`: every event that passes `when` fires.
pub(crate) struct MatchOp;

impl Operator for MatchOp {
    fn on_event(&mut self, cx: &mut Cx<'_>, key: u32, event: &Event, t: i64) {
        cx.fire(key, fire_at(event, 0, t, t, vec![event.id.clone()], Default::default()));
    }

    fn save(&self, _keys: &Interner, _zones: &ZoneSets) -> StateJson {
        StateJson::of(&())
    }

    fn load(&mut self, _state: &StateJson, _keys: &mut Interner, _zones: &ZoneSets) -> Result<(), String> {
        Ok(())
    }

    fn state_len(&self, _zones: &ZoneSets) -> usize {
        0
    }
}

/// `hotlist`: the event's attribute is on the named list (and the entry has not expired
/// at the event's time).
pub(crate) struct HotlistOp {
    list: String,
    attr: String,
}

impl HotlistOp {
    pub(crate) fn new(spec: &RuleSpec) -> Self {
        HotlistOp {
            list: spec.list.clone().unwrap_or_default(),
            attr: spec.attr.clone().unwrap_or_default(),
        }
    }
}

impl Operator for HotlistOp {
    fn on_event(&mut self, cx: &mut Cx<'_>, key: u32, event: &Event, t: i64) {
        let Some(value) = event.attr_str(&self.attr) else { return };
        let Some(entry) = cx.hotlists.lookup(&self.list, value, event.time) else { return };
        let d = detail([
            ("list", Value::from(self.list.as_str())),
            ("value", Value::from(value)),
            ("listed_value", Value::from(entry.value.as_str())),
            ("reason", Value::from(entry.reason.as_str())),
            ("owner", Value::from(entry.owner.as_str())),
        ]);
        cx.fire(key, fire_at(event, 0, t, t, vec![event.id.clone()], d));
    }

    fn save(&self, _keys: &Interner, _zones: &ZoneSets) -> StateJson {
        StateJson::of(&())
    }

    fn load(&mut self, _state: &StateJson, _keys: &mut Interner, _zones: &ZoneSets) -> Result<(), String> {
        Ok(())
    }

    fn state_len(&self, _zones: &ZoneSets) -> usize {
        0
    }
}

/// `sql`: never sees events; the host runs the query on its schedule and turns rows into
/// alerts with [`crate::sql_alerts`].
pub(crate) struct SqlOp;

impl Operator for SqlOp {
    fn on_event(&mut self, _cx: &mut Cx<'_>, _key: u32, _event: &Event, _t: i64) {}

    fn save(&self, _keys: &Interner, _zones: &ZoneSets) -> StateJson {
        StateJson::of(&())
    }

    fn load(&mut self, _state: &StateJson, _keys: &mut Interner, _zones: &ZoneSets) -> Result<(), String> {
        Ok(())
    }

    fn state_len(&self, _zones: &ZoneSets) -> usize {
        0
    }
}
