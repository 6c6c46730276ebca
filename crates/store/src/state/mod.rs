//! The state store: the node's shared, mutable state (city model, device registry, units,
//! rules, alerts, dead letters, users and sessions, and a small key/value `meta` table).
//!
//! [`StateStore`] is the one interface every backend implements, and every backend passes
//! the same `conformance_suite`: [`SqliteState`] is the embedded default, one file on the
//! node; [`PgState`] keeps the state in a schema of a PostgreSQL database, where several
//! nodes or processes share it. Both store times, JSON and ids in the same forms and decode
//! rows with the helpers at the end of this file, so they answer alike. The methods are
//! synchronous and may block on I/O: async callers run them in
//! `tokio::task::spawn_blocking`. Called directly on an async runtime's thread they still
//! work (the blocking client of [`PgState`] moves its work off that thread rather than
//! panic), but they hold the thread up meanwhile.
//!
//! What this module does not do: it never sees a password or a session token in clear text
//! (the server hashes both, see [`StateStore::create_user`] and
//! [`StateStore::create_session`]), it reads no wall clock for decisions that the caller can
//! make (expiry takes `now` as an argument), and it does not interpret rule or alert bodies.
//!
//! Times are stored with microsecond precision; finer parts of a [`DateTime`] are dropped.

use std::error::Error as StdError;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Status;

#[cfg(any(test, feature = "testsuite"))]
mod conformance;
mod postgres;
#[cfg(test)]
mod postgres_tests;
mod sqlite;
#[cfg(test)]
mod tests;

#[cfg(any(test, feature = "testsuite"))]
pub use conformance::conformance_suite;
pub use self::postgres::PgState;
pub use sqlite::SqliteState;

/// A boxed error from the backend, kept as the `source` of a [`StateError`].
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The most items one page of a list holds; a larger [`PageRequest::limit`] is lowered to it.
pub const MAX_PAGE_LIMIT: usize = 1000;

/// The page size used when a request does not name one.
pub const DEFAULT_PAGE_LIMIT: usize = 100;

/// The longest id (in bytes) accepted for any row.
pub const MAX_ID_LEN: usize = 256;

// ---------------------------------------------------------------------------------------
// The interface.
// ---------------------------------------------------------------------------------------

/// The node's shared state, behind one interface for every backend.
///
/// Every method is synchronous and may block (disk, network); from async code call it in
/// `spawn_blocking`. Writes that take a slice are atomic: either every item is written or,
/// on any error, none is. Implementations must be safe to share between threads.
pub trait StateStore: Send + Sync {
    // --- meta -----------------------------------------------------------------------------

    /// The schema version the store is at (the `schema_version` key of `meta`).
    fn schema_version(&self) -> Result<i64, StateError>;

    /// The value stored under `key` in `meta`, or `None` when the key was never set.
    fn meta_get(&self, key: &str) -> Result<Option<String>, StateError>;

    /// Stores `value` under `key` in `meta`, replacing any earlier value.
    ///
    /// `schema_version` is managed by migrations and is refused with
    /// [`Status::InvalidInput`].
    fn meta_set(&self, key: &str, value: &str) -> Result<(), StateError>;

    // --- city model layers ------------------------------------------------------------------

    /// Replaces every feature of `layer` with `features`, in one transaction, and returns
    /// how many were written. Every feature's [`FeatureRow::layer`] must equal `layer` and
    /// ids must be unique within the call; an empty slice clears the layer.
    fn replace_layer(&self, layer: Layer, features: &[FeatureRow]) -> Result<usize, StateError>;

    /// Every feature of `layer`, in the order the last [`replace_layer`](Self::replace_layer)
    /// gave them.
    fn list_layer(&self, layer: Layer) -> Result<Vec<FeatureRow>, StateError>;

    // --- devices ----------------------------------------------------------------------------

    /// Inserts or updates `devices` by id in one transaction and returns how many rows were
    /// written. An existing device keeps its first `registered_at`; every other field is
    /// replaced. If one id appears twice, the later row wins. Any invalid row rejects the
    /// whole batch, naming the row.
    fn upsert_devices(&self, devices: &[DeviceRow]) -> Result<usize, StateError>;

    /// The device with `id`, or `None`.
    fn device(&self, id: &str) -> Result<Option<DeviceRow>, StateError>;

    /// One page of devices in ascending id order. Ids compare by the bytes of their UTF-8
    /// text (Rust's `str` order); a PostgreSQL backend needs `COLLATE "C"` for the same.
    fn list_devices(&self, page: &PageRequest) -> Result<Page<DeviceRow>, StateError>;

    /// How many devices are registered.
    fn device_count(&self) -> Result<u64, StateError>;

    /// Deletes the device with `id`; [`Status::NotFound`] when there is none.
    fn delete_device(&self, id: &str) -> Result<(), StateError>;

    // --- units ------------------------------------------------------------------------------

    /// Replaces every unit with `units` in one transaction and returns how many were
    /// written. Ids must be unique within the call.
    fn replace_units(&self, units: &[UnitRow]) -> Result<usize, StateError>;

    /// Every unit, in ascending id order.
    fn list_units(&self) -> Result<Vec<UnitRow>, StateError>;

    /// The unit with `id`, or `None`.
    fn unit(&self, id: &str) -> Result<Option<UnitRow>, StateError>;

    // --- rules ------------------------------------------------------------------------------

    /// Creates or replaces a rule and returns the stored row.
    ///
    /// A new rule gets version 1; each later put adds 1. `updated_at` is set by the store.
    /// With [`RulePut::expected_version`] `Some(v)` the write happens only if the stored
    /// version is `v` (`0` meaning "the rule must not exist yet"); otherwise the call fails
    /// with [`Status::Conflict`] and nothing changes.
    fn put_rule(&self, rule: &RulePut) -> Result<RuleRow, StateError>;

    /// The rule with `id`, or `None`.
    fn rule(&self, id: &str) -> Result<Option<RuleRow>, StateError>;

    /// Every rule, in ascending id order.
    fn list_rules(&self) -> Result<Vec<RuleRow>, StateError>;

    /// Deletes the rule with `id`: [`Status::NotFound`] when there is none,
    /// [`Status::Conflict`] when `expected_version` is given and differs.
    fn delete_rule(&self, id: &str, expected_version: Option<i64>) -> Result<(), StateError>;

    // --- alerts -----------------------------------------------------------------------------

    /// Inserts a new alert; [`Status::Conflict`] when the id exists.
    fn insert_alert(&self, alert: &AlertRow) -> Result<(), StateError>;

    /// Replaces every field of the existing alert with the same id;
    /// [`Status::NotFound`] when there is none.
    fn update_alert(&self, alert: &AlertRow) -> Result<(), StateError>;

    /// Replaces the alert only if its stored `updated_at` is still `seen` (nobody changed
    /// it since it was read); false when it was changed meanwhile. For writers that may run
    /// in several processes at once (the deadline clock of a node's processes).
    fn update_alert_if_unchanged(&self, alert: &AlertRow, seen: DateTime<Utc>) -> Result<bool, StateError>;

    /// The alert with `id`, or `None`.
    fn alert(&self, id: &str) -> Result<Option<AlertRow>, StateError>;

    /// Writes a batch in one transaction: `inserts` whose id is already stored are skipped
    /// (an engine re-raising an alert after a restart), `updates` of ids not stored are
    /// skipped. Returns the ids actually inserted, in batch order.
    fn write_alerts(&self, inserts: &[AlertRow], updates: &[AlertRow]) -> Result<Vec<String>, StateError>;

    /// One page of the alerts `filter` selects, newest event time first (ties by
    /// descending id).
    fn list_alerts(&self, filter: &AlertFilter, page: &PageRequest) -> Result<Page<AlertRow>, StateError>;

    // --- routing ----------------------------------------------------------------------------

    /// Stores a new version of the routing table and returns it; [`Status::Conflict`] when
    /// `expected_version` is given and is not the latest version (0: none stored yet).
    fn put_routing(
        &self,
        body: &Value,
        changed_by: &str,
        note: &str,
        expected_version: Option<i64>,
    ) -> Result<RoutingVersion, StateError>;

    /// The latest routing table, if one was ever stored.
    fn routing(&self) -> Result<Option<RoutingVersion>, StateError>;

    /// Past versions of the routing table, newest first, at most `limit`.
    fn routing_history(&self, limit: usize) -> Result<Vec<RoutingVersion>, StateError>;

    // --- webhook deliveries -------------------------------------------------------------------

    /// Queues deliveries (status `pending`, due at their `created_at`), in one transaction.
    fn insert_deliveries(&self, batch: &[NewDelivery]) -> Result<(), StateError>;

    /// Pending deliveries due at `now`, oldest first, at most `limit`.
    fn due_deliveries(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Delivery>, StateError>;

    /// Records an attempt: delivered, pending again at `retry_at`, or failed.
    /// [`Status::NotFound`] for an unknown id.
    fn record_delivery_attempt(&self, id: i64, attempt: &DeliveryAttempt) -> Result<(), StateError>;

    /// One page of deliveries, newest first, of one webhook and one status when given.
    fn list_deliveries(&self, webhook: Option<&str>, status: Option<&str>, page: &PageRequest) -> Result<Page<Delivery>, StateError>;

    /// Queues a delivery again (pending, due at `now`, attempts kept); answers it.
    /// [`Status::NotFound`] for an unknown id.
    fn replay_delivery(&self, id: i64, now: DateTime<Utc>) -> Result<Delivery, StateError>;

    // --- dead letters -----------------------------------------------------------------------

    /// Stores a batch of rejected records in one transaction, then prunes the oldest rows
    /// beyond [`StateStore::dead_letter_limit`]. Returns the new ids (ascending, in batch
    /// order) and how many rows were pruned; if the batch alone exceeds the limit, some of
    /// its own rows are among the pruned.
    fn insert_dead_letters(&self, batch: &[NewDeadLetter]) -> Result<DeadLetterInsert, StateError>;

    /// One page of dead letters matching `filter`, newest (highest id) first.
    fn list_dead_letters(
        &self,
        filter: &DeadLetterFilter,
        page: &PageRequest,
    ) -> Result<Page<DeadLetter>, StateError>;

    /// The dead letter with `id`, or `None` (it may have been pruned).
    fn dead_letter(&self, id: i64) -> Result<Option<DeadLetter>, StateError>;

    /// Records that the dead letters `ids` were re-submitted at `at` (a repeated
    /// re-submission moves the time forward). Returns how many were marked. If any id does
    /// not exist, nothing is marked and the error names that id.
    fn mark_resubmitted(&self, ids: &[i64], at: DateTime<Utc>) -> Result<usize, StateError>;

    /// How many dead letters match `filter`.
    fn count_dead_letters(&self, filter: &DeadLetterFilter) -> Result<u64, StateError>;

    /// Deletes the oldest dead letters so that at most `keep` remain; returns how many were
    /// deleted. [`StateStore::insert_dead_letters`] does this itself with the configured
    /// limit; this is for retention jobs and operators.
    fn prune_dead_letters(&self, keep: u64) -> Result<u64, StateError>;

    /// The most dead letters this store keeps ([`StateOptions::dead_letter_max_rows`]).
    fn dead_letter_limit(&self) -> u64;

    // --- users and sessions -----------------------------------------------------------------

    /// Creates a user and returns the stored row; [`Status::Conflict`] when the
    /// username is taken.
    ///
    /// `password_hash` must be a PHC string (`$argon2id$v=19$…`) made by the caller: the
    /// store never hashes or sees passwords, and refuses a value that does not start with
    /// `$`, to catch a clear-text password passed by mistake.
    fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        role: &str,
        unit: Option<&str>,
    ) -> Result<UserRow, StateError>;

    /// The user named `username`, or `None`.
    fn user(&self, username: &str) -> Result<Option<UserRow>, StateError>;

    /// Every user, in ascending username order.
    fn list_users(&self) -> Result<Vec<UserRow>, StateError>;

    /// Stores a session for `username` that is valid until `expires_at` (exclusive).
    ///
    /// `token_hash` is a digest of the bearer token made by the caller (e.g. SHA-256 in hex);
    /// the store never sees the token. [`Status::NotFound`] when the user does not
    /// exist, [`Status::Conflict`] when the hash is already in use.
    fn create_session(
        &self,
        token_hash: &str,
        username: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StateError>;

    /// The user of the session `token_hash` if it exists and `now < expires_at`, else
    /// `None`. The caller passes `now` so that every backend judges expiry by the same clock.
    fn session(&self, token_hash: &str, now: DateTime<Utc>) -> Result<Option<UserRow>, StateError>;

    /// Deletes a session (log-out); `true` when it existed.
    fn delete_session(&self, token_hash: &str) -> Result<bool, StateError>;

    /// Deletes every session with `expires_at <= now`; returns how many.
    fn purge_expired_sessions(&self, now: DateTime<Utc>) -> Result<u64, StateError>;

    /// The sessions of `username` (API tokens are sessions of machine users), newest first.
    fn list_sessions(&self, username: &str) -> Result<Vec<SessionRow>, StateError>;

    // --- audit log -----------------------------------------------------------------------------

    /// Appends an entry to the audit log, chained to the last one.
    fn append_audit(&self, entry: &NewAuditEntry, at: DateTime<Utc>) -> Result<AuditEntry, StateError>;

    /// One page of the audit log, newest first; only entries of `actor` and of actions
    /// starting with `action` when given.
    fn list_audit(&self, actor: Option<&str>, action: Option<&str>, page: &PageRequest) -> Result<Page<AuditEntry>, StateError>;

    /// At most `limit` audit entries with `seq > after`, in ascending order, exactly as
    /// stored (for verifying the chain and for reports).
    fn audit_after(&self, after: i64, limit: usize) -> Result<Vec<AuditEntry>, StateError>;

    /// Retention of the audit log: deletes the entries written before `before` (never the
    /// newest) and, in the same transaction, records where the log now starts and appends
    /// an `audit.prune` entry by `actor` saying so, which [`verify_audit`] checks the start
    /// against. Returns the new start, or `None` when nothing was old enough.
    fn prune_audit(&self, before: DateTime<Utc>, actor: &str, at: DateTime<Utc>) -> Result<Option<AuditStart>, StateError>;

    /// Where the audit log starts, once retention has deleted its first entries.
    fn audit_start(&self) -> Result<Option<AuditStart>, StateError> {
        match self.meta_get(AUDIT_START_KEY)? {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text).map(Some).map_err(|e| StateError::Corrupt {
                table: "meta",
                id: AUDIT_START_KEY.into(),
                column: "value",
                reason: format!("the recorded start of the audit log is not an audit start ({e})"),
            }),
        }
    }

    /// Retention of alerts: deletes those in a final status (`statuses`) last changed
    /// before `before`; returns how many.
    fn prune_alerts(&self, before: DateTime<Utc>, statuses: &[&str]) -> Result<u64, StateError>;

    // --- supervisors and search approvals ----------------------------------------------------

    /// Marks `username` as a supervisor (who approves searches beyond a role's limits) or
    /// not; [`Status::NotFound`] when the user does not exist.
    fn set_supervisor(&self, username: &str, supervisor: bool) -> Result<(), StateError>;

    /// Stores a new search approval request (status `pending`); [`Status::Conflict`] when
    /// its id is taken.
    fn add_search_approval(&self, approval: &SearchApproval) -> Result<(), StateError>;

    /// The approval request `id`, or `None`.
    fn search_approval(&self, id: &str) -> Result<Option<SearchApproval>, StateError>;

    /// Approval requests, newest first: only those with `status` and of `requested_by` when
    /// given.
    fn list_search_approvals(&self, status: Option<&str>, requested_by: Option<&str>, page: &PageRequest) -> Result<Page<SearchApproval>, StateError>;

    /// Decides a pending request: `status` is `approved` or `rejected`. Returns the stored
    /// request; [`Status::Conflict`] when it is no longer pending.
    fn decide_search_approval(&self, id: &str, status: &str, decided_by: &str, at: DateTime<Utc>, note: &str) -> Result<SearchApproval, StateError>;
}

/// A search of personal data beyond the limits of its requester's role, waiting for (or
/// given) a supervisor's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchApproval {
    /// `sa` and 16 hex digits.
    pub id: String,
    /// Who asked.
    pub requested_by: String,
    /// The requester's unit, if any.
    pub unit: Option<String>,
    /// When.
    pub requested_at: DateTime<Utc>,
    /// The search, as the API took it (filters and purpose).
    pub request: Value,
    /// Which limits it goes beyond, in words.
    pub reasons: Vec<String>,
    /// `pending`, `approved` or `rejected`.
    pub status: String,
    /// The supervisor who decided.
    pub decided_by: Option<String>,
    /// When.
    pub decided_at: Option<DateTime<Utc>>,
    /// The supervisor's reason.
    pub decision_note: Option<String>,
}

/// A session (or API token): never its token, only the token's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRow {
    /// SHA-256 of the token, hex.
    pub token_hash: String,
    /// Whose it is.
    pub username: String,
    /// When it was opened.
    pub created_at: DateTime<Utc>,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

// ---------------------------------------------------------------------------------------
// Options.
// ---------------------------------------------------------------------------------------

/// Settings every state backend honours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateOptions {
    /// The most dead letters kept; when an insert goes beyond it, the oldest are pruned.
    /// At least 1. Default 100000.
    pub dead_letter_max_rows: u64,
}

impl Default for StateOptions {
    fn default() -> Self {
        StateOptions {
            dead_letter_max_rows: 100_000,
        }
    }
}

impl StateOptions {
    /// Checks the options; an error names the bad setting and its allowed range.
    pub fn validate(&self) -> Result<(), StateError> {
        if self.dead_letter_max_rows == 0 || self.dead_letter_max_rows > i64::MAX as u64 {
            return Err(StateError::InvalidInput {
                table: "options",
                what: "the state store options".into(),
                field: "dead_letter_max_rows",
                reason: format!(
                    "must be between 1 and {} (got {}); set a positive row count",
                    i64::MAX,
                    self.dead_letter_max_rows
                ),
            });
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Rows.
// ---------------------------------------------------------------------------------------

/// A layer of the city model stored as GeoJSON-like features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    /// Districts, streets and communities (`regions.geojson`).
    Regions,
    /// Patrol grids (`grids.geojson`).
    Grids,
    /// Named polygons and corridors used by rules (`zones.geojson`).
    Zones,
    /// Road centrelines (`roads.geojson`).
    Roads,
}

impl Layer {
    /// Every layer, in a fixed order.
    pub const ALL: [Layer; 4] = [Layer::Regions, Layer::Grids, Layer::Zones, Layer::Roads];

    /// The layer's name as stored and as used in file names (`regions`, `grids`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Regions => "regions",
            Layer::Grids => "grids",
            Layer::Zones => "zones",
            Layer::Roads => "roads",
        }
    }
}

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Layer {
    type Err = StateError;

    fn from_str(s: &str) -> Result<Self, StateError> {
        Layer::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| StateError::InvalidInput {
                table: "features",
                what: "a layer name".into(),
                field: "layer",
                reason: format!("`{s}` is not a layer; use one of regions, grids, zones, roads"),
            })
    }
}

/// One feature of a city-model layer: a GeoJSON feature split into its parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureRow {
    /// The layer the feature belongs to.
    pub layer: Layer,
    /// The feature's id, unique within its layer.
    pub id: String,
    /// The GeoJSON `properties` object (e.g. `name`, `level`, `parent`, `region`).
    pub properties: Value,
    /// The GeoJSON `geometry` object, or `null`.
    pub geometry: Value,
}

/// A registered device (`devices.csv` plus registry attributes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRow {
    /// Unique device id; events name it as their `source`.
    pub id: String,
    /// What the device is (`camera`, `smoke_detector`, …).
    pub kind: String,
    /// Longitude in WGS84 degrees.
    pub lon: f64,
    /// Latitude in WGS84 degrees.
    pub lat: f64,
    /// The patrol grid the device stands in, if known.
    #[serde(default)]
    pub grid: Option<String>,
    /// The unit that owns the device, if any.
    #[serde(default)]
    pub owner_unit: Option<String>,
    /// Further registry attributes: a JSON object (`{}` when there are none).
    #[serde(default = "empty_object")]
    pub attrs: Value,
    /// When the device was first registered; kept when the device is upserted again.
    pub registered_at: DateTime<Utc>,
}

/// An organisational unit (`units.csv`): police station, fire brigade, community office…
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitRow {
    /// Unique unit id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// What kind of unit it is (`police`, `fire`, `medical`, …).
    pub kind: String,
    /// The region the unit covers, if any.
    #[serde(default)]
    pub region: Option<String>,
    /// The unit it reports to, if any.
    #[serde(default)]
    pub parent_unit: Option<String>,
}

/// A stored rule definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRow {
    /// Rule id (the `id` key of the rule).
    pub id: String,
    /// The rule as submitted: YAML or JSON text, not interpreted by the store.
    pub body: String,
    /// Whether the rule engine runs it.
    pub enabled: bool,
    /// 1 on creation, +1 on each change; used for optimistic concurrency.
    pub version: i64,
    /// When the rule was last written (set by the store).
    pub updated_at: DateTime<Utc>,
    /// Who last wrote it (a username or `system`).
    pub updated_by: String,
}

/// A request to create or replace a rule; see [`StateStore::put_rule`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulePut {
    /// Rule id.
    pub id: String,
    /// The rule as YAML or JSON text.
    pub body: String,
    /// Whether the rule engine runs it.
    pub enabled: bool,
    /// Who writes it (a username or `system`).
    pub updated_by: String,
    /// When set, the version the caller last read (`0`: the rule must not exist yet); a
    /// different stored version fails with a conflict.
    #[serde(default)]
    pub expected_version: Option<i64>,
}

/// A stored alert: the minimum the lifecycle builds on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRow {
    /// Unique alert id.
    pub id: String,
    /// The id of the rule that raised it.
    pub rule: String,
    /// The rule's key value (e.g. the vehicle's source id).
    pub key: String,
    /// Lifecycle status (`new`, `acked`, `dispatched`, …); not interpreted by the store.
    pub status: String,
    /// `low`, `medium`, `high` or `critical`; not interpreted by the store.
    pub severity: String,
    /// Rule category, e.g. `traffic.hazmat`.
    pub category: String,
    /// Event time of the alert's first evidence.
    pub time: DateTime<Utc>,
    /// Patrol grid, when the alert has a place.
    #[serde(default)]
    pub grid: Option<String>,
    /// The full alert document (evidence, place, history…).
    pub body: Value,
    /// When the row was last written.
    pub updated_at: DateTime<Utc>,
    /// Jurisdiction scopes (`region:ID`, `unit:ID`) under which the alert is visible;
    /// [`AlertFilter::scopes`] selects on them. Writing a row adds its scopes; scopes are
    /// never taken away (a unit that once had the alert keeps seeing it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// `incident` or `maintenance` (a device's upkeep); [`AlertFilter::class`] selects on it.
    #[serde(default = "incident")]
    pub class: String,
    /// The incident the alert belongs to (alerts near in place and time share one);
    /// [`AlertFilter::incident`] selects on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<String>,
}

fn incident() -> String {
    "incident".into()
}

/// Which alerts a list returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertFilter {
    /// Only alerts with one of these statuses (empty: any).
    pub statuses: Vec<String>,
    /// Only alerts visible under at least one of these scopes (`None`: every alert).
    pub scopes: Option<Vec<String>>,
    /// Only alerts of this class (`incident`, `maintenance`).
    pub class: Option<String>,
    /// Only the alerts of this incident.
    pub incident: Option<String>,
    /// Only alerts with one of these severities (empty: any).
    pub severities: Vec<String>,
    /// Only alerts with one of these categories (empty: any).
    pub categories: Vec<String>,
    /// Only alerts visible under this scope too (e.g. `region:ID`), besides `scopes`.
    pub within: Option<String>,
    /// Only alerts raised at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only alerts raised before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only alerts last written at or after this time (`updated_at >= t`): what changed
    /// since a recorded moment, e.g. to send again after a crash.
    pub updated_since: Option<DateTime<Utc>>,
}

/// A webhook delivery to queue: one alert change for one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    /// The webhook's id.
    pub webhook: String,
    /// The alert's id.
    pub alert: String,
    /// What changed (`raised`, `ack`, `escalate`, …).
    pub change: String,
    /// The JSON body to POST.
    pub payload: Value,
    /// When it was queued (its first attempt is due then).
    pub created_at: DateTime<Utc>,
}

/// A queued, delivered or failed webhook delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// Sequence number, from 1.
    pub id: i64,
    /// The webhook's id.
    pub webhook: String,
    /// The alert's id.
    pub alert: String,
    /// What changed.
    pub change: String,
    /// The JSON body posted.
    pub payload: Value,
    /// `pending`, `delivered` or `failed` (given up; can be replayed).
    pub status: String,
    /// Attempts made.
    pub attempts: u32,
    /// When the next attempt is due (pending only).
    pub next_attempt: DateTime<Utc>,
    /// HTTP status of the last attempt, if one was answered.
    #[serde(default)]
    pub last_status: Option<u16>,
    /// Why the last attempt failed.
    #[serde(default)]
    pub last_error: Option<String>,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// The outcome of one delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryAttempt {
    /// When it was made.
    pub at: DateTime<Utc>,
    /// The endpoint answered 2xx.
    pub delivered: bool,
    /// The HTTP status answered, if any.
    pub status: Option<u16>,
    /// Why it failed.
    pub error: Option<String>,
    /// When to try again; `None` after a failure gives the delivery up.
    pub retry_at: Option<DateTime<Utc>>,
}

/// An audit entry to append: who did what to which thing.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEntry {
    /// The user (or `system`).
    pub actor: String,
    /// What, e.g. `alert.ack`, `alert.read`, `routing.put`, `token.issue`.
    pub action: String,
    /// What it was done to (an alert id, `routing`, a token id).
    pub target: String,
    /// Anything else worth keeping (the note, the new version, the result size).
    pub detail: Value,
}

/// An appended audit entry. Each commits to the one before it: `hash` is the SHA-256 of
/// the previous entry's hash and this entry's fields, so an entry edited, removed or moved
/// in the store breaks the chain from there on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log, from 1.
    pub seq: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// To what.
    pub target: String,
    /// More.
    pub detail: Value,
    /// The previous entry's hash (64 zeros for the first).
    pub prev_hash: String,
    /// This entry's hash.
    pub hash: String,
}

impl AuditEntry {
    /// The hash this entry must have given its fields and `prev_hash`.
    pub fn expected_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [
            self.prev_hash.as_str(),
            &self.seq.to_string(),
            &to_micros(&self.at).to_string(),
            &self.actor,
            &self.action,
            &self.target,
            &self.detail.to_string(),
        ] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The last entry of the audit log: what to anchor elsewhere (a notary, a newspaper, the
/// city's other nodes), so that a log cut short after it can be told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// Its position.
    pub seq: i64,
    /// Its hash, which commits to every entry before it.
    pub hash: String,
    /// When it was written.
    pub at: DateTime<Utc>,
}

/// The meta key under which the start of a pruned audit log is kept.
pub const AUDIT_START_KEY: &str = "audit.start";

/// Where the audit log starts after retention deleted its oldest entries: the first entry
/// kept and the hash it commits to (that of the last entry deleted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditStart {
    /// The first entry kept.
    pub seq: i64,
    /// The hash of the entry before it, which it commits to.
    pub prev_hash: String,
    /// Entries deleted so far, over all prunings.
    pub deleted: u64,
    /// Entries written before this time were deleted (the latest pruning).
    pub before: DateTime<Utc>,
}

/// What checking the audit chain found: how many entries, the head, and the first break.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditVerdict {
    /// Entries read.
    pub entries: u64,
    /// The last entry, if any.
    pub head: Option<AuditHead>,
    /// The first entry where the chain does not hold, and why; `None` when it holds.
    pub broken: Option<AuditBreak>,
    /// Where the log starts when retention deleted its oldest entries.
    pub start: Option<AuditStart>,
}

/// The action of the entry a pruning of the audit log appends.
pub const AUDIT_PRUNE_ACTION: &str = "audit.prune";

/// Where and why the audit chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditBreak {
    /// The entry (position) at which the check failed.
    pub seq: i64,
    /// What is wrong there, in words.
    pub reason: String,
}

/// Reads the whole audit log in order and checks that each entry's hash matches its fields,
/// that each commits to the one before it, and that no position is missing. With `anchor`
/// (a head exported earlier), also checks that the log still holds that entry unchanged,
/// which finds entries cut from the end.
pub fn verify_audit(store: &dyn StateStore, anchor: Option<&AuditHead>) -> Result<AuditVerdict, StateError> {
    const BATCH: usize = 10_000;
    let start = store.audit_start()?;
    let mut verdict = AuditVerdict { entries: 0, head: None, broken: None, start: start.clone() };
    let mut previous: Option<AuditEntry> = None;
    let mut anchor_seen = false;
    // The latest `audit.prune` entry must name the start the store records.
    let mut last_prune: Option<(i64, Value)> = None;
    'read: loop {
        let after = previous.as_ref().map_or(0, |e| e.seq);
        let batch = store.audit_after(after, BATCH)?;
        let done = batch.len() < BATCH;
        for entry in batch {
            verdict.entries += 1;
            let first = start.as_ref().map_or((1, "0".repeat(64)), |s| (s.seq, s.prev_hash.clone()));
            let (want_seq, want_prev) = previous.as_ref().map_or(first, |p| (p.seq + 1, p.hash.clone()));
            let broken = if entry.seq != want_seq {
                Some(format!("position {want_seq} is missing: the log goes from {} to {} (entries were removed)", want_seq - 1, entry.seq))
            } else if entry.hash != entry.expected_hash() {
                Some("its fields do not match its hash: the entry was edited after it was written".to_string())
            } else if entry.prev_hash != want_prev {
                Some(format!("it does not commit to entry {}: the entries before it were edited, removed or reordered", want_seq - 1))
            } else {
                None
            };
            if let Some(reason) = broken {
                verdict.broken = Some(AuditBreak { seq: entry.seq.min(want_seq), reason });
                break 'read;
            }
            if let Some(a) = anchor {
                if a.seq == entry.seq {
                    anchor_seen = true;
                    if a.hash != entry.hash {
                        verdict.broken = Some(AuditBreak {
                            seq: entry.seq,
                            reason: format!("the anchored head says entry {} has hash {}, the log has {}", a.seq, a.hash, entry.hash),
                        });
                        break 'read;
                    }
                }
            }
            if entry.action == AUDIT_PRUNE_ACTION {
                last_prune = Some((entry.seq, entry.detail.clone()));
            }
            verdict.head = Some(AuditHead { seq: entry.seq, hash: entry.hash.clone(), at: entry.at });
            previous = Some(entry);
        }
        if done {
            break;
        }
    }
    if verdict.broken.is_none() {
        let recorded = last_prune.as_ref().map(|(_, d)| (d["first_seq"].as_i64(), d["prev_hash"].as_str().map(str::to_string)));
        let expected = start.as_ref().map(|s| (Some(s.seq), Some(s.prev_hash.clone())));
        if recorded != expected {
            verdict.broken = Some(AuditBreak {
                seq: start.as_ref().map_or(1, |s| s.seq),
                reason: match (&start, &last_prune) {
                    (Some(s), None) => format!("the log is said to start at entry {} but no audit.prune entry records that pruning: its first entries were removed", s.seq),
                    (None, Some((seq, _))) => format!("entry {seq} records a pruning of the log, but the log's recorded start is missing: it was removed"),
                    _ => "the log's recorded start differs from what its last audit.prune entry says: one of them was edited".to_string(),
                },
            });
        }
    }
    // An anchor older than the log's start was deleted by retention: nothing to compare.
    let anchor_pruned = anchor.zip(start.as_ref()).is_some_and(|(a, s)| a.seq < s.seq);
    if let (Some(a), None, false, false) = (anchor, &verdict.broken, anchor_seen, anchor_pruned) {
        verdict.broken = Some(AuditBreak {
            seq: a.seq,
            reason: format!(
                "the anchored head is entry {} but the log ends at {}: entries were cut from its end",
                a.seq,
                verdict.head.as_ref().map_or(0, |h| h.seq)
            ),
        });
    }
    Ok(verdict)
}

/// One version of the routing table, with who changed it and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutingVersion {
    /// Version number, from 1, one more with each change.
    pub version: i64,
    /// The table (its entries), as the alerts crate defines it.
    pub body: Value,
    /// When it was stored.
    pub changed_at: DateTime<Utc>,
    /// The user who stored it.
    pub changed_by: String,
    /// Why.
    pub note: String,
}

/// The way a rejected record came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeadLetterChannel {
    /// `POST /api/v1/events`.
    Http,
    /// An MQTT subscription.
    Mqtt,
    /// A file given to `cityward ingest` or replay.
    File,
}

impl DeadLetterChannel {
    /// Every channel, in a fixed order.
    pub const ALL: [DeadLetterChannel; 3] = [
        DeadLetterChannel::Http,
        DeadLetterChannel::Mqtt,
        DeadLetterChannel::File,
    ];

    /// The channel's name as stored and shown (`http`, `mqtt`, `file`).
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterChannel::Http => "http",
            DeadLetterChannel::Mqtt => "mqtt",
            DeadLetterChannel::File => "file",
        }
    }
}

impl std::fmt::Display for DeadLetterChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DeadLetterChannel {
    type Err = StateError;

    fn from_str(s: &str) -> Result<Self, StateError> {
        DeadLetterChannel::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| StateError::InvalidInput {
                table: "dead_letters",
                what: "a dead-letter channel".into(),
                field: "channel",
                reason: format!("`{s}` is not a channel; use one of http, mqtt, file"),
            })
    }
}

/// A record that was rejected at intake, kept so it can be read and re-submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Store-assigned id; increases with every insert and is never reused.
    pub id: i64,
    /// When the record arrived.
    pub received_at: DateTime<Utc>,
    /// How it arrived.
    pub channel: DeadLetterChannel,
    /// Where it came from: request id, MQTT topic or file name.
    pub origin: String,
    /// Line number within the request body or file (1-based), when known.
    #[serde(default)]
    pub line: Option<u64>,
    /// The field that was wrong, when one was.
    #[serde(default)]
    pub field: Option<String>,
    /// Why it was rejected.
    pub reason: String,
    /// The record as received.
    pub raw: String,
    /// When it was last re-submitted; `None` while pending.
    #[serde(default)]
    pub resubmitted_at: Option<DateTime<Utc>>,
}

/// A dead letter to insert; the store assigns the id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDeadLetter {
    /// When the record arrived.
    pub received_at: DateTime<Utc>,
    /// How it arrived.
    pub channel: DeadLetterChannel,
    /// Where it came from: request id, MQTT topic or file name.
    pub origin: String,
    /// Line number within the request body or file (1-based), when known.
    #[serde(default)]
    pub line: Option<u64>,
    /// The field that was wrong, when one was.
    #[serde(default)]
    pub field: Option<String>,
    /// Why it was rejected.
    pub reason: String,
    /// The record as received.
    pub raw: String,
}

/// What [`StateStore::insert_dead_letters`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterInsert {
    /// The ids given to the batch, in batch order (ascending).
    pub ids: Vec<i64>,
    /// How many of the oldest rows were pruned to stay within the limit.
    pub pruned: u64,
}

/// Which dead letters a list or count covers; the default covers all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeadLetterFilter {
    /// Only those that came in by this channel.
    pub channel: Option<DeadLetterChannel>,
    /// Only those received at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only those not re-submitted yet.
    pub pending_only: bool,
}

/// A user account. The password hash is never serialized, so a `UserRow` can be sent to a
/// client as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRow {
    /// Login name, unique.
    pub username: String,
    /// PHC string of the password hash, made by the server (never serialized).
    #[serde(skip_serializing, default)]
    pub password_hash: String,
    /// Role name (`admin`, `analyst`, `dispatcher`, `responder`, `auditor`).
    pub role: String,
    /// The unit the user belongs to, if any.
    #[serde(default)]
    pub unit: Option<String>,
    /// When the account was created.
    pub created_at: DateTime<Utc>,
    /// Approves searches beyond the limits of a role.
    #[serde(default)]
    pub supervisor: bool,
}

// ---------------------------------------------------------------------------------------
// Paging.
// ---------------------------------------------------------------------------------------

/// Which page of a list to read: the first, or the one after a cursor a previous page gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PageRequest {
    /// The [`Page::next`] cursor of the previous page; `None` for the first page.
    pub after: Option<String>,
    /// Most items wanted, at least 1; values above [`MAX_PAGE_LIMIT`] are lowered to it.
    pub limit: usize,
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest {
            after: None,
            limit: DEFAULT_PAGE_LIMIT,
        }
    }
}

impl PageRequest {
    /// The first page, with at most `limit` items.
    pub fn first(limit: usize) -> Self {
        PageRequest { after: None, limit }
    }

    /// The page after `cursor`, with at most `limit` items.
    pub fn after(cursor: impl Into<String>, limit: usize) -> Self {
        PageRequest {
            after: Some(cursor.into()),
            limit,
        }
    }
}

/// One page of a list, shaped as the HTTP API answers lists: `{"items": […], "next": …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items of this page, in the list's order.
    pub items: Vec<T>,
    /// The cursor for the next page, or `None` when this is the last. Cursors are opaque,
    /// URL-safe, and only valid for the list that gave them.
    pub next: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Errors.
// ---------------------------------------------------------------------------------------

/// Everything that can go wrong in the state store. Each variant names the table and row
/// involved, and its message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The database could not be opened or set up.
    #[error(
        "cannot open the state database at {}: {source}; check that the directory exists, is \
         writable by this user and has free space",
        path.display()
    )]
    Open {
        /// The database file (`:memory:` for an in-memory one).
        path: PathBuf,
        /// What the backend reported.
        #[source]
        source: BoxError,
    },

    /// The PostgreSQL server cannot be reached, refuses the connection, or the schema cannot
    /// be set up.
    #[error("cannot connect to the PostgreSQL state database at {url}: {source}; {hint}")]
    Connect {
        /// The server and database, without the password.
        url: String,
        /// What to do about it, e.g. "is PostgreSQL running at 127.0.0.1:5432? …".
        hint: String,
        /// What the client or the server reported.
        #[source]
        source: BoxError,
    },

    /// The database was written by a newer release.
    #[error(
        "the state database at {} is at schema version {found}, newer than version {supported} \
         that this build knows; run the cityward release that wrote it, or restore a backup",
        path.display()
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// The version found in `meta`.
        found: i64,
        /// The newest version this build can use.
        supported: i64,
    },

    /// A schema migration failed; the database stays at the version before it.
    #[error(
        "cannot upgrade the state database at {} from schema version {from} to {to}: {source}; \
         the database was left at version {from}: fix the cause (disk space, permissions) and \
         restart",
        path.display()
    )]
    Migration {
        /// The database file.
        path: PathBuf,
        /// The version the database is at.
        from: i64,
        /// The version the failed step leads to.
        to: i64,
        /// What the backend reported.
        #[source]
        source: BoxError,
    },

    /// The caller passed something the store refuses.
    #[error("invalid {field} for {what} in {table}: {reason}")]
    InvalidInput {
        /// The table (or `options`) concerned.
        table: &'static str,
        /// Which item: e.g. "device `cam-7` (item 12 of 20000)".
        what: String,
        /// The field that is wrong.
        field: &'static str,
        /// What is wrong with it and what to do.
        reason: String,
    },

    /// The row named does not exist.
    #[error("no `{id}` in {table}; check the id, or list {table} to see which exist")]
    NotFound {
        /// The table looked in.
        table: &'static str,
        /// The id (or username, token hash prefix…) looked for.
        id: String,
    },

    /// The write clashes with what is stored.
    #[error("`{id}` in {table} {reason}")]
    Conflict {
        /// The table written to.
        table: &'static str,
        /// The row's id.
        id: String,
        /// What clashes and what to do.
        reason: String,
    },

    /// The database cannot be used right now (busy, locked, I/O error, disk full).
    #[error(
        "the state database could not {op} in {table}: {source}; retry shortly, and if it \
         keeps failing check that the database is reachable (the PostgreSQL server is up; the \
         SQLite file is not locked by another process), and its disk space and permissions"
    )]
    Unavailable {
        /// What was being done, e.g. "upsert devices".
        op: &'static str,
        /// The table concerned.
        table: &'static str,
        /// What the backend reported.
        #[source]
        source: BoxError,
    },

    /// A stored value cannot be read back.
    #[error(
        "the stored {column} of `{id}` in {table} cannot be read: {reason}; the database is \
         damaged or was edited by hand: restore a backup or correct the row"
    )]
    Corrupt {
        /// The table read from.
        table: &'static str,
        /// The row's id.
        id: String,
        /// The column that cannot be decoded.
        column: &'static str,
        /// Why it cannot.
        reason: String,
    },

    /// Anything else the backend reported: most likely a bug.
    #[error(
        "the state database failed to {op} in {table}: {source}; this is likely a bug: keep \
         the log and report it"
    )]
    Internal {
        /// What was being done.
        op: &'static str,
        /// The table concerned.
        table: &'static str,
        /// What the backend reported.
        #[source]
        source: BoxError,
    },
}

impl StateError {
    /// The kind of failure, shared with the rest of the crate: the HTTP layer maps it to a
    /// status code and a stable `code` string.
    pub fn status(&self) -> Status {
        match self {
            StateError::InvalidInput { .. } => Status::InvalidInput,
            StateError::NotFound { .. } => Status::NotFound,
            StateError::Conflict { .. } => Status::Conflict,
            StateError::Open { .. }
            | StateError::Connect { .. }
            | StateError::SchemaTooNew { .. }
            | StateError::Migration { .. }
            | StateError::Unavailable { .. } => Status::Unavailable,
            StateError::Corrupt { .. } | StateError::Internal { .. } => Status::Internal,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Helpers shared by the backends: validation, cursors, time.
// ---------------------------------------------------------------------------------------

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// Describes item `index` of a batch of `len` for error messages.
pub(crate) fn batch_item(noun: &str, id: &str, index: usize, len: usize) -> String {
    if len == 1 {
        format!("{noun} `{id}`")
    } else {
        format!("{noun} `{id}` (item {} of {len})", index + 1)
    }
}

pub(crate) fn invalid(table: &'static str, what: &str, field: &'static str, reason: String) -> StateError {
    StateError::InvalidInput {
        table,
        what: what.to_string(),
        field,
        reason,
    }
}

/// Checks an id or name: not empty, at most [`MAX_ID_LEN`] bytes, no control characters and
/// no surrounding whitespace.
pub(crate) fn check_id(
    table: &'static str,
    what: &str,
    field: &'static str,
    id: &str,
) -> Result<(), StateError> {
    let reason = if id.is_empty() {
        "is empty; give a non-empty id".to_string()
    } else if id.len() > MAX_ID_LEN {
        format!("is {} bytes long; use at most {MAX_ID_LEN}", id.len())
    } else if id.chars().any(char::is_control) {
        "contains control characters; remove them".to_string()
    } else if id.trim() != id {
        "starts or ends with whitespace; trim it".to_string()
    } else {
        return Ok(());
    };
    Err(invalid(table, what, field, reason))
}

/// Checks an optional reference to another row (grid, unit, region): `None`, or a valid id.
pub(crate) fn check_opt_id(
    table: &'static str,
    what: &str,
    field: &'static str,
    id: Option<&str>,
) -> Result<(), StateError> {
    match id {
        Some(id) => check_id(table, what, field, id),
        None => Ok(()),
    }
}

/// Checks that a text field is not empty (after trimming).
pub(crate) fn check_text(
    table: &'static str,
    what: &str,
    field: &'static str,
    text: &str,
) -> Result<(), StateError> {
    if text.trim().is_empty() {
        return Err(invalid(table, what, field, "is empty; fill it in".into()));
    }
    Ok(())
}

fn check_object(
    table: &'static str,
    what: &str,
    field: &'static str,
    value: &Value,
    null_ok: bool,
) -> Result<(), StateError> {
    if value.is_object() || (null_ok && value.is_null()) {
        return Ok(());
    }
    let expected = if null_ok {
        "a JSON object or null"
    } else {
        "a JSON object"
    };
    Err(invalid(
        table,
        what,
        field,
        format!("must be {expected}, not `{value}`"),
    ))
}

/// Checks one feature destined for `layer`.
pub(crate) fn check_feature(
    layer: Layer,
    f: &FeatureRow,
    index: usize,
    len: usize,
) -> Result<(), StateError> {
    let what = batch_item(&format!("{layer} feature"), &f.id, index, len);
    check_id("features", &what, "id", &f.id)?;
    if f.layer != layer {
        return Err(invalid(
            "features",
            &what,
            "layer",
            format!(
                "is `{}` but the call replaces `{layer}`; pass only {layer} features",
                f.layer
            ),
        ));
    }
    check_object("features", &what, "properties", &f.properties, false)?;
    check_object("features", &what, "geometry", &f.geometry, true)?;
    Ok(())
}

/// Checks one device row.
pub(crate) fn check_device(d: &DeviceRow, index: usize, len: usize) -> Result<(), StateError> {
    let what = batch_item("device", &d.id, index, len);
    check_id("devices", &what, "id", &d.id)?;
    check_text("devices", &what, "kind", &d.kind)?;
    if !d.lon.is_finite() || !(-180.0..=180.0).contains(&d.lon) {
        return Err(invalid(
            "devices",
            &what,
            "lon",
            format!(
                "must be a WGS84 longitude between -180 and 180 (got {})",
                d.lon
            ),
        ));
    }
    if !d.lat.is_finite() || !(-90.0..=90.0).contains(&d.lat) {
        return Err(invalid(
            "devices",
            &what,
            "lat",
            format!(
                "must be a WGS84 latitude between -90 and 90 (got {})",
                d.lat
            ),
        ));
    }
    check_opt_id("devices", &what, "grid", d.grid.as_deref())?;
    check_opt_id("devices", &what, "owner_unit", d.owner_unit.as_deref())?;
    check_object("devices", &what, "attrs", &d.attrs, false)?;
    Ok(())
}

/// Checks one unit row.
pub(crate) fn check_unit(u: &UnitRow, index: usize, len: usize) -> Result<(), StateError> {
    let what = batch_item("unit", &u.id, index, len);
    check_id("units", &what, "id", &u.id)?;
    check_text("units", &what, "name", &u.name)?;
    check_text("units", &what, "kind", &u.kind)?;
    check_opt_id("units", &what, "region", u.region.as_deref())?;
    check_opt_id("units", &what, "parent_unit", u.parent_unit.as_deref())?;
    Ok(())
}

/// Checks a rule put.
pub(crate) fn check_rule(r: &RulePut) -> Result<(), StateError> {
    let what = format!("rule `{}`", r.id);
    check_id("rules", &what, "id", &r.id)?;
    check_text("rules", &what, "body", &r.body)?;
    check_id("rules", &what, "updated_by", &r.updated_by)?;
    if let Some(v) = r.expected_version {
        if v < 0 {
            return Err(invalid(
                "rules",
                &what,
                "expected_version",
                format!("is {v}; use the version last read, or 0 to require a new rule"),
            ));
        }
    }
    Ok(())
}

/// Checks an alert row.
pub(crate) fn check_alert(a: &AlertRow) -> Result<(), StateError> {
    let what = format!("alert `{}`", a.id);
    check_id("alerts", &what, "id", &a.id)?;
    check_id("alerts", &what, "rule", &a.rule)?;
    check_text("alerts", &what, "key", &a.key)?;
    check_id("alerts", &what, "status", &a.status)?;
    check_id("alerts", &what, "severity", &a.severity)?;
    check_text("alerts", &what, "category", &a.category)?;
    check_opt_id("alerts", &what, "grid", a.grid.as_deref())?;
    check_id("alerts", &what, "class", &a.class)?;
    check_opt_id("alerts", &what, "incident", a.incident.as_deref())?;
    Ok(())
}

/// Checks one dead letter to insert.
pub(crate) fn check_dead_letter(
    d: &NewDeadLetter,
    index: usize,
    len: usize,
) -> Result<(), StateError> {
    let what = if len == 1 {
        format!("the dead letter from `{}`", d.origin)
    } else {
        format!("dead letter {} of {len} (from `{}`)", index + 1, d.origin)
    };
    check_text("dead_letters", &what, "origin", &d.origin)?;
    check_text("dead_letters", &what, "reason", &d.reason)?;
    if let Some(line) = d.line {
        if line > i64::MAX as u64 {
            return Err(invalid(
                "dead_letters",
                &what,
                "line",
                format!("{line} is too large"),
            ));
        }
    }
    Ok(())
}

/// Checks the arguments of `create_user`.
pub(crate) fn check_user(
    username: &str,
    password_hash: &str,
    role: &str,
    unit: Option<&str>,
) -> Result<(), StateError> {
    let what = format!("user `{username}`");
    check_id("users", &what, "username", username)?;
    if !password_hash.starts_with('$') || password_hash.len() < 8 {
        return Err(invalid(
            "users",
            &what,
            "password_hash",
            "is not a PHC hash string (`$argon2id$…`); hash the password with argon2 before \
             storing it, never pass the password itself"
                .into(),
        ));
    }
    check_id("users", &what, "role", role)?;
    check_opt_id("users", &what, "unit", unit)?;
    Ok(())
}

/// Checks a token hash: a non-empty id-like string.
pub(crate) fn check_token_hash(token_hash: &str) -> Result<(), StateError> {
    check_id("sessions", "a session", "token_hash", token_hash)
}

/// The effective page size of a request: 0 is refused, above [`MAX_PAGE_LIMIT`] is lowered.
pub(crate) fn page_limit(table: &'static str, page: &PageRequest) -> Result<usize, StateError> {
    if page.limit == 0 {
        return Err(invalid(
            table,
            "the page request",
            "limit",
            format!("is 0; ask for between 1 and {MAX_PAGE_LIMIT} items"),
        ));
    }
    Ok(page.limit.min(MAX_PAGE_LIMIT))
}

/// Makes an opaque cursor from a list tag and the last item's key: lowercase hex of
/// `tag:key`, so it is URL-safe whatever the key holds.
pub(crate) fn encode_cursor(tag: &str, key: &str) -> String {
    let mut out = String::with_capacity((tag.len() + key.len() + 1) * 2);
    for b in tag.bytes().chain(std::iter::once(b':')).chain(key.bytes()) {
        out.push(char::from_digit((b >> 4) as u32, 16).unwrap_or('0'));
        out.push(char::from_digit((b & 0xf) as u32, 16).unwrap_or('0'));
    }
    out
}

/// The error for a cursor that no list of `table` gave.
pub(crate) fn bad_cursor(table: &'static str, cursor: &str) -> StateError {
    invalid(
        table,
        "the page request",
        "after",
        format!(
            "`{}` is not a cursor this list gave; start again from the first page",
            cursor.chars().take(64).collect::<String>()
        ),
    )
}

/// Reads a cursor made by [`encode_cursor`] with the same `tag`, returning the key.
pub(crate) fn decode_cursor(
    table: &'static str,
    tag: &str,
    cursor: &str,
) -> Result<String, StateError> {
    let bad = || bad_cursor(table, cursor);
    if !cursor.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes = cursor
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            Some((hi * 16 + lo) as u8)
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    match text.split_once(':') {
        Some((t, key)) if t == tag => Ok(key.to_string()),
        _ => Err(bad()),
    }
}

/// Microseconds since the Unix epoch, the stored form of every time.
pub(crate) fn to_micros(t: &DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// A stored time back; `None` when out of chrono's range.
pub(crate) fn from_micros(micros: i64) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_micros(micros)
}

// ---------------------------------------------------------------------------------------
// Helpers shared by the backends: schema version, stored forms, cursors of each list, and
// rows read back. A backend reads a row into a tuple of plain values (the `…Raw` types) and
// decodes it here, so both store and answer alike.
// ---------------------------------------------------------------------------------------

/// The newest schema version this build creates and understands. Every backend numbers its
/// migration steps the same way, so a version means the same tables and columns in each.
pub(crate) const SCHEMA_VERSION: i64 = 5;

/// The `meta` key holding the schema version.
pub(crate) const SCHEMA_VERSION_KEY: &str = "schema_version";

/// The schema version from the stored `meta` value; no value is version 0 (a new database,
/// or one whose first step never committed).
pub(crate) fn parse_schema_version(text: Option<String>) -> Result<i64, StateError> {
    match text {
        None => Ok(0),
        Some(text) => text.parse::<i64>().map_err(|_| StateError::Corrupt {
            table: "meta",
            id: SCHEMA_VERSION_KEY.into(),
            column: "value",
            reason: format!("`{text}` is not an integer"),
        }),
    }
}

/// Checks a key given to [`StateStore::meta_set`]: a valid id, and not the schema version.
pub(crate) fn check_meta_key(key: &str) -> Result<(), StateError> {
    check_id("meta", &format!("meta key `{key}`"), "key", key)?;
    if key == SCHEMA_VERSION_KEY {
        return Err(invalid(
            "meta",
            &format!("meta key `{key}`"),
            "key",
            "is managed by schema migrations; pick another key".into(),
        ));
    }
    Ok(())
}

/// Checks a whole [`StateStore::replace_layer`] batch: each feature, and unique ids.
pub(crate) fn check_layer_batch(layer: Layer, features: &[FeatureRow]) -> Result<(), StateError> {
    let mut seen = std::collections::HashSet::with_capacity(features.len());
    for (i, f) in features.iter().enumerate() {
        check_feature(layer, f, i, features.len())?;
        if !seen.insert(f.id.as_str()) {
            return Err(invalid(
                "features",
                &batch_item(&format!("{layer} feature"), &f.id, i, features.len()),
                "id",
                "appears more than once; give each feature of a layer its own id".into(),
            ));
        }
    }
    Ok(())
}

/// Checks a whole [`StateStore::replace_units`] batch: each unit, and unique ids.
pub(crate) fn check_unit_batch(units: &[UnitRow]) -> Result<(), StateError> {
    let mut seen = std::collections::HashSet::with_capacity(units.len());
    for (i, u) in units.iter().enumerate() {
        check_unit(u, i, units.len())?;
        if !seen.insert(u.id.as_str()) {
            return Err(invalid(
                "units",
                &batch_item("unit", &u.id, i, units.len()),
                "id",
                "appears more than once; give each unit its own id".into(),
            ));
        }
    }
    Ok(())
}

/// The stored text of a JSON value.
pub(crate) fn json_text(value: &Value) -> String {
    // Serializing a `Value` cannot fail: its map keys are always strings.
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

/// Reads back stored JSON text; a failure names the row and column.
pub(crate) fn decode_json(
    table: &'static str,
    id: &str,
    column: &'static str,
    text: &str,
) -> Result<Value, StateError> {
    serde_json::from_str(text).map_err(|e| StateError::Corrupt {
        table,
        id: id.into(),
        column,
        reason: format!("not valid JSON ({e})"),
    })
}

/// Reads back a stored time (microseconds since 1970).
pub(crate) fn decode_time(
    table: &'static str,
    id: &str,
    column: &'static str,
    micros: i64,
) -> Result<DateTime<Utc>, StateError> {
    from_micros(micros).ok_or_else(|| StateError::Corrupt {
        table,
        id: id.into(),
        column,
        reason: format!("{micros} µs since 1970 is out of range"),
    })
}

/// Truncates to the stored precision, so a returned row equals what a read gives later.
pub(crate) fn stored_time(t: DateTime<Utc>) -> DateTime<Utc> {
    from_micros(to_micros(&t)).unwrap_or(t)
}

/// Turns `limit + 1` fetched rows into a page: the extra row only says there is more.
pub(crate) fn paginate<T>(mut items: Vec<T>, limit: usize, tag: &str, key: impl Fn(&T) -> String) -> Page<T> {
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|last| encode_cursor(tag, &key(last)))
    } else {
        None
    };
    Page { items, next }
}

/// How many rows to fetch for a page of `limit`: one more, to tell whether more follow.
pub(crate) fn fetch_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1
}

/// A count of rows as a SQL parameter.
pub(crate) fn sql_count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The key of an alert cursor: the alert's time (µs) and id.
pub(crate) fn alert_cursor_key(a: &AlertRow) -> String {
    format!("{}/{}", to_micros(&a.time), a.id)
}

/// Reads an alert cursor back into the time and id of the last alert given.
pub(crate) fn decode_alert_cursor(cursor: &str) -> Result<(i64, String), StateError> {
    let key = decode_cursor("alerts", "alr", cursor)?;
    key.split_once('/')
        .and_then(|(t, id)| Some((t.parse::<i64>().ok()?, id.to_string())))
        .ok_or_else(|| bad_cursor("alerts", cursor))
}

/// Reads a cursor whose key is a number (dead letter, delivery, audit position).
pub(crate) fn decode_number_cursor(table: &'static str, tag: &str, cursor: &str) -> Result<i64, StateError> {
    decode_cursor(table, tag, cursor)?
        .parse::<i64>()
        .map_err(|_| bad_cursor(table, cursor))
}

/// The key of a search-approval cursor: the request time (µs) and id.
pub(crate) fn approval_cursor_key(a: &SearchApproval) -> String {
    format!("{}|{}", to_micros(&a.requested_at), a.id)
}

/// Reads a search-approval cursor back into the time and id of the last request given.
pub(crate) fn decode_approval_cursor(cursor: &str) -> Result<(i64, String), StateError> {
    const T: &str = "search_approvals";
    let key = decode_cursor(T, "sa", cursor)?;
    let (at, id) = key.split_once('|').ok_or_else(|| bad_cursor(T, cursor))?;
    let at = at.parse::<i64>().map_err(|_| bad_cursor(T, cursor))?;
    Ok((at, id.to_string()))
}

/// A short, log-safe form of a token hash for error messages.
pub(crate) fn hash_prefix(token_hash: &str) -> String {
    let prefix: String = token_hash.chars().take(8).collect();
    format!("{prefix}…")
}

/// What an optimistic-concurrency conflict says, given the version expected and stored.
pub(crate) fn version_conflict(expected: i64, stored: i64) -> String {
    match (expected, stored) {
        (0, _) => format!(
            "already exists at version {stored}; read it and pass that version to replace it"
        ),
        (_, 0) => format!(
            "does not exist (expected version {expected}): it was deleted; create it again with \
             expected version 0"
        ),
        _ => format!(
            "is at version {stored}, not the expected {expected}: someone else changed it; \
             reload it, apply your change again and retry"
        ),
    }
}

/// The status and next due time a delivery attempt leaves behind.
pub(crate) fn attempt_outcome(attempt: &DeliveryAttempt) -> (&'static str, DateTime<Utc>) {
    match (attempt.delivered, attempt.retry_at) {
        (true, _) => ("delivered", attempt.at),
        (false, Some(retry)) => ("pending", retry),
        (false, None) => ("failed", attempt.at),
    }
}

/// The entry to store when appending `entry` at `at` after `last` (the last entry's
/// position and hash, `None` for an empty log), hash included.
pub(crate) fn next_audit_entry(
    last: Option<(i64, String)>,
    entry: &NewAuditEntry,
    at: DateTime<Utc>,
) -> Result<AuditEntry, StateError> {
    check_text("audit_log", "an audit entry", "actor", &entry.actor)?;
    check_text("audit_log", "an audit entry", "action", &entry.action)?;
    let (seq, prev_hash) = last.map_or((1, "0".repeat(64)), |(s, h)| (s + 1, h));
    let mut stored = AuditEntry {
        seq,
        // Whole microseconds, as stored, so the hash checks out when read back.
        at: stored_time(at),
        actor: entry.actor.clone(),
        action: entry.action.clone(),
        target: entry.target.clone(),
        detail: entry.detail.clone(),
        prev_hash,
        hash: String::new(),
    };
    stored.hash = stored.expected_hash();
    Ok(stored)
}

/// The stored text of the audit log's start (the `audit.start` meta value).
pub(crate) fn audit_start_text(start: &AuditStart) -> String {
    json_text(&serde_json::to_value(start).expect("an audit start serializes"))
}

/// The `audit.prune` entry that records a pruning of the log down to `start`.
pub(crate) fn prune_record(actor: &str, start: &AuditStart, deleted: u64) -> NewAuditEntry {
    NewAuditEntry {
        actor: actor.to_string(),
        action: AUDIT_PRUNE_ACTION.to_string(),
        target: String::new(),
        detail: serde_json::json!({
            "first_seq": start.seq,
            "prev_hash": start.prev_hash,
            "deleted": deleted,
            "before": start.before,
        }),
    }
}

/// The stored body of a search approval request: the whole request as JSON.
pub(crate) fn approval_body(approval: &SearchApproval) -> Result<String, StateError> {
    serde_json::to_string(approval).map_err(|e| StateError::Corrupt {
        table: "search_approvals",
        id: approval.id.clone(),
        column: "body",
        reason: e.to_string(),
    })
}

/// Checks the decision given to [`StateStore::decide_search_approval`].
pub(crate) fn check_decision(id: &str, status: &str) -> Result<(), StateError> {
    if status != "approved" && status != "rejected" {
        return Err(invalid(
            "search_approvals",
            &format!("search approval `{id}`"),
            "status",
            format!("is `{status}`; use approved or rejected"),
        ));
    }
    Ok(())
}

/// Applies a decision to a stored request; [`Status::Conflict`] when it is no longer pending.
pub(crate) fn apply_decision(
    mut approval: SearchApproval,
    status: &str,
    decided_by: &str,
    at: DateTime<Utc>,
    note: &str,
) -> Result<SearchApproval, StateError> {
    if approval.status != "pending" {
        return Err(StateError::Conflict {
            table: "search_approvals",
            id: approval.id.clone(),
            reason: format!(
                "was already {} by {}",
                approval.status,
                approval.decided_by.as_deref().unwrap_or("?")
            ),
        });
    }
    approval.status = status.into();
    approval.decided_by = Some(decided_by.into());
    approval.decided_at = Some(stored_time(at));
    approval.decision_note = Some(note.into());
    Ok(approval)
}

/// A search approval request read back from its id and stored body.
pub(crate) fn approval_row((id, body): (String, String)) -> Result<SearchApproval, StateError> {
    serde_json::from_str(&body).map_err(|e| StateError::Corrupt {
        table: "search_approvals",
        id,
        column: "body",
        reason: e.to_string(),
    })
}

/// A stored device: id, kind, lon, lat, grid, owner_unit, attrs, registered_at.
pub(crate) type DeviceRaw = (String, String, f64, f64, Option<String>, Option<String>, String, i64);

pub(crate) fn device_row(raw: DeviceRaw) -> Result<DeviceRow, StateError> {
    let (id, kind, lon, lat, grid, owner_unit, attrs, registered_at) = raw;
    let attrs = decode_json("devices", &id, "attrs", &attrs)?;
    let registered_at = decode_time("devices", &id, "registered_at", registered_at)?;
    Ok(DeviceRow {
        id,
        kind,
        lon,
        lat,
        grid,
        owner_unit,
        attrs,
        registered_at,
    })
}

/// A stored rule: id, body, enabled, version, updated_at, updated_by.
pub(crate) type RuleRaw = (String, String, bool, i64, i64, String);

pub(crate) fn rule_row(raw: RuleRaw) -> Result<RuleRow, StateError> {
    let (id, body, enabled, version, updated_at, updated_by) = raw;
    let updated_at = decode_time("rules", &id, "updated_at", updated_at)?;
    Ok(RuleRow {
        id,
        body,
        enabled,
        version,
        updated_at,
        updated_by,
    })
}

/// A stored alert: id, rule, key, status, severity, category, time, grid, body,
/// updated_at, scopes (a JSON array), class, incident.
pub(crate) type AlertRaw = (
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<String>,
    String,
    i64,
    String,
    String,
    Option<String>,
);

/// The stored text of an alert's scopes (a JSON array).
pub(crate) fn scopes_text(a: &AlertRow) -> String {
    serde_json::to_string(&a.scopes).unwrap_or_else(|_| "[]".into())
}

pub(crate) fn alert_row(raw: AlertRaw) -> Result<AlertRow, StateError> {
    let (id, rule, key, status, severity, category, time, grid, body, updated_at, scopes, class, incident) = raw;
    let scopes = decode_json("alerts", &id, "scopes", &scopes)?;
    let scopes = serde_json::from_value(scopes).map_err(|e| StateError::Corrupt {
        table: "alerts",
        id: id.clone(),
        column: "scopes",
        reason: e.to_string(),
    })?;
    let time = decode_time("alerts", &id, "time", time)?;
    let body = decode_json("alerts", &id, "body", &body)?;
    let updated_at = decode_time("alerts", &id, "updated_at", updated_at)?;
    Ok(AlertRow {
        id,
        rule,
        key,
        status,
        severity,
        category,
        time,
        grid,
        body,
        updated_at,
        scopes,
        class,
        incident,
    })
}

/// A stored dead letter: id, received_at, channel, origin, line, field, reason, raw,
/// resubmitted_at.
pub(crate) type DeadLetterRaw = (
    i64,
    i64,
    String,
    String,
    Option<i64>,
    Option<String>,
    String,
    String,
    Option<i64>,
);

pub(crate) fn dead_letter_row(raw: DeadLetterRaw) -> Result<DeadLetter, StateError> {
    let (id, received_at, channel, origin, line, field, reason, raw, resubmitted_at) = raw;
    let key = id.to_string();
    let received_at = decode_time("dead_letters", &key, "received_at", received_at)?;
    let channel = channel
        .parse::<DeadLetterChannel>()
        .map_err(|_| StateError::Corrupt {
            table: "dead_letters",
            id: key.clone(),
            column: "channel",
            reason: format!("`{channel}` is not one of http, mqtt, file"),
        })?;
    let line = line
        .map(|l| {
            u64::try_from(l).map_err(|_| StateError::Corrupt {
                table: "dead_letters",
                id: key.clone(),
                column: "line",
                reason: format!("{l} is negative"),
            })
        })
        .transpose()?;
    let resubmitted_at = resubmitted_at
        .map(|t| decode_time("dead_letters", &key, "resubmitted_at", t))
        .transpose()?;
    Ok(DeadLetter {
        id,
        received_at,
        channel,
        origin,
        line,
        field,
        reason,
        raw,
        resubmitted_at,
    })
}

/// A stored user: username, password_hash, role, unit, created_at, supervisor.
pub(crate) type UserRaw = (String, String, String, Option<String>, i64, bool);

pub(crate) fn user_row(raw: UserRaw) -> Result<UserRow, StateError> {
    let (username, password_hash, role, unit, created_at, supervisor) = raw;
    let created_at = decode_time("users", &username, "created_at", created_at)?;
    Ok(UserRow {
        username,
        password_hash,
        role,
        unit,
        created_at,
        supervisor,
    })
}

/// A stored session: token_hash, username, created_at, expires_at.
pub(crate) type SessionRaw = (String, String, i64, i64);

pub(crate) fn session_row(raw: SessionRaw) -> Result<SessionRow, StateError> {
    let (token_hash, username, created_at, expires_at) = raw;
    Ok(SessionRow {
        created_at: decode_time("sessions", &token_hash, "created_at", created_at)?,
        expires_at: decode_time("sessions", &token_hash, "expires_at", expires_at)?,
        token_hash,
        username,
    })
}

/// A stored audit entry: seq, at, actor, action, target, detail, prev_hash, hash.
pub(crate) type AuditRaw = (i64, i64, String, String, String, String, String, String);

pub(crate) fn audit_row(raw: AuditRaw) -> Result<AuditEntry, StateError> {
    const T: &str = "audit_log";
    let (seq, at, actor, action, target, detail, prev_hash, hash) = raw;
    let id = seq.to_string();
    Ok(AuditEntry {
        seq,
        at: decode_time(T, &id, "at", at)?,
        actor,
        action,
        target,
        detail: decode_json(T, &id, "detail", &detail)?,
        prev_hash,
        hash,
    })
}

/// A stored routing table version: version, body, changed_at, changed_by, note.
pub(crate) type RoutingRaw = (i64, String, i64, String, String);

pub(crate) fn routing_row(raw: RoutingRaw) -> Result<RoutingVersion, StateError> {
    const T: &str = "routing_versions";
    let (version, body, changed_at, changed_by, note) = raw;
    let id = version.to_string();
    Ok(RoutingVersion {
        version,
        body: decode_json(T, &id, "body", &body)?,
        changed_at: decode_time(T, &id, "changed_at", changed_at)?,
        changed_by,
        note,
    })
}

/// A stored webhook delivery: id, webhook, alert, change, payload, status, attempts,
/// next_attempt, last_status, last_error, created_at, updated_at.
pub(crate) type DeliveryRaw = (
    i64,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    i64,
    i64,
);

pub(crate) fn delivery_row(raw: DeliveryRaw) -> Result<Delivery, StateError> {
    let (id, webhook, alert, change, payload, status, attempts, next_attempt, last_status, last_error, created_at, updated_at) = raw;
    let key = id.to_string();
    const T: &str = "webhook_deliveries";
    Ok(Delivery {
        id,
        webhook,
        alert,
        change,
        payload: decode_json(T, &key, "payload", &payload)?,
        status,
        attempts: attempts.clamp(0, u32::MAX as i64) as u32,
        next_attempt: decode_time(T, &key, "next_attempt", next_attempt)?,
        last_status: last_status.and_then(|s| u16::try_from(s).ok()),
        last_error,
        created_at: decode_time(T, &key, "created_at", created_at)?,
        updated_at: decode_time(T, &key, "updated_at", updated_at)?,
    })
}
