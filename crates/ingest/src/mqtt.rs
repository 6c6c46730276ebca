//! Mapping a device's own MQTT payload to the event wire format, per topic.
//!
//! Devices rarely speak cityward's format: a gas detector may publish
//! `{"devId":"g-17","ts":1763780400000,"ppm":412}` on `city/gas/g-17/data`. A mapping names
//! where each event field comes from (a payload field, a topic level or a constant) and how
//! payload fields are renamed into attributes; the result then passes the same validation
//! as every other record.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How a time field is written in the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// RFC 3339 text, e.g. `2026-11-22T03:00:00Z`.
    #[default]
    Rfc3339,
    /// Milliseconds since the Unix epoch, as a number.
    EpochMs,
    /// Seconds since the Unix epoch, as a number.
    EpochS,
}

/// One subscription and its payload mapping (`[[mqtt.topics]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicMapping {
    /// MQTT topic filter to subscribe to; `+` matches one level, `#` the rest.
    /// `$share/<group>/<filter>` shares the subscription between a node's processes (the
    /// broker hands each message to one of them).
    pub filter: String,
    /// Quality of service for the subscription (0 or 1; 1 is acknowledged after the WAL fsync).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Fixed event kind for every message on these topics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Payload field holding the kind, when it varies per message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind_field: Option<String>,
    /// Topic level (0-based) holding the source id, e.g. 2 for `city/gas/{device}/data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_topic_level: Option<usize>,
    /// Payload field holding the source id (used when `source_topic_level` is unset).
    #[serde(default = "default_source_field")]
    pub source_field: String,
    /// Payload field holding the event id, if the device sends one.
    #[serde(default = "default_id_field")]
    pub id_field: String,
    /// Payload field holding the event time.
    #[serde(default = "default_time_field")]
    pub time_field: String,
    /// How the time field is written.
    #[serde(default)]
    pub time_format: TimeFormat,
    /// Use the arrival time when the payload has no time field, instead of refusing it.
    #[serde(default)]
    pub arrival_time_if_missing: bool,
    /// Payload field holding the longitude.
    #[serde(default = "default_lon_field")]
    pub lon_field: String,
    /// Payload field holding the latitude.
    #[serde(default = "default_lat_field")]
    pub lat_field: String,
    /// Coordinate system of the payload's positions (`wgs84`, `gcj02`, `bd09`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crs: Option<String>,
    /// Payload field → attribute name; e.g. `ppm = "value"`.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Keep the payload's other fields as attributes under their own names.
    #[serde(default = "default_true")]
    pub keep_other_fields: bool,
}

fn default_qos() -> u8 {
    1
}
fn default_source_field() -> String {
    "source".into()
}
fn default_id_field() -> String {
    "id".into()
}
fn default_time_field() -> String {
    "time".into()
}
fn default_lon_field() -> String {
    "lon".into()
}
fn default_lat_field() -> String {
    "lat".into()
}
fn default_true() -> bool {
    true
}

/// Whether an MQTT topic filter (`+`, `#` wildcards) matches a topic name. A shared
/// subscription (`$share/<group>/<filter>`, the broker hands each message to one of the
/// group's subscribers) matches by its inner filter: messages arrive under their own topic.
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    let filter = match filter.strip_prefix("$share/").and_then(|rest| rest.split_once('/')) {
        Some((_group, inner)) => inner,
        None => filter,
    };
    let mut levels = topic.split('/');
    for part in filter.split('/') {
        match part {
            "#" => return true,
            "+" => {
                if levels.next().is_none() {
                    return false;
                }
            }
            literal => {
                if levels.next() != Some(literal) {
                    return false;
                }
            }
        }
    }
    levels.next().is_none()
}

impl TopicMapping {
    /// Checks the mapping itself, naming the problem for the configuration's author.
    pub fn check(&self) -> Result<(), String> {
        if self.kind.is_none() && self.kind_field.is_none() {
            return Err(format!(
                "mqtt topic `{}`: set `kind` or `kind_field`",
                self.filter
            ));
        }
        if self.qos > 1 {
            return Err(format!("mqtt topic `{}`: qos must be 0 or 1", self.filter));
        }
        if let Some(crs) = &self.crs {
            if cityward_model::Crs::parse(crs).is_none() {
                return Err(format!(
                    "mqtt topic `{}`: crs `{crs}` is not one of wgs84, gcj02, bd09",
                    self.filter
                ));
            }
        }
        Ok(())
    }

    /// Maps one message to wire-format records (a payload may be one object or an array).
    ///
    /// An `Err` names what in the payload did not fit the mapping.
    pub fn map(
        &self,
        topic: &str,
        payload: &[u8],
        arrival: DateTime<Utc>,
    ) -> Vec<Result<Value, String>> {
        let parsed: Value = match serde_json::from_slice(payload) {
            Ok(v) => v,
            Err(e) => return vec![Err(format!("payload on `{topic}` is not JSON: {e}"))],
        };
        match parsed {
            Value::Array(items) => items
                .into_iter()
                .map(|item| self.map_one(topic, item, arrival))
                .collect(),
            item => vec![self.map_one(topic, item, arrival)],
        }
    }

    fn map_one(&self, topic: &str, item: Value, arrival: DateTime<Utc>) -> Result<Value, String> {
        let Value::Object(mut fields) = item else {
            return Err(format!(
                "payload on `{topic}` must be a JSON object or an array of objects"
            ));
        };
        let mut out = Map::new();
        let source = match self.source_topic_level {
            Some(level) => topic
                .split('/')
                .nth(level)
                .map(|s| Value::String(s.to_string()))
                .ok_or_else(|| {
                    format!("topic `{topic}` has no level {level} to take the source from")
                })?,
            None => fields.remove(&self.source_field).ok_or_else(|| {
                format!(
                    "payload on `{topic}` has no `{}` field for the source",
                    self.source_field
                )
            })?,
        };
        out.insert("source".into(), stringify(source));
        let kind = match (&self.kind, &self.kind_field) {
            (Some(kind), _) => Value::String(kind.clone()),
            (None, Some(field)) => fields.remove(field).ok_or_else(|| {
                format!("payload on `{topic}` has no `{field}` field for the kind")
            })?,
            (None, None) => return Err("mapping has neither kind nor kind_field".into()),
        };
        out.insert("kind".into(), kind);
        let time = match fields.remove(&self.time_field) {
            Some(value) => convert_time(&value, self.time_format).ok_or_else(|| {
                format!("payload field `{}` = {value} is not a {:?} time", self.time_field, self.time_format)
            })?,
            None if self.arrival_time_if_missing => arrival,
            None => {
                return Err(format!(
                    "payload on `{topic}` has no `{}` field for the time; set time_field or arrival_time_if_missing",
                    self.time_field
                ))
            }
        };
        out.insert(
            "time".into(),
            Value::String(cityward_model::format_time(&time)),
        );
        if let Some(id) = fields.remove(&self.id_field) {
            out.insert("id".into(), stringify(id));
        }
        for (from, to) in [(&self.lon_field, "lon"), (&self.lat_field, "lat")] {
            if let Some(v) = fields.remove(from) {
                let number = match &v {
                    Value::String(s) => s
                        .parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .map(Value::Number),
                    Value::Number(_) => Some(v.clone()),
                    _ => None,
                }
                .ok_or_else(|| format!("payload field `{from}` = {v} is not a coordinate"))?;
                out.insert(to.into(), number);
            }
        }
        if let Some(crs) = &self.crs {
            out.insert("crs".into(), Value::String(crs.clone()));
        }
        let mut attrs = match fields.remove("attrs") {
            Some(Value::Object(attrs)) => attrs,
            _ => Map::new(),
        };
        for (from, to) in &self.rename {
            if let Some(v) = fields.remove(from) {
                attrs.insert(to.clone(), v);
            }
        }
        if self.keep_other_fields {
            attrs.extend(fields);
        }
        if !attrs.is_empty() {
            out.insert("attrs".into(), Value::Object(attrs));
        }
        Ok(Value::Object(out))
    }
}

fn stringify(value: Value) -> Value {
    match value {
        Value::String(_) => value,
        other => Value::String(other.to_string()),
    }
}

fn convert_time(value: &Value, format: TimeFormat) -> Option<DateTime<Utc>> {
    match format {
        TimeFormat::Rfc3339 => value.as_str().and_then(cityward_model::parse_time),
        TimeFormat::EpochMs => {
            let ms = value.as_i64().or_else(|| value.as_str()?.parse().ok())?;
            Utc.timestamp_millis_opt(ms).single()
        }
        TimeFormat::EpochS => {
            let s = value.as_f64().or_else(|| value.as_str()?.parse().ok())?;
            DateTime::from_timestamp_micros((s * 1e6) as i64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gas_mapping() -> TopicMapping {
        toml::from_str(
            r#"
            filter = "city/gas/+/data"
            kind = "gas"
            source_topic_level = 2
            time_field = "ts"
            time_format = "epoch_ms"
            lon_field = "lng"
            crs = "gcj02"
            [rename]
            ppm = "value"
            "#,
        )
        .unwrap()
    }

    #[test]
    fn filters_match_like_a_broker() {
        assert!(topic_matches("city/gas/+/data", "city/gas/g-17/data"));
        assert!(!topic_matches("city/gas/+/data", "city/gas/g-17/data/x"));
        assert!(!topic_matches("city/gas/+/data", "city/gas/data"));
        assert!(topic_matches("city/#", "city/gas/g-17/data"));
        assert!(topic_matches("city/gas/#", "city/gas"));
        // Several processes of one node share a subscription; messages keep their topic.
        assert!(topic_matches("$share/ward/city/gas/+/data", "city/gas/g-17/data"));
        assert!(!topic_matches("$share/ward/city/gas/+/data", "ward/city/gas/g-17/data"));
    }

    #[test]
    fn maps_renamed_fields_and_a_source_from_the_topic() {
        let mapping = gas_mapping();
        mapping.check().unwrap();
        let out = mapping.map(
            "city/gas/g-17/data",
            br#"{"ts":1763780400000,"ppm":412,"lng":121.55,"lat":29.87,"alarm":true}"#,
            Utc::now(),
        );
        let record = out.into_iter().next().unwrap().unwrap();
        assert_eq!(record["source"], "g-17");
        assert_eq!(record["kind"], "gas");
        assert_eq!(record["time"], "2025-11-22T03:00:00.000Z");
        assert_eq!(record["lon"], 121.55);
        assert_eq!(record["crs"], "gcj02");
        assert_eq!(record["attrs"]["value"], 412);
        assert_eq!(record["attrs"]["alarm"], true);
    }

    #[test]
    fn says_what_is_missing() {
        let mapping = gas_mapping();
        let out = mapping.map("city/gas/g-17/data", br#"{"ppm":1}"#, Utc::now());
        let err = out.into_iter().next().unwrap().unwrap_err();
        assert!(err.contains("`ts`"), "{err}");
        let out = mapping.map("city/gas/g-17/data", b"not json", Utc::now());
        assert!(out[0].as_ref().unwrap_err().contains("not JSON"));
    }
}
