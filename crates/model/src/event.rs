//! The event: the one record every source is turned into (DESIGN.md, "Wire format").

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::crs::Crs;

/// One observation from the perception network, in the wire format of DESIGN.md.
///
/// After intake, `id` is always set, `lon`/`lat` are WGS84 (`crs` is then
/// [`Crs::Wgs84`]) and `grid`/`unit` carry the enrichment from the city model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id; assigned at intake when the source sends none. A repeated id is a duplicate.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// The device, vehicle or system that produced the event.
    pub source: String,
    /// The event kind, one of the kinds declared in configuration (e.g. `gps`, `smoke`).
    pub kind: String,
    /// Event time: when it happened at the source, not when it arrived.
    #[serde(with = "rfc3339")]
    pub time: DateTime<Utc>,
    /// Longitude in degrees, when the kind has a place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
    /// Latitude in degrees, when the kind has a place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    /// The coordinate system of `lon`/`lat`; WGS84 once stored.
    #[serde(default, skip_serializing_if = "Crs::is_wgs84")]
    pub crs: Crs,
    /// Kind-specific attributes, typed by the kind's schema.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub attrs: Map<String, Value>,
    /// Patrol grid the point falls in (enrichment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grid: Option<String>,
    /// Owner unit of the registered source device (enrichment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

impl Event {
    /// A new event without place or attributes.
    pub fn new(source: impl Into<String>, kind: impl Into<String>, time: DateTime<Utc>) -> Self {
        Event {
            id: String::new(),
            source: source.into(),
            kind: kind.into(),
            time,
            lon: None,
            lat: None,
            crs: Crs::Wgs84,
            attrs: Map::new(),
            grid: None,
            unit: None,
        }
    }

    /// Sets the place (WGS84 unless `crs` is changed afterwards).
    pub fn at(mut self, lon: f64, lat: f64) -> Self {
        self.lon = Some(lon);
        self.lat = Some(lat);
        self
    }

    /// Adds one attribute.
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.attrs.insert(name.to_string(), value.into());
        self
    }

    /// The place as `(lon, lat)` when both are present.
    pub fn point(&self) -> Option<(f64, f64)> {
        Some((self.lon?, self.lat?))
    }

    /// A numeric attribute, when present and a number.
    pub fn attr_f64(&self, name: &str) -> Option<f64> {
        self.attrs.get(name).and_then(Value::as_f64)
    }

    /// A string attribute, when present and a string.
    pub fn attr_str(&self, name: &str) -> Option<&str> {
        self.attrs.get(name).and_then(Value::as_str)
    }

    /// Event time in microseconds since the Unix epoch.
    pub fn time_micros(&self) -> i64 {
        self.time.timestamp_micros()
    }

    /// The event as one NDJSON line (no trailing newline).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("an Event always serializes")
    }
}

/// Formats a time the way the wire format writes it: RFC 3339, UTC, milliseconds, `Z`.
pub fn format_time(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 time with any offset into UTC.
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Serde helpers writing a time as [`format_time`] does (`#[serde(with = "…::rfc3339")]`).
pub mod rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the time as RFC 3339 with milliseconds and `Z`.
    pub fn serialize<S: Serializer>(time: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_time(time))
    }

    /// Reads an RFC 3339 time with any offset.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        super::parse_time(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{text}` is not an RFC 3339 time such as 2026-11-22T03:00:00.250Z"
            ))
        })
    }
}

/// [`rfc3339`] for an optional time (`null` or absent is `None`).
pub mod rfc3339_option {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `Some` as RFC 3339, `None` as null.
    pub fn serialize<S: Serializer>(time: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match time {
            Some(t) => s.serialize_str(&super::format_time(t)),
            None => s.serialize_none(),
        }
    }

    /// Reads an RFC 3339 time or null.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let text = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)?;
        text.map(|text| {
            super::parse_time(&text).ok_or_else(|| {
                serde::de::Error::custom(format!("`{text}` is not an RFC 3339 time"))
            })
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_round_trips() {
        let line = r#"{"id":"e1","source":"truck-0042","kind":"gps","time":"2026-11-22T03:00:00.250Z","lon":121.2654,"lat":31.3751,"attrs":{"heading":90,"speed_kmh":62.5}}"#;
        let event: Event = serde_json::from_str(line).unwrap();
        assert_eq!(event.source, "truck-0042");
        assert_eq!(event.crs, Crs::Wgs84);
        assert_eq!(event.attr_f64("speed_kmh"), Some(62.5));
        assert_eq!(event.time_micros() % 1_000_000, 250_000);
        assert_eq!(event.to_json_line(), line);
    }

    #[test]
    fn offsets_are_normalised_to_utc() {
        let t = parse_time("2026-11-22T11:00:00+08:00").unwrap();
        assert_eq!(format_time(&t), "2026-11-22T03:00:00.000Z");
    }
}
