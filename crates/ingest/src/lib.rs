//! Intake: everything between bytes arriving and a valid, enriched [`Event`] ready for the
//! write-ahead log. Decoders for NDJSON, JSON arrays, gzip and CSV ([`decode_json_body`],
//! [`decode_csv`]); per-topic MQTT payload mappings ([`TopicMapping`]); the [`Validator`]
//! that checks every record against its kind's schema, the city's bounds, the clock and
//! the privacy rules of SCOPE.md; and enrichment from the city model ([`enrich`]).
//!
//! A refused record becomes a [`Reject`] naming its line, field and reason, for the
//! response and the dead-letter store; it never affects the records next to it. This crate
//! does no I/O of its own: transports and storage live in the server and store crates.
#![deny(missing_docs)]

mod config;
mod decode;
mod enrich;
mod mqtt;
mod validate;

pub use config::{IngestConfig, MqttConfig};
pub use decode::{decode_csv, decode_json_body, gunzip_if_needed, BodyError, Decoded};
pub use enrich::enrich;
pub use mqtt::{topic_matches, TimeFormat, TopicMapping};
pub use validate::{Reject, RejectCode, Validator};

#[cfg(test)]
mod tests;
