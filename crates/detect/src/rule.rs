//! Rule files: the YAML contract of DESIGN.md, parsed and checked against the city.
//!
//! A rule file is `rules: [ … ]`; each rule has the common keys (`id`, `kind`, `when`, `key`,
//! `severity`, `category`, …) and the keys of its kind. Parsing is two steps: serde reads the
//! shape (unknown keys and wrong types are refused with the YAML position), then
//! [`RuleSpec::compile`] checks what serde cannot — CEL, zones, the keys a kind needs —
//! and names the file, line and key of each problem.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cityward_model::{duration_serde, City};
use serde::{Deserialize, Serialize};

use crate::cel::Program;

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth a look during the shift.
    Low,
    /// Needs handling; the default.
    #[default]
    Medium,
    /// Needs handling now.
    High,
    /// Danger to life.
    Critical,
}

impl Severity {
    /// The lowercase name used in rules and alerts.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}


/// The rule kinds of DESIGN.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    /// A CEL predicate over one event.
    Match,
    /// An attribute beyond a value for N readings or a duration, with hysteresis.
    Threshold,
    /// Enter, exit, dwell in, or presence in named zones.
    Geofence,
    /// Over a speed limit for a duration.
    Speed,
    /// Off an assigned route corridor.
    Corridor,
    /// Driving too long without rest.
    Fatigue,
    /// At least N events per group in a window.
    Count,
    /// No event for a duration (device offline).
    Absence,
    /// A then B (or A not followed by B) within a time.
    Sequence,
    /// An attribute value on a named list.
    Hotlist,
    /// A scheduled SQL query over the lake.
    Sql,
}

impl RuleKind {
    /// The lowercase name used in rule files.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Match => "match",
            RuleKind::Threshold => "threshold",
            RuleKind::Geofence => "geofence",
            RuleKind::Speed => "speed",
            RuleKind::Corridor => "corridor",
            RuleKind::Fatigue => "fatigue",
            RuleKind::Count => "count",
            RuleKind::Absence => "absence",
            RuleKind::Sequence => "sequence",
            RuleKind::Hotlist => "hotlist",
            RuleKind::Sql => "sql",
        }
    }
}

/// What a geofence rule watches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GeofenceOn {
    /// The key's first fix inside a zone: after a fix outside it, or the first fix seen of
    /// the key.
    Enter,
    /// The key's first fix outside a zone after a fix inside it.
    Exit,
    /// Inside the same zone for longer than `dwell`.
    Dwell,
    /// Any fix inside a zone (during `between`, when given).
    Inside,
}

/// Where a speed rule takes its limit from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitFrom {
    /// `limit_kmh` of the rule.
    Rule,
    /// `speed_limit_kmh` property of the zone the fix is in (`zones` of the rule).
    Zone,
    /// `speed_limit_kmh` of the nearest road within `road_within_m`.
    Road,
}

/// How a count rule groups events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// The rule's `key` expression (an attribute, the source, …).
    Key,
    /// The event's patrol grid.
    Grid,
    /// Each zone of the rule's `zones` the event is in.
    Zone,
    /// The H3 cell of the event at `h3_resolution`.
    H3,
}

/// What a sequence rule looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SequenceMode {
    /// `first` then `then` within `within`.
    Followed,
    /// `first` not followed by `then` within `within`.
    NotFollowed,
}

/// One rule as written in a rule file or sent to the API.
///
/// Common keys first; the others belong to one or a few kinds, and [`RuleSpec::compile`]
/// refuses a key that does not apply to the rule's kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique rule id (letters, digits, `-`, `_`, `.`).
    pub id: String,
    /// The rule kind.
    pub kind: RuleKind,
    /// CEL predicate selecting the events the rule looks at; all events when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// CEL expression giving the key that state is kept per; `event.source` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Alert severity.
    #[serde(default)]
    pub severity: Severity,
    /// Alert category, e.g. `traffic.hazmat`; routes the alert.
    pub category: String,
    /// A human title for the alert; the rule id when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Whether the rule runs.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
    /// Repeated firing for the same key within this period is counted on the open alert
    /// instead of raising a new one (default 10m).
    #[serde(default, with = "duration_serde::option", skip_serializing_if = "Option::is_none")]
    pub suppress: Option<Duration>,

    // --- threshold ---
    /// threshold: the numeric attribute watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attr: Option<String>,
    /// threshold: raise when the value is above this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    /// threshold: raise when the value is below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
    /// threshold: clear at this value (hysteresis); `above`/`below` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear: Option<f64>,
    /// threshold: consecutive readings beyond the value needed (default 1); count: events
    /// needed in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// threshold, speed, corridor, absence: how long the condition must hold.
    #[serde(
        default,
        rename = "for",
        with = "duration_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub for_: Option<Duration>,

    // --- geofence, speed, count ---
    /// geofence, speed (limit_from: zone), count (group: zone): zone ids of `zones.geojson`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
    /// geofence: every zone whose `kind` is one of these (a zone set), besides `zones`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zone_kinds: Vec<String>,
    /// geofence: enter, exit, dwell or inside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<GeofenceOn>,
    /// geofence with `on: dwell`: how long inside before the alert.
    #[serde(default, with = "duration_serde::option", skip_serializing_if = "Option::is_none")]
    pub dwell: Option<Duration>,
    /// geofence with `on: inside`: a time-of-day window `HH:MM-HH:MM` (may wrap midnight).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub between: Option<String>,
    /// geofence `between`: the UTC offset of the window's clock, e.g. `+08:00` (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utc_offset: Option<String>,

    // --- speed, fatigue ---
    /// speed: the limit in km/h (with `limit_from: rule`, the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_kmh: Option<f64>,
    /// speed: where the limit comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_from: Option<LimitFrom>,
    /// speed: km/h over the limit tolerated (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance_kmh: Option<f64>,
    /// speed (limit_from: road): how far the nearest road may be (default 30 m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub road_within_m: Option<f64>,
    /// speed, fatigue: the attribute holding the speed in km/h (default `speed_kmh`); when
    /// an event lacks it the speed is derived from the key's previous fix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_attr: Option<String>,
    /// fatigue: longest continuous driving allowed (default 4h).
    #[serde(default, with = "duration_serde::option", skip_serializing_if = "Option::is_none")]
    pub limit: Option<Duration>,
    /// fatigue: shortest stop that counts as rest (default 20m).
    #[serde(default, with = "duration_serde::option", skip_serializing_if = "Option::is_none")]
    pub rest: Option<Duration>,
    /// fatigue: at or above this speed the vehicle is driving (default 5 km/h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving_kmh: Option<f64>,

    // --- corridor ---
    /// corridor: the corridor zone every key is assigned to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corridor: Option<String>,
    /// corridor: the event attribute naming the key's corridor zone (e.g. `route`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corridor_attr: Option<String>,
    /// corridor: distance beyond the corridor's edge tolerated, in metres (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub off_m: Option<f64>,

    // --- count ---
    /// count: window length.
    #[serde(default, with = "duration_serde::option", skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
    /// count: `true` for a sliding window (any span of `window`), else tumbling windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding: Option<bool>,
    /// count: how events are grouped (default key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupBy>,
    /// count with `group: h3`: the H3 resolution (0–15, default 9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h3_resolution: Option<u8>,

    // --- sequence ---
    /// sequence: CEL predicate of the first event (A).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<String>,
    /// sequence: CEL predicate of the following event (B).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub then: Option<String>,
    /// sequence: B must come within this time after A.
    #[serde(default, with = "duration_serde::option", skip_serializing_if = "Option::is_none")]
    pub within: Option<Duration>,
    /// sequence: B must be within this many metres of A.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_m: Option<f64>,
    /// sequence: followed (default) or not_followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<SequenceMode>,

    // --- hotlist ---
    /// hotlist: the list's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<String>,

    // --- sql ---
    /// sql: the query; each row becomes an alert (columns `key`, `time`, `lon`, `lat`,
    /// `grid`, `id` are used when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// sql: how often the query runs (default 24h).
    #[serde(default, with = "duration_serde::option", skip_serializing_if = "Option::is_none")]
    pub every: Option<Duration>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// A rule file: `rules: [ … ]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    /// The rules, in file order.
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
}

/// What is wrong with a rule, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleError {
    /// The file, or `None` for a rule sent to the API.
    pub file: Option<PathBuf>,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The rule id, when known.
    pub rule: Option<String>,
    /// The key of the rule at fault (e.g. `when`, `zones`), when known.
    pub key: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut place = Vec::new();
        if let Some(file) = &self.file {
            place.push(file.display().to_string());
        }
        if let Some(line) = self.line {
            place.push(format!("line {line}"));
        }
        if let Some(rule) = &self.rule {
            place.push(format!("rule `{rule}`"));
        }
        if let Some(key) = &self.key {
            place.push(format!("key `{key}`"));
        }
        if place.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", place.join(", "), self.message)
        }
    }
}

impl std::error::Error for RuleError {}

impl RuleError {
    fn at(rule: &str, key: &str, message: impl Into<String>) -> RuleError {
        RuleError {
            file: None,
            line: None,
            rule: Some(rule.to_string()),
            key: Some(key.to_string()),
            message: message.into(),
        }
    }
}

/// A rule checked and compiled, ready for the engine.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The rule as written.
    pub spec: RuleSpec,
    /// The compiled `when` (None: every event).
    pub when: Option<Program>,
    /// The compiled `key`.
    pub key: Program,
    /// Kinds the `when` restricts the rule to (None: any kind), used to index rules.
    pub kinds: Option<Vec<String>>,
    /// sequence: compiled `first` and `then`.
    pub sequence: Option<(Program, Program)>,
    /// A fingerprint of the spec: a rule whose fingerprint is unchanged keeps its state
    /// across a rule reload.
    pub fingerprint: u64,
}

/// The default repeat-suppression period.
pub const DEFAULT_SUPPRESS: Duration = Duration::from_secs(600);

impl RuleSpec {
    /// Whether the rule reads the city's zones, corridors or roads (its state then refers
    /// to them and does not survive a change of the city model).
    pub fn reads_zones(&self) -> bool {
        !self.zones.is_empty()
            || !self.zone_kinds.is_empty()
            || self.corridor.is_some()
            || self.corridor_attr.is_some()
            || matches!(self.kind, RuleKind::Geofence | RuleKind::Corridor | RuleKind::Speed)
    }

    /// Checks the rule against its kind and the city, and compiles its expressions.
    pub fn compile(&self, city: &City) -> Result<Rule, RuleError> {
        let id = self.id.as_str();
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(RuleError::at(
                id,
                "id",
                "a rule id must be non-empty and use only letters, digits, '-', '_' and '.'",
            ));
        }
        if self.category.trim().is_empty() {
            return Err(RuleError::at(id, "category", "category must not be empty"));
        }
        let cel = |key: &str, text: &str| {
            Program::compile(text).map_err(|e| {
                RuleError::at(id, key, format!("CEL error at {e} in `{text}`"))
            })
        };
        let when = match &self.when {
            Some(text) => Some(cel("when", text)?),
            None => None,
        };
        let key = cel("key", self.key.as_deref().unwrap_or("event.source"))?;
        let kinds = when.as_ref().and_then(|w| w.kinds());

        // Which kind-specific keys are set, so a key that does not apply is refused.
        let set: Vec<&str> = self.kind_keys_set();
        let allowed: &[&str] = match self.kind {
            RuleKind::Match => &[],
            RuleKind::Threshold => &["attr", "above", "below", "clear", "count", "for"],
            RuleKind::Geofence => &["zones", "zone_kinds", "on", "dwell", "between", "utc_offset"],
            RuleKind::Speed => &[
                "limit_kmh",
                "limit_from",
                "tolerance_kmh",
                "road_within_m",
                "speed_attr",
                "zones",
                "for",
            ],
            RuleKind::Corridor => &["corridor", "corridor_attr", "off_m", "for"],
            RuleKind::Fatigue => &["limit", "rest", "moving_kmh", "speed_attr"],
            RuleKind::Count => &["count", "window", "sliding", "group", "h3_resolution", "zones"],
            RuleKind::Absence => &["for"],
            RuleKind::Sequence => &["first", "then", "within", "within_m", "mode"],
            RuleKind::Hotlist => &["list", "attr"],
            RuleKind::Sql => &["query", "every"],
        };
        if let Some(bad) = set.iter().find(|k| !allowed.contains(k)) {
            return Err(RuleError::at(
                id,
                bad,
                format!(
                    "`{bad}` does not apply to a {} rule; its keys are: {}",
                    self.kind.as_str(),
                    if allowed.is_empty() { "none beyond the common ones".to_string() } else { allowed.join(", ") }
                ),
            ));
        }
        let need = |present: bool, key: &str, what: &str| {
            if present {
                Ok(())
            } else {
                Err(RuleError::at(
                    id,
                    key,
                    format!("a {} rule needs `{key}`: {what}", self.kind.as_str()),
                ))
            }
        };
        let positive = |value: Option<Duration>, key: &str| match value {
            Some(d) if d.is_zero() => Err(RuleError::at(id, key, format!("`{key}` must be longer than 0s"))),
            _ => Ok(()),
        };
        for (value, key) in [
            (self.for_, "for"),
            (self.dwell, "dwell"),
            (self.window, "window"),
            (self.within, "within"),
            (self.limit, "limit"),
            (self.rest, "rest"),
            (self.every, "every"),
        ] {
            positive(value, key)?;
        }
        let check_zones = |ids: &[String]| -> Result<(), RuleError> {
            for z in ids {
                if city.zone(z).is_none() {
                    return Err(RuleError::at(
                        id,
                        "zones",
                        format!("zone `{z}` is not in the city's zones.geojson; check the id or add the zone"),
                    ));
                }
            }
            Ok(())
        };
        let mut sequence = None;
        match self.kind {
            RuleKind::Match | RuleKind::Absence => {
                if self.kind == RuleKind::Absence {
                    need(self.for_.is_some(), "for", "how long without an event means absent, e.g. 15m")?;
                }
            }
            RuleKind::Threshold => {
                need(self.attr.is_some(), "attr", "the attribute watched, e.g. temperature")?;
                need(
                    self.above.is_some() != self.below.is_some(),
                    "above",
                    "exactly one of `above` or `below`",
                )?;
                if let (Some(clear), Some(above)) = (self.clear, self.above) {
                    if clear > above {
                        return Err(RuleError::at(id, "clear", format!("with `above: {above}` the clear value must be at or below it, not {clear}")));
                    }
                }
                if let (Some(clear), Some(below)) = (self.clear, self.below) {
                    if clear < below {
                        return Err(RuleError::at(id, "clear", format!("with `below: {below}` the clear value must be at or above it, not {clear}")));
                    }
                }
                if self.count == Some(0) {
                    return Err(RuleError::at(id, "count", "`count` must be at least 1"));
                }
            }
            RuleKind::Geofence => {
                need(!self.zones.is_empty() || !self.zone_kinds.is_empty(), "zones", "the zone ids (or `zone_kinds`) to watch")?;
                check_zones(&self.zones)?;
                for k in &self.zone_kinds {
                    if !city.zones.iter().any(|z| &z.kind == k) {
                        return Err(RuleError::at(id, "zone_kinds", format!("no zone of kind `{k}` in the city")));
                    }
                }
                need(self.on.is_some(), "on", "enter, exit, dwell or inside")?;
                let on = self.on.unwrap_or(GeofenceOn::Enter);
                if on == GeofenceOn::Dwell {
                    need(self.dwell.is_some(), "dwell", "how long inside before the alert, e.g. 10m")?;
                } else if self.dwell.is_some() {
                    return Err(RuleError::at(id, "dwell", "`dwell` applies only with `on: dwell`"));
                }
                if self.between.is_some() && on != GeofenceOn::Inside {
                    return Err(RuleError::at(id, "between", "`between` applies only with `on: inside`"));
                }
                if let Some(b) = &self.between {
                    parse_between(b).map_err(|m| RuleError::at(id, "between", m))?;
                }
                if let Some(o) = &self.utc_offset {
                    parse_utc_offset(o).map_err(|m| RuleError::at(id, "utc_offset", m))?;
                }
            }
            RuleKind::Speed => {
                match self.limit_from.unwrap_or(LimitFrom::Rule) {
                    LimitFrom::Rule => need(self.limit_kmh.is_some(), "limit_kmh", "the limit in km/h (or `limit_from: zone|road`)")?,
                    LimitFrom::Zone => {
                        need(!self.zones.is_empty(), "zones", "the zones whose `speed_limit_kmh` applies")?;
                        check_zones(&self.zones)?;
                        for z in &self.zones {
                            let zone = city.zone(z).expect("checked");
                            if zone.properties.get("speed_limit_kmh").and_then(|v| v.as_f64()).is_none() {
                                return Err(RuleError::at(id, "zones", format!("zone `{z}` has no numeric `speed_limit_kmh` property")));
                            }
                        }
                    }
                    LimitFrom::Road => {
                        if city.roads.is_empty() {
                            return Err(RuleError::at(id, "limit_from", "`limit_from: road` needs roads.geojson in the city, and it has no roads"));
                        }
                    }
                }
                check_zones(&self.zones)?;
            }
            RuleKind::Corridor => {
                need(self.corridor.is_some() || self.corridor_attr.is_some(), "corridor", "the corridor zone id (or `corridor_attr`)")?;
                if let Some(c) = &self.corridor {
                    match city.zone(c) {
                        Some(z) if z.is_corridor() => {}
                        Some(_) => return Err(RuleError::at(id, "corridor", format!("zone `{c}` is an area, not a corridor (a line with `width_m`)"))),
                        None => return Err(RuleError::at(id, "corridor", format!("zone `{c}` is not in the city's zones.geojson"))),
                    }
                }
            }
            RuleKind::Fatigue => {
                if let (Some(l), Some(r)) = (self.limit, self.rest) {
                    if r >= l {
                        return Err(RuleError::at(id, "rest", "`rest` must be shorter than `limit`"));
                    }
                }
            }
            RuleKind::Count => {
                need(self.count.is_some_and(|c| c > 0), "count", "how many events in the window raise the alert (at least 1)")?;
                need(self.window.is_some(), "window", "the window length, e.g. 5m")?;
                match self.group.unwrap_or(GroupBy::Key) {
                    GroupBy::Zone => {
                        need(!self.zones.is_empty(), "zones", "the zones to count in")?;
                        check_zones(&self.zones)?;
                    }
                    GroupBy::H3 => {
                        if self.h3_resolution.is_some_and(|r| r > 15) {
                            return Err(RuleError::at(id, "h3_resolution", "H3 resolutions are 0 to 15"));
                        }
                    }
                    _ => {
                        if !self.zones.is_empty() {
                            return Err(RuleError::at(id, "zones", "`zones` applies to a count rule only with `group: zone`"));
                        }
                    }
                }
            }
            RuleKind::Sequence => {
                need(self.first.is_some(), "first", "the CEL predicate of the first event")?;
                need(self.then.is_some(), "then", "the CEL predicate of the event that follows")?;
                need(self.within.is_some(), "within", "the time B must come within, e.g. 5m")?;
                let a = cel("first", self.first.as_deref().unwrap_or_default())?;
                let b = cel("then", self.then.as_deref().unwrap_or_default())?;
                sequence = Some((a, b));
            }
            RuleKind::Hotlist => {
                need(self.list.is_some(), "list", "the name of the hotlist")?;
                need(self.attr.is_some(), "attr", "the attribute looked up, e.g. plate")?;
            }
            RuleKind::Sql => {
                need(self.query.is_some(), "query", "the SQL query whose rows become alerts")?;
            }
        }
        // A sequence rule without `when` sees the kinds its `first` and `then` name.
        let kinds = match (&kinds, &sequence, &self.when) {
            (None, Some((a, b)), None) => match (a.kinds(), b.kinds()) {
                (Some(mut x), Some(y)) => {
                    x.extend(y);
                    x.sort();
                    x.dedup();
                    Some(x)
                }
                _ => None,
            },
            _ => kinds,
        };
        Ok(Rule {
            fingerprint: fingerprint(self),
            spec: self.clone(),
            when,
            key,
            kinds,
            sequence,
        })
    }

    fn kind_keys_set(&self) -> Vec<&'static str> {
        let mut set = Vec::new();
        let mut mark = |present: bool, key: &'static str| {
            if present {
                set.push(key)
            }
        };
        mark(self.attr.is_some(), "attr");
        mark(self.above.is_some(), "above");
        mark(self.below.is_some(), "below");
        mark(self.clear.is_some(), "clear");
        mark(self.count.is_some(), "count");
        mark(self.for_.is_some(), "for");
        mark(!self.zones.is_empty(), "zones");
        mark(!self.zone_kinds.is_empty(), "zone_kinds");
        mark(self.on.is_some(), "on");
        mark(self.dwell.is_some(), "dwell");
        mark(self.between.is_some(), "between");
        mark(self.utc_offset.is_some(), "utc_offset");
        mark(self.limit_kmh.is_some(), "limit_kmh");
        mark(self.limit_from.is_some(), "limit_from");
        mark(self.tolerance_kmh.is_some(), "tolerance_kmh");
        mark(self.road_within_m.is_some(), "road_within_m");
        mark(self.speed_attr.is_some(), "speed_attr");
        mark(self.limit.is_some(), "limit");
        mark(self.rest.is_some(), "rest");
        mark(self.moving_kmh.is_some(), "moving_kmh");
        mark(self.corridor.is_some(), "corridor");
        mark(self.corridor_attr.is_some(), "corridor_attr");
        mark(self.off_m.is_some(), "off_m");
        mark(self.window.is_some(), "window");
        mark(self.sliding.is_some(), "sliding");
        mark(self.group.is_some(), "group");
        mark(self.h3_resolution.is_some(), "h3_resolution");
        mark(self.first.is_some(), "first");
        mark(self.then.is_some(), "then");
        mark(self.within.is_some(), "within");
        mark(self.within_m.is_some(), "within_m");
        mark(self.mode.is_some(), "mode");
        mark(self.list.is_some(), "list");
        mark(self.query.is_some(), "query");
        mark(self.every.is_some(), "every");
        set
    }

    /// The repeat-suppression period.
    pub fn suppress_period(&self) -> Duration {
        self.suppress.unwrap_or(DEFAULT_SUPPRESS)
    }
}

/// A stable 64-bit FNV-1a hash (the same on every machine and build).
pub(crate) fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn fingerprint(spec: &RuleSpec) -> u64 {
    let text = serde_json::to_string(spec).unwrap_or_default();
    fnv1a(&[text.as_bytes()])
}

/// Parses `HH:MM-HH:MM` into minutes of the day `(start, end)`.
pub(crate) fn parse_between(text: &str) -> Result<(u32, u32), String> {
    let bad = || format!("`{text}` is not a time-of-day window; write it as HH:MM-HH:MM, e.g. 22:00-06:00");
    let (a, b) = text.split_once('-').ok_or_else(bad)?;
    let minutes = |s: &str| -> Option<u32> {
        let (h, m) = s.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h <= 24 && m < 60 && h * 60 + m <= 1440).then_some(h * 60 + m)
    };
    let (start, end) = (minutes(a).ok_or_else(bad)?, minutes(b).ok_or_else(bad)?);
    if start == end {
        return Err(format!("`{text}` is an empty window: start and end are equal"));
    }
    Ok((start, end))
}

/// Parses a UTC offset `+HH:MM` / `-HH:MM` / `Z` into seconds east of UTC.
pub(crate) fn parse_utc_offset(text: &str) -> Result<i32, String> {
    if text == "Z" || text == "UTC" {
        return Ok(0);
    }
    let bad = || format!("`{text}` is not a UTC offset; write it like +08:00 or -05:00");
    let sign = match text.as_bytes().first() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return Err(bad()),
    };
    let (h, m) = text[1..].split_once(':').ok_or_else(bad)?;
    let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 14 || m >= 60 {
        return Err(bad());
    }
    Ok(sign * (h * 3600 + m * 60))
}

/// Parses a rule file's text. `file` only labels errors.
///
/// Errors name the file, the line and, where it can be told, the rule and key at fault.
pub fn parse_rules(text: &str, file: Option<&Path>) -> Result<Vec<RuleSpec>, RuleError> {
    let parsed: RuleFile = serde_yaml::from_str(text).map_err(|e| yaml_error(e, file, Some(text)))?;
    let mut seen = std::collections::HashSet::new();
    for rule in &parsed.rules {
        if !seen.insert(rule.id.clone()) {
            let mut err = RuleError::at(&rule.id, "id", format!("rule id `{}` appears twice; ids must be unique", rule.id));
            err.file = file.map(Path::to_path_buf);
            err.line = locate(text, &rule.id, "id");
            return Err(err);
        }
    }
    Ok(parsed.rules)
}

/// Parses one rule sent to the API: JSON, or YAML when `yaml` is set.
pub fn parse_rule(body: &str, yaml: bool) -> Result<RuleSpec, RuleError> {
    if yaml {
        serde_yaml::from_str(body).map_err(|e| yaml_error(e, None, Some(body)))
    } else {
        serde_json::from_str(body).map_err(|e| RuleError {
            file: None,
            line: Some(e.line()),
            rule: None,
            key: None,
            message: format!("{e}"),
        })
    }
}

fn yaml_error(e: serde_yaml::Error, file: Option<&Path>, text: Option<&str>) -> RuleError {
    let line = e.location().map(|l| l.line());
    // serde_yaml prefixes the path of the failing key (`rules[2].limit_kmh: …`); keep it,
    // drop the trailing position that `line` already carries.
    let mut message = e.to_string();
    if let Some(pos) = message.find(" at line ") {
        message.truncate(pos);
    }
    let key = message
        .split_once(": ")
        .map(|(path, _)| path.to_string())
        .filter(|p| p.starts_with("rules[") || !p.contains(' '));
    // For a bad value deep in a rule serde_yaml may point at the rule's start: find the
    // line that holds the value the message quotes.
    let line = match (line, quoted(&message), text) {
        (Some(l), Some(value), Some(text)) => text
            .lines()
            .enumerate()
            .skip(l - 1)
            .find(|(_, t)| t.contains(value))
            .map(|(i, _)| i + 1)
            .or(Some(l)),
        _ => line,
    };
    RuleError {
        file: file.map(Path::to_path_buf),
        line,
        rule: None,
        key,
        message,
    }
}

/// The first `…`-quoted part of a message.
fn quoted(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len]).filter(|v| !v.is_empty())
}

/// Finds the line of `key:` within the rule whose id is `rule` in a rule file's text.
pub(crate) fn locate(text: &str, rule: &str, key: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let is_id_line = |l: &str| {
        let t = l.trim_start().trim_start_matches("- ").trim_start();
        t.strip_prefix("id:")
            .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'') == rule)
            .unwrap_or(false)
    };
    let start = lines.iter().position(|l| is_id_line(l))?;
    // The rule's item begins at the nearest `- ` at or above the id line.
    let mut begin = start;
    while begin > 0 && !lines[begin].trim_start().starts_with("- ") {
        begin -= 1;
    }
    let indent = lines[begin].len() - lines[begin].trim_start().len();
    let prefix = format!("{key}:");
    for (i, l) in lines.iter().enumerate().skip(begin) {
        if i > begin {
            let t = l.trim_start();
            let ind = l.len() - t.len();
            if t.starts_with("- ") && ind <= indent {
                break; // the next rule
            }
        }
        let t = l.trim_start().trim_start_matches("- ").trim_start();
        if t.starts_with(&prefix) {
            return Some(i + 1);
        }
    }
    Some(start + 1)
}

/// Reads, parses and compiles a rule file against a city. Errors carry the file and line.
pub fn load_rules(path: &Path, city: &City) -> Result<Vec<Rule>, RuleError> {
    let text = std::fs::read_to_string(path).map_err(|e| RuleError {
        file: Some(path.to_path_buf()),
        line: None,
        rule: None,
        key: None,
        message: format!("cannot read the rule file: {e}"),
    })?;
    compile_rules(&text, Some(path), city)
}

/// Parses and compiles a rule file's text; see [`load_rules`].
pub fn compile_rules(text: &str, file: Option<&Path>, city: &City) -> Result<Vec<Rule>, RuleError> {
    let specs = parse_rules(text, file)?;
    specs
        .iter()
        .map(|spec| {
            spec.compile(city).map_err(|mut e| {
                e.file = file.map(Path::to_path_buf);
                e.line = locate(text, &spec.id, e.key.as_deref().unwrap_or("id"));
                e
            })
        })
        .collect()
}
