//! Declared event kinds: which attributes each kind carries, their types, whether the
//! kind has a place, and which data class it belongs to (for retention and privacy).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The type of one attribute, as the lake stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttrType {
    /// A floating-point number (stored as Float64).
    Number,
    /// A whole number (stored as Int64); a JSON number with a fraction is refused.
    Integer,
    /// Text (stored as Utf8).
    String,
    /// `true` or `false`.
    Bool,
}

impl AttrType {
    /// The name used in messages and configuration.
    pub fn name(self) -> &'static str {
        match self {
            AttrType::Number => "number",
            AttrType::Integer => "integer",
            AttrType::String => "string",
            AttrType::Bool => "bool",
        }
    }
}

/// Whether events of a kind carry a place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Place {
    /// `lon` and `lat` must be present.
    Required,
    /// `lon` and `lat` may be present (both or neither).
    #[default]
    Optional,
}

/// One declared attribute of a kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttrSpec {
    /// The attribute's type.
    #[serde(rename = "type")]
    pub ty: AttrType,
    /// Whether every event of the kind must carry it.
    #[serde(default)]
    pub required: bool,
}

/// The schema of one event kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindSchema {
    /// Whether the kind has a place.
    #[serde(default)]
    pub place: Place,
    /// Data class for retention and privacy rules, e.g. `plate_read`, `vehicle_gps`, `sensor`.
    #[serde(default = "default_class")]
    pub class: String,
    /// Declared attributes. Undeclared attributes are kept in the event's JSON attributes but
    /// get no typed column in the lake.
    #[serde(default)]
    pub attrs: BTreeMap<String, AttrSpec>,
}

fn default_class() -> String {
    "sensor".to_string()
}

/// All declared kinds, by name.
#[derive(Debug, Clone, PartialEq)]
pub struct KindRegistry {
    kinds: BTreeMap<String, KindSchema>,
}

impl KindRegistry {
    /// The built-in kinds of DESIGN.md, to which configuration adds a city's own.
    pub fn builtin() -> Self {
        use AttrType::*;
        let kind = |place: Place, class: &str, attrs: &[(&str, AttrType, bool)]| KindSchema {
            place,
            class: class.to_string(),
            attrs: attrs
                .iter()
                .map(|(name, ty, required)| {
                    (
                        name.to_string(),
                        AttrSpec {
                            ty: *ty,
                            required: *required,
                        },
                    )
                })
                .collect(),
        };
        let req = Place::Required;
        let opt = Place::Optional;
        let mut kinds = BTreeMap::new();
        kinds.insert(
            "gps".into(),
            kind(
                req,
                "vehicle_gps",
                &[
                    ("speed_kmh", Number, false),
                    ("heading", Number, false),
                    ("class", String, false),
                    ("plate", String, false),
                    ("route", String, false),
                ],
            ),
        );
        kinds.insert(
            "plate_read".into(),
            kind(
                req,
                "plate_read",
                &[
                    ("plate", String, true),
                    ("confidence", Number, false),
                    ("color", String, false),
                    ("vehicle_type", String, false),
                    ("lane", Integer, false),
                    ("direction", String, false),
                ],
            ),
        );
        kinds.insert(
            "smoke".into(),
            kind(
                opt,
                "sensor",
                &[
                    ("value", Number, false),
                    ("alarm", Bool, false),
                    ("temperature_c", Number, false),
                ],
            ),
        );
        kinds.insert(
            "gas".into(),
            kind(
                opt,
                "sensor",
                &[
                    ("value", Number, false),
                    ("alarm", Bool, false),
                    ("gas", String, false),
                ],
            ),
        );
        kinds.insert(
            "water_level".into(),
            kind(opt, "sensor", &[("value", Number, true)]),
        );
        kinds.insert("door".into(), kind(opt, "sensor", &[("open", Bool, true)]));
        kinds.insert(
            "temperature".into(),
            kind(opt, "sensor", &[("value", Number, true)]),
        );
        kinds.insert(
            "heartbeat".into(),
            kind(
                opt,
                "device_health",
                &[
                    ("battery", Number, false),
                    ("rssi", Number, false),
                    ("tamper", Bool, false),
                ],
            ),
        );
        // Counts per minute, grid and kind that a lower tier sends up (its raw events stay
        // there); `source` is the node, `time` the minute.
        kinds.insert(
            "tier_summary".into(),
            kind(
                opt,
                "summary",
                &[("grid_id", String, false), ("of_kind", String, true), ("count", Integer, true)],
            ),
        );
        kinds.insert(
            "crowd_count".into(),
            kind(opt, "sensor", &[("count", Integer, true)]),
        );
        kinds.insert(
            "traffic_flow".into(),
            kind(
                opt,
                "traffic",
                &[
                    ("speed_kmh", Number, false),
                    ("volume", Integer, false),
                    ("occupancy", Number, false),
                    ("segment", String, false),
                ],
            ),
        );
        kinds.insert(
            "video_event".into(),
            kind(
                opt,
                "video_event",
                &[
                    ("event_type", String, true),
                    ("confidence", Number, false),
                    ("clip_url", String, false),
                ],
            ),
        );
        kinds.insert(
            "citizen_report".into(),
            kind(
                opt,
                "citizen_report",
                &[
                    ("service_code", String, false),
                    ("description", String, false),
                ],
            ),
        );
        KindRegistry { kinds }
    }

    /// Adds or replaces a kind.
    pub fn declare(&mut self, name: impl Into<String>, schema: KindSchema) {
        self.kinds.insert(name.into(), schema);
    }

    /// The schema of a kind, when declared.
    pub fn get(&self, name: &str) -> Option<&KindSchema> {
        self.kinds.get(name)
    }

    /// Names of all declared kinds, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.kinds.keys().map(String::as_str)
    }

    /// Every declared attribute across kinds with its type, sorted by name: the typed
    /// attribute columns of the lake's `events` table.
    ///
    /// Fails when two kinds declare the same attribute name with different types, naming both.
    pub fn attribute_columns(&self) -> Result<Vec<(String, AttrType)>, String> {
        let mut columns: BTreeMap<&str, (AttrType, &str)> = BTreeMap::new();
        for (kind, schema) in &self.kinds {
            for (name, spec) in &schema.attrs {
                match columns.get(name.as_str()) {
                    Some((ty, other)) if *ty != spec.ty => return Err(format!(
                        "attribute `{name}` is a {} in kind `{other}` but a {} in kind `{kind}`; \
                             give it one type or rename it in one of the kinds",
                        ty.name(),
                        spec.ty.name()
                    )),
                    Some(_) => {}
                    None => {
                        columns.insert(name, (spec.ty, kind));
                    }
                }
            }
        }
        Ok(columns
            .into_iter()
            .map(|(n, (t, _))| (n.to_string(), t))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_kinds_have_consistent_attribute_types() {
        let registry = KindRegistry::builtin();
        let columns = registry.attribute_columns().unwrap();
        assert!(columns
            .iter()
            .any(|(n, t)| n == "plate" && *t == AttrType::String));
        for kind in [
            "gps",
            "plate_read",
            "smoke",
            "gas",
            "water_level",
            "door",
            "heartbeat",
            "crowd_count",
            "traffic_flow",
            "video_event",
            "citizen_report",
        ] {
            assert!(registry.get(kind).is_some(), "{kind}");
        }
    }

    #[test]
    fn conflicting_attribute_types_are_named() {
        let mut registry = KindRegistry::builtin();
        let mut schema = registry.get("door").unwrap().clone();
        schema.attrs.insert(
            "plate".into(),
            AttrSpec {
                ty: AttrType::Integer,
                required: false,
            },
        );
        registry.declare("gate", schema);
        let err = registry.attribute_columns().unwrap_err();
        assert!(err.contains("`plate`") && err.contains("gate"), "{err}");
    }
}
