//! `[alerts]` of the node's configuration: dispositions, deadlines, the boundary distance.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::routing::check_category_pattern;

/// How alerts are handled once raised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Disposition codes a closing must choose one of.
    pub dispositions: Vec<String>,
    /// An alert this close (metres) to a patrol grid other than its own is offered to that
    /// grid's unit too; the first candidate unit to claim or acknowledge it owns it. 0 turns
    /// this off.
    pub boundary_m: f64,
    /// Alerts this close (metres) to an alert raised within `correlate_within` of them join
    /// its incident. 0 turns correlation off.
    pub correlate_m: f64,
    /// The time window of correlation.
    #[serde(with = "cityward_model::duration_serde")]
    pub correlate_within: Duration,
    /// How often the deadline clock looks for missed deadlines.
    #[serde(with = "cityward_model::duration_serde")]
    pub clock_every: Duration,
    /// Deadlines by category and severity; the first entry that matches an alert applies.
    pub deadlines: Vec<DeadlineRule>,
    /// Categories (or prefixes such as `device.*`) of maintenance tickets: device health
    /// (offline, battery, tamper) routed to the device's owner, kept out of the incident
    /// queue.
    pub maintenance_categories: Vec<String>,
    /// PEM file of the certificate authorities that `https://` webhook endpoints'
    /// certificates are checked against, instead of the built-in Mozilla roots: a city's
    /// own CA, or the system bundle (`/etc/ssl/certs/ca-certificates.crt`) plus it.
    pub webhook_ca_file: Option<std::path::PathBuf>,
}

/// The deadlines of an alert no entry matches, and of the default catch-all entry.
const FALLBACK: Deadlines = Deadlines {
    ack: Duration::from_secs(15 * 60),
    arrive: Duration::from_secs(120 * 60),
    progress: Duration::from_secs(60 * 60),
};

impl Default for AlertsConfig {
    fn default() -> Self {
        let rule = |category: &str, severity: Option<&str>, ack: u64, arrive: u64, progress: u64| DeadlineRule {
            category: category.into(),
            severity: severity.map(Into::into),
            ack: Duration::from_secs(ack * 60),
            arrive: Duration::from_secs(arrive * 60),
            progress: Duration::from_secs(progress * 60),
        };
        AlertsConfig {
            dispositions: [
                "confirmed_incident",
                "false_alarm",
                "device_fault",
                "duplicate",
                "referred",
                "test",
            ]
            .map(String::from)
            .to_vec(),
            boundary_m: 50.0,
            correlate_m: 200.0,
            correlate_within: Duration::from_secs(600),
            clock_every: Duration::from_millis(250),
            deadlines: vec![
                rule("device.*", None, 240, 3 * 1440, 1440),
                rule("*", Some("critical"), 2, 15, 10),
                rule("*", Some("high"), 5, 30, 15),
                DeadlineRule { category: "*".into(), severity: None, ack: FALLBACK.ack, arrive: FALLBACK.arrive, progress: FALLBACK.progress },
            ],
            maintenance_categories: vec!["device.*".into()],
            webhook_ca_file: None,
        }
    }
}

impl AlertsConfig {
    /// The deadlines for an alert of `category` and `severity`: the first matching entry,
    /// or the catch-all of [`AlertsConfig::default`] when none matches.
    pub fn deadlines_for(&self, category: &str, severity: &str) -> Deadlines {
        self.deadlines
            .iter()
            .find(|d| {
                crate::routing::category_matches(&d.category, category).is_some()
                    && d.severity.as_deref().is_none_or(|s| s == severity)
            })
            .map(DeadlineRule::deadlines)
            .unwrap_or(FALLBACK)
    }

    /// Whether alerts of `category` are maintenance tickets.
    pub fn is_maintenance(&self, category: &str) -> bool {
        self.maintenance_categories.iter().any(|p| crate::routing::category_matches(p, category).is_some())
    }

    /// Checks the settings; the message names the entry and what to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.dispositions.is_empty() {
            return Err("alerts.dispositions is empty; closing an alert needs at least one disposition code".into());
        }
        if !(self.boundary_m >= 0.0 && self.boundary_m <= 5_000.0) {
            return Err(format!("alerts.boundary_m = {} is out of range; use 0 (off) to 5000 metres", self.boundary_m));
        }
        if !(self.correlate_m >= 0.0 && self.correlate_m <= 10_000.0) {
            return Err(format!("alerts.correlate_m = {} is out of range; use 0 (off) to 10000 metres", self.correlate_m));
        }
        if self.clock_every.is_zero() {
            return Err("alerts.clock_every must be more than 0s, e.g. \"250ms\"".into());
        }
        for (i, c) in self.maintenance_categories.iter().enumerate() {
            check_category_pattern(c).map_err(|e| format!("alerts.maintenance_categories[{i}]: {e}"))?;
        }
        for (i, d) in self.deadlines.iter().enumerate() {
            if let Some(s) = &d.severity {
                if !["low", "medium", "high", "critical"].contains(&s.as_str()) {
                    return Err(format!(
                        "alerts.deadlines[{i}].severity `{s}` is not a severity; use low, medium, high or critical"
                    ));
                }
            }
            check_category_pattern(&d.category).map_err(|e| format!("alerts.deadlines[{i}]: {e}"))?;
            let ds = d.deadlines();
            if ds.ack.is_zero() || ds.arrive.is_zero() || ds.progress.is_zero() {
                return Err(format!("alerts.deadlines[{i}] has a zero deadline; every deadline must be more than 0s"));
            }
        }
        Ok(())
    }
}

/// Deadlines for alerts of matching category and severity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadlineRule {
    /// A category (`fire.smoke`), a prefix (`fire.*`) or `*` for every category.
    pub category: String,
    /// Only alerts of this severity; unset for every severity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// From assignment to acknowledgement.
    #[serde(with = "cityward_model::duration_serde")]
    pub ack: Duration,
    /// From the alert being raised to someone on scene.
    #[serde(with = "cityward_model::duration_serde")]
    pub arrive: Duration,
    /// From acknowledgement to dispatch or arrival.
    #[serde(with = "cityward_model::duration_serde")]
    pub progress: Duration,
}

impl DeadlineRule {
    /// The entry's deadlines.
    pub fn deadlines(&self) -> Deadlines {
        Deadlines { ack: self.ack, arrive: self.arrive, progress: self.progress }
    }
}

/// The three clocks of an alert (kept on its case, so that later changes to the
/// configuration do not move the deadlines of alerts already raised).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deadlines {
    /// From assignment to acknowledgement; missed, the alert escalates to the owner's
    /// parent unit, and on up while nobody acknowledges.
    #[serde(with = "cityward_model::duration_serde")]
    pub ack: Duration,
    /// From the alert being raised to someone on scene; missed, the parent unit is told.
    #[serde(with = "cityward_model::duration_serde")]
    pub arrive: Duration,
    /// From acknowledgement to dispatch or arrival; missed, the alert goes back to its
    /// owner as unacknowledged (re-triggered) with a new acknowledgement deadline.
    #[serde(with = "cityward_model::duration_serde")]
    pub progress: Duration,
}
