//! [`SqliteState`]: the embedded state backend, one SQLite file in WAL mode.
//!
//! One connection behind a mutex serves every call: the state store is not on the event hot
//! path, and a single writer is what SQLite wants anyway. Writes of several rows run in one
//! `BEGIN IMMEDIATE` transaction with cached prepared statements, which is what makes a
//! 20 000-device upsert take a few tens of milliseconds.
//!
//! Schema changes are numbered migrations in [`MIGRATIONS`]; the version reached is stored
//! as `schema_version` in the `meta` table, each step runs in its own transaction together
//! with the version update, so a crash mid-upgrade leaves the previous version intact.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::{
    params, params_from_iter, Connection, ErrorCode, OptionalExtension, Row, Transaction,
    TransactionBehavior,
};
use serde_json::Value;
use tracing::{debug, info, warn};

use super::{
    alert_cursor_key, alert_row, apply_decision, approval_body, approval_cursor_key, approval_row,
    attempt_outcome, audit_row, audit_start_text, check_alert, check_dead_letter, check_decision,
    check_device, check_id, check_layer_batch, check_meta_key, check_rule, check_text,
    check_token_hash, check_unit_batch, check_user, dead_letter_row, decode_alert_cursor,
    decode_approval_cursor, decode_cursor, decode_json, decode_number_cursor, delivery_row, device_row,
    fetch_limit, hash_prefix, json_text, next_audit_entry, page_limit, paginate,
    parse_schema_version, prune_record, routing_row, rule_row, scopes_text, session_row,
    sql_count, stored_time, to_micros, user_row, version_conflict, AlertFilter, AlertRaw,
    AlertRow, AuditEntry, AuditRaw, AuditStart, DeadLetter, DeadLetterFilter, DeadLetterInsert,
    DeadLetterRaw, Delivery, DeliveryAttempt, DeliveryRaw, DeviceRaw, DeviceRow, FeatureRow,
    Layer, NewAuditEntry, NewDeadLetter, NewDelivery, Page, PageRequest, RoutingVersion,
    RulePut, RuleRaw, RuleRow, SearchApproval, SessionRow, StateError, StateOptions,
    StateStore, UnitRow, UserRaw, UserRow, AUDIT_START_KEY, SCHEMA_VERSION_KEY,
};

/// One schema step: the statements that take the database from `version - 1` to `version`.
struct Migration {
    version: i64,
    sql: &'static str,
}

/// Every schema step, in order. Never edit a released step: add a new one.
const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    sql: r#"
CREATE TABLE features (
    layer      TEXT    NOT NULL,
    id         TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    properties TEXT    NOT NULL,
    geometry   TEXT    NOT NULL,
    PRIMARY KEY (layer, id)
) WITHOUT ROWID;
CREATE INDEX features_layer_seq ON features (layer, seq);

CREATE TABLE devices (
    id            TEXT    NOT NULL PRIMARY KEY,
    kind          TEXT    NOT NULL,
    lon           REAL    NOT NULL,
    lat           REAL    NOT NULL,
    grid          TEXT,
    owner_unit    TEXT,
    attrs         TEXT    NOT NULL,
    registered_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX devices_grid ON devices (grid);

CREATE TABLE units (
    id          TEXT NOT NULL PRIMARY KEY,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    region      TEXT,
    parent_unit TEXT
) WITHOUT ROWID;

CREATE TABLE rules (
    id         TEXT    NOT NULL PRIMARY KEY,
    body       TEXT    NOT NULL,
    enabled    INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    updated_by TEXT    NOT NULL
) WITHOUT ROWID;

CREATE TABLE alerts (
    id         TEXT    NOT NULL PRIMARY KEY,
    rule       TEXT    NOT NULL,
    "key"      TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    severity   TEXT    NOT NULL,
    category   TEXT    NOT NULL,
    time       INTEGER NOT NULL,
    grid       TEXT,
    body       TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX alerts_time ON alerts (time DESC, id DESC);
CREATE INDEX alerts_status_time ON alerts (status, time DESC, id DESC);

CREATE TABLE dead_letters (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at    INTEGER NOT NULL,
    channel        TEXT    NOT NULL,
    origin         TEXT    NOT NULL,
    line           INTEGER,
    field          TEXT,
    reason         TEXT    NOT NULL,
    raw            TEXT    NOT NULL,
    resubmitted_at INTEGER
);
CREATE INDEX dead_letters_received_at ON dead_letters (received_at);

CREATE TABLE users (
    username      TEXT    NOT NULL PRIMARY KEY,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL,
    unit          TEXT,
    created_at    INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE sessions (
    token_hash TEXT    NOT NULL PRIMARY KEY,
    username   TEXT    NOT NULL REFERENCES users (username) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_expires_at ON sessions (expires_at);
CREATE INDEX sessions_username ON sessions (username);
"#,
}, Migration {
    version: 2,
    sql: r#"
ALTER TABLE alerts ADD COLUMN scopes TEXT NOT NULL DEFAULT '[]';
ALTER TABLE alerts ADD COLUMN class TEXT NOT NULL DEFAULT 'incident';
ALTER TABLE alerts ADD COLUMN incident TEXT;
CREATE INDEX alerts_incident ON alerts (incident) WHERE incident IS NOT NULL;

CREATE TABLE alert_scopes (
    scope TEXT NOT NULL,
    alert TEXT NOT NULL,
    PRIMARY KEY (scope, alert)
) WITHOUT ROWID;

CREATE TABLE webhook_deliveries (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook      TEXT    NOT NULL,
    alert        TEXT    NOT NULL,
    change       TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    attempts     INTEGER NOT NULL,
    next_attempt INTEGER NOT NULL,
    last_status  INTEGER,
    last_error   TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook, id);

CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    actor     TEXT    NOT NULL,
    action    TEXT    NOT NULL,
    target    TEXT    NOT NULL,
    detail    TEXT    NOT NULL,
    prev_hash TEXT    NOT NULL,
    hash      TEXT    NOT NULL
);
CREATE INDEX audit_log_actor ON audit_log (actor, seq);

CREATE TABLE routing_versions (
    version    INTEGER PRIMARY KEY,
    body       TEXT    NOT NULL,
    changed_at INTEGER NOT NULL,
    changed_by TEXT    NOT NULL,
    note       TEXT    NOT NULL
);
"#,
}, Migration {
    // Scope rows keyed by the alert's time within each scope: a new alert's rows go at the
    // end of its scopes' ranges, where (scope, alert id) put them at random places and every
    // write of thousands of alerts touched as many pages.
    version: 3,
    sql: r#"
CREATE TABLE alert_scopes_by_time (
    scope TEXT    NOT NULL,
    time  INTEGER NOT NULL,
    alert TEXT    NOT NULL,
    PRIMARY KEY (scope, time, alert)
) WITHOUT ROWID;
INSERT INTO alert_scopes_by_time (scope, time, alert)
    SELECT s.scope, a.time, s.alert FROM alert_scopes s JOIN alerts a ON a.id = s.alert;
DROP TABLE alert_scopes;
ALTER TABLE alert_scopes_by_time RENAME TO alert_scopes;
"#,
}, Migration {
    version: 4,
    sql: r#"
ALTER TABLE users ADD COLUMN supervisor INTEGER NOT NULL DEFAULT 0;
CREATE TABLE search_approvals (
    id           TEXT    NOT NULL PRIMARY KEY,
    requested_by TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    requested_at INTEGER NOT NULL,
    body         TEXT    NOT NULL
) WITHOUT ROWID;
CREATE INDEX search_approvals_by_time ON search_approvals (requested_at DESC, id);
"#,
}, Migration {
    // Alerts changed since a time (`AlertFilter::updated_since`), and alert retention.
    version: 5,
    sql: r#"
CREATE INDEX alerts_updated_at ON alerts (updated_at);
"#,
}];

const DEVICE_COLUMNS: &str = "id, kind, lon, lat, grid, owner_unit, attrs, registered_at";
const RULE_COLUMNS: &str = "id, body, enabled, version, updated_at, updated_by";
const ALERT_COLUMNS: &str =
    r#"id, rule, "key", status, severity, category, time, grid, body, updated_at, scopes, class, incident"#;
const DEAD_LETTER_COLUMNS: &str =
    "id, received_at, channel, origin, line, field, reason, raw, resubmitted_at";
const DELIVERY_COLUMNS: &str =
    "id, webhook, alert, change, payload, status, attempts, next_attempt, last_status, last_error, created_at, updated_at";

fn delivery_raw(r: &Row<'_>) -> rusqlite::Result<DeliveryRaw> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
        r.get(11)?,
    ))
}

const USER_COLUMNS: &str = "username, password_hash, role, unit, created_at, supervisor";

/// The embedded state store: one SQLite database file (or memory), WAL journal,
/// `synchronous=NORMAL`, foreign keys on, a 64 MiB page cache, schema migrated on open.
///
/// `synchronous=NORMAL` in WAL mode means a committed write survives a process crash but
/// the last transactions before a power loss may roll back; the durable event record is the
/// WAL of the ingest path, not this database.
pub struct SqliteState {
    conn: Mutex<Connection>,
    path: Option<PathBuf>,
    options: StateOptions,
    /// Checkpoints the journal of a database file; stops when the store is dropped.
    _checkpointer: Option<Checkpointer>,
}

/// How often the journal is checkpointed into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// A thread with its own connection that checkpoints the journal four times a second, in
/// the `PASSIVE` mode: it never blocks the writer, and copies what no reader still needs.
struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(file: &Path) -> Result<Checkpointer, StateError> {
        let conn = Connection::open(file).map_err(|e| open_error(file, e))?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(|e| open_error(file, e))?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let shown = file.display().to_string();
        let thread = std::thread::Builder::new()
            .name("cityward-state-ckpt".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
                    let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                    if let Err(e) = done {
                        warn!(path = %shown, error = %e, "Checkpointing the state journal failed; it is tried again in a moment (the journal grows meanwhile).");
                    }
                }
                // A last full copy, so that the file alone holds everything on a clean stop.
                let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            })
            .map_err(|e| StateError::Open { path: file.to_path_buf(), source: format!("cannot start the checkpoint thread: {e}").into() })?;
        Ok(Checkpointer { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for SqliteState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteState")
            .field("path", &self.path)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl SqliteState {
    /// The newest schema version this build creates and understands.
    pub const SCHEMA_VERSION: i64 = super::SCHEMA_VERSION;

    /// Opens (creating if needed) the database file at `path` with default options, and
    /// migrates it to [`SqliteState::SCHEMA_VERSION`]. The directory must exist.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StateError> {
        Self::open_with(path, StateOptions::default())
    }

    /// Like [`SqliteState::open`], with `options`.
    pub fn open_with(path: impl AsRef<Path>, options: StateOptions) -> Result<Self, StateError> {
        options.validate()?;
        let path = path.as_ref().to_path_buf();
        let conn = Connection::open(&path).map_err(|e| open_error(&path, e))?;
        Self::setup(conn, Some(path), options)
    }

    /// A fresh, empty in-memory database with default options (tests, `demo` without a
    /// data directory). It disappears when dropped.
    pub fn in_memory() -> Result<Self, StateError> {
        Self::in_memory_with(StateOptions::default())
    }

    /// Like [`SqliteState::in_memory`], with `options`.
    pub fn in_memory_with(options: StateOptions) -> Result<Self, StateError> {
        options.validate()?;
        let conn =
            Connection::open_in_memory().map_err(|e| open_error(Path::new(":memory:"), e))?;
        Self::setup(conn, None, options)
    }

    /// The database file, or `None` for an in-memory database.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StateOptions {
        &self.options
    }

    fn setup(
        mut conn: Connection,
        path: Option<PathBuf>,
        options: StateOptions,
    ) -> Result<Self, StateError> {
        let shown = path.clone().unwrap_or_else(|| PathBuf::from(":memory:"));
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| open_error(&shown, e))?;
        if path.is_some() {
            let mode: String = conn
                .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
                .map_err(|e| open_error(&shown, e))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StateError::Open {
                    path: shown,
                    source: format!(
                        "SQLite kept journal mode `{mode}` instead of `wal` (is the file on a \
                         network file system?); put the data directory on a local disk"
                    )
                    .into(),
                });
            }
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| open_error(&shown, e))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(|e| open_error(&shown, e))?;
        // 64 MiB of page cache (the default is 2 MiB): a transaction storing alerts with their
        // scope rows otherwise spills pages to the file before it commits.
        conn.pragma_update(None, "cache_size", -65_536)
            .map_err(|e| open_error(&shown, e))?;
        // Most of each checkpoint (copying the journal into the file) is done ahead on a
        // thread of its own, so the write that crosses SQLite's threshold of 1,000 pages
        // and checkpoints has little left to copy while alerts wait behind it; that write's
        // checkpoint is still the one that lets the journal start over.
        let version = migrate(&mut conn, &shown)?;
        let checkpointer = match &path {
            Some(file) => Some(Checkpointer::start(file)?),
            None => None,
        };
        info!(path = %shown.display(), schema_version = version, "State database opened.");
        Ok(SqliteState {
            conn: Mutex::new(conn),
            path,
            options,
            _checkpointer: checkpointer,
        })
    }

    /// The connection; a panic in another thread while holding it leaves it usable (an
    /// open transaction was rolled back when its guard dropped), so poisoning is ignored.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The connection, for tests that inspect pragmas.
    #[cfg(test)]
    pub(super) fn conn_for_tests(&self) -> MutexGuard<'_, Connection> {
        self.conn()
    }
}

/// Inserts an alert row unless its id is stored (parameters of [`alert_params`]).
fn insert_alert_sql() -> String {
    format!(
        "INSERT INTO alerts ({ALERT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
         ON CONFLICT (id) DO NOTHING"
    )
}

/// Replaces an alert row by id (parameters of [`alert_params`]).
const UPDATE_ALERT_SQL: &str = r#"UPDATE alerts SET rule = ?2, "key" = ?3, status = ?4, severity = ?5,
    category = ?6, time = ?7, grid = ?8, body = ?9, updated_at = ?10, scopes = ?11, class = ?12, incident = ?13 WHERE id = ?1"#;

/// Makes an alert visible under one more scope (scopes only grow).
const INSERT_SCOPE_SQL: &str = "INSERT INTO alert_scopes (scope, time, alert) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING";

/// Writes the scope rows of stored alerts.
fn write_scopes(tx: &Transaction<'_>, alerts: &[&AlertRow], op: &'static str) -> Result<(), StateError> {
    let mut stmt = tx.prepare_cached(INSERT_SCOPE_SQL).map_err(db(op, "alerts"))?;
    for a in alerts {
        for scope in &a.scopes {
            stmt.execute((scope, to_micros(&a.time), &a.id)).map_err(db(op, "alerts"))?;
        }
    }
    Ok(())
}

/// An alert row as statement parameters, in the order of `ALERT_COLUMNS`.
fn alert_params(a: &AlertRow) -> impl rusqlite::Params + '_ {
    (
        &a.id,
        &a.rule,
        &a.key,
        &a.status,
        &a.severity,
        &a.category,
        to_micros(&a.time),
        &a.grid,
        json_text(&a.body),
        to_micros(&a.updated_at),
        scopes_text(a),
        &a.class,
        &a.incident,
    )
}

/// Brings the database to [`SqliteState::SCHEMA_VERSION`]; returns the version reached.
/// Running it again on an up-to-date database does nothing.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<i64, StateError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS meta (key TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL) \
         WITHOUT ROWID",
    )
    .map_err(|e| open_error(path, e))?;
    let found = read_schema_version(conn)?;
    if found > SqliteState::SCHEMA_VERSION {
        return Err(StateError::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            supported: SqliteState::SCHEMA_VERSION,
        });
    }
    let mut version = found;
    for step in MIGRATIONS.iter().filter(|m| m.version > found) {
        let from = version;
        let failed = |source: rusqlite::Error| StateError::Migration {
            path: path.to_path_buf(),
            from,
            to: step.version,
            source: source.into(),
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(failed)?;
        // Another process may have run this step while we waited for the write lock.
        let current = read_schema_version(&tx)?;
        if current >= step.version {
            version = current;
            continue;
        }
        tx.execute_batch(step.sql).map_err(failed)?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![SCHEMA_VERSION_KEY, step.version.to_string()],
        )
        .map_err(failed)?;
        tx.commit().map_err(failed)?;
        info!(
            path = %path.display(),
            from,
            to = step.version,
            "State database migrated."
        );
        version = step.version;
    }
    Ok(version)
}

fn read_schema_version(conn: &Connection) -> Result<i64, StateError> {
    let text: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [SCHEMA_VERSION_KEY],
            |r| r.get(0),
        )
        .optional()
        .map_err(db("read the schema version", "meta"))?;
    parse_schema_version(text)
}

// ---------------------------------------------------------------------------------------
// Error mapping and decoding.
// ---------------------------------------------------------------------------------------

fn open_error(path: &Path, e: rusqlite::Error) -> StateError {
    StateError::Open {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// Maps a SQLite error during `op` on `table`: environment trouble (busy, locked, I/O, disk
/// full, read-only) is `Unavailable`, anything else `Internal`.
fn db(op: &'static str, table: &'static str) -> impl Fn(rusqlite::Error) -> StateError {
    move |e| {
        let transient = matches!(
            e.sqlite_error_code(),
            Some(
                ErrorCode::DatabaseBusy
                    | ErrorCode::DatabaseLocked
                    | ErrorCode::DiskFull
                    | ErrorCode::SystemIoFailure
                    | ErrorCode::CannotOpen
                    | ErrorCode::ReadOnly
                    | ErrorCode::OutOfMemory
                    | ErrorCode::PermissionDenied
                    | ErrorCode::FileLockingProtocolFailed
                    | ErrorCode::NoLargeFileSupport
            )
        );
        if transient {
            StateError::Unavailable {
                op,
                table,
                source: e.into(),
            }
        } else {
            StateError::Internal {
                op,
                table,
                source: e.into(),
            }
        }
    }
}

fn write_tx<'c>(
    conn: &'c mut Connection,
    op: &'static str,
    table: &'static str,
) -> Result<Transaction<'c>, StateError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db(op, table))
}

fn device_raw(r: &Row<'_>) -> rusqlite::Result<DeviceRaw> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

fn rule_raw(r: &Row<'_>) -> rusqlite::Result<RuleRaw> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn alert_raw(r: &Row<'_>) -> rusqlite::Result<AlertRaw> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
        r.get(11)?,
        r.get(12)?,
    ))
}

fn dead_letter_raw(r: &Row<'_>) -> rusqlite::Result<DeadLetterRaw> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
    ))
}

fn user_raw(r: &Row<'_>) -> rusqlite::Result<UserRaw> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
}

fn audit_raw(r: &Row<'_>) -> rusqlite::Result<AuditRaw> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?))
}

/// Runs a query and decodes every row, mapping both kinds of failure.
fn query_all<R, T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    op: &'static str,
    table: &'static str,
    raw: impl FnMut(&Row<'_>) -> rusqlite::Result<R>,
    decode: impl Fn(R) -> Result<T, StateError>,
) -> Result<Vec<T>, StateError> {
    let mut stmt = conn.prepare_cached(sql).map_err(db(op, table))?;
    let rows = stmt.query_map(params, raw).map_err(db(op, table))?;
    let mut out = Vec::new();
    for row in rows {
        out.push(decode(row.map_err(db(op, table))?)?);
    }
    Ok(out)
}

/// WHERE clause and parameters for a dead-letter filter (and an optional id bound).
fn dead_letter_where(filter: &DeadLetterFilter, before_id: Option<i64>) -> (String, Vec<SqlValue>) {
    let mut clauses = Vec::new();
    let mut values = Vec::new();
    if let Some(channel) = filter.channel {
        values.push(SqlValue::Text(channel.as_str().into()));
        clauses.push(format!("channel = ?{}", values.len()));
    }
    if let Some(since) = filter.since {
        values.push(SqlValue::Integer(to_micros(&since)));
        clauses.push(format!("received_at >= ?{}", values.len()));
    }
    if filter.pending_only {
        clauses.push("resubmitted_at IS NULL".into());
    }
    if let Some(id) = before_id {
        values.push(SqlValue::Integer(id));
        clauses.push(format!("id < ?{}", values.len()));
    }
    let sql = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    (sql, values)
}

/// Deletes the oldest dead letters beyond `keep`; returns how many.
fn prune_dead_letters_in(conn: &Connection, keep: u64) -> Result<u64, StateError> {
    let keep = i64::try_from(keep).unwrap_or(i64::MAX);
    let pruned = conn
        .prepare_cached(
            "DELETE FROM dead_letters WHERE id <= \
             (SELECT id FROM dead_letters ORDER BY id DESC LIMIT 1 OFFSET ?1)",
        )
        .and_then(|mut stmt| stmt.execute([keep]))
        .map_err(db("prune", "dead_letters"))?;
    Ok(pruned as u64)
}

/// Appends `entry` to the audit log inside `tx`, chained to the last entry.
fn append_audit_in(tx: &Transaction<'_>, entry: &NewAuditEntry, at: DateTime<Utc>) -> Result<AuditEntry, StateError> {
    const OP: &str = "append to the audit log";
    const T: &str = "audit_log";
    let last: Option<(i64, String)> = tx
        .query_row("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(db(OP, T))?;
    let stored = next_audit_entry(last, entry, at)?;
    tx.execute(
        "INSERT INTO audit_log (seq, at, actor, action, target, detail, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        (stored.seq, to_micros(&stored.at), &stored.actor, &stored.action, &stored.target, stored.detail.to_string(), &stored.prev_hash, &stored.hash),
    )
    .map_err(db(OP, T))?;
    Ok(stored)
}

// ---------------------------------------------------------------------------------------
// The trait.
// ---------------------------------------------------------------------------------------

impl StateStore for SqliteState {
    fn schema_version(&self) -> Result<i64, StateError> {
        read_schema_version(&self.conn())
    }

    fn meta_get(&self, key: &str) -> Result<Option<String>, StateError> {
        self.conn()
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")
            .and_then(|mut stmt| stmt.query_row([key], |r| r.get(0)).optional())
            .map_err(db("read", "meta"))
    }

    fn meta_set(&self, key: &str, value: &str) -> Result<(), StateError> {
        check_meta_key(key)?;
        self.conn()
            .prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .and_then(|mut stmt| stmt.execute([key, value]))
            .map_err(db("write", "meta"))?;
        Ok(())
    }

    fn replace_layer(&self, layer: Layer, features: &[FeatureRow]) -> Result<usize, StateError> {
        check_layer_batch(layer, features)?;
        const OP: &str = "replace a layer";
        let mut conn = self.conn();
        let tx = write_tx(&mut conn, OP, "features")?;
        tx.execute("DELETE FROM features WHERE layer = ?1", [layer.as_str()])
            .map_err(db(OP, "features"))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO features (layer, id, seq, properties, geometry) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(db(OP, "features"))?;
            for (seq, f) in features.iter().enumerate() {
                stmt.execute(params![
                    layer.as_str(),
                    f.id,
                    seq as i64,
                    json_text(&f.properties),
                    json_text(&f.geometry)
                ])
                .map_err(db(OP, "features"))?;
            }
        }
        tx.commit().map_err(db(OP, "features"))?;
        debug!(
            layer = layer.as_str(),
            features = features.len(),
            "City layer replaced."
        );
        Ok(features.len())
    }

    fn list_layer(&self, layer: Layer) -> Result<Vec<FeatureRow>, StateError> {
        query_all(
            &self.conn(),
            "SELECT id, properties, geometry FROM features WHERE layer = ?1 ORDER BY seq",
            [layer.as_str()],
            "list a layer",
            "features",
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            },
            |(id, properties, geometry)| {
                let properties = decode_json("features", &id, "properties", &properties)?;
                let geometry = decode_json("features", &id, "geometry", &geometry)?;
                Ok(FeatureRow {
                    layer,
                    id,
                    properties,
                    geometry,
                })
            },
        )
    }

    fn upsert_devices(&self, devices: &[DeviceRow]) -> Result<usize, StateError> {
        for (i, d) in devices.iter().enumerate() {
            check_device(d, i, devices.len())?;
        }
        if devices.is_empty() {
            return Ok(0);
        }
        const OP: &str = "upsert devices";
        let mut conn = self.conn();
        let tx = write_tx(&mut conn, OP, "devices")?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO devices \
                     (id, kind, lon, lat, grid, owner_unit, attrs, registered_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                     ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, lon = excluded.lon, \
                     lat = excluded.lat, grid = excluded.grid, owner_unit = excluded.owner_unit, \
                     attrs = excluded.attrs",
                )
                .map_err(db(OP, "devices"))?;
            for d in devices {
                stmt.execute(params![
                    d.id,
                    d.kind,
                    d.lon,
                    d.lat,
                    d.grid,
                    d.owner_unit,
                    json_text(&d.attrs),
                    to_micros(&d.registered_at)
                ])
                .map_err(db(OP, "devices"))?;
            }
        }
        tx.commit().map_err(db(OP, "devices"))?;
        debug!(devices = devices.len(), "Devices upserted.");
        Ok(devices.len())
    }

    fn device(&self, id: &str) -> Result<Option<DeviceRow>, StateError> {
        let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?1");
        let mut rows = query_all(
            &self.conn(),
            &sql,
            [id],
            "read a device",
            "devices",
            device_raw,
            device_row,
        )?;
        Ok(rows.pop())
    }

    fn list_devices(&self, page: &PageRequest) -> Result<Page<DeviceRow>, StateError> {
        let limit = page_limit("devices", page)?;
        let after = page
            .after
            .as_deref()
            .map(|c| decode_cursor("devices", "dev", c))
            .transpose()?;
        let conn = self.conn();
        let items = match &after {
            Some(after) => query_all(
                &conn,
                &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id > ?1 ORDER BY id LIMIT ?2"),
                params![after, fetch_limit(limit)],
                "list devices",
                "devices",
                device_raw,
                device_row,
            )?,
            None => query_all(
                &conn,
                &format!("SELECT {DEVICE_COLUMNS} FROM devices ORDER BY id LIMIT ?1"),
                params![fetch_limit(limit)],
                "list devices",
                "devices",
                device_raw,
                device_row,
            )?,
        };
        Ok(paginate(items, limit, "dev", |d| d.id.clone()))
    }

    fn device_count(&self) -> Result<u64, StateError> {
        let n: i64 = self
            .conn()
            .query_row("SELECT COUNT(*) FROM devices", [], |r| r.get(0))
            .map_err(db("count devices", "devices"))?;
        Ok(n as u64)
    }

    fn delete_device(&self, id: &str) -> Result<(), StateError> {
        let n = self
            .conn()
            .prepare_cached("DELETE FROM devices WHERE id = ?1")
            .and_then(|mut stmt| stmt.execute([id]))
            .map_err(db("delete a device", "devices"))?;
        if n == 0 {
            return Err(StateError::NotFound {
                table: "devices",
                id: id.into(),
            });
        }
        Ok(())
    }

    fn replace_units(&self, units: &[UnitRow]) -> Result<usize, StateError> {
        check_unit_batch(units)?;
        const OP: &str = "replace units";
        let mut conn = self.conn();
        let tx = write_tx(&mut conn, OP, "units")?;
        tx.execute("DELETE FROM units", [])
            .map_err(db(OP, "units"))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO units (id, name, kind, region, parent_unit) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(db(OP, "units"))?;
            for u in units {
                stmt.execute(params![u.id, u.name, u.kind, u.region, u.parent_unit])
                    .map_err(db(OP, "units"))?;
            }
        }
        tx.commit().map_err(db(OP, "units"))?;
        debug!(units = units.len(), "Units replaced.");
        Ok(units.len())
    }

    fn list_units(&self) -> Result<Vec<UnitRow>, StateError> {
        query_all(
            &self.conn(),
            "SELECT id, name, kind, region, parent_unit FROM units ORDER BY id",
            [],
            "list units",
            "units",
            |r| {
                Ok(UnitRow {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    kind: r.get(2)?,
                    region: r.get(3)?,
                    parent_unit: r.get(4)?,
                })
            },
            Ok,
        )
    }

    fn unit(&self, id: &str) -> Result<Option<UnitRow>, StateError> {
        let mut rows = query_all(
            &self.conn(),
            "SELECT id, name, kind, region, parent_unit FROM units WHERE id = ?1",
            [id],
            "read a unit",
            "units",
            |r| {
                Ok(UnitRow {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    kind: r.get(2)?,
                    region: r.get(3)?,
                    parent_unit: r.get(4)?,
                })
            },
            Ok,
        )?;
        Ok(rows.pop())
    }

    fn put_rule(&self, rule: &RulePut) -> Result<RuleRow, StateError> {
        check_rule(rule)?;
        const OP: &str = "write a rule";
        let now = stored_time(Utc::now());
        let mut conn = self.conn();
        let tx = write_tx(&mut conn, OP, "rules")?;
        let stored: i64 = tx
            .query_row("SELECT version FROM rules WHERE id = ?1", [&rule.id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(db(OP, "rules"))?
            .unwrap_or(0);
        if let Some(expected) = rule.expected_version {
            if expected != stored {
                return Err(StateError::Conflict {
                    table: "rules",
                    id: rule.id.clone(),
                    reason: version_conflict(expected, stored),
                });
            }
        }
        let version = stored + 1;
        tx.execute(
            "INSERT INTO rules (id, body, enabled, version, updated_at, updated_by) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (id) DO UPDATE SET body = excluded.body, enabled = excluded.enabled, \
             version = excluded.version, updated_at = excluded.updated_at, \
             updated_by = excluded.updated_by",
            params![
                rule.id,
                rule.body,
                rule.enabled,
                version,
                to_micros(&now),
                rule.updated_by
            ],
        )
        .map_err(db(OP, "rules"))?;
        tx.commit().map_err(db(OP, "rules"))?;
        debug!(rule = %rule.id, version, "Rule written.");
        Ok(RuleRow {
            id: rule.id.clone(),
            body: rule.body.clone(),
            enabled: rule.enabled,
            version,
            updated_at: now,
            updated_by: rule.updated_by.clone(),
        })
    }

    fn rule(&self, id: &str) -> Result<Option<RuleRow>, StateError> {
        let sql = format!("SELECT {RULE_COLUMNS} FROM rules WHERE id = ?1");
        let mut rows = query_all(
            &self.conn(),
            &sql,
            [id],
            "read a rule",
            "rules",
            rule_raw,
            rule_row,
        )?;
        Ok(rows.pop())
    }

    fn list_rules(&self) -> Result<Vec<RuleRow>, StateError> {
        let sql = format!("SELECT {RULE_COLUMNS} FROM rules ORDER BY id");
        query_all(
            &self.conn(),
            &sql,
            [],
            "list rules",
            "rules",
            rule_raw,
            rule_row,
        )
    }

    fn delete_rule(&self, id: &str, expected_version: Option<i64>) -> Result<(), StateError> {
        const OP: &str = "delete a rule";
        let mut conn = self.conn();
        let tx = write_tx(&mut conn, OP, "rules")?;
        let stored: Option<i64> = tx
            .query_row("SELECT version FROM rules WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(db(OP, "rules"))?;
        let Some(stored) = stored else {
            return Err(StateError::NotFound {
                table: "rules",
                id: id.into(),
            });
        };
        if let Some(expected) = expected_version {
            if expected != stored {
                return Err(StateError::Conflict {
                    table: "rules",
                    id: id.into(),
                    reason: version_conflict(expected, stored),
                });
            }
        }
        tx.execute("DELETE FROM rules WHERE id = ?1", [id])
            .map_err(db(OP, "rules"))?;
        tx.commit().map_err(db(OP, "rules"))?;
        debug!(rule = %id, "Rule deleted.");
        Ok(())
    }

    fn insert_alert(&self, alert: &AlertRow) -> Result<(), StateError> {
        check_alert(alert)?;
        const OP: &str = "insert an alert";
        let mut conn = self.conn();
        let tx = write_tx(&mut conn, OP, "alerts")?;
        let n = tx
            .prepare_cached(&insert_alert_sql())
            .and_then(|mut stmt| stmt.execute(alert_params(alert)))
            .map_err(db(OP, "alerts"))?;
        if n > 0 {
            write_scopes(&tx, &[alert], OP)?;
        }
        tx.commit().map_err(db(OP, "alerts"))?;
        if n == 0 {
            return Err(StateError::Conflict {
                table: "alerts",
                id: alert.id.clone(),
                reason: "already exists; update it instead, or give the new alert another id"
                    .into(),
            });
        }
        Ok(())
    }

    fn write_alerts(&self, inserts: &[AlertRow], updates: &[AlertRow]) -> Result<Vec<String>, StateError> {
        for a in inserts.iter().chain(updates) {
            check_alert(a)?;
        }
        if inserts.is_empty() && updates.is_empty() {
            return Ok(Vec::new());
        }
        const OP: &str = "write alerts";
        let mut conn = self.conn();
        let tx = write_tx(&mut conn, OP, "alerts")?;
        let mut inserted = Vec::new();
        {
            let mut written: Vec<&AlertRow> = Vec::with_capacity(inserts.len() + updates.len());
            let mut insert = tx.prepare_cached(&insert_alert_sql()).map_err(db(OP, "alerts"))?;
            for a in inserts {
                if insert.execute(alert_params(a)).map_err(db(OP, "alerts"))? > 0 {
                    inserted.push(a.id.clone());
                    written.push(a);
                }
            }
            let mut update = tx.prepare_cached(UPDATE_ALERT_SQL).map_err(db(OP, "alerts"))?;
            for a in updates {
                if update.execute(alert_params(a)).map_err(db(OP, "alerts"))? > 0 {
                    written.push(a);
                }
            }
            write_scopes(&tx, &written, OP)?;
        }
        tx.commit().map_err(db(OP, "alerts"))?;
        Ok(inserted)
    }

    fn update_alert(&self, alert: &AlertRow) -> Result<(), StateError> {
        check_alert(alert)?;
        const OP: &str = "update an alert";
        let mut conn = self.conn();
        let tx = write_tx(&mut conn, OP, "alerts")?;
        let n = tx
            .prepare_cached(UPDATE_ALERT_SQL)
            .and_then(|mut stmt| stmt.execute(alert_params(alert)))
            .map_err(db(OP, "alerts"))?;
        if n > 0 {
            write_scopes(&tx, &[alert], OP)?;
        }
        tx.commit().map_err(db(OP, "alerts"))?;
        if n == 0 {
            return Err(StateError::NotFound {
                table: "alerts",
                id: alert.id.clone(),
            });
        }
        Ok(())
    }

    fn update_alert_if_unchanged(&self, alert: &AlertRow, seen: DateTime<Utc>) -> Result<bool, StateError> {
        check_alert(alert)?;
        const OP: &str = "update an alert";
        let mut conn = self.conn();
        let tx = write_tx(&mut conn, OP, "alerts")?;
        let stored: Option<i64> = tx
            .query_row("SELECT updated_at FROM alerts WHERE id = ?1", [&alert.id], |r| r.get(0))
            .optional()
            .map_err(db(OP, "alerts"))?;
        match stored {
            None => return Err(StateError::NotFound { table: "alerts", id: alert.id.clone() }),
            Some(at) if at != to_micros(&seen) => return Ok(false),
            Some(_) => {}
        }
        tx.prepare_cached(UPDATE_ALERT_SQL)
            .and_then(|mut stmt| stmt.execute(alert_params(alert)))
            .map_err(db(OP, "alerts"))?;
        write_scopes(&tx, &[alert], OP)?;
        tx.commit().map_err(db(OP, "alerts"))?;
        Ok(true)
    }

    fn alert(&self, id: &str) -> Result<Option<AlertRow>, StateError> {
        let sql = format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?1");
        let mut rows = query_all(
            &self.conn(),
            &sql,
            [id],
            "read an alert",
            "alerts",
            alert_raw,
            alert_row,
        )?;
        Ok(rows.pop())
    }

    fn list_alerts(&self, filter: &AlertFilter, page: &PageRequest) -> Result<Page<AlertRow>, StateError> {
        let limit = page_limit("alerts", page)?;
        let after = page.after.as_deref().map(decode_alert_cursor).transpose()?;
        let mut clauses = Vec::new();
        let mut values: Vec<SqlValue> = Vec::new();
        if !filter.statuses.is_empty() {
            let mut marks = Vec::new();
            for status in &filter.statuses {
                values.push(SqlValue::Text(status.clone()));
                marks.push(format!("?{}", values.len()));
            }
            clauses.push(format!("status IN ({})", marks.join(", ")));
        }
        if let Some(incident) = &filter.incident {
            values.push(SqlValue::Text(incident.clone()));
            clauses.push(format!("incident = ?{}", values.len()));
        }
        if let Some(class) = &filter.class {
            values.push(SqlValue::Text(class.clone()));
            clauses.push(format!("class = ?{}", values.len()));
        }
        if let Some(scopes) = &filter.scopes {
            let mut marks = Vec::new();
            for scope in scopes {
                values.push(SqlValue::Text(scope.clone()));
                marks.push(format!("?{}", values.len()));
            }
            clauses.push(format!(
                "id IN (SELECT alert FROM alert_scopes WHERE scope IN ({}))",
                marks.join(", ")
            ));
        }
        for (column, wanted) in [("severity", &filter.severities), ("category", &filter.categories)] {
            if !wanted.is_empty() {
                let mut marks = Vec::new();
                for value in wanted {
                    values.push(SqlValue::Text(value.clone()));
                    marks.push(format!("?{}", values.len()));
                }
                clauses.push(format!("{column} IN ({})", marks.join(", ")));
            }
        }
        if let Some(scope) = &filter.within {
            values.push(SqlValue::Text(scope.clone()));
            clauses.push(format!("id IN (SELECT alert FROM alert_scopes WHERE scope = ?{})", values.len()));
        }
        if let Some(since) = &filter.since {
            values.push(SqlValue::Integer(to_micros(since)));
            clauses.push(format!("time >= ?{}", values.len()));
        }
        if let Some(until) = &filter.until {
            values.push(SqlValue::Integer(to_micros(until)));
            clauses.push(format!("time < ?{}", values.len()));
        }
        if let Some(updated_since) = &filter.updated_since {
            values.push(SqlValue::Integer(to_micros(updated_since)));
            clauses.push(format!("updated_at >= ?{}", values.len()));
        }
        if let Some((time, id)) = after {
            values.push(SqlValue::Integer(time));
            values.push(SqlValue::Text(id));
            clauses.push(format!(
                "(time, id) < (?{}, ?{})",
                values.len() - 1,
                values.len()
            ));
        }
        values.push(SqlValue::Integer(fetch_limit(limit)));
        let filter = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM alerts {filter} ORDER BY time DESC, id DESC LIMIT ?{}",
            values.len()
        );
        let items = query_all(
            &self.conn(),
            &sql,
            params_from_iter(values.iter()),
            "list alerts",
            "alerts",
            alert_raw,
            alert_row,
        )?;
        Ok(paginate(items, limit, "alr", alert_cursor_key))
    }

    fn put_routing(
        &self,
        body: &Value,
        changed_by: &str,
        note: &str,
        expected_version: Option<i64>,
    ) -> Result<RoutingVersion, StateError> {
        const OP: &str = "store the routing table";
        check_text("routing_versions", "the routing table", "changed_by", changed_by)?;
        let mut conn = self.conn();
        let tx = write_tx(&mut conn, OP, "routing_versions")?;
        let latest: i64 = tx
            .query_row("SELECT COALESCE(MAX(version), 0) FROM routing_versions", [], |r| r.get(0))
            .map_err(db(OP, "routing_versions"))?;
        if let Some(expected) = expected_version {
            if expected != latest {
                return Err(StateError::Conflict {
                    table: "routing_versions",
                    id: latest.to_string(),
                    reason: version_conflict(expected, latest),
                });
            }
        }
        let stored = RoutingVersion {
            version: latest + 1,
            body: body.clone(),
            // Whole microseconds, as stored, so the answer equals what is read back.
            changed_at: stored_time(Utc::now()),
            changed_by: changed_by.into(),
            note: note.into(),
        };
        tx.execute(
            "INSERT INTO routing_versions (version, body, changed_at, changed_by, note) VALUES (?1, ?2, ?3, ?4, ?5)",
            (stored.version, json_text(&stored.body), to_micros(&stored.changed_at), &stored.changed_by, &stored.note),
        )
        .map_err(db(OP, "routing_versions"))?;
        tx.commit().map_err(db(OP, "routing_versions"))?;
        Ok(stored)
    }

    fn routing(&self) -> Result<Option<RoutingVersion>, StateError> {
        Ok(self.routing_history(1)?.pop())
    }

    fn routing_history(&self, limit: usize) -> Result<Vec<RoutingVersion>, StateError> {
        query_all(
            &self.conn(),
            "SELECT version, body, changed_at, changed_by, note FROM routing_versions ORDER BY version DESC LIMIT ?1",
            [sql_count(limit)],
            "read the routing table",
            "routing_versions",
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            routing_row,
        )
    }

    fn insert_deliveries(&self, batch: &[NewDelivery]) -> Result<(), StateError> {
        if batch.is_empty() {
            return Ok(());
        }
        const OP: &str = "queue webhook deliveries";
        const T: &str = "webhook_deliveries";
        let mut conn = self.conn();
        let tx = write_tx(&mut conn, OP, T)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO webhook_deliveries (webhook, alert, change, payload, status, attempts, next_attempt, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, 'pending', 0, ?5, ?5, ?5)",
                )
                .map_err(db(OP, T))?;
            for d in batch {
                let at = to_micros(&d.created_at);
                stmt.execute((&d.webhook, &d.alert, &d.change, json_text(&d.payload), at)).map_err(db(OP, T))?;
            }
        }
        tx.commit().map_err(db(OP, T))?;
        Ok(())
    }

    fn due_deliveries(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Delivery>, StateError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE status = 'pending' AND next_attempt <= ?1 ORDER BY next_attempt, id LIMIT ?2"
        );
        query_all(
            &self.conn(),
            &sql,
            (to_micros(&now), sql_count(limit)),
            "read due webhook deliveries",
            "webhook_deliveries",
            delivery_raw,
            delivery_row,
        )
    }

    fn record_delivery_attempt(&self, id: i64, attempt: &DeliveryAttempt) -> Result<(), StateError> {
        let (status, next) = attempt_outcome(attempt);
        let n = self
            .conn()
            .execute(
                "UPDATE webhook_deliveries SET status = ?2, attempts = attempts + 1, next_attempt = ?3, last_status = ?4, \
                 last_error = ?5, updated_at = ?6 WHERE id = ?1",
                (id, status, to_micros(&next), attempt.status.map(i64::from), &attempt.error, to_micros(&attempt.at)),
            )
            .map_err(db("record a webhook delivery attempt", "webhook_deliveries"))?;
        if n == 0 {
            return Err(StateError::NotFound { table: "webhook_deliveries", id: id.to_string() });
        }
        Ok(())
    }

    fn list_deliveries(&self, webhook: Option<&str>, status: Option<&str>, page: &PageRequest) -> Result<Page<Delivery>, StateError> {
        const T: &str = "webhook_deliveries";
        let limit = page_limit(T, page)?;
        let mut clauses = Vec::new();
        let mut values: Vec<SqlValue> = Vec::new();
        if let Some(cursor) = page.after.as_deref() {
            let before = decode_number_cursor(T, "dlv", cursor)?;
            values.push(SqlValue::Integer(before));
            clauses.push(format!("id < ?{}", values.len()));
        }
        if let Some(w) = webhook {
            values.push(SqlValue::Text(w.into()));
            clauses.push(format!("webhook = ?{}", values.len()));
        }
        if let Some(s) = status {
            values.push(SqlValue::Text(s.into()));
            clauses.push(format!("status = ?{}", values.len()));
        }
        values.push(SqlValue::Integer(fetch_limit(limit)));
        let filter = if clauses.is_empty() { String::new() } else { format!("WHERE {}", clauses.join(" AND ")) };
        let sql = format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries {filter} ORDER BY id DESC LIMIT ?{}", values.len());
        let items = query_all(&self.conn(), &sql, params_from_iter(values.iter()), "list webhook deliveries", T, delivery_raw, delivery_row)?;
        Ok(paginate(items, limit, "dlv", |d| d.id.to_string()))
    }

    fn replay_delivery(&self, id: i64, now: DateTime<Utc>) -> Result<Delivery, StateError> {
        const T: &str = "webhook_deliveries";
        let conn = self.conn();
        let n = conn
            .execute(
                "UPDATE webhook_deliveries SET status = 'pending', next_attempt = ?2, updated_at = ?2 WHERE id = ?1",
                (id, to_micros(&now)),
            )
            .map_err(db("replay a webhook delivery", T))?;
        if n == 0 {
            return Err(StateError::NotFound { table: T, id: id.to_string() });
        }
        let sql = format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = ?1");
        let mut rows = query_all(&conn, &sql, [id], "read a webhook delivery", T, delivery_raw, delivery_row)?;
        rows.pop().ok_or_else(|| StateError::NotFound { table: T, id: id.to_string() })
    }

    fn insert_dead_letters(&self, batch: &[NewDeadLetter]) -> Result<DeadLetterInsert, StateError> {
        for (i, d) in batch.iter().enumerate() {
            check_dead_letter(d, i, batch.len())?;
        }
        if batch.is_empty() {
            return Ok(DeadLetterInsert::default());
        }
        const OP: &str = "insert dead letters";
        let mut conn = self.conn();
        let tx = write_tx(&mut conn, OP, "dead_letters")?;
        let mut ids = Vec::with_capacity(batch.len());
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO dead_letters \
                     (received_at, channel, origin, line, field, reason, raw) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(db(OP, "dead_letters"))?;
            for d in batch {
                stmt.execute(params![
                    to_micros(&d.received_at),
                    d.channel.as_str(),
                    d.origin,
                    d.line.map(|l| l as i64),
                    d.field,
                    d.reason,
                    d.raw
                ])
                .map_err(db(OP, "dead_letters"))?;
                ids.push(tx.last_insert_rowid());
            }
        }
        let pruned = prune_dead_letters_in(&tx, self.options.dead_letter_max_rows)?;
        tx.commit().map_err(db(OP, "dead_letters"))?;
        if pruned > 0 {
            debug!(
                pruned,
                limit = self.options.dead_letter_max_rows,
                "Oldest dead letters pruned to stay within the limit."
            );
        }
        Ok(DeadLetterInsert { ids, pruned })
    }

    fn list_dead_letters(
        &self,
        filter: &DeadLetterFilter,
        page: &PageRequest,
    ) -> Result<Page<DeadLetter>, StateError> {
        let limit = page_limit("dead_letters", page)?;
        let before = page
            .after
            .as_deref()
            .map(|c| decode_number_cursor("dead_letters", "dl", c))
            .transpose()?;
        let (filter_sql, mut values) = dead_letter_where(filter, before);
        values.push(SqlValue::Integer(fetch_limit(limit)));
        let sql = format!(
            "SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters {filter_sql} \
             ORDER BY id DESC LIMIT ?{}",
            values.len()
        );
        let items = query_all(
            &self.conn(),
            &sql,
            params_from_iter(values.iter()),
            "list dead letters",
            "dead_letters",
            dead_letter_raw,
            dead_letter_row,
        )?;
        Ok(paginate(items, limit, "dl", |d| d.id.to_string()))
    }

    fn dead_letter(&self, id: i64) -> Result<Option<DeadLetter>, StateError> {
        let sql = format!("SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE id = ?1");
        let mut rows = query_all(
            &self.conn(),
            &sql,
            [id],
            "read a dead letter",
            "dead_letters",
            dead_letter_raw,
            dead_letter_row,
        )?;
        Ok(rows.pop())
    }

    fn mark_resubmitted(&self, ids: &[i64], at: DateTime<Utc>) -> Result<usize, StateError> {
        let mut unique = ids.to_vec();
        unique.sort_unstable();
        unique.dedup();
        if unique.is_empty() {
            return Ok(0);
        }
        const OP: &str = "mark dead letters re-submitted";
        let mut conn = self.conn();
        let tx = write_tx(&mut conn, OP, "dead_letters")?;
        {
            let mut stmt = tx
                .prepare_cached("UPDATE dead_letters SET resubmitted_at = ?1 WHERE id = ?2")
                .map_err(db(OP, "dead_letters"))?;
            for id in &unique {
                if stmt
                    .execute(params![to_micros(&at), id])
                    .map_err(db(OP, "dead_letters"))?
                    == 0
                {
                    return Err(StateError::NotFound {
                        table: "dead_letters",
                        id: id.to_string(),
                    });
                }
            }
        }
        tx.commit().map_err(db(OP, "dead_letters"))?;
        Ok(unique.len())
    }

    fn count_dead_letters(&self, filter: &DeadLetterFilter) -> Result<u64, StateError> {
        let (filter_sql, values) = dead_letter_where(filter, None);
        let sql = format!("SELECT COUNT(*) FROM dead_letters {filter_sql}");
        let n: i64 = self
            .conn()
            .prepare_cached(&sql)
            .and_then(|mut stmt| stmt.query_row(params_from_iter(values.iter()), |r| r.get(0)))
            .map_err(db("count dead letters", "dead_letters"))?;
        Ok(n as u64)
    }

    fn prune_dead_letters(&self, keep: u64) -> Result<u64, StateError> {
        let pruned = prune_dead_letters_in(&self.conn(), keep)?;
        if pruned > 0 {
            debug!(pruned, keep, "Dead letters pruned.");
        }
        Ok(pruned)
    }

    fn dead_letter_limit(&self) -> u64 {
        self.options.dead_letter_max_rows
    }

    fn create_user(
        &self,
        username: &str,
        password_hash: &str,
        role: &str,
        unit: Option<&str>,
    ) -> Result<UserRow, StateError> {
        check_user(username, password_hash, role, unit)?;
        let created_at = stored_time(Utc::now());
        let n = self
            .conn()
            .prepare_cached(
                "INSERT INTO users (username, password_hash, role, unit, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (username) DO NOTHING",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    username,
                    password_hash,
                    role,
                    unit,
                    to_micros(&created_at)
                ])
            })
            .map_err(db("create a user", "users"))?;
        if n == 0 {
            return Err(StateError::Conflict {
                table: "users",
                id: username.into(),
                reason: "already exists; choose another username".into(),
            });
        }
        info!(username, role, "User created.");
        Ok(UserRow {
            username: username.into(),
            password_hash: password_hash.into(),
            role: role.into(),
            unit: unit.map(str::to_string),
            created_at,
            supervisor: false,
        })
    }

    fn user(&self, username: &str) -> Result<Option<UserRow>, StateError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username = ?1");
        let mut rows = query_all(
            &self.conn(),
            &sql,
            [username],
            "read a user",
            "users",
            user_raw,
            user_row,
        )?;
        Ok(rows.pop())
    }

    fn list_users(&self) -> Result<Vec<UserRow>, StateError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY username");
        query_all(
            &self.conn(),
            &sql,
            [],
            "list users",
            "users",
            user_raw,
            user_row,
        )
    }

    fn create_session(
        &self,
        token_hash: &str,
        username: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        check_token_hash(token_hash)?;
        const OP: &str = "create a session";
        let mut conn = self.conn();
        let tx = write_tx(&mut conn, OP, "sessions")?;
        let exists = tx
            .query_row(
                "SELECT 1 FROM users WHERE username = ?1",
                [username],
                |_| Ok(()),
            )
            .optional()
            .map_err(db(OP, "users"))?
            .is_some();
        if !exists {
            return Err(StateError::NotFound {
                table: "users",
                id: username.into(),
            });
        }
        let n = tx
            .execute(
                "INSERT INTO sessions (token_hash, username, created_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (token_hash) DO NOTHING",
                params![
                    token_hash,
                    username,
                    to_micros(&Utc::now()),
                    to_micros(&expires_at)
                ],
            )
            .map_err(db(OP, "sessions"))?;
        if n == 0 {
            return Err(StateError::Conflict {
                table: "sessions",
                id: hash_prefix(token_hash),
                reason: "is already in use; generate a new random token".into(),
            });
        }
        tx.commit().map_err(db(OP, "sessions"))?;
        Ok(())
    }

    fn session(&self, token_hash: &str, now: DateTime<Utc>) -> Result<Option<UserRow>, StateError> {
        let mut rows = query_all(
            &self.conn(),
            "SELECT u.username, u.password_hash, u.role, u.unit, u.created_at, u.supervisor \
             FROM sessions s JOIN users u ON u.username = s.username \
             WHERE s.token_hash = ?1 AND s.expires_at > ?2",
            params![token_hash, to_micros(&now)],
            "read a session",
            "sessions",
            user_raw,
            user_row,
        )?;
        Ok(rows.pop())
    }

    fn delete_session(&self, token_hash: &str) -> Result<bool, StateError> {
        let n = self
            .conn()
            .prepare_cached("DELETE FROM sessions WHERE token_hash = ?1")
            .and_then(|mut stmt| stmt.execute([token_hash]))
            .map_err(db("delete a session", "sessions"))?;
        Ok(n > 0)
    }

    fn purge_expired_sessions(&self, now: DateTime<Utc>) -> Result<u64, StateError> {
        let n = self
            .conn()
            .prepare_cached("DELETE FROM sessions WHERE expires_at <= ?1")
            .and_then(|mut stmt| stmt.execute([to_micros(&now)]))
            .map_err(db("purge expired sessions", "sessions"))?;
        if n > 0 {
            debug!(purged = n, "Expired sessions purged.");
        }
        Ok(n as u64)
    }

    fn list_sessions(&self, username: &str) -> Result<Vec<SessionRow>, StateError> {
        query_all(
            &self.conn(),
            "SELECT token_hash, username, created_at, expires_at FROM sessions WHERE username = ?1 ORDER BY created_at DESC, token_hash",
            [username],
            "list sessions",
            "sessions",
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            session_row,
        )
    }
    fn append_audit(&self, entry: &NewAuditEntry, at: DateTime<Utc>) -> Result<AuditEntry, StateError> {
        const OP: &str = "append to the audit log";
        const T: &str = "audit_log";
        let mut conn = self.conn();
        let tx = write_tx(&mut conn, OP, T)?;
        let stored = append_audit_in(&tx, entry, at)?;
        tx.commit().map_err(db(OP, T))?;
        Ok(stored)
    }

    fn prune_audit(&self, before: DateTime<Utc>, actor: &str, at: DateTime<Utc>) -> Result<Option<AuditStart>, StateError> {
        const OP: &str = "prune the audit log";
        const T: &str = "audit_log";
        let earlier = self.audit_start()?;
        let mut conn = self.conn();
        let tx = write_tx(&mut conn, OP, T)?;
        // The last entry written before `before`, short of the newest (which the next entry
        // chains to).
        let last_doomed: Option<(i64, String)> = tx
            .query_row(
                "SELECT seq, hash FROM audit_log WHERE at < ?1 AND seq < (SELECT MAX(seq) FROM audit_log) \
                 ORDER BY seq DESC LIMIT 1",
                [to_micros(&before)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db(OP, T))?;
        let Some((last_seq, last_hash)) = last_doomed else { return Ok(None) };
        let deleted = tx.execute("DELETE FROM audit_log WHERE seq <= ?1", [last_seq]).map_err(db(OP, T))? as u64;
        let start = AuditStart {
            seq: last_seq + 1,
            prev_hash: last_hash,
            deleted: earlier.map_or(0, |s| s.deleted) + deleted,
            before,
        };
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (AUDIT_START_KEY, audit_start_text(&start)),
        )
        .map_err(db(OP, "meta"))?;
        append_audit_in(&tx, &prune_record(actor, &start, deleted), at)?;
        tx.commit().map_err(db(OP, T))?;
        Ok(Some(start))
    }

    fn prune_alerts(&self, before: DateTime<Utc>, statuses: &[&str]) -> Result<u64, StateError> {
        const OP: &str = "prune";
        let statuses = serde_json::to_string(statuses).expect("strings serialize");
        let params = (to_micros(&before), statuses);
        let doomed = "SELECT id FROM alerts WHERE updated_at < ?1 AND status IN (SELECT value FROM json_each(?2))";
        let mut conn = self.conn();
        let tx = write_tx(&mut conn, OP, "alerts")?;
        // The alert's scope rows and finished webhook deliveries go with it.
        tx.execute(&format!("DELETE FROM alert_scopes WHERE alert IN ({doomed})"), params.clone())
            .map_err(db(OP, "alert_scopes"))?;
        tx.execute(&format!("DELETE FROM webhook_deliveries WHERE status <> 'pending' AND alert IN ({doomed})"), params.clone())
            .map_err(db(OP, "webhook_deliveries"))?;
        let deleted = tx.execute(&format!("DELETE FROM alerts WHERE id IN ({doomed})"), params).map_err(db(OP, "alerts"))?;
        tx.commit().map_err(db(OP, "alerts"))?;
        Ok(deleted as u64)
    }

    fn list_audit(&self, actor: Option<&str>, action: Option<&str>, page: &PageRequest) -> Result<Page<AuditEntry>, StateError> {
        const T: &str = "audit_log";
        let limit = page_limit(T, page)?;
        let mut clauses = Vec::new();
        let mut values: Vec<SqlValue> = Vec::new();
        if let Some(cursor) = page.after.as_deref() {
            let before = decode_number_cursor(T, "aud", cursor)?;
            values.push(SqlValue::Integer(before));
            clauses.push(format!("seq < ?{}", values.len()));
        }
        if let Some(a) = actor {
            values.push(SqlValue::Text(a.into()));
            clauses.push(format!("actor = ?{}", values.len()));
        }
        if let Some(a) = action {
            values.push(SqlValue::Text(a.into()));
            clauses.push(format!("substr(action, 1, length(?{n})) = ?{n}", n = values.len()));
        }
        values.push(SqlValue::Integer(fetch_limit(limit)));
        let filter = if clauses.is_empty() { String::new() } else { format!("WHERE {}", clauses.join(" AND ")) };
        let sql = format!(
            "SELECT seq, at, actor, action, target, detail, prev_hash, hash FROM audit_log {filter} ORDER BY seq DESC LIMIT ?{}",
            values.len()
        );
        let items = query_all(
            &self.conn(),
            &sql,
            params_from_iter(values.iter()),
            "read the audit log",
            T,
            audit_raw,
            audit_row,
        )?;
        Ok(paginate(items, limit, "aud", |e| e.seq.to_string()))
    }

    fn audit_after(&self, after: i64, limit: usize) -> Result<Vec<AuditEntry>, StateError> {
        const T: &str = "audit_log";
        query_all(
            &self.conn(),
            "SELECT seq, at, actor, action, target, detail, prev_hash, hash FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            (after, sql_count(limit)),
            "read the audit log",
            T,
            audit_raw,
            audit_row,
        )
    }

    fn set_supervisor(&self, username: &str, supervisor: bool) -> Result<(), StateError> {
        let n = self
            .conn()
            .execute("UPDATE users SET supervisor = ?2 WHERE username = ?1", (username, supervisor))
            .map_err(db("mark a supervisor", "users"))?;
        if n == 0 {
            return Err(StateError::NotFound { table: "users", id: username.into() });
        }
        Ok(())
    }

    fn add_search_approval(&self, approval: &SearchApproval) -> Result<(), StateError> {
        const T: &str = "search_approvals";
        check_id(T, "a search approval", "id", &approval.id)?;
        let body = approval_body(approval)?;
        let n = self
            .conn()
            .execute(
                "INSERT INTO search_approvals (id, requested_by, status, requested_at, body) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (id) DO NOTHING",
                (&approval.id, &approval.requested_by, &approval.status, to_micros(&approval.requested_at), body),
            )
            .map_err(db("store a search approval request", T))?;
        if n == 0 {
            return Err(StateError::Conflict { table: T, id: approval.id.clone(), reason: "already exists".into() });
        }
        Ok(())
    }

    fn search_approval(&self, id: &str) -> Result<Option<SearchApproval>, StateError> {
        let mut rows = query_all(
            &self.conn(),
            "SELECT id, body FROM search_approvals WHERE id = ?1",
            [id],
            "read a search approval request",
            "search_approvals",
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
            approval_row,
        )?;
        Ok(rows.pop())
    }

    fn list_search_approvals(&self, status: Option<&str>, requested_by: Option<&str>, page: &PageRequest) -> Result<Page<SearchApproval>, StateError> {
        const T: &str = "search_approvals";
        let limit = page_limit(T, page)?;
        let mut clauses = Vec::new();
        let mut values: Vec<SqlValue> = Vec::new();
        if let Some(cursor) = page.after.as_deref() {
            let (at, id) = decode_approval_cursor(cursor)?;
            values.push(SqlValue::Integer(at));
            values.push(SqlValue::Text(id));
            clauses.push(format!("(requested_at < ?{a} OR (requested_at = ?{a} AND id > ?{b}))", a = values.len() - 1, b = values.len()));
        }
        if let Some(s) = status {
            values.push(SqlValue::Text(s.into()));
            clauses.push(format!("status = ?{}", values.len()));
        }
        if let Some(u) = requested_by {
            values.push(SqlValue::Text(u.into()));
            clauses.push(format!("requested_by = ?{}", values.len()));
        }
        values.push(SqlValue::Integer(fetch_limit(limit)));
        let filter = if clauses.is_empty() { String::new() } else { format!("WHERE {}", clauses.join(" AND ")) };
        let sql = format!("SELECT id, body FROM search_approvals {filter} ORDER BY requested_at DESC, id LIMIT ?{}", values.len());
        let items = query_all(
            &self.conn(),
            &sql,
            params_from_iter(values.iter()),
            "list search approval requests",
            T,
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
            approval_row,
        )?;
        Ok(paginate(items, limit, "sa", approval_cursor_key))
    }

    fn decide_search_approval(&self, id: &str, status: &str, decided_by: &str, at: DateTime<Utc>, note: &str) -> Result<SearchApproval, StateError> {
        const OP: &str = "decide a search approval request";
        const T: &str = "search_approvals";
        check_decision(id, status)?;
        let mut conn = self.conn();
        let tx = write_tx(&mut conn, OP, T)?;
        let body: Option<String> = tx
            .query_row("SELECT body FROM search_approvals WHERE id = ?1", [id], |r| r.get(0))
            .optional()
            .map_err(db(OP, T))?;
        let Some(body) = body else {
            return Err(StateError::NotFound { table: T, id: id.into() });
        };
        let approval = apply_decision(approval_row((id.to_string(), body))?, status, decided_by, at, note)?;
        let body = approval_body(&approval)?;
        tx.execute("UPDATE search_approvals SET status = ?2, body = ?3 WHERE id = ?1", (id, status, body)).map_err(db(OP, T))?;
        tx.commit().map_err(db(OP, T))?;
        Ok(approval)
    }
}

