//! What the engine emits: alerts, and later news about them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::rule::Severity;

/// An alert raised by a rule.
///
/// The id is derived from the rule, the key and the first evidence event, so a re-run over
/// the same events (replay, or the engine catching up after a crash) gives the same ids and
/// a store can recognise an alert it already has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable alert id (`a` + 16 hex digits).
    pub id: String,
    /// The id of the rule that raised it.
    pub rule: String,
    /// The rule's key value (e.g. the vehicle's source id, a grid id).
    pub key: String,
    /// Event time of the alert's first evidence.
    #[serde(with = "cityward_model::event::rfc3339")]
    pub time: DateTime<Utc>,
    /// Event time at which the rule's condition was met (e.g. the end of a dwell).
    #[serde(with = "cityward_model::event::rfc3339")]
    pub fired_at: DateTime<Utc>,
    /// How urgent it is.
    pub severity: Severity,
    /// The rule's category, e.g. `traffic.hazmat`.
    pub category: String,
    /// The rule's title (its id when it has none).
    pub title: String,
    /// Longitude (WGS84) of the alert's place, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
    /// Latitude (WGS84) of the alert's place, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    /// Patrol grid of the alert's place.
    #[serde(default)]
    pub grid: Option<String>,
    /// The zone or corridor, for geofence, corridor and zone-grouped count alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Ids of the evidence events, oldest first (capped; `count` tells the whole number).
    pub evidence: Vec<String>,
    /// How many times the rule fired for this key while the alert was open (1 at first).
    pub count: u64,
    /// Rule-specific figures: measured speed and limit, reading and threshold, …
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub detail: Map<String, Value>,
    /// When the condition ended (threshold back under the clear value, a device heard
    /// from again), for rules that clear.
    #[serde(
        default,
        with = "cityward_model::event::rfc3339_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub cleared_at: Option<DateTime<Utc>>,
}

/// One thing the engine tells its caller, in the order it happened.
// `Raised` is the common case; boxing it would cost an allocation per alert.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A new alert.
    Raised(Alert),
    /// The rule fired again for an open alert within its suppression period.
    Repeated {
        /// The open alert's id.
        alert: String,
        /// Event time of the new firing.
        time: DateTime<Utc>,
        /// The alert's count after this firing.
        count: u64,
        /// The new evidence event ids.
        evidence: Vec<String>,
    },
    /// The alert's condition ended.
    Cleared {
        /// The alert's id.
        alert: String,
        /// Event time at which it ended.
        time: DateTime<Utc>,
    },
}

impl Output {
    /// The id of the alert this output is about.
    pub fn alert_id(&self) -> &str {
        match self {
            Output::Raised(a) => &a.id,
            Output::Repeated { alert, .. } | Output::Cleared { alert, .. } => alert,
        }
    }
}

/// Applies a stream of outputs to a list of alerts (what `replay` and tests do to get the
/// final state of each alert).
#[derive(Debug, Default)]
pub struct AlertBook {
    alerts: Vec<Alert>,
    by_id: std::collections::HashMap<String, usize>,
}

impl AlertBook {
    /// An empty book.
    pub fn new() -> Self {
        AlertBook::default()
    }

    /// Applies one output; evidence beyond `max_evidence` ids is not kept.
    pub fn apply(&mut self, output: Output, max_evidence: usize) {
        match output {
            Output::Raised(alert) => {
                if !self.by_id.contains_key(&alert.id) {
                    self.by_id.insert(alert.id.clone(), self.alerts.len());
                    self.alerts.push(alert);
                }
            }
            Output::Repeated {
                alert,
                count,
                evidence,
                ..
            } => {
                if let Some(&i) = self.by_id.get(&alert) {
                    let a = &mut self.alerts[i];
                    a.count = count;
                    for id in evidence {
                        if a.evidence.len() < max_evidence && !a.evidence.contains(&id) {
                            a.evidence.push(id);
                        }
                    }
                }
            }
            Output::Cleared { alert, time } => {
                if let Some(&i) = self.by_id.get(&alert) {
                    self.alerts[i].cleared_at.get_or_insert(time);
                }
            }
        }
    }

    /// The alerts in a deterministic order: by time, then rule, key and id.
    pub fn into_sorted(mut self) -> Vec<Alert> {
        self.alerts.sort_by(|a, b| {
            (a.time, &a.rule, &a.key, &a.id).cmp(&(b.time, &b.rule, &b.key, &b.id))
        });
        self.alerts
    }

    /// How many alerts the book holds.
    pub fn len(&self) -> usize {
        self.alerts.len()
    }

    /// Whether the book is empty.
    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty()
    }
}
