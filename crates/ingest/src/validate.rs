//! Turning one decoded record into a valid [`Event`], or a [`Reject`] that names the field
//! and the reason.

use std::collections::HashSet;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use cityward_model::{parse_time, AttrType, Crs, Event, KindRegistry, Place};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::IngestConfig;

/// Why a record was refused; a small fixed set so metrics stay bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    /// Not JSON (or not CSV) at all.
    Malformed,
    /// A required field is absent.
    MissingField,
    /// A field has the wrong type or an impossible value.
    InvalidField,
    /// The kind is not declared.
    UnknownKind,
    /// The place lies outside the city's bounds.
    OutsideCity,
    /// The time is too far in the future (or the past).
    TimeOutOfRange,
    /// The record carries biometric or person-identity data (SCOPE.md).
    PersonalData,
    /// The record alone is larger than the allowed size.
    TooLarge,
    /// The kind requires a registered source and this one is not registered.
    UnregisteredSource,
}

impl RejectCode {
    /// The label used in metrics and responses.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::Malformed => "malformed",
            RejectCode::MissingField => "missing_field",
            RejectCode::InvalidField => "invalid_field",
            RejectCode::UnknownKind => "unknown_kind",
            RejectCode::OutsideCity => "outside_city",
            RejectCode::TimeOutOfRange => "time_out_of_range",
            RejectCode::PersonalData => "personal_data",
            RejectCode::TooLarge => "too_large",
            RejectCode::UnregisteredSource => "unregistered_source",
        }
    }

    /// Every code, for pre-registering metrics.
    pub const ALL: [RejectCode; 9] = [
        RejectCode::Malformed,
        RejectCode::MissingField,
        RejectCode::InvalidField,
        RejectCode::UnknownKind,
        RejectCode::OutsideCity,
        RejectCode::TimeOutOfRange,
        RejectCode::PersonalData,
        RejectCode::TooLarge,
        RejectCode::UnregisteredSource,
    ];
}

/// A refused record: where it was, which field, why, and its original text for the
/// dead-letter store.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Reject {
    /// 1-based line (NDJSON, CSV) or line where the array element starts (JSON array).
    pub line: u64,
    /// The field at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Machine-readable reason.
    pub code: RejectCode,
    /// What was wrong and what to do, for a person.
    pub reason: String,
    /// The record as received (truncated to a bounded size).
    #[serde(skip)]
    pub raw: String,
}

impl Reject {
    pub(crate) fn new(
        line: u64,
        field: Option<&str>,
        code: RejectCode,
        reason: String,
        raw: &str,
    ) -> Self {
        const MAX_RAW: usize = 64 * 1024;
        let raw = if raw.len() > MAX_RAW {
            let mut end = MAX_RAW;
            while !raw.is_char_boundary(end) {
                end -= 1;
            }
            raw[..end].to_string()
        } else {
            raw.to_string()
        };
        Reject {
            line,
            field: field.map(str::to_string),
            code,
            reason,
            raw,
        }
    }
}

/// The checks every record passes before it may enter the write-ahead log.
#[derive(Debug, Clone)]
pub struct Validator {
    kinds: KindRegistry,
    /// `(min_lon, min_lat, max_lon, max_lat)` of the city, WGS84.
    bounds: Option<(f64, f64, f64, f64)>,
    max_future: ChronoDuration,
    max_past: Option<ChronoDuration>,
    personal_fields: HashSet<String>,
    allow_personal: bool,
    max_record_bytes: usize,
}

const TOP_LEVEL_FIELDS: &str = "id, source, kind, time, lon, lat, crs, attrs";

/// The fast path: a record in exactly the wire format.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    #[serde(default, borrow)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    source: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    time: std::borrow::Cow<'a, str>,
    #[serde(default)]
    lon: Option<f64>,
    #[serde(default)]
    lat: Option<f64>,
    #[serde(default, borrow)]
    crs: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    attrs: Map<String, Value>,
}

impl Validator {
    /// A validator for the declared kinds and the intake settings.
    pub fn new(kinds: KindRegistry, config: &IngestConfig) -> Self {
        Validator {
            kinds,
            bounds: None,
            max_future: ChronoDuration::from_std(config.max_future).unwrap_or(ChronoDuration::MAX),
            max_past: config
                .max_past
                .map(|d| ChronoDuration::from_std(d).unwrap_or(ChronoDuration::MAX)),
            personal_fields: config
                .personal_fields
                .iter()
                .map(|f| f.to_ascii_lowercase())
                .collect(),
            allow_personal: config.allow_personal_data,
            max_record_bytes: config.max_record_bytes,
        }
    }

    /// Refuse places outside `(min_lon, min_lat, max_lon, max_lat)` (WGS84).
    pub fn with_bounds(mut self, bounds: (f64, f64, f64, f64)) -> Self {
        self.bounds = Some(bounds);
        self
    }

    /// The declared kinds.
    pub fn kinds(&self) -> &KindRegistry {
        &self.kinds
    }

    /// Validates one JSON record (`text`, found at `line`), converting its place to WGS84.
    pub fn validate_json(
        &self,
        text: &str,
        line: u64,
        now: DateTime<Utc>,
    ) -> Result<Event, Reject> {
        if text.len() > self.max_record_bytes {
            return Err(Reject::new(
                line,
                None,
                RejectCode::TooLarge,
                format!(
                    "record is {} bytes, more than the {} allowed per record (ingest.max_record_bytes); split it or raise the limit",
                    text.len(),
                    self.max_record_bytes
                ),
                text,
            ));
        }
        match serde_json::from_str::<Wire>(text) {
            Ok(wire) => self.event_of_wire(wire, line, now, text),
            // The fast path failed: find out which field, for a message a person can act on.
            Err(_) => self.explain(text, line, now),
        }
    }

    fn event_of_wire(
        &self,
        wire: Wire,
        line: u64,
        now: DateTime<Utc>,
        text: &str,
    ) -> Result<Event, Reject> {
        let crs = match wire.crs.as_deref() {
            None => Crs::Wgs84,
            Some(c) => Crs::parse(c).ok_or_else(|| {
                Reject::new(
                    line,
                    Some("crs"),
                    RejectCode::InvalidField,
                    format!("crs `{c}` is not one of wgs84, gcj02, bd09"),
                    text,
                )
            })?,
        };
        let time = parse_time(&wire.time).ok_or_else(|| {
            Reject::new(
                line,
                Some("time"),
                RejectCode::InvalidField,
                format!(
                    "`{}` is not an RFC 3339 time; write e.g. 2026-11-22T03:00:00.250Z",
                    wire.time
                ),
                text,
            )
        })?;
        let event = Event {
            id: wire.id.map(|c| c.into_owned()).unwrap_or_default(),
            source: wire.source.into_owned(),
            kind: wire.kind.into_owned(),
            time,
            lon: wire.lon,
            lat: wire.lat,
            crs,
            attrs: wire.attrs,
            grid: None,
            unit: None,
        };
        self.check(event, line, now, text)
    }

    /// Validates a record given as a JSON value (from CSV or an MQTT mapping).
    pub fn validate_value(
        &self,
        value: Value,
        line: u64,
        now: DateTime<Utc>,
    ) -> Result<Event, Reject> {
        let text = value.to_string();
        self.validate_json(&text, line, now)
    }

    /// Explains why `text` does not fit the wire format.
    fn explain(&self, text: &str, line: u64, now: DateTime<Utc>) -> Result<Event, Reject> {
        let reject = |field: Option<&str>, code, reason: String| {
            Err(Reject::new(line, field, code, reason, text))
        };
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                return reject(
                    None,
                    RejectCode::Malformed,
                    format!("not valid JSON ({e}); each record must be one JSON object"),
                )
            }
        };
        let Value::Object(object) = value else {
            return reject(
                None,
                RejectCode::Malformed,
                format!(
                    "a record must be a JSON object, found {}",
                    json_type(&value)
                ),
            );
        };
        if !self.allow_personal {
            if let Some(field) = object.keys().find(|k| self.is_personal(k)) {
                return reject(
                    Some(field),
                    RejectCode::PersonalData,
                    personal_reason(field),
                );
            }
        }
        for key in object.keys() {
            if !TOP_LEVEL_FIELDS.split(", ").any(|f| f == key) {
                return reject(Some(key), RejectCode::InvalidField, format!(
                    "unknown field `{key}`; an event has only {TOP_LEVEL_FIELDS} — put device-specific values inside `attrs`"));
            }
        }
        for (field, want) in [("source", "string"), ("kind", "string"), ("time", "string")] {
            match object.get(field) {
                None | Some(Value::Null) => {
                    return reject(
                        Some(field),
                        RejectCode::MissingField,
                        format!("`{field}` is required"),
                    )
                }
                Some(Value::String(_)) => {}
                Some(other) => {
                    let hint = if field == "time" {
                        " in RFC 3339, e.g. 2026-11-22T03:00:00.250Z"
                    } else {
                        ""
                    };
                    return reject(
                        Some(field),
                        RejectCode::InvalidField,
                        format!(
                            "`{field}` must be a {want}{hint}, found {}",
                            json_type(other)
                        ),
                    );
                }
            }
        }
        for (field, want) in [("id", "string"), ("crs", "string")] {
            if let Some(v) = object.get(field) {
                if !v.is_string() && !v.is_null() {
                    return reject(
                        Some(field),
                        RejectCode::InvalidField,
                        format!("`{field}` must be a {want}, found {}", json_type(v)),
                    );
                }
            }
        }
        for field in ["lon", "lat"] {
            if let Some(v) = object.get(field) {
                if !v.is_number() && !v.is_null() {
                    return reject(
                        Some(field),
                        RejectCode::InvalidField,
                        format!(
                            "`{field}` must be a number of degrees, found {}",
                            json_type(v)
                        ),
                    );
                }
            }
        }
        if let Some(v) = object.get("attrs") {
            if !v.is_object() && !v.is_null() {
                return reject(
                    Some("attrs"),
                    RejectCode::InvalidField,
                    format!("`attrs` must be an object, found {}", json_type(v)),
                );
            }
        }
        // Everything is of the right shape after all (e.g. `attrs: null`): drop the nulls and read it.
        let mut object = object;
        object.retain(|_, v| !v.is_null());
        let normalised = Value::Object(object).to_string();
        match serde_json::from_str::<Wire>(&normalised) {
            Ok(wire) => self.event_of_wire(wire, line, now, text),
            Err(e) => reject(
                None,
                RejectCode::Malformed,
                format!("record could not be read: {e}"),
            ),
        }
    }

    fn is_personal(&self, name: &str) -> bool {
        let lower = name.to_ascii_lowercase();
        self.personal_fields.contains(&lower) || lower.starts_with("face_")
    }

    /// Semantic checks on a record of the right shape; converts the place to WGS84.
    fn check(
        &self,
        mut event: Event,
        line: u64,
        now: DateTime<Utc>,
        text: &str,
    ) -> Result<Event, Reject> {
        let reject =
            |field: &str, code, reason: String| Reject::new(line, Some(field), code, reason, text);
        if !self.allow_personal {
            if let Some(field) = event.attrs.keys().find(|k| self.is_personal(k)) {
                return Err(reject(
                    &format!("attrs.{field}"),
                    RejectCode::PersonalData,
                    personal_reason(field),
                ));
            }
        }
        if event.source.is_empty() || event.source.len() > 256 {
            return Err(reject(
                "source",
                RejectCode::InvalidField,
                "`source` must be 1 to 256 characters".into(),
            ));
        }
        if event.id.len() > 128 {
            return Err(reject(
                "id",
                RejectCode::InvalidField,
                "`id` must be at most 128 characters".into(),
            ));
        }
        let Some(schema) = self.kinds.get(&event.kind) else {
            let known: Vec<&str> = self.kinds.names().collect();
            return Err(reject("kind", RejectCode::UnknownKind, format!(
                "kind `{}` is not declared; declared kinds are {}; declare new kinds under [kinds] in the configuration",
                event.kind, known.join(", "))));
        };
        if event.time > now + self.max_future {
            return Err(reject(
                "time",
                RejectCode::TimeOutOfRange,
                format!(
                "time {} is more than {} ahead of the node's clock ({}); check the device's clock",
                cityward_model::format_time(&event.time),
                cityward_model::format_duration(self.max_future.to_std().unwrap_or_default()),
                cityward_model::format_time(&now)),
            ));
        }
        if let Some(max_past) = self.max_past {
            if event.time < now - max_past {
                return Err(reject("time", RejectCode::TimeOutOfRange, format!(
                    "time {} is older than ingest.max_past allows; load history with a node configured for it",
                    cityward_model::format_time(&event.time))));
            }
        }
        match (event.lon, event.lat) {
            (Some(lon), Some(lat)) => {
                if !lon.is_finite() || !(-180.0..=180.0).contains(&lon) {
                    return Err(reject(
                        "lon",
                        RejectCode::InvalidField,
                        format!("lon {lon} is not between -180 and 180"),
                    ));
                }
                if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
                    return Err(reject(
                        "lat",
                        RejectCode::InvalidField,
                        format!("lat {lat} is not between -90 and 90"),
                    ));
                }
                let (wlon, wlat) = event.crs.to_wgs84(lon, lat);
                if let Some((x0, y0, x1, y1)) = self.bounds {
                    if !(x0..=x1).contains(&wlon) || !(y0..=y1).contains(&wlat) {
                        return Err(reject("lon", RejectCode::OutsideCity, format!(
                            "({wlon:.6}, {wlat:.6}) WGS84 is outside the city (lon {x0:.4}..{x1:.4}, lat {y0:.4}..{y1:.4}); \
                             check the coordinate order and the `crs` tag")));
                    }
                }
                event.lon = Some(wlon);
                event.lat = Some(wlat);
                event.crs = Crs::Wgs84;
            }
            (None, None) if schema.place == Place::Required => {
                return Err(reject(
                    "lon",
                    RejectCode::MissingField,
                    format!("kind `{}` needs a place: give `lon` and `lat`", event.kind),
                ));
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(reject(
                    "lat",
                    RejectCode::MissingField,
                    "`lon` is given without `lat`".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(reject(
                    "lon",
                    RejectCode::MissingField,
                    "`lat` is given without `lon`".into(),
                ))
            }
        }
        for (name, spec) in &schema.attrs {
            match event.attrs.get(name) {
                None | Some(Value::Null) if spec.required => {
                    return Err(reject(
                        &format!("attrs.{name}"),
                        RejectCode::MissingField,
                        format!(
                            "kind `{}` requires attribute `{name}` ({})",
                            event.kind,
                            spec.ty.name()
                        ),
                    ));
                }
                None | Some(Value::Null) => {}
                Some(value) => {
                    let ok = match spec.ty {
                        AttrType::Number => value.as_f64().is_some_and(f64::is_finite),
                        AttrType::Integer => value.is_i64() || value.is_u64(),
                        AttrType::String => value.is_string(),
                        AttrType::Bool => value.is_boolean(),
                    };
                    if !ok {
                        return Err(reject(
                            &format!("attrs.{name}"),
                            RejectCode::InvalidField,
                            format!(
                                "attribute `{name}` of kind `{}` must be a {}, found {}",
                                event.kind,
                                spec.ty.name(),
                                json_type(value)
                            ),
                        ));
                    }
                }
            }
        }
        Ok(event)
    }
}

fn personal_reason(field: &str) -> String {
    format!(
        "field `{field}` carries biometric or person-identity data, which cityward refuses by design \
         (no face images, face features or person identities; see SCOPE.md); send the event without it"
    )
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
