//! `sequence`: A then B for the same key within a time (and distance), or A not followed
//! by B within the time.
//!
//! Events reach this operator in watermark order, so an A and a B from different sources
//! that arrived out of order within the lateness allowance still pair as they happened.

use std::collections::VecDeque;

use cityward_model::geo::haversine_m;
use cityward_model::Event;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{detail, fire_at, Keyed, Operator};
use crate::cel::Program;
use crate::zones::ZoneSets;
use crate::engine::{StateJson, Cx, Fire, Interner};
use crate::rule::{Rule, SequenceMode};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Pending {
    t: i64,
    id: Box<str>,
    point: Option<(f64, f64)>,
    grid: Option<String>,
    seq: u32,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct State {
    pending: VecDeque<Pending>,
    next_seq: u32,
}

pub(crate) struct SequenceOp {
    first: Program,
    then: Program,
    within_ms: i64,
    within_m: Option<f64>,
    mode: SequenceMode,
    keys: Keyed<State>,
}

impl SequenceOp {
    pub(crate) fn new(rule: &Rule) -> Self {
        let spec = &rule.spec;
        let (first, then) = rule.sequence.clone().expect("a sequence rule compiles first/then");
        SequenceOp {
            first,
            then,
            within_ms: spec.within.map(|d| d.as_millis() as i64).unwrap_or(300_000),
            within_m: spec.within_m,
            mode: spec.mode.unwrap_or(SequenceMode::Followed),
            keys: Keyed::new(),
        }
    }

    fn near(&self, a: &Pending, b: Option<(f64, f64)>) -> bool {
        match (self.within_m, a.point, b) {
            (None, _, _) => true,
            (Some(m), Some(pa), Some(pb)) => haversine_m(pa, pb) <= m,
            _ => false,
        }
    }
}

impl Operator for SequenceOp {
    fn on_event(&mut self, cx: &mut Cx<'_>, key: u32, event: &Event, t: i64) {
        let is_a = self.first.matches(event);
        let is_b = self.then.matches(event);
        if !is_a && !is_b {
            return;
        }
        let within_ms = self.within_ms;
        let mut st = self.keys.remove(key).unwrap_or_default();
        // Forget A's that can no longer be followed in time (not_followed ones fire by
        // timer before they get here).
        if self.mode == SequenceMode::Followed {
            while st.pending.front().is_some_and(|a| t - a.t > within_ms) {
                st.pending.pop_front();
            }
        }
        if is_b {
            let p = event.point();
            match self.mode {
                SequenceMode::Followed => {
                    if let Some(i) = st.pending.iter().position(|a| a.t <= t && t - a.t <= within_ms && *a.id != *event.id && self.near(a, p)) {
                        let a = st.pending.remove(i).expect("found");
                        let d = detail([
                            ("first", Value::from(&*a.id)),
                            ("gap_s", Value::from((t - a.t) / 1000)),
                        ]);
                        cx.fire(key, fire_at(event, 0, a.t, t, vec![a.id.to_string(), event.id.clone()], d));
                    }
                }
                SequenceMode::NotFollowed => {
                    let near: Vec<bool> = st.pending.iter().map(|a| a.t <= t && t - a.t <= within_ms && *a.id != *event.id && self.near(a, p)).collect();
                    let mut i = 0;
                    st.pending.retain(|_| {
                        i += 1;
                        !near[i - 1]
                    });
                }
            }
        }
        if is_a {
            let seq = st.next_seq;
            st.next_seq = st.next_seq.wrapping_add(1);
            st.pending.push_back(Pending {
                t,
                id: event.id.as_str().into(),
                point: event.point(),
                grid: event.grid.clone(),
                seq,
            });
            // When no B can follow any more: `not_followed` fires, `followed` forgets A (so
            // keys that never see a B do not keep state).
            cx.schedule(key, t + within_ms + 1, seq);
        }
        if !st.pending.is_empty() {
            self.keys.insert(key, st);
        }
    }

    fn on_timer(&mut self, cx: &mut Cx<'_>, key: u32, at: i64, seq: u32) {
        let Some(st) = self.keys.get_mut(key) else { return };
        let Some(i) = st.pending.iter().position(|a| a.seq == seq) else { return };
        let a = st.pending.remove(i).expect("found");
        if st.pending.is_empty() {
            self.keys.remove(key);
        }
        if self.mode == SequenceMode::Followed {
            return;
        }
        let fire = Fire {
            scope: 0,
            time_ms: a.t,
            at_ms: at,
            point: a.point,
            grid: a.grid.as_deref(),
            zone: None,
            evidence: vec![a.id.to_string()],
            detail: detail([("waited_s", Value::from(self.within_ms / 1000))]),
            group: None,
        };
        cx.fire(key, fire);
    }

    fn timers(&self, _zones: &ZoneSets, out: &mut Vec<(u32, i64, u32)>) {
        for (k, st) in self.keys.iter() {
            for a in &st.pending {
                out.push((k, a.t + self.within_ms + 1, a.seq));
            }
        }
    }

    super::keyed_state_methods!();
}
