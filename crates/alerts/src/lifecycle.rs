//! The handling case of one alert: its status, owner, deadlines and timeline, and the
//! transitions people and the deadline clock may make.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use cityward_model::City;
use serde::{Deserialize, Serialize};

use crate::config::{AlertsConfig, Deadlines};
use crate::routing::Routing;

/// Where an alert is in its handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Raised, with no unit to own it (a city without units).
    New,
    /// Routed to its owner; waiting for acknowledgement.
    Assigned,
    /// Someone of a responsible unit has taken it.
    Acknowledged,
    /// Responders are on their way.
    Dispatched,
    /// A responder is there.
    OnScene,
    /// Handled; may still be reopened.
    Resolved,
    /// Closed with a disposition; final.
    Closed,
    /// Nobody acknowledged in time; the unit above the owner was told and may take it.
    Escalated,
    /// Handed to another unit; waiting for that unit's acknowledgement.
    Transferred,
    /// Raised while a silence covered it: stored and visible, no deadlines; reopen it to
    /// handle it anyway.
    Suppressed,
}

impl Status {
    /// Every status, in lifecycle order.
    pub const ALL: [Status; 10] = [
        Status::New,
        Status::Assigned,
        Status::Acknowledged,
        Status::Dispatched,
        Status::OnScene,
        Status::Resolved,
        Status::Closed,
        Status::Escalated,
        Status::Transferred,
        Status::Suppressed,
    ];

    /// The name used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Assigned => "assigned",
            Status::Acknowledged => "acknowledged",
            Status::Dispatched => "dispatched",
            Status::OnScene => "on_scene",
            Status::Resolved => "resolved",
            Status::Closed => "closed",
            Status::Escalated => "escalated",
            Status::Transferred => "transferred",
            Status::Suppressed => "suppressed",
        }
    }

    /// Parses a status name.
    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Waiting for someone to acknowledge it.
    pub fn awaits_ack(self) -> bool {
        matches!(self, Status::New | Status::Assigned | Status::Escalated | Status::Transferred)
    }

    /// Still being handled (not resolved, closed or suppressed): the deadline clock
    /// watches it.
    pub fn is_open(self) -> bool {
        !matches!(self, Status::Resolved | Status::Closed | Status::Suppressed)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an alert is an emergency or a device's upkeep. Maintenance tickets (heartbeats,
/// battery, tamper, offline) go to the device's owner and stay out of the incident queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertClass {
    /// Something happening in the city.
    #[default]
    Incident,
    /// A device needing attention.
    Maintenance,
}

impl AlertClass {
    /// The name used in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertClass::Incident => "incident",
            AlertClass::Maintenance => "maintenance",
        }
    }
}

/// What a person does to an alert (`POST /api/v1/alerts/{id}/{action}`).
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A candidate unit of an alert near a boundary takes it.
    Claim,
    /// Acknowledge: "we have it".
    Ack,
    /// Send responders (their ids; may be empty when sent by radio).
    Dispatch {
        /// Responder (device or person-role) ids sent.
        responders: Vec<String>,
    },
    /// A responder reports being there.
    Arrive,
    /// Handled.
    Resolve,
    /// Close with a disposition code (and a note, required).
    Close {
        /// One of the configured disposition codes.
        disposition: String,
    },
    /// Take a resolved alert up again.
    Reopen,
    /// Hand the alert to another unit (a note with the reason is required).
    Transfer {
        /// The receiving unit.
        to: String,
    },
}

impl Action {
    /// The action's name in the API and the timeline.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Claim => "claim",
            Action::Ack => "ack",
            Action::Dispatch { .. } => "dispatch",
            Action::Arrive => "arrive",
            Action::Resolve => "resolve",
            Action::Close { .. } => "close",
            Action::Reopen => "reopen",
            Action::Transfer { .. } => "transfer",
        }
    }

    /// Every action name.
    pub const NAMES: [&'static str; 8] = ["claim", "ack", "dispatch", "arrive", "resolve", "close", "reopen", "transfer"];
}

/// Who acts: a user and the unit they act for (`None`: acts for the whole city, e.g. an
/// administrator, or the deadline clock).
#[derive(Debug, Clone, PartialEq)]
pub struct Actor {
    /// User name, or `system` for the clock.
    pub name: String,
    /// The unit acted for.
    pub unit: Option<String>,
}

impl Actor {
    /// The deadline clock.
    pub fn system() -> Actor {
        Actor { name: "system".into(), unit: None }
    }
}

/// An action that is not allowed, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ActionError {
    /// The action does not apply in the alert's status.
    #[error("cannot {action} an alert that is {status}; {hint}")]
    NotNow {
        /// The action tried.
        action: &'static str,
        /// The alert's status.
        status: Status,
        /// What can be done instead.
        hint: &'static str,
    },
    /// The actor's unit does not answer for the alert.
    #[error("unit `{unit}` does not answer for this alert (owner `{owner}`); only the owner, the units above it, candidate units and units it was escalated to may act on it")]
    NotResponsible {
        /// The actor's unit.
        unit: String,
        /// The alert's owner.
        owner: String,
    },
    /// A required field is missing or wrong.
    #[error("{0}")]
    Invalid(String),
}

/// One entry of an alert's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// When.
    #[serde(with = "cityward_model::event::rfc3339")]
    pub at: DateTime<Utc>,
    /// Who (`system` for routing and the deadline clock).
    pub actor: String,
    /// What: `raised`, `routed`, an action name, `escalate` or `retrigger`.
    pub action: String,
    /// Status before.
    pub from: Status,
    /// Status after.
    pub to: Status,
    /// The unit concerned (the owner routed to, the unit escalated or transferred to, the
    /// unit acted for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The note given, or why the system did it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A unit told of an alert because a deadline was missed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Escalation {
    /// The unit told.
    pub unit: String,
    /// When.
    #[serde(with = "cityward_model::event::rfc3339")]
    pub at: DateTime<Utc>,
    /// Which deadline was missed.
    pub reason: String,
}

/// Which candidate unit took an alert near a boundary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    /// The unit.
    pub unit: String,
    /// The user.
    pub by: String,
    /// When.
    #[serde(with = "cityward_model::event::rfc3339")]
    pub at: DateTime<Utc>,
}

/// The handling of one alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Case {
    /// Where it is.
    pub status: Status,
    /// Incident or maintenance ticket.
    #[serde(default)]
    pub class: AlertClass,
    /// The unit that owns it. Escalation keeps it; a transfer changes it.
    pub owner: Option<String>,
    /// How it was routed.
    pub routing: Routing,
    /// For an alert near a boundary, the candidate that took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed: Option<Claim>,
    /// Units told because deadlines were missed, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalations: Vec<Escalation>,
    /// Responders dispatched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub responders: Vec<String>,
    /// The closing disposition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disposition: Option<String>,
    /// The silence it was raised under, for a suppressed alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed_by: Option<String>,
    /// The deadlines this alert runs on.
    pub deadlines: Deadlines,
    /// When the owner must acknowledge by.
    #[serde(default, with = "cityward_model::event::rfc3339_option", skip_serializing_if = "Option::is_none")]
    pub ack_due: Option<DateTime<Utc>>,
    /// When someone must be on scene by.
    #[serde(default, with = "cityward_model::event::rfc3339_option", skip_serializing_if = "Option::is_none")]
    pub arrive_due: Option<DateTime<Utc>>,
    /// When an acknowledged alert must have progressed (dispatch or arrival) by.
    #[serde(default, with = "cityward_model::event::rfc3339_option", skip_serializing_if = "Option::is_none")]
    pub progress_due: Option<DateTime<Utc>>,
    /// Every change, oldest first.
    pub timeline: Vec<Step>,
}

fn later(now: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Case {
    /// The case of a newly raised alert: routed, with its deadlines running from `now`.
    pub fn open(routing: Routing, deadlines: Deadlines, now: DateTime<Utc>) -> Case {
        let status = if routing.owner.is_some() { Status::Assigned } else { Status::New };
        let routed = Step {
            at: now,
            actor: "system".into(),
            action: "routed".into(),
            from: Status::New,
            to: status,
            unit: routing.owner.clone(),
            note: Some(routing.reason.clone()),
        };
        Case {
            status,
            class: AlertClass::Incident,
            owner: routing.owner.clone(),
            routing,
            claimed: None,
            escalations: Vec::new(),
            responders: Vec::new(),
            disposition: None,
            suppressed_by: None,
            deadlines,
            ack_due: Some(later(now, deadlines.ack)),
            arrive_due: Some(later(now, deadlines.arrive)),
            progress_due: None,
            timeline: vec![routed],
        }
    }

    /// Suppresses a newly opened case under silence `silence` (`reason` its reason).
    pub fn suppress(&mut self, silence: &str, reason: &str, now: DateTime<Utc>) {
        let from = self.status;
        self.status = Status::Suppressed;
        self.suppressed_by = Some(silence.to_string());
        self.clear_deadlines();
        let note = format!("silence {silence}: {reason}");
        self.system_step(now, "suppressed", from, None, note);
    }

    /// The earliest deadline still running.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        [self.ack_due, self.arrive_due, self.progress_due].into_iter().flatten().min()
    }

    /// Every unit the alert has been with: owner, candidates, units escalated to, units it
    /// was transferred from or to. They all keep seeing it.
    pub fn units(&self) -> BTreeSet<&str> {
        let mut out: BTreeSet<&str> = BTreeSet::new();
        out.extend(self.owner.as_deref());
        out.extend(self.routing.candidates.iter().map(String::as_str));
        out.extend(self.escalations.iter().map(|e| e.unit.as_str()));
        out.extend(self.timeline.iter().filter_map(|s| s.unit.as_deref()));
        out
    }

    /// Whether `unit` may act on the alert: the owner and the units above it, candidate
    /// units, and units it was escalated to.
    pub fn answers_for(&self, city: &City, unit: &str) -> bool {
        let Some(owner) = &self.owner else { return false };
        city.unit_chain(owner).iter().any(|u| u.id == unit)
            || self.routing.candidates.iter().any(|c| c == unit)
            || self.escalations.iter().any(|e| e.unit == unit)
    }

    /// Applies a person's action. On success the timeline has a new step; on error the case
    /// is unchanged.
    pub fn apply(
        &mut self,
        action: &Action,
        actor: &Actor,
        note: Option<&str>,
        now: DateTime<Utc>,
        city: &City,
        config: &AlertsConfig,
    ) -> Result<(), ActionError> {
        let note = note.map(str::trim).filter(|n| !n.is_empty());
        if let Some(unit) = &actor.unit {
            if !self.answers_for(city, unit) {
                return Err(ActionError::NotResponsible {
                    unit: unit.clone(),
                    owner: self.owner.clone().unwrap_or_default(),
                });
            }
        }
        let from = self.status;
        let name = action.name();
        let not_now = |hint| Err(ActionError::NotNow { action: name, status: from, hint });
        if from == Status::Suppressed && !matches!(action, Action::Close { .. } | Action::Reopen) {
            return not_now("it was raised under a silence; reopen it to handle it, or close it");
        }
        let mut step_unit = actor.unit.clone();
        match action {
            Action::Claim => {
                if self.routing.candidates.is_empty() {
                    return not_now("only an alert offered to several units near a boundary is claimed; acknowledge it instead");
                }
                if let Some(c) = &self.claimed {
                    return Err(ActionError::Invalid(format!("unit `{}` claimed this alert already", c.unit)));
                }
                if !from.awaits_ack() {
                    return not_now("it is already being handled");
                }
                let Some(unit) = actor.unit.clone().filter(|u| self.routing.candidates.contains(u)) else {
                    return Err(ActionError::Invalid(format!(
                        "claiming needs a user of one of the candidate units ({})",
                        self.routing.candidates.join(", ")
                    )));
                };
                self.take(&unit, actor, now);
                self.status = Status::Assigned;
            }
            Action::Ack => {
                if !from.awaits_ack() {
                    return not_now("it is acknowledged already");
                }
                self.claim_if_candidate(actor, now);
                self.status = Status::Acknowledged;
                self.ack_due = None;
                self.progress_due = Some(later(now, self.deadlines.progress));
            }
            Action::Dispatch { responders } => {
                if !(from.awaits_ack() || matches!(from, Status::Acknowledged | Status::Dispatched)) {
                    return not_now("dispatch comes before arrival and resolution");
                }
                self.claim_if_candidate(actor, now);
                for r in responders {
                    if !self.responders.contains(r) {
                        self.responders.push(r.clone());
                    }
                }
                self.status = Status::Dispatched;
                self.ack_due = None;
                self.progress_due = None;
            }
            Action::Arrive => {
                if !(from.awaits_ack() || matches!(from, Status::Acknowledged | Status::Dispatched)) {
                    return not_now("arrival is reported once, before resolution");
                }
                self.claim_if_candidate(actor, now);
                self.status = Status::OnScene;
                self.ack_due = None;
                self.arrive_due = None;
                self.progress_due = None;
            }
            Action::Resolve => {
                if !from.is_open() {
                    return not_now("it is resolved or closed already");
                }
                self.claim_if_candidate(actor, now);
                self.status = Status::Resolved;
                self.clear_deadlines();
            }
            Action::Close { disposition } => {
                if from == Status::Closed {
                    return not_now("a closed alert stays closed");
                }
                if !config.dispositions.contains(disposition) {
                    return Err(ActionError::Invalid(format!(
                        "disposition `{disposition}` is not one of the configured codes: {}",
                        config.dispositions.join(", ")
                    )));
                }
                if note.is_none() {
                    return Err(ActionError::Invalid("closing needs a note saying what was found".into()));
                }
                self.status = Status::Closed;
                self.disposition = Some(disposition.clone());
                self.clear_deadlines();
            }
            Action::Reopen => {
                if !matches!(from, Status::Resolved | Status::Suppressed) {
                    return not_now("only a resolved or suppressed alert can be reopened");
                }
                self.status = Status::Assigned;
                self.ack_due = Some(later(now, self.deadlines.ack));
            }
            Action::Transfer { to } => {
                if !from.is_open() {
                    return not_now("reopen it first");
                }
                if city.unit(to).is_none() {
                    return Err(ActionError::Invalid(format!("unit `{to}` is not in the city's units; name an existing unit")));
                }
                if self.owner.as_deref() == Some(to.as_str()) {
                    return Err(ActionError::Invalid(format!("the alert is already owned by `{to}`")));
                }
                if note.is_none() {
                    return Err(ActionError::Invalid("a transfer needs a note giving the reason".into()));
                }
                self.owner = Some(to.clone());
                self.status = Status::Transferred;
                self.ack_due = Some(later(now, self.deadlines.ack));
                self.progress_due = None;
                step_unit = Some(to.clone());
            }
        }
        self.timeline.push(Step {
            at: now,
            actor: actor.name.clone(),
            action: name.into(),
            from,
            to: self.status,
            unit: step_unit,
            note: note.map(str::to_string),
        });
        Ok(())
    }

    fn clear_deadlines(&mut self) {
        self.ack_due = None;
        self.arrive_due = None;
        self.progress_due = None;
    }

    fn take(&mut self, unit: &str, actor: &Actor, now: DateTime<Utc>) {
        self.owner = Some(unit.to_string());
        self.claimed = Some(Claim { unit: unit.to_string(), by: actor.name.clone(), at: now });
    }

    /// A candidate unit that acts on an unclaimed boundary alert takes it.
    fn claim_if_candidate(&mut self, actor: &Actor, now: DateTime<Utc>) {
        if self.claimed.is_some() {
            return;
        }
        if let Some(unit) = actor.unit.as_deref().filter(|u| self.routing.candidates.iter().any(|c| c == u)) {
            let unit = unit.to_string();
            self.take(&unit, actor, now);
        }
    }

    /// The unit a missed deadline goes to: the one above the last unit told (the owner at
    /// first).
    fn next_up<'c>(&self, city: &'c City) -> Option<&'c str> {
        let last = self.escalations.last().map(|e| e.unit.as_str()).or(self.owner.as_deref())?;
        city.unit(last)?.parent_unit.as_deref().and_then(|p| city.unit(p)).map(|u| u.id.as_str())
    }

    /// Acts on the deadlines passed by `now`; returns the steps taken (escalations and
    /// re-triggers) for the notifications.
    pub fn on_clock(&mut self, now: DateTime<Utc>, city: &City) -> Vec<Step> {
        let mut steps = Vec::new();
        if self.ack_due.is_some_and(|d| d <= now) && self.status.awaits_ack() {
            let from = self.status;
            match self.next_up(city).map(str::to_string) {
                Some(up) => {
                    let reason = "acknowledgement deadline missed".to_string();
                    self.escalations.push(Escalation { unit: up.clone(), at: now, reason: reason.clone() });
                    self.status = Status::Escalated;
                    self.ack_due = Some(later(now, self.deadlines.ack));
                    steps.push(self.system_step(now, "escalate", from, Some(up), reason));
                }
                None => {
                    self.ack_due = None;
                    let note = "acknowledgement deadline missed; no unit above to escalate to".to_string();
                    steps.push(self.system_step(now, "escalate", from, None, note));
                }
            }
        } else if self.ack_due.is_some_and(|d| d <= now) {
            self.ack_due = None;
        }
        if self.arrive_due.is_some_and(|d| d <= now) {
            let from = self.status;
            if matches!(from, Status::Acknowledged | Status::Dispatched) || from.awaits_ack() {
                let up = self.next_up(city).map(str::to_string);
                let reason = "arrival deadline missed".to_string();
                self.arrive_due = up.as_ref().map(|_| later(now, self.deadlines.arrive));
                if let Some(up) = &up {
                    self.escalations.push(Escalation { unit: up.clone(), at: now, reason: reason.clone() });
                }
                steps.push(self.system_step(now, "escalate", from, up, reason));
            } else {
                self.arrive_due = None;
            }
        }
        if self.progress_due.is_some_and(|d| d <= now) {
            self.progress_due = None;
            if self.status == Status::Acknowledged {
                let from = self.status;
                self.status = Status::Assigned;
                self.ack_due = Some(later(now, self.deadlines.ack));
                let owner = self.owner.clone();
                let note = "acknowledged but not progressed in time; to be acknowledged again".to_string();
                steps.push(self.system_step(now, "retrigger", from, owner, note));
            }
        }
        steps
    }

    fn system_step(&mut self, now: DateTime<Utc>, action: &str, from: Status, unit: Option<String>, note: String) -> Step {
        let step = Step {
            at: now,
            actor: "system".into(),
            action: action.into(),
            from,
            to: self.status,
            unit,
            note: Some(note),
        };
        self.timeline.push(step.clone());
        step
    }
}
