//! Intake settings (`[ingest]` and `[mqtt]` in the node's configuration).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::mqtt::TopicMapping;

/// How records are accepted or refused, whatever channel they come by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Largest request body accepted by `POST /api/v1/events`, in bytes, after decompression.
    pub max_body_bytes: usize,
    /// Largest single record, in bytes.
    pub max_record_bytes: usize,
    /// How far ahead of the node's clock an event time may be before it is refused.
    #[serde(with = "cityward_model::duration_serde")]
    pub max_future: Duration,
    /// How far back an event time may be; unset accepts any history (imports, replays).
    #[serde(
        with = "cityward_model::duration_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_past: Option<Duration>,
    /// Refuse places outside the city's extent (plus `bounds_margin_deg`).
    pub reject_outside_city: bool,
    /// Margin around the city's extent, in degrees, within which places are still accepted.
    pub bounds_margin_deg: f64,
    /// Attribute or field names that carry biometric or person-identity data; records that
    /// carry any of them (or any name starting with `face_`) are refused.
    pub personal_fields: Vec<String>,
    /// Accept records carrying the fields above. Off by design (SCOPE.md); leave it off.
    pub allow_personal_data: bool,
    /// Kinds whose sources must be in the device registry; others accept unknown sources.
    pub require_registered: Vec<String>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_body_bytes: 64 * 1024 * 1024,
            max_record_bytes: 256 * 1024,
            max_future: Duration::from_secs(10 * 60),
            max_past: None,
            reject_outside_city: true,
            bounds_margin_deg: 0.05,
            personal_fields: [
                "face",
                "face_image",
                "face_feature",
                "face_features",
                "face_template",
                "face_embedding",
                "biometric",
                "person_id",
                "person_name",
                "id_card",
                "id_card_number",
                "identity_number",
                "passport_number",
                "resident_id",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            allow_personal_data: false,
            require_registered: Vec::new(),
        }
    }
}

/// The MQTT subscriber (`[mqtt]`): off unless `enabled`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Subscribe to a broker at all.
    pub enabled: bool,
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client id; keep it stable so a persistent session resumes after a restart.
    pub client_id: String,
    /// Optional user name for the broker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Optional password for the broker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Subscriptions and how each topic's payload maps to the event format.
    pub topics: Vec<TopicMapping>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            enabled: false,
            host: "127.0.0.1".to_string(),
            port: 1883,
            client_id: "cityward-node".to_string(),
            username: None,
            password: None,
            topics: Vec::new(),
        }
    }
}
