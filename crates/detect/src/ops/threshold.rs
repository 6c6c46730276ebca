//! `threshold`: an attribute beyond a value for at least N readings and/or a duration;
//! raises once, then clears once when the value comes back past the clear value.

use cityward_model::Event;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{detail, fire_at, Keyed, Operator};
use crate::zones::ZoneSets;
use crate::engine::{StateJson, Cx, Fire, Interner};
use crate::rule::RuleSpec;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct State {
    last_ms: i64,
    /// Raised and not yet cleared.
    active: bool,
    /// Consecutive readings beyond the value.
    streak: u32,
    /// Time and id of the first reading of the streak.
    since_ms: i64,
    first_id: String,
    /// Place of the latest reading (for a firing by timer).
    point: Option<(f64, f64)>,
    grid: Option<String>,
    value: f64,
    /// Whether a timer for `since_ms + for` is pending.
    timer: bool,
}

pub(crate) struct ThresholdOp {
    attr: String,
    above: Option<f64>,
    below: Option<f64>,
    clear: f64,
    count: u32,
    for_ms: i64,
    keys: Keyed<State>,
}

impl ThresholdOp {
    pub(crate) fn new(spec: &RuleSpec) -> Self {
        let limit = spec.above.or(spec.below).unwrap_or_default();
        ThresholdOp {
            attr: spec.attr.clone().unwrap_or_default(),
            above: spec.above,
            below: spec.below,
            clear: spec.clear.unwrap_or(limit),
            count: spec.count.unwrap_or(1),
            for_ms: spec.for_.map(|d| d.as_millis() as i64).unwrap_or(0),
            keys: Keyed::new(),
        }
    }

    fn beyond(&self, v: f64) -> bool {
        match (self.above, self.below) {
            (Some(a), _) => v > a,
            (_, Some(b)) => v < b,
            _ => false,
        }
    }

    fn back(&self, v: f64) -> bool {
        if self.above.is_some() {
            v <= self.clear
        } else {
            v >= self.clear
        }
    }

    fn limit(&self) -> f64 {
        self.above.or(self.below).unwrap_or_default()
    }
}

impl Operator for ThresholdOp {
    fn on_event(&mut self, cx: &mut Cx<'_>, key: u32, event: &Event, t: i64) {
        let Some(v) = event.attr_f64(&self.attr) else { return };
        let (count, for_ms, limit) = (self.count, self.for_ms, self.limit());
        let beyond = self.beyond(v);
        let back = self.back(v);
        let st = self.keys.get_or_default(key);
        if st.last_ms > t {
            self.keys.out_of_order += 1;
            return;
        }
        st.last_ms = t;
        st.point = event.point();
        st.grid = event.grid.clone();
        st.value = v;
        if st.active {
            if back {
                st.active = false;
                st.streak = 0;
                cx.clear(key, 0, t);
            }
            return;
        }
        if !beyond {
            st.streak = 0;
            return;
        }
        if st.streak == 0 {
            st.since_ms = t;
            st.first_id = event.id.clone();
        }
        st.streak = st.streak.saturating_add(1);
        if st.streak >= count && t - st.since_ms >= for_ms {
            st.active = true;
            let mut evidence = vec![st.first_id.clone()];
            if st.first_id != event.id {
                evidence.push(event.id.clone());
            }
            let d = detail([
                ("value", Value::from(v)),
                ("threshold", Value::from(limit)),
                ("readings", Value::from(st.streak)),
            ]);
            cx.fire(key, fire_at(event, 0, st.since_ms, t, evidence, d));
        } else if st.streak >= count && for_ms > 0 && !st.timer {
            // Enough readings, not yet long enough: come back when it is, in case no
            // further reading arrives before then.
            st.timer = true;
            cx.schedule(key, st.since_ms + for_ms, 0);
        }
    }

    fn on_timer(&mut self, cx: &mut Cx<'_>, key: u32, at: i64, _aux: u32) {
        let (count, limit) = (self.count, self.limit());
        let Some(st) = self.keys.get_mut(key) else { return };
        st.timer = false;
        if st.active || st.streak < count {
            return;
        }
        if at < st.since_ms + self.for_ms {
            // The streak this timer was for broke and a new one began: wait for its end.
            st.timer = true;
            cx.schedule(key, st.since_ms + self.for_ms, 0);
            return;
        }
        st.active = true;
        let d = detail([
            ("value", Value::from(st.value)),
            ("threshold", Value::from(limit)),
            ("readings", Value::from(st.streak)),
        ]);
        let fire = Fire {
            scope: 0,
            time_ms: st.since_ms,
            at_ms: at,
            point: st.point,
            grid: st.grid.as_deref(),
            zone: None,
            evidence: vec![st.first_id.clone()],
            detail: d,
            group: None,
        };
        cx.fire(key, fire);
    }

    fn timers(&self, _zones: &ZoneSets, out: &mut Vec<(u32, i64, u32)>) {
        for (k, st) in self.keys.iter() {
            if st.timer {
                out.push((k, st.since_ms + self.for_ms, 0));
            }
        }
    }

    super::keyed_state_methods!();
}
