//! The cityward detection engine: the rules that turn the event stream into alerts.
//!
//! This crate owns the rule file format (DESIGN.md's contract), its validation against the
//! city, the CEL subset rules are written in, and the [`Engine`] that runs rules over events
//! in event time — keyed state, timers, the watermark and lateness, repeat suppression and
//! checkpoints. It turns events into [`Output`]s and nothing more: storing alerts, routing
//! them and reading events from the WAL belong to the node (`cityward-server`), and SQL
//! rules are run by the host on its schedule (rows become alerts with [`sql_alerts`]).
//!
//! The engine is single-threaded and deterministic: the same rules over the same events in
//! the same order give the same outputs. Use one engine per partition of keys or rules to
//! use more cores. See `README.md` beside this file for the time semantics.
#![deny(missing_docs)]

mod alert;
pub mod cel;
mod engine;
mod hotlist;
mod ops;
mod rule;
mod sql;
mod zones;

pub use alert::{Alert, AlertBook, Output};
pub use cel::{CelError, Program};
pub use engine::{
    Checkpoint, CheckpointSnapshot, Engine, EngineConfig, EngineStats, HeldState, LateEvent, OpenAlertState,
    RuleCheckpoint, RuleStats, StateJson,
};
pub use hotlist::{normalize_value, HotlistEntry, Hotlists};
pub use rule::{
    compile_rules, load_rules, parse_rule, parse_rules, GeofenceOn, GroupBy, LimitFrom, Rule,
    RuleError, RuleFile, RuleKind, RuleSpec, SequenceMode, Severity, DEFAULT_SUPPRESS,
};
pub use sql::sql_alerts;

#[cfg(test)]
mod tests;
