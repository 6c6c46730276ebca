//! `absence`: no event for a key for longer than `for` — the device-offline rule.
//!
//! One lazy timer per key: an event only moves `last_ms`; when the timer comes due it
//! either finds a newer event and re-arms at `last + for`, or fires. So a million silent
//! devices cost a million small heap entries, not a million tasks, and a busy device
//! costs nothing per event beyond the state update.

use cityward_model::Event;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{detail, Keyed, Operator, ShortText};
use crate::zones::ZoneSets;
use crate::engine::{StateJson, Cx, Fire, Interner};
use crate::rule::RuleSpec;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct State {
    /// Time of the latest event (ms).
    #[serde(rename = "t")]
    last_ms: i64,
    /// Its id: the evidence of an absence.
    #[serde(rename = "id")]
    last_id: ShortText,
    /// Raised and not yet cleared by a new event.
    #[serde(rename = "f", default, skip_serializing_if = "std::ops::Not::not")]
    fired: bool,
}

pub(crate) struct AbsenceOp {
    for_ms: i64,
    keys: Keyed<State>,
}

impl AbsenceOp {
    pub(crate) fn new(spec: &RuleSpec) -> Self {
        AbsenceOp {
            for_ms: spec.for_.map(|d| d.as_millis() as i64).unwrap_or(900_000),
            keys: Keyed::new(),
        }
    }

    /// The time at which silence since `last` becomes an absence: strictly more than `for`.
    fn due(&self, last: i64) -> i64 {
        last + self.for_ms + 1
    }
}

fn absence_fire<'a>(cx: &Cx<'a>, key: u32, st: &State, at: i64, for_ms: i64) -> Fire<'a> {
    // The place is the device's registered place, when the key is a registered device.
    let device = cx.city.device(cx.keys.name(key));
    Fire {
        scope: 0,
        time_ms: st.last_ms,
        at_ms: at,
        point: device.map(|d| (d.lon, d.lat)),
        grid: device.map(|d| d.grid.as_str()),
        zone: None,
        evidence: vec![st.last_id.as_str().to_string()],
        detail: detail([
            ("silent_for_s", Value::from((at - st.last_ms) / 1000)),
            ("limit_s", Value::from(for_ms / 1000)),
        ]),
        group: None,
    }
}

impl Operator for AbsenceOp {
    fn on_event(&mut self, cx: &mut Cx<'_>, key: u32, event: &Event, t: i64) {
        let for_ms = self.for_ms;
        let due_gap = for_ms + 1;
        match self.keys.get_mut(key) {
            None => {
                self.keys.insert(
                    key,
                    State {
                        last_ms: t,
                        last_id: event.id.as_str().into(),
                        fired: false,
                    },
                );
                cx.schedule(key, t + due_gap, 0);
            }
            Some(st) => {
                if t < st.last_ms {
                    self.keys.out_of_order += 1;
                    return;
                }
                if st.fired {
                    // Heard from again: clear, and re-arm (a fired key has no timer).
                    st.fired = false;
                    cx.clear(key, 0, t);
                    cx.schedule(key, t + due_gap, 0);
                } else if t - st.last_ms > for_ms {
                    // The gap shows the absence even though the timer has not come due
                    // yet (the watermark trails): raise it and clear it at once.
                    let fire = absence_fire(cx, key, st, st.last_ms + due_gap, for_ms);
                    cx.fire(key, fire);
                    cx.clear(key, 0, t);
                }
                st.last_ms = t;
                st.last_id = event.id.as_str().into();
            }
        }
    }

    fn on_timer(&mut self, cx: &mut Cx<'_>, key: u32, at: i64, _aux: u32) {
        let for_ms = self.for_ms;
        let Some(st) = self.keys.get_mut(key) else { return };
        let due = st.last_ms + for_ms + 1;
        if due > at {
            cx.schedule(key, due, 0);
            return;
        }
        if !st.fired {
            st.fired = true;
            let fire = absence_fire(cx, key, st, at, for_ms);
            cx.fire(key, fire);
        }
        // Fired: no timer until the key is heard from again (the event re-arms it).
    }

    fn timers(&self, _zones: &ZoneSets, out: &mut Vec<(u32, i64, u32)>) {
        for (k, st) in self.keys.iter() {
            if !st.fired {
                out.push((k, self.due(st.last_ms), 0));
            }
        }
    }

    super::keyed_state_methods!();
}
