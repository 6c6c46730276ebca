//! What happens to an alert once the detection engine has raised it: the unit that must
//! handle it (a versioned [`RoutingTable`] over categories, regions and grids, falling back
//! up the region tree), the handling [`Case`] with its validated lifecycle
//! (`new → assigned → acknowledged → dispatched → on_scene → resolved → closed`, plus
//! `escalated` and `transferred`), the acknowledgement, arrival and progress deadlines that
//! escalate up the unit chain when missed, the jurisdiction scopes that decide who may
//! see an alert, and the alert as an OASIS CAP 1.2 message.
//!
//! Everything here is a pure function of the city, the configuration, the case and the
//! clock: no I/O, no threads. The node (`cityward-server`) stores cases inside alert rows,
//! keeps the deadline clock, and serves the actions over HTTP. See `README.md` beside this
//! file for the state machine walked through.
#![deny(missing_docs)]

mod cap;
mod config;
mod correlate;
mod dispatch;
mod jurisdiction;
mod lifecycle;
mod routing;
mod silence;
mod webhook;

pub use cap::{cap_message, xml_escape, CapAlert};
pub use correlate::Correlator;
pub use dispatch::{
    recommend, Availability, Candidate, DispatchConfig, Fix, Measure, Recommendation, Recommendations, Responder, Responders,
    RoadNetwork, Snap,
};
pub use config::{AlertsConfig, DeadlineRule, Deadlines};
pub use jurisdiction::{alert_scopes, grid_scopes, Jurisdiction};
pub use lifecycle::{Action, AlertClass, ActionError, Actor, Case, Claim, Escalation, Status, Step};
pub use silence::{Silence, SilenceTarget, MAX_SILENCE_DAYS};
pub use webhook::{backoff, signature, Webhook, MAX_ATTEMPTS};
pub use routing::{AlertPlace, RouteEntry, Routing, RoutingError, RoutingTable, Router};

#[cfg(test)]
mod tests;
