//! [`PgState`]: the state backend on a PostgreSQL server, for several nodes or processes
//! that share one state.
//!
//! Each store lives in one schema of one database (`connect(url, schema, …)`): several
//! cityward deployments, or the tests, can share a database without seeing each other. A
//! small pool of connections ([`PgState::POOL_SIZE`]) serves the calls; every connection's
//! `search_path` is that schema alone, so the statements name bare tables. A connection that
//! broke (server restart, network) is dropped and replaced; a read that failed on it is
//! tried once more on a fresh one, and so is a write that had not reached `COMMIT`.
//!
//! The client is the synchronous `postgres` crate without TLS: put the server on a trusted
//! network or a local socket. It runs its own small runtime per connection, which panics
//! when entered from a thread that runs async tasks; so every use of a connection (and
//! [`PgState::connect`], and closing the connections on drop) goes through [`off_runtime`],
//! which moves the blocking work off such a thread. A call from async code is therefore
//! safe, but it still blocks: callers should prefer `spawn_blocking`, as the trait says.
//!
//! The stored forms match the SQLite backend's, so both answer alike:
//! - times are `BIGINT` microseconds since 1970 (exactly what a [`DateTime`] rounds to);
//! - JSON is `TEXT` as serialized, not `jsonb`, so it reads back byte for byte (the audit
//!   chain hashes stored fields);
//! - ids and other keys are `TEXT COLLATE "C"`, ordered by their UTF-8 bytes like Rust's
//!   `str` (the database must be UTF-8, which [`PgState::connect`] checks);
//! - PostgreSQL text cannot hold NUL (`\0`): a dead letter's raw record is kept as `BYTEA`
//!   so that a rejected record is never refused again, a NUL in its origin, field or reason
//!   is stored as U+FFFD, and a NUL anywhere else is refused as invalid input.
//!
//! Writes run in one transaction each. Batches are sent as arrays (`unnest`), a few
//! thousand rows per statement, so a 20 000-device upsert is a handful of round trips. The
//! tables that a write reads before it appends (the audit chain, routing versions, a layer,
//! the units) are locked `IN EXCLUSIVE MODE` for that transaction, which queues concurrent
//! writers, from any process, behind each other while readers go on; a rule is locked by
//! its row. A deadlock or serialization failure reported by the server is retried.
//!
//! Schema changes are numbered migrations in [`MIGRATIONS`], with the same numbers as the
//! SQLite backend's, and the version reached is `schema_version` in `meta`. Each step runs
//! in its own transaction (PostgreSQL's DDL is transactional) under an advisory lock on the
//! schema's name, so processes starting together migrate once.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ::postgres::error::SqlState;
use ::postgres::types::ToSql;
use ::postgres::{Client, Config, GenericClient, NoTls, Row, Statement, Transaction};
use chrono::{DateTime, Utc};
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
    AlertRow, AuditEntry, AuditRaw, AuditStart, BoxError, DeadLetter, DeadLetterFilter,
    DeadLetterInsert, Delivery, DeliveryAttempt, DeliveryRaw, DeviceRaw, DeviceRow, FeatureRow,
    Layer, NewAuditEntry, NewDeadLetter, NewDelivery, Page, PageRequest, RoutingRaw,
    RoutingVersion, RulePut, RuleRaw, RuleRow, SearchApproval, SessionRaw, SessionRow,
    StateError, StateOptions, StateStore, UnitRow, UserRaw, UserRow, AUDIT_START_KEY,
    SCHEMA_VERSION, SCHEMA_VERSION_KEY,
};

/// One schema step: the statements that take the schema from the version before to
/// `version`.
struct Migration {
    version: i64,
    sql: &'static str,
}

/// Every schema step, in order. Never edit a released step: add a new one, numbered like
/// the SQLite backend's step that makes the same change.
///
/// The first step creates at once what SQLite's steps 1 to 4 built one after the other, so
/// a PostgreSQL schema starts at version 4.
const MIGRATIONS: &[Migration] = &[Migration {
    version: 4,
    sql: r#"
CREATE TABLE features (
    layer      TEXT COLLATE "C" NOT NULL,
    id         TEXT COLLATE "C" NOT NULL,
    seq        BIGINT           NOT NULL,
    properties TEXT             NOT NULL,
    geometry   TEXT             NOT NULL,
    PRIMARY KEY (layer, id)
);
CREATE INDEX features_layer_seq ON features (layer, seq);

CREATE TABLE devices (
    id            TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    kind          TEXT COLLATE "C" NOT NULL,
    lon           DOUBLE PRECISION NOT NULL,
    lat           DOUBLE PRECISION NOT NULL,
    grid          TEXT COLLATE "C",
    owner_unit    TEXT COLLATE "C",
    attrs         TEXT             NOT NULL,
    registered_at BIGINT           NOT NULL
);
CREATE INDEX devices_grid ON devices (grid);

CREATE TABLE units (
    id          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name        TEXT             NOT NULL,
    kind        TEXT COLLATE "C" NOT NULL,
    region      TEXT COLLATE "C",
    parent_unit TEXT COLLATE "C"
);

CREATE TABLE rules (
    id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    body       TEXT             NOT NULL,
    enabled    BOOLEAN          NOT NULL,
    version    BIGINT           NOT NULL,
    updated_at BIGINT           NOT NULL,
    updated_by TEXT COLLATE "C" NOT NULL
);

CREATE TABLE alerts (
    id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    rule       TEXT COLLATE "C" NOT NULL,
    "key"      TEXT COLLATE "C" NOT NULL,
    status     TEXT COLLATE "C" NOT NULL,
    severity   TEXT COLLATE "C" NOT NULL,
    category   TEXT COLLATE "C" NOT NULL,
    time       BIGINT           NOT NULL,
    grid       TEXT COLLATE "C",
    body       TEXT             NOT NULL,
    updated_at BIGINT           NOT NULL,
    scopes     TEXT             NOT NULL DEFAULT '[]',
    class      TEXT COLLATE "C" NOT NULL DEFAULT 'incident',
    incident   TEXT COLLATE "C"
);
CREATE INDEX alerts_time ON alerts (time DESC, id DESC);
CREATE INDEX alerts_status_time ON alerts (status, time DESC, id DESC);
CREATE INDEX alerts_incident ON alerts (incident) WHERE incident IS NOT NULL;

-- Scope rows keyed by the alert's time within each scope: a new alert's rows go at the
-- end of its scopes' ranges.
CREATE TABLE alert_scopes (
    scope TEXT COLLATE "C" NOT NULL,
    time  BIGINT           NOT NULL,
    alert TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (scope, time, alert)
);

CREATE TABLE webhook_deliveries (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook      TEXT COLLATE "C" NOT NULL,
    alert        TEXT COLLATE "C" NOT NULL,
    change       TEXT COLLATE "C" NOT NULL,
    payload      TEXT             NOT NULL,
    status       TEXT COLLATE "C" NOT NULL,
    attempts     BIGINT           NOT NULL,
    next_attempt BIGINT           NOT NULL,
    last_status  BIGINT,
    last_error   TEXT,
    created_at   BIGINT           NOT NULL,
    updated_at   BIGINT           NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook, id);

CREATE TABLE dead_letters (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at    BIGINT           NOT NULL,
    channel        TEXT COLLATE "C" NOT NULL,
    origin         TEXT             NOT NULL,
    line           BIGINT,
    field          TEXT,
    reason         TEXT             NOT NULL,
    raw            BYTEA            NOT NULL,
    resubmitted_at BIGINT
);
CREATE INDEX dead_letters_received_at ON dead_letters (received_at);

CREATE TABLE users (
    username      TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    password_hash TEXT             NOT NULL,
    role          TEXT COLLATE "C" NOT NULL,
    unit          TEXT COLLATE "C",
    created_at    BIGINT           NOT NULL,
    supervisor    BOOLEAN          NOT NULL DEFAULT FALSE
);

CREATE TABLE sessions (
    token_hash TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    username   TEXT COLLATE "C" NOT NULL REFERENCES users (username) ON DELETE CASCADE,
    created_at BIGINT           NOT NULL,
    expires_at BIGINT           NOT NULL
);
CREATE INDEX sessions_expires_at ON sessions (expires_at);
CREATE INDEX sessions_username ON sessions (username);

CREATE TABLE audit_log (
    seq       BIGINT           NOT NULL PRIMARY KEY,
    at        BIGINT           NOT NULL,
    actor     TEXT COLLATE "C" NOT NULL,
    action    TEXT COLLATE "C" NOT NULL,
    target    TEXT             NOT NULL,
    detail    TEXT             NOT NULL,
    prev_hash TEXT             NOT NULL,
    hash      TEXT             NOT NULL
);
CREATE INDEX audit_log_actor ON audit_log (actor, seq);

CREATE TABLE routing_versions (
    version    BIGINT           NOT NULL PRIMARY KEY,
    body       TEXT             NOT NULL,
    changed_at BIGINT           NOT NULL,
    changed_by TEXT COLLATE "C" NOT NULL,
    note       TEXT             NOT NULL
);

CREATE TABLE search_approvals (
    id           TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    requested_by TEXT COLLATE "C" NOT NULL,
    status       TEXT COLLATE "C" NOT NULL,
    requested_at BIGINT           NOT NULL,
    body         TEXT             NOT NULL
);
CREATE INDEX search_approvals_by_time ON search_approvals (requested_at DESC, id);
"#,
}, Migration {
    // Alerts changed since a time (`AlertFilter::updated_since`), and alert retention.
    version: 5,
    sql: r#"
CREATE INDEX alerts_updated_at ON alerts (updated_at);
"#,
}];

/// The first key of the advisory lock that serializes migrations of one schema (the second
/// is a hash of the schema's name): "cwst" in ASCII.
const MIGRATION_LOCK: i32 = 0x6377_7374;

/// Rows per statement when a batch is sent as arrays.
const CHUNK: usize = 2_000;

/// How long a call waits for a free connection before it reports the store unavailable.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection idle for longer than this is checked with a round trip before it is used.
const IDLE_CHECK_AFTER: Duration = Duration::from_secs(30);

/// How long connecting to the server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Prepared statements kept per connection; the cache starts over when full.
const STATEMENT_CACHE: usize = 256;

/// How often a write is tried again after the server reported a deadlock or a
/// serialization failure.
const CONFLICT_RETRIES: usize = 3;

const DEVICE_COLUMNS: &str = "id, kind, lon, lat, grid, owner_unit, attrs, registered_at";
const RULE_COLUMNS: &str = "id, body, enabled, version, updated_at, updated_by";
const ALERT_COLUMNS: &str =
    r#"id, rule, "key", status, severity, category, time, grid, body, updated_at, scopes, class, incident"#;
const DEAD_LETTER_COLUMNS: &str =
    "id, received_at, channel, origin, line, field, reason, raw, resubmitted_at";
const DELIVERY_COLUMNS: &str =
    "id, webhook, alert, change, payload, status, attempts, next_attempt, last_status, last_error, created_at, updated_at";
const USER_COLUMNS: &str = "username, password_hash, role, unit, created_at, supervisor";
const AUDIT_COLUMNS: &str = "seq, at, actor, action, target, detail, prev_hash, hash";

/// The state store on a PostgreSQL server: one schema of one database, a pool of
/// [`PgState::POOL_SIZE`] connections, the schema migrated on connect.
///
/// Several processes may connect to the same schema at once: they share one state, and
/// the audit chain, versions and id sequences stay consistent across them.
pub struct PgState {
    pool: Pool,
    /// The server and database, without the password, for messages.
    url: String,
    options: StateOptions,
}

impl std::fmt::Debug for PgState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgState")
            .field("url", &self.url)
            .field("schema", &self.pool.schema)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl PgState {
    /// The newest schema version this build creates and understands (the same number as
    /// [`SqliteState::SCHEMA_VERSION`](super::SqliteState::SCHEMA_VERSION)).
    pub const SCHEMA_VERSION: i64 = SCHEMA_VERSION;

    /// The most connections one store keeps open.
    pub const POOL_SIZE: usize = 4;

    /// Connects to the server at `url` (`postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE`,
    /// or `host=… user=… dbname=…`), creates `schema` if it is missing and migrates it to
    /// [`PgState::SCHEMA_VERSION`].
    ///
    /// `schema` is a plain lowercase SQL name (`[a-z_][a-z0-9_]*`, at most 63 bytes), used
    /// as every connection's `search_path`. The connection is not encrypted (no TLS). An
    /// error names the server without its password, the cause, and what to do. Blocks
    /// (safely, also on an async runtime's thread; prefer `spawn_blocking` there).
    pub fn connect(url: &str, schema: &str, options: StateOptions) -> Result<PgState, StateError> {
        off_runtime(|| Self::connect_now(url, schema, options))
    }

    fn connect_now(url: &str, schema: &str, options: StateOptions) -> Result<PgState, StateError> {
        options.validate()?;
        check_schema_name(schema)?;
        let mut config: Config = url.parse().map_err(|e: ::postgres::Error| StateError::Connect {
            url: redact_url(url),
            hint: "write it as postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE in [state] url"
                .into(),
            source: pg(e),
        })?;
        if config.get_application_name().is_none() {
            config.application_name("cityward");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let url = describe(&config);
        let pool = Pool {
            config,
            url: url.clone(),
            schema: schema.to_string(),
            state: Mutex::new(PoolState { idle: Vec::new(), open: 0, broken_at: None }),
            freed: Condvar::new(),
        };
        let mut first = pool.open()?;
        let version = migrate(&mut first.client, &pool)?;
        {
            let mut state = pool.lock();
            state.open += 1;
            state.idle.push(first);
        }
        info!(url = %url, schema, schema_version = version, "State database connected.");
        Ok(PgState { pool, url, options })
    }

    /// The server and database connected to, without the password.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The schema that holds this store's tables.
    pub fn schema(&self) -> &str {
        &self.pool.schema
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StateOptions {
        &self.options
    }

    /// Runs `body` on a pooled connection outside a transaction: reads only. A read that
    /// failed because the connection broke is tried once more on a fresh connection. Runs
    /// through [`off_runtime`], as every use of a connection must.
    fn read<T: Send>(
        &self,
        op: &'static str,
        table: &'static str,
        mut body: impl FnMut(&mut Db<'_, Client>) -> Result<T, StateError> + Send,
    ) -> Result<T, StateError> {
        off_runtime(|| {
            let mut broken = 0;
            loop {
                let mut lease = self.pool.get(op, table)?;
                let conn = lease.conn();
                let result = body(&mut Db { c: &mut conn.client, statements: &mut conn.statements, op, table });
                lease.broken = conn.client.is_closed() || result.as_ref().is_err_and(is_connection_lost);
                match result {
                    Err(e) if broken == 0 && lease.broken => {
                        debug!(op, error = %e, "A state database connection broke; reading again on a new one.");
                        broken += 1;
                    }
                    other => return other,
                }
            }
        })
    }

    /// Runs `body` in a transaction on a pooled connection and commits. A deadlock or
    /// serialization failure is retried, and so is a broken connection before `COMMIT` was
    /// sent (the server rolled the transaction back). Runs through [`off_runtime`].
    fn write<T: Send>(
        &self,
        op: &'static str,
        table: &'static str,
        mut body: impl FnMut(&mut Db<'_, Transaction<'_>>) -> Result<T, StateError> + Send,
    ) -> Result<T, StateError> {
        off_runtime(|| {
            let (mut broken, mut conflicts) = (0, 0);
            loop {
                let mut lease = self.pool.get(op, table)?;
                let conn = lease.conn();
                let mut committing = false;
                let result = (|| {
                    let mut tx = conn.client.transaction().map_err(db(op, table))?;
                    let value = body(&mut Db { c: &mut tx, statements: &mut conn.statements, op, table })?;
                    committing = true;
                    tx.commit().map_err(db(op, table))?;
                    Ok(value)
                })();
                lease.broken = conn.client.is_closed() || result.as_ref().is_err_and(is_connection_lost);
                match result {
                    Err(e) if !committing && broken == 0 && lease.broken => {
                        debug!(op, error = %e, "A state database connection broke; writing again on a new one.");
                        broken += 1;
                    }
                    Err(e) if conflicts < CONFLICT_RETRIES && is_transient_conflict(&e) => {
                        conflicts += 1;
                        debug!(op, attempt = conflicts, error = %e, "A state write clashed with another; trying again.");
                        std::thread::sleep(Duration::from_millis(5 * conflicts as u64));
                    }
                    other => return other,
                }
            }
        })
    }
}

/// Runs `work`, which blocks on the client's per-connection runtime, so that it cannot
/// panic with "Cannot start a runtime from within a runtime" (nor "Cannot drop a runtime
/// in a context where blocking is not allowed", when a connection closes):
/// - outside any tokio runtime, or on a `spawn_blocking` thread, it runs as it is;
/// - on a multi-thread runtime it runs under `block_in_place`, which hands the worker's
///   other tasks to another thread and lets this one block;
/// - on a current-thread runtime (or another flavour) nothing may block in place, so it
///   runs on a scoped thread of its own while the caller waits; the runtime's other tasks
///   wait too, as behind any blocking call.
///
/// A panic in `work` is passed on to the caller.
pub(super) fn off_runtime<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|runtime| runtime.runtime_flavor()) {
        Err(_) => work(),
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        Ok(_) => std::thread::scope(|scope| {
            scope.spawn(work).join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        }),
    }
}

/// Checks a schema name: a plain lowercase SQL identifier that needs no quoting.
fn check_schema_name(schema: &str) -> Result<(), StateError> {
    let valid = !schema.is_empty()
        && schema.len() <= 63
        && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && schema.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !schema.starts_with("pg_");
    if valid {
        return Ok(());
    }
    Err(StateError::InvalidInput {
        table: "options",
        what: "the PostgreSQL schema of the state store".into(),
        field: "schema",
        reason: format!(
            "`{schema}` is not a plain schema name; use 1 to 63 lowercase letters, digits and \
             underscores, starting with a letter or underscore and not with pg_ (e.g. cityward)"
        ),
    })
}

/// The server(s) and database of `config` as a URL without the password.
fn describe(config: &Config) -> String {
    let user = config.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    let db = config.get_dbname().unwrap_or("");
    format!("postgresql://{user}{}/{db}", hosts(config))
}

/// `host:port` of every server of `config`, comma-separated.
fn hosts(config: &Config) -> String {
    let ports = config.get_ports();
    let port = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    let shown: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| match host {
            ::postgres::config::Host::Tcp(name) if name.contains(':') => format!("[{name}]:{}", port(i)),
            ::postgres::config::Host::Tcp(name) => format!("{name}:{}", port(i)),
            #[cfg(unix)]
            ::postgres::config::Host::Unix(path) => format!("{}:{}", path.display(), port(i)),
        })
        .collect();
    if shown.is_empty() {
        "(no host given)".into()
    } else {
        shown.join(",")
    }
}

/// `url` with any password taken out, for a message about a URL that did not parse.
fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest = scheme_end + 3;
        let authority_end = out[rest..].find(['/', '?']).map_or(out.len(), |i| rest + i);
        if let Some(at) = out[rest..authority_end].rfind('@') {
            let userinfo = &out[rest..rest + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest + colon..rest + at, "");
            }
        }
    }
    // `password=…` as a key/value setting or a URL query parameter.
    let lower = out.to_ascii_lowercase();
    if let Some(start) = lower.find("password=") {
        let end = out[start..].find(['&', ' ']).map_or(out.len(), |i| start + i);
        out.replace_range(start..end, "password=…");
    }
    out
}

/// A client error shown with its causes: the client's own message leaves them out ("db
/// error", "error connecting to server"), and they are what a person needs ("… relation
/// `x` does not exist", "… Connection refused").
#[derive(Debug)]
struct PgError(::postgres::Error);

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = std::error::Error::source(&self.0);
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

// The causes are in the message already, so none is given as a source.
impl std::error::Error for PgError {}

/// A client error as the `source` of a [`StateError`].
fn pg(e: ::postgres::Error) -> BoxError {
    Box::new(PgError(e))
}

/// The error for a failed connection to the server (or a failed setup of the schema),
/// with what to do about it.
fn connect_error(pool: &Pool, e: ::postgres::Error) -> StateError {
    let db = pool.config.get_dbname().unwrap_or("DATABASE");
    let hint = match e.code() {
        None => format!(
            "is PostgreSQL running at {}? start it, or set [state] url to the server to use",
            hosts(&pool.config)
        ),
        Some(c) if *c == SqlState::INVALID_PASSWORD || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => {
            "check the user and password in [state] url, and the server's pg_hba.conf".into()
        }
        Some(c) if *c == SqlState::INVALID_CATALOG_NAME => {
            format!("create the database (`createdb {db}`), or set [state] url to one that exists")
        }
        Some(c) if *c == SqlState::TOO_MANY_CONNECTIONS => {
            "the server has no free connection slot: raise its max_connections or stop idle clients".into()
        }
        Some(c) if *c == SqlState::CANNOT_CONNECT_NOW || *c == SqlState::ADMIN_SHUTDOWN => {
            "the server is starting up or shutting down; retry in a moment".into()
        }
        Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => format!(
            "grant the user CREATE on database {db}, or create schema {} beforehand and grant \
             the user USAGE and CREATE on it",
            pool.schema
        ),
        Some(_) => "check [state] url, and the server's log for the cause".into(),
    };
    StateError::Connect { url: pool.url.clone(), hint, source: pg(e) }
}

/// Maps an error of the server during `op` on `table`: no answer (a broken connection) and
/// the server's own trouble (shutdown, disk full, out of memory, lock and serialization
/// failures) are `Unavailable`; a character text cannot hold is invalid input; anything
/// else `Internal`.
fn db(op: &'static str, table: &'static str) -> impl Fn(::postgres::Error) -> StateError {
    move |e| {
        let Some(code) = e.code() else {
            return StateError::Unavailable { op, table, source: pg(e) };
        };
        if *code == SqlState::CHARACTER_NOT_IN_REPERTOIRE || *code == SqlState::UNTRANSLATABLE_CHARACTER {
            return StateError::InvalidInput {
                table,
                what: format!("the values to {op}"),
                field: "text",
                reason: format!(
                    "hold a character PostgreSQL cannot store in text ({}); remove NUL (\\0) \
                     characters",
                    e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_string())
                ),
            };
        }
        let transient = matches!(&code.code()[..2], "08" | "40" | "53" | "57" | "58")
            || *code == SqlState::LOCK_NOT_AVAILABLE;
        if transient {
            StateError::Unavailable { op, table, source: pg(e) }
        } else {
            StateError::Internal { op, table, source: pg(e) }
        }
    }
}

/// Whether `e` says the server ended the session (an administrator's
/// `pg_terminate_backend`, a shutdown, a lost connection): the server reports it as an
/// error before the client sees the connection close, so `is_closed` alone misses it.
fn is_connection_lost(e: &StateError) -> bool {
    let StateError::Unavailable { source, .. } = e else { return false };
    source.downcast_ref::<PgError>().is_some_and(|e| {
        e.0.is_closed()
            || e.0.code().is_some_and(|c| {
                c.code().starts_with("08")
                    || *c == SqlState::ADMIN_SHUTDOWN
                    || *c == SqlState::CRASH_SHUTDOWN
                    || *c == SqlState::CANNOT_CONNECT_NOW
            })
    })
}

/// Whether `e` is a deadlock or serialization failure, which the same write may pass when
/// tried again.
fn is_transient_conflict(e: &StateError) -> bool {
    let StateError::Unavailable { source, .. } = e else { return false };
    source
        .downcast_ref::<PgError>()
        .and_then(|e| e.0.code())
        .is_some_and(|c| *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED)
}

// ---------------------------------------------------------------------------------------
// Migrations.
// ---------------------------------------------------------------------------------------

/// The schema as named in migration errors: the server, database and schema.
fn shown_schema(pool: &Pool) -> PathBuf {
    PathBuf::from(format!("{} (schema {})", pool.url, pool.schema))
}

/// Creates the schema and `meta` if missing and brings the schema to
/// [`PgState::SCHEMA_VERSION`]; returns the version reached. Running it again on an
/// up-to-date schema does nothing.
fn migrate(client: &mut Client, pool: &Pool) -> Result<i64, StateError> {
    let schema = pool.schema.as_str();
    let setup = |client: &mut Client| -> Result<String, ::postgres::Error> {
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", &[&MIGRATION_LOCK, &schema])?;
        // Checked first: CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege even when
        // the schema exists.
        if tx.query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])?.is_none() {
            tx.batch_execute(&format!(r#"CREATE SCHEMA "{schema}""#))?;
        }
        tx.batch_execute(r#"CREATE TABLE IF NOT EXISTS meta (key TEXT COLLATE "C" NOT NULL PRIMARY KEY, value TEXT NOT NULL)"#)?;
        let encoding: String = tx.query_one("SELECT current_setting('server_encoding')", &[])?.try_get(0)?;
        tx.commit()?;
        Ok(encoding)
    };
    let encoding = setup(client).map_err(|e| connect_error(pool, e))?;
    if encoding != "UTF8" {
        return Err(StateError::Connect {
            url: pool.url.clone(),
            hint: "create the database with ENCODING 'UTF8' (e.g. `createdb -E UTF8 -T template0 NAME`) and set [state] url to it".into(),
            source: format!("the database's encoding is {encoding}, not UTF8").into(),
        });
    }
    let found = read_schema_version(client)?;
    if found > SCHEMA_VERSION {
        return Err(StateError::SchemaTooNew { path: shown_schema(pool), found, supported: SCHEMA_VERSION });
    }
    let mut version = found;
    for step in MIGRATIONS.iter().filter(|m| m.version > found) {
        let from = version;
        let failed = |source: BoxError| StateError::Migration { path: shown_schema(pool), from, to: step.version, source };
        let mut tx = client.transaction().map_err(|e| failed(pg(e)))?;
        tx.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", &[&MIGRATION_LOCK, &schema])
            .map_err(|e| failed(pg(e)))?;
        // Another process may have run this step while we waited for the lock.
        let current = read_schema_version(&mut tx)?;
        if current >= step.version {
            version = current;
            continue;
        }
        tx.batch_execute(step.sql).map_err(|e| failed(pg(e)))?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&SCHEMA_VERSION_KEY, &step.version.to_string()],
        )
        .map_err(|e| failed(pg(e)))?;
        tx.commit().map_err(|e| failed(pg(e)))?;
        info!(url = %pool.url, schema, from, to = step.version, "State database migrated.");
        version = step.version;
    }
    Ok(version)
}

fn read_schema_version(c: &mut impl GenericClient) -> Result<i64, StateError> {
    let row = c
        .query_opt("SELECT value FROM meta WHERE key = $1", &[&SCHEMA_VERSION_KEY])
        .map_err(db("read the schema version", "meta"))?;
    let text = row
        .map(|r| r.try_get::<_, String>(0))
        .transpose()
        .map_err(db("read the schema version", "meta"))?;
    parse_schema_version(text)
}

// ---------------------------------------------------------------------------------------
// The pool.
// ---------------------------------------------------------------------------------------

/// One connection and the statements prepared on it.
struct PgConn {
    client: Client,
    statements: Statements,
    idle_since: Instant,
}

/// Connections to one schema: at most [`PgState::POOL_SIZE`], opened when needed.
struct Pool {
    config: Config,
    url: String,
    schema: String,
    state: Mutex<PoolState>,
    /// Signalled when a connection is returned or closed.
    freed: Condvar,
}

struct PoolState {
    idle: Vec<PgConn>,
    /// Connections open, idle or lent.
    open: usize,
    /// When a lent connection last came back broken: idle ones older than that are checked.
    broken_at: Option<Instant>,
}

impl Pool {
    /// The pool's state; a panic while holding it leaves it consistent, so poisoning is
    /// ignored.
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Opens a new connection with the schema as its search path.
    fn open(&self) -> Result<PgConn, StateError> {
        let mut client = self.config.connect(NoTls).map_err(|e| connect_error(self, e))?;
        client
            .batch_execute(&format!(r#"SET search_path TO "{}""#, self.schema))
            .map_err(|e| connect_error(self, e))?;
        Ok(PgConn { client, statements: Statements::default(), idle_since: Instant::now() })
    }

    /// Lends a connection: an idle one (checked first if it may have gone stale), a new one
    /// while fewer than the limit are open, or the first one returned within
    /// [`CHECKOUT_TIMEOUT`].
    fn get(&self, op: &'static str, table: &'static str) -> Result<Lease<'_>, StateError> {
        let deadline = Instant::now() + CHECKOUT_TIMEOUT;
        let mut state = self.lock();
        loop {
            if let Some(mut conn) = state.idle.pop() {
                let suspect = conn.client.is_closed()
                    || conn.idle_since.elapsed() > IDLE_CHECK_AFTER
                    || state.broken_at.is_some_and(|at| conn.idle_since <= at);
                drop(state);
                if suspect && conn.client.is_valid(Duration::from_secs(5)).is_err() {
                    drop(conn);
                    debug!(url = %self.url, "A stale state database connection was replaced.");
                    return self.replace();
                }
                return Ok(Lease { pool: self, conn: Some(conn), broken: false });
            }
            if state.open < PgState::POOL_SIZE {
                state.open += 1;
                drop(state);
                return self.replace();
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(StateError::Unavailable {
                    op,
                    table,
                    source: format!(
                        "all {} connections to PostgreSQL at {} stayed busy for {} s",
                        PgState::POOL_SIZE,
                        self.url,
                        CHECKOUT_TIMEOUT.as_secs()
                    )
                    .into(),
                });
            }
            state = self
                .freed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// Opens a connection in a slot already counted in `open`; gives the slot back if that
    /// fails.
    fn replace(&self) -> Result<Lease<'_>, StateError> {
        match self.open() {
            Ok(conn) => Ok(Lease { pool: self, conn: Some(conn), broken: false }),
            Err(e) => {
                self.lock().open -= 1;
                self.freed.notify_one();
                Err(e)
            }
        }
    }
}

impl Drop for Pool {
    /// Closes the idle connections; closing blocks on the client's runtime like any use.
    fn drop(&mut self) {
        let idle = std::mem::take(&mut self.state.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner()).idle);
        if !idle.is_empty() {
            off_runtime(move || drop(idle));
        }
    }
}

/// A lent connection; returned to the pool when dropped, or closed if it broke.
struct Lease<'p> {
    pool: &'p Pool,
    conn: Option<PgConn>,
    /// It broke: closed, or a call on it failed because the server ended the session,
    /// which the client may not have noticed yet (`is_closed` still false). It is closed
    /// rather than lent again.
    broken: bool,
}

impl Lease<'_> {
    fn conn(&mut self) -> &mut PgConn {
        self.conn.as_mut().expect("a lease holds its connection until dropped")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else { return };
        let mut state = self.pool.lock();
        if self.broken || conn.client.is_closed() {
            state.open -= 1;
            state.broken_at = Some(Instant::now());
            warn!(url = %self.pool.url, "A state database connection broke; the others are checked before their next use.");
        } else {
            conn.idle_since = Instant::now();
            state.idle.push(conn);
        }
        drop(state);
        self.pool.freed.notify_one();
    }
}

/// Statements prepared on one connection, by their text.
#[derive(Default)]
struct Statements(HashMap<String, Statement>);

impl Statements {
    fn prepare(&mut self, c: &mut impl GenericClient, sql: &str) -> Result<Statement, ::postgres::Error> {
        if let Some(statement) = self.0.get(sql) {
            return Ok(statement.clone());
        }
        let statement = c.prepare(sql)?;
        if self.0.len() >= STATEMENT_CACHE {
            self.0.clear();
        }
        self.0.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }
}

/// A connection (or transaction) at work on `op` in `table`, which its errors name.
struct Db<'a, C> {
    c: &'a mut C,
    statements: &'a mut Statements,
    op: &'static str,
    table: &'static str,
}

type Param<'a> = &'a (dyn ToSql + Sync);

impl<C: GenericClient> Db<'_, C> {
    fn err(&self) -> impl Fn(::postgres::Error) -> StateError {
        db(self.op, self.table)
    }

    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StateError> {
        let statement = self.statements.prepare(self.c, sql).map_err(self.err())?;
        self.c.execute(&statement, params).map_err(self.err())
    }

    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StateError> {
        let statement = self.statements.prepare(self.c, sql).map_err(self.err())?;
        self.c.query(&statement, params).map_err(self.err())
    }

    /// The first column of every row.
    fn column<T: for<'r> ::postgres::types::FromSql<'r>>(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<T>, StateError> {
        let rows = self.query(sql, params)?;
        rows.iter().map(|r| r.try_get(0).map_err(self.err())).collect()
    }

    /// The first column of the first row, if there is one.
    fn value<T: for<'r> ::postgres::types::FromSql<'r>>(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Option<T>, StateError> {
        Ok(self.column(sql, params)?.into_iter().next())
    }

    /// Every row, read by `raw` and decoded by `decode`.
    fn rows<R, T>(
        &mut self,
        sql: &str,
        params: &[Param<'_>],
        raw: impl Fn(&Row) -> Result<R, ::postgres::Error>,
        decode: impl Fn(R) -> Result<T, StateError>,
    ) -> Result<Vec<T>, StateError> {
        let rows = self.query(sql, params)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(decode(raw(row).map_err(self.err())?)?);
        }
        Ok(out)
    }

    /// Locks `table` against other writers until the transaction ends; readers go on.
    fn lock(&mut self, table: &str) -> Result<(), StateError> {
        self.c.batch_execute(&format!("LOCK TABLE {table} IN EXCLUSIVE MODE")).map_err(self.err())
    }
}

/// Parameters of a statement built from optional parts, each given its `$n` as it is added.
#[derive(Default)]
struct Params(Vec<Box<dyn ToSql + Sync>>);

impl Params {
    /// Adds a parameter and returns its placeholder.
    fn add(&mut self, value: impl ToSql + Sync + 'static) -> String {
        self.0.push(Box::new(value));
        format!("${}", self.0.len())
    }

    fn refs(&self) -> Vec<Param<'_>> {
        self.0.iter().map(|v| &**v as Param<'_>).collect()
    }
}

/// `WHERE` and the clauses, or nothing when there are none.
fn where_clause(clauses: &[String]) -> String {
    if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    }
}

/// Text for a column that cannot refuse it: a NUL, which PostgreSQL text cannot hold,
/// becomes U+FFFD.
fn lenient_text(text: &str) -> String {
    text.replace('\0', "\u{fffd}")
}

// ---------------------------------------------------------------------------------------
// Rows.
// ---------------------------------------------------------------------------------------

fn device_raw(r: &Row) -> Result<DeviceRaw, ::postgres::Error> {
    Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?, r.try_get(5)?, r.try_get(6)?, r.try_get(7)?))
}

fn rule_raw(r: &Row) -> Result<RuleRaw, ::postgres::Error> {
    Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?, r.try_get(5)?))
}

fn alert_raw(r: &Row) -> Result<AlertRaw, ::postgres::Error> {
    Ok((
        r.try_get(0)?,
        r.try_get(1)?,
        r.try_get(2)?,
        r.try_get(3)?,
        r.try_get(4)?,
        r.try_get(5)?,
        r.try_get(6)?,
        r.try_get(7)?,
        r.try_get(8)?,
        r.try_get(9)?,
        r.try_get(10)?,
        r.try_get(11)?,
        r.try_get(12)?,
    ))
}

/// A dead letter as stored here: the raw record as bytes.
type PgDeadLetterRaw = (i64, i64, String, String, Option<i64>, Option<String>, String, Vec<u8>, Option<i64>);

fn dead_letter_raw(r: &Row) -> Result<PgDeadLetterRaw, ::postgres::Error> {
    Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?, r.try_get(5)?, r.try_get(6)?, r.try_get(7)?, r.try_get(8)?))
}

fn pg_dead_letter_row(raw: PgDeadLetterRaw) -> Result<DeadLetter, StateError> {
    let (id, received_at, channel, origin, line, field, reason, bytes, resubmitted_at) = raw;
    let raw = String::from_utf8(bytes).map_err(|e| StateError::Corrupt {
        table: "dead_letters",
        id: id.to_string(),
        column: "raw",
        reason: format!("not UTF-8 text ({e})"),
    })?;
    dead_letter_row((id, received_at, channel, origin, line, field, reason, raw, resubmitted_at))
}

fn user_raw(r: &Row) -> Result<UserRaw, ::postgres::Error> {
    Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?, r.try_get(5)?))
}

fn session_raw(r: &Row) -> Result<SessionRaw, ::postgres::Error> {
    Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?))
}

fn audit_raw(r: &Row) -> Result<AuditRaw, ::postgres::Error> {
    Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?, r.try_get(5)?, r.try_get(6)?, r.try_get(7)?))
}

fn routing_raw(r: &Row) -> Result<RoutingRaw, ::postgres::Error> {
    Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?))
}

fn delivery_raw(r: &Row) -> Result<DeliveryRaw, ::postgres::Error> {
    Ok((
        r.try_get(0)?,
        r.try_get(1)?,
        r.try_get(2)?,
        r.try_get(3)?,
        r.try_get(4)?,
        r.try_get(5)?,
        r.try_get(6)?,
        r.try_get(7)?,
        r.try_get(8)?,
        r.try_get(9)?,
        r.try_get(10)?,
        r.try_get(11)?,
    ))
}

fn unit_raw(r: &Row) -> Result<UnitRow, ::postgres::Error> {
    Ok(UnitRow { id: r.try_get(0)?, name: r.try_get(1)?, kind: r.try_get(2)?, region: r.try_get(3)?, parent_unit: r.try_get(4)? })
}

fn pair_raw(r: &Row) -> Result<(String, String), ::postgres::Error> {
    Ok((r.try_get(0)?, r.try_get(1)?))
}

// ---------------------------------------------------------------------------------------
// Writes shared by several methods.
// ---------------------------------------------------------------------------------------

/// Inserts the alerts whose ids are not stored yet; returns those inserted, in batch order
/// (the first of two rows with one id wins, as in one-by-one inserts).
fn insert_alerts_in<C: GenericClient>(db: &mut Db<'_, C>, alerts: &[AlertRow]) -> Result<Vec<String>, StateError> {
    let mut inserted = HashSet::new();
    for chunk in alerts.chunks(CHUNK) {
        let ids: HashSet<String> = db
            .column::<String>(
                &format!(
                    "INSERT INTO alerts ({ALERT_COLUMNS}) \
                     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                     $7::bigint[], $8::text[], $9::text[], $10::bigint[], $11::text[], $12::text[], $13::text[]) \
                     ON CONFLICT (id) DO NOTHING RETURNING id"
                ),
                &alert_arrays(chunk).refs(),
            )?
            .into_iter()
            .collect();
        inserted.extend(ids);
    }
    Ok(alerts
        .iter()
        .filter(|a| inserted.remove(&a.id))
        .map(|a| a.id.clone())
        .collect())
}

/// Replaces the stored alerts with the same ids (the last of two rows with one id wins);
/// returns the ids that were stored.
fn update_alerts_in<C: GenericClient>(db: &mut Db<'_, C>, alerts: &[AlertRow]) -> Result<HashSet<String>, StateError> {
    let mut last: HashMap<&str, &AlertRow> = HashMap::with_capacity(alerts.len());
    for a in alerts {
        last.insert(&a.id, a);
    }
    // In id order, so that concurrent writers lock rows in the same order.
    let mut rows: Vec<AlertRow> = last.into_values().cloned().collect();
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    let mut updated = HashSet::new();
    for chunk in rows.chunks(CHUNK) {
        updated.extend(db.column::<String>(
            r#"UPDATE alerts SET rule = u.rule, "key" = u.key, status = u.status, severity = u.severity,
               category = u.category, time = u.time, grid = u.grid, body = u.body, updated_at = u.updated_at,
               scopes = u.scopes, class = u.class, incident = u.incident
               FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[],
                           $8::text[], $9::text[], $10::bigint[], $11::text[], $12::text[], $13::text[])
                    AS u (id, rule, key, status, severity, category, time, grid, body, updated_at, scopes, class, incident)
               WHERE alerts.id = u.id
               RETURNING alerts.id"#,
            &alert_arrays(chunk).refs(),
        )?);
    }
    Ok(updated)
}

/// Alert rows as one array per column, in the order of `ALERT_COLUMNS`.
fn alert_arrays(alerts: &[AlertRow]) -> Params {
    let mut p = Params::default();
    p.add(alerts.iter().map(|a| a.id.clone()).collect::<Vec<_>>());
    p.add(alerts.iter().map(|a| a.rule.clone()).collect::<Vec<_>>());
    p.add(alerts.iter().map(|a| a.key.clone()).collect::<Vec<_>>());
    p.add(alerts.iter().map(|a| a.status.clone()).collect::<Vec<_>>());
    p.add(alerts.iter().map(|a| a.severity.clone()).collect::<Vec<_>>());
    p.add(alerts.iter().map(|a| a.category.clone()).collect::<Vec<_>>());
    p.add(alerts.iter().map(|a| to_micros(&a.time)).collect::<Vec<_>>());
    p.add(alerts.iter().map(|a| a.grid.clone()).collect::<Vec<_>>());
    p.add(alerts.iter().map(|a| json_text(&a.body)).collect::<Vec<_>>());
    p.add(alerts.iter().map(|a| to_micros(&a.updated_at)).collect::<Vec<_>>());
    p.add(alerts.iter().map(scopes_text).collect::<Vec<_>>());
    p.add(alerts.iter().map(|a| a.class.clone()).collect::<Vec<_>>());
    p.add(alerts.iter().map(|a| a.incident.clone()).collect::<Vec<_>>());
    p
}

/// Makes stored alerts visible under their scopes (scopes only grow).
fn write_scopes<'a, C: GenericClient>(db: &mut Db<'_, C>, alerts: impl IntoIterator<Item = &'a AlertRow>) -> Result<(), StateError> {
    let mut rows: Vec<(String, i64, String)> = alerts
        .into_iter()
        .flat_map(|a| a.scopes.iter().map(|s| (s.clone(), to_micros(&a.time), a.id.clone())))
        .collect();
    rows.sort();
    rows.dedup();
    for chunk in rows.chunks(CHUNK) {
        let (mut scopes, mut times, mut ids) = (Vec::new(), Vec::new(), Vec::new());
        for (scope, time, id) in chunk {
            scopes.push(scope.clone());
            times.push(*time);
            ids.push(id.clone());
        }
        db.execute(
            "INSERT INTO alert_scopes (scope, time, alert) SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[]) \
             ON CONFLICT DO NOTHING",
            &[&scopes, &times, &ids],
        )?;
    }
    Ok(())
}

/// Deletes the oldest dead letters beyond `keep`; returns how many.
fn prune_dead_letters_in<C: GenericClient>(db: &mut Db<'_, C>, keep: u64) -> Result<u64, StateError> {
    let keep = i64::try_from(keep).unwrap_or(i64::MAX);
    db.execute(
        "DELETE FROM dead_letters WHERE id <= (SELECT id FROM dead_letters ORDER BY id DESC LIMIT 1 OFFSET $1)",
        &[&keep],
    )
}

/// The filter of a dead-letter list or count, and an optional id bound.
fn dead_letter_where(p: &mut Params, filter: &DeadLetterFilter, before_id: Option<i64>) -> String {
    let mut clauses = Vec::new();
    if let Some(channel) = filter.channel {
        clauses.push(format!("channel = {}", p.add(channel.as_str().to_string())));
    }
    if let Some(since) = filter.since {
        clauses.push(format!("received_at >= {}", p.add(to_micros(&since))));
    }
    if filter.pending_only {
        clauses.push("resubmitted_at IS NULL".into());
    }
    if let Some(id) = before_id {
        clauses.push(format!("id < {}", p.add(id)));
    }
    where_clause(&clauses)
}

/// Appends `entry` to the audit log in the transaction, chained to the last entry. Locks
/// the log, so that concurrent appends (from any process) queue and stay one chain.
fn append_audit_in<C: GenericClient>(db: &mut Db<'_, C>, entry: &NewAuditEntry, at: DateTime<Utc>) -> Result<AuditEntry, StateError> {
    db.lock("audit_log")?;
    let last = db
        .rows("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1", &[], |r| Ok((r.try_get(0)?, r.try_get(1)?)), Ok)?
        .pop();
    let stored = next_audit_entry(last, entry, at)?;
    db.execute(
        &format!("INSERT INTO audit_log ({AUDIT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"),
        &[
            &stored.seq,
            &to_micros(&stored.at),
            &stored.actor,
            &stored.action,
            &stored.target,
            &json_text(&stored.detail),
            &stored.prev_hash,
            &stored.hash,
        ],
    )?;
    Ok(stored)
}

// ---------------------------------------------------------------------------------------
// The trait.
// ---------------------------------------------------------------------------------------

impl StateStore for PgState {
    fn schema_version(&self) -> Result<i64, StateError> {
        self.read("read the schema version", "meta", |db| read_schema_version(db.c))
    }

    fn meta_get(&self, key: &str) -> Result<Option<String>, StateError> {
        self.read("read", "meta", |db| db.value("SELECT value FROM meta WHERE key = $1", &[&key]))
    }

    fn meta_set(&self, key: &str, value: &str) -> Result<(), StateError> {
        check_meta_key(key)?;
        self.write("write", "meta", |db| {
            db.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&key, &value],
            )
        })?;
        Ok(())
    }

    fn replace_layer(&self, layer: Layer, features: &[FeatureRow]) -> Result<usize, StateError> {
        check_layer_batch(layer, features)?;
        self.write("replace a layer", "features", |db| {
            db.lock("features")?;
            db.execute("DELETE FROM features WHERE layer = $1", &[&layer.as_str()])?;
            for (n, chunk) in features.chunks(CHUNK).enumerate() {
                let ids: Vec<&str> = chunk.iter().map(|f| f.id.as_str()).collect();
                let seqs: Vec<i64> = (0..chunk.len()).map(|i| sql_count(n * CHUNK + i)).collect();
                let properties: Vec<String> = chunk.iter().map(|f| json_text(&f.properties)).collect();
                let geometries: Vec<String> = chunk.iter().map(|f| json_text(&f.geometry)).collect();
                db.execute(
                    "INSERT INTO features (layer, id, seq, properties, geometry) \
                     SELECT $1::text, * FROM unnest($2::text[], $3::bigint[], $4::text[], $5::text[])",
                    &[&layer.as_str(), &ids, &seqs, &properties, &geometries],
                )?;
            }
            Ok(())
        })?;
        debug!(layer = layer.as_str(), features = features.len(), "City layer replaced.");
        Ok(features.len())
    }

    fn list_layer(&self, layer: Layer) -> Result<Vec<FeatureRow>, StateError> {
        self.read("list a layer", "features", |db| {
            db.rows(
                "SELECT id, properties, geometry FROM features WHERE layer = $1 ORDER BY seq",
                &[&layer.as_str()],
                |r| Ok((r.try_get::<_, String>(0)?, r.try_get::<_, String>(1)?, r.try_get::<_, String>(2)?)),
                |(id, properties, geometry)| {
                    let properties = decode_json("features", &id, "properties", &properties)?;
                    let geometry = decode_json("features", &id, "geometry", &geometry)?;
                    Ok(FeatureRow { layer, id, properties, geometry })
                },
            )
        })
    }

    fn upsert_devices(&self, devices: &[DeviceRow]) -> Result<usize, StateError> {
        for (i, d) in devices.iter().enumerate() {
            check_device(d, i, devices.len())?;
        }
        if devices.is_empty() {
            return Ok(0);
        }
        // One row per id, as one-by-one upserts would leave it: the last row's fields with
        // the first row's registration time. In id order, so that concurrent upserts lock
        // rows in the same order.
        let mut merged: Vec<DeviceRow> = Vec::with_capacity(devices.len());
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(devices.len());
        for d in devices {
            match index.get(d.id.as_str()) {
                Some(&i) => merged[i] = DeviceRow { registered_at: merged[i].registered_at, ..d.clone() },
                None => {
                    index.insert(&d.id, merged.len());
                    merged.push(d.clone());
                }
            }
        }
        merged.sort_by(|a, b| a.id.cmp(&b.id));
        self.write("upsert devices", "devices", |db| {
            for chunk in merged.chunks(CHUNK) {
                let ids: Vec<&str> = chunk.iter().map(|d| d.id.as_str()).collect();
                let kinds: Vec<&str> = chunk.iter().map(|d| d.kind.as_str()).collect();
                let lons: Vec<f64> = chunk.iter().map(|d| d.lon).collect();
                let lats: Vec<f64> = chunk.iter().map(|d| d.lat).collect();
                let grids: Vec<Option<&str>> = chunk.iter().map(|d| d.grid.as_deref()).collect();
                let owners: Vec<Option<&str>> = chunk.iter().map(|d| d.owner_unit.as_deref()).collect();
                let attrs: Vec<String> = chunk.iter().map(|d| json_text(&d.attrs)).collect();
                let registered: Vec<i64> = chunk.iter().map(|d| to_micros(&d.registered_at)).collect();
                db.execute(
                    &format!(
                        "INSERT INTO devices ({DEVICE_COLUMNS}) \
                         SELECT * FROM unnest($1::text[], $2::text[], $3::float8[], $4::float8[], $5::text[], \
                         $6::text[], $7::text[], $8::bigint[]) \
                         ON CONFLICT (id) DO UPDATE SET kind = EXCLUDED.kind, lon = EXCLUDED.lon, lat = EXCLUDED.lat, \
                         grid = EXCLUDED.grid, owner_unit = EXCLUDED.owner_unit, attrs = EXCLUDED.attrs"
                    ),
                    &[&ids, &kinds, &lons, &lats, &grids, &owners, &attrs, &registered],
                )?;
            }
            Ok(())
        })?;
        debug!(devices = devices.len(), "Devices upserted.");
        Ok(devices.len())
    }

    fn device(&self, id: &str) -> Result<Option<DeviceRow>, StateError> {
        self.read("read a device", "devices", |db| {
            Ok(db.rows(&format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = $1"), &[&id], device_raw, device_row)?.pop())
        })
    }

    fn list_devices(&self, page: &PageRequest) -> Result<Page<DeviceRow>, StateError> {
        let limit = page_limit("devices", page)?;
        let after = page.after.as_deref().map(|c| decode_cursor("devices", "dev", c)).transpose()?;
        let fetch = fetch_limit(limit);
        let items = self.read("list devices", "devices", |db| match &after {
            Some(after) => db.rows(
                &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id > $1 ORDER BY id LIMIT $2"),
                &[after, &fetch],
                device_raw,
                device_row,
            ),
            None => db.rows(
                &format!("SELECT {DEVICE_COLUMNS} FROM devices ORDER BY id LIMIT $1"),
                &[&fetch],
                device_raw,
                device_row,
            ),
        })?;
        Ok(paginate(items, limit, "dev", |d| d.id.clone()))
    }

    fn device_count(&self) -> Result<u64, StateError> {
        let n: Option<i64> = self.read("count devices", "devices", |db| db.value("SELECT COUNT(*) FROM devices", &[]))?;
        Ok(n.unwrap_or(0) as u64)
    }

    fn delete_device(&self, id: &str) -> Result<(), StateError> {
        let n = self.write("delete a device", "devices", |db| db.execute("DELETE FROM devices WHERE id = $1", &[&id]))?;
        if n == 0 {
            return Err(StateError::NotFound { table: "devices", id: id.into() });
        }
        Ok(())
    }

    fn replace_units(&self, units: &[UnitRow]) -> Result<usize, StateError> {
        check_unit_batch(units)?;
        self.write("replace units", "units", |db| {
            db.lock("units")?;
            db.execute("DELETE FROM units", &[])?;
            for chunk in units.chunks(CHUNK) {
                let ids: Vec<&str> = chunk.iter().map(|u| u.id.as_str()).collect();
                let names: Vec<&str> = chunk.iter().map(|u| u.name.as_str()).collect();
                let kinds: Vec<&str> = chunk.iter().map(|u| u.kind.as_str()).collect();
                let regions: Vec<Option<&str>> = chunk.iter().map(|u| u.region.as_deref()).collect();
                let parents: Vec<Option<&str>> = chunk.iter().map(|u| u.parent_unit.as_deref()).collect();
                db.execute(
                    "INSERT INTO units (id, name, kind, region, parent_unit) \
                     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])",
                    &[&ids, &names, &kinds, &regions, &parents],
                )?;
            }
            Ok(())
        })?;
        debug!(units = units.len(), "Units replaced.");
        Ok(units.len())
    }

    fn list_units(&self) -> Result<Vec<UnitRow>, StateError> {
        self.read("list units", "units", |db| {
            db.rows("SELECT id, name, kind, region, parent_unit FROM units ORDER BY id", &[], unit_raw, Ok)
        })
    }

    fn unit(&self, id: &str) -> Result<Option<UnitRow>, StateError> {
        self.read("read a unit", "units", |db| {
            Ok(db.rows("SELECT id, name, kind, region, parent_unit FROM units WHERE id = $1", &[&id], unit_raw, Ok)?.pop())
        })
    }

    fn put_rule(&self, rule: &RulePut) -> Result<RuleRow, StateError> {
        check_rule(rule)?;
        let now = stored_time(Utc::now());
        let version = self.write("write a rule", "rules", |db| {
            // The row is locked while it is compared and replaced. A rule created meanwhile
            // by another writer makes the insert touch nothing: read it again.
            for _ in 0..3 {
                let stored: i64 = db
                    .value("SELECT version FROM rules WHERE id = $1 FOR UPDATE", &[&rule.id])?
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
                let n = db.execute(
                    "INSERT INTO rules (id, body, enabled, version, updated_at, updated_by) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body, enabled = EXCLUDED.enabled, \
                     version = EXCLUDED.version, updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by \
                     WHERE rules.version = $7",
                    &[&rule.id, &rule.body, &rule.enabled, &version, &to_micros(&now), &rule.updated_by, &stored],
                )?;
                if n == 1 {
                    return Ok(version);
                }
            }
            Err(StateError::Conflict {
                table: "rules",
                id: rule.id.clone(),
                reason: "keeps being changed by other writers; retry in a moment".into(),
            })
        })?;
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
        self.read("read a rule", "rules", |db| {
            Ok(db.rows(&format!("SELECT {RULE_COLUMNS} FROM rules WHERE id = $1"), &[&id], rule_raw, rule_row)?.pop())
        })
    }

    fn list_rules(&self) -> Result<Vec<RuleRow>, StateError> {
        self.read("list rules", "rules", |db| {
            db.rows(&format!("SELECT {RULE_COLUMNS} FROM rules ORDER BY id"), &[], rule_raw, rule_row)
        })
    }

    fn delete_rule(&self, id: &str, expected_version: Option<i64>) -> Result<(), StateError> {
        self.write("delete a rule", "rules", |db| {
            let stored: Option<i64> = db.value("SELECT version FROM rules WHERE id = $1 FOR UPDATE", &[&id])?;
            let Some(stored) = stored else {
                return Err(StateError::NotFound { table: "rules", id: id.into() });
            };
            if let Some(expected) = expected_version {
                if expected != stored {
                    return Err(StateError::Conflict { table: "rules", id: id.into(), reason: version_conflict(expected, stored) });
                }
            }
            db.execute("DELETE FROM rules WHERE id = $1", &[&id])
        })?;
        debug!(rule = %id, "Rule deleted.");
        Ok(())
    }

    fn insert_alert(&self, alert: &AlertRow) -> Result<(), StateError> {
        check_alert(alert)?;
        let inserted = self.write("insert an alert", "alerts", |db| {
            let inserted = insert_alerts_in(db, std::slice::from_ref(alert))?;
            if !inserted.is_empty() {
                write_scopes(db, [alert])?;
            }
            Ok(!inserted.is_empty())
        })?;
        if !inserted {
            return Err(StateError::Conflict {
                table: "alerts",
                id: alert.id.clone(),
                reason: "already exists; update it instead, or give the new alert another id".into(),
            });
        }
        Ok(())
    }

    fn update_alert(&self, alert: &AlertRow) -> Result<(), StateError> {
        check_alert(alert)?;
        let updated = self.write("update an alert", "alerts", |db| {
            let updated = !update_alerts_in(db, std::slice::from_ref(alert))?.is_empty();
            if updated {
                write_scopes(db, [alert])?;
            }
            Ok(updated)
        })?;
        if !updated {
            return Err(StateError::NotFound { table: "alerts", id: alert.id.clone() });
        }
        Ok(())
    }

    fn update_alert_if_unchanged(&self, alert: &AlertRow, seen: DateTime<Utc>) -> Result<bool, StateError> {
        check_alert(alert)?;
        let (found, updated) = self.write("update an alert", "alerts", |db| {
            // The row locked first, so that two processes checking the same alert queue up.
            let stored = db.column::<i64>("SELECT updated_at FROM alerts WHERE id = $1 FOR UPDATE", &[&alert.id])?;
            match stored.first() {
                None => Ok((false, false)),
                Some(at) if *at != to_micros(&seen) => Ok((true, false)),
                Some(_) => {
                    update_alerts_in(db, std::slice::from_ref(alert))?;
                    write_scopes(db, [alert])?;
                    Ok((true, true))
                }
            }
        })?;
        if !found {
            return Err(StateError::NotFound { table: "alerts", id: alert.id.clone() });
        }
        Ok(updated)
    }

    fn alert(&self, id: &str) -> Result<Option<AlertRow>, StateError> {
        self.read("read an alert", "alerts", |db| {
            Ok(db.rows(&format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1"), &[&id], alert_raw, alert_row)?.pop())
        })
    }

    fn write_alerts(&self, inserts: &[AlertRow], updates: &[AlertRow]) -> Result<Vec<String>, StateError> {
        for a in inserts.iter().chain(updates) {
            check_alert(a)?;
        }
        if inserts.is_empty() && updates.is_empty() {
            return Ok(Vec::new());
        }
        self.write("write alerts", "alerts", |db| {
            let inserted = insert_alerts_in(db, inserts)?;
            let updated = update_alerts_in(db, updates)?;
            let mut first: HashSet<&str> = inserted.iter().map(String::as_str).collect();
            let written = inserts
                .iter()
                .filter(|a| first.remove(a.id.as_str()))
                .chain(updates.iter().filter(|a| updated.contains(&a.id)));
            write_scopes(db, written)?;
            Ok(inserted)
        })
    }

    fn list_alerts(&self, filter: &AlertFilter, page: &PageRequest) -> Result<Page<AlertRow>, StateError> {
        let limit = page_limit("alerts", page)?;
        let after = page.after.as_deref().map(decode_alert_cursor).transpose()?;
        let mut p = Params::default();
        let mut clauses = Vec::new();
        if !filter.statuses.is_empty() {
            clauses.push(format!("status = ANY({})", p.add(filter.statuses.clone())));
        }
        if let Some(incident) = &filter.incident {
            clauses.push(format!("incident = {}", p.add(incident.clone())));
        }
        if let Some(class) = &filter.class {
            clauses.push(format!("class = {}", p.add(class.clone())));
        }
        if let Some(scopes) = &filter.scopes {
            clauses.push(format!("id IN (SELECT alert FROM alert_scopes WHERE scope = ANY({}))", p.add(scopes.clone())));
        }
        if !filter.severities.is_empty() {
            clauses.push(format!("severity = ANY({})", p.add(filter.severities.clone())));
        }
        if !filter.categories.is_empty() {
            clauses.push(format!("category = ANY({})", p.add(filter.categories.clone())));
        }
        if let Some(scope) = &filter.within {
            clauses.push(format!("id IN (SELECT alert FROM alert_scopes WHERE scope = {})", p.add(scope.clone())));
        }
        if let Some(since) = &filter.since {
            clauses.push(format!("time >= {}", p.add(to_micros(since))));
        }
        if let Some(until) = &filter.until {
            clauses.push(format!("time < {}", p.add(to_micros(until))));
        }
        if let Some(updated_since) = &filter.updated_since {
            clauses.push(format!("updated_at >= {}", p.add(to_micros(updated_since))));
        }
        if let Some((time, id)) = after {
            let (time, id) = (p.add(time), p.add(id));
            clauses.push(format!("(time, id) < ({time}, {id})"));
        }
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM alerts {} ORDER BY time DESC, id DESC LIMIT {}",
            where_clause(&clauses),
            p.add(fetch_limit(limit))
        );
        let items = self.read("list alerts", "alerts", |db| db.rows(&sql, &p.refs(), alert_raw, alert_row))?;
        Ok(paginate(items, limit, "alr", alert_cursor_key))
    }

    fn put_routing(
        &self,
        body: &Value,
        changed_by: &str,
        note: &str,
        expected_version: Option<i64>,
    ) -> Result<RoutingVersion, StateError> {
        check_text("routing_versions", "the routing table", "changed_by", changed_by)?;
        self.write("store the routing table", "routing_versions", |db| {
            db.lock("routing_versions")?;
            let latest: i64 = db.value("SELECT COALESCE(MAX(version), 0) FROM routing_versions", &[])?.unwrap_or(0);
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
            db.execute(
                "INSERT INTO routing_versions (version, body, changed_at, changed_by, note) VALUES ($1, $2, $3, $4, $5)",
                &[&stored.version, &json_text(&stored.body), &to_micros(&stored.changed_at), &stored.changed_by, &stored.note],
            )?;
            Ok(stored)
        })
    }

    fn routing(&self) -> Result<Option<RoutingVersion>, StateError> {
        Ok(self.routing_history(1)?.pop())
    }

    fn routing_history(&self, limit: usize) -> Result<Vec<RoutingVersion>, StateError> {
        self.read("read the routing table", "routing_versions", |db| {
            db.rows(
                "SELECT version, body, changed_at, changed_by, note FROM routing_versions ORDER BY version DESC LIMIT $1",
                &[&sql_count(limit)],
                routing_raw,
                routing_row,
            )
        })
    }

    fn insert_deliveries(&self, batch: &[NewDelivery]) -> Result<(), StateError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.write("queue webhook deliveries", "webhook_deliveries", |db| {
            for chunk in batch.chunks(CHUNK) {
                let webhooks: Vec<&str> = chunk.iter().map(|d| d.webhook.as_str()).collect();
                let alerts: Vec<&str> = chunk.iter().map(|d| d.alert.as_str()).collect();
                let changes: Vec<&str> = chunk.iter().map(|d| d.change.as_str()).collect();
                let payloads: Vec<String> = chunk.iter().map(|d| json_text(&d.payload)).collect();
                let times: Vec<i64> = chunk.iter().map(|d| to_micros(&d.created_at)).collect();
                // In batch order, so that ids ascend as the batch goes.
                db.execute(
                    "INSERT INTO webhook_deliveries (webhook, alert, change, payload, status, attempts, next_attempt, created_at, updated_at) \
                     SELECT w, a, c, p, 'pending', 0, t, t, t \
                     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[]) WITH ORDINALITY AS u (w, a, c, p, t, n) \
                     ORDER BY n",
                    &[&webhooks, &alerts, &changes, &payloads, &times],
                )?;
            }
            Ok(())
        })
    }

    fn due_deliveries(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Delivery>, StateError> {
        self.read("read due webhook deliveries", "webhook_deliveries", |db| {
            db.rows(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE status = 'pending' AND next_attempt <= $1 \
                     ORDER BY next_attempt, id LIMIT $2"
                ),
                &[&to_micros(&now), &sql_count(limit)],
                delivery_raw,
                delivery_row,
            )
        })
    }

    fn record_delivery_attempt(&self, id: i64, attempt: &DeliveryAttempt) -> Result<(), StateError> {
        let (status, next) = attempt_outcome(attempt);
        let n = self.write("record a webhook delivery attempt", "webhook_deliveries", |db| {
            db.execute(
                "UPDATE webhook_deliveries SET status = $2, attempts = attempts + 1, next_attempt = $3, last_status = $4, \
                 last_error = $5, updated_at = $6 WHERE id = $1",
                &[&id, &status, &to_micros(&next), &attempt.status.map(i64::from), &attempt.error, &to_micros(&attempt.at)],
            )
        })?;
        if n == 0 {
            return Err(StateError::NotFound { table: "webhook_deliveries", id: id.to_string() });
        }
        Ok(())
    }

    fn list_deliveries(&self, webhook: Option<&str>, status: Option<&str>, page: &PageRequest) -> Result<Page<Delivery>, StateError> {
        const T: &str = "webhook_deliveries";
        let limit = page_limit(T, page)?;
        let mut p = Params::default();
        let mut clauses = Vec::new();
        if let Some(cursor) = page.after.as_deref() {
            clauses.push(format!("id < {}", p.add(decode_number_cursor(T, "dlv", cursor)?)));
        }
        if let Some(w) = webhook {
            clauses.push(format!("webhook = {}", p.add(w.to_string())));
        }
        if let Some(s) = status {
            clauses.push(format!("status = {}", p.add(s.to_string())));
        }
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries {} ORDER BY id DESC LIMIT {}",
            where_clause(&clauses),
            p.add(fetch_limit(limit))
        );
        let items = self.read("list webhook deliveries", T, |db| db.rows(&sql, &p.refs(), delivery_raw, delivery_row))?;
        Ok(paginate(items, limit, "dlv", |d| d.id.to_string()))
    }

    fn replay_delivery(&self, id: i64, now: DateTime<Utc>) -> Result<Delivery, StateError> {
        const T: &str = "webhook_deliveries";
        let replayed = self.write("replay a webhook delivery", T, |db| {
            db.rows(
                &format!(
                    "UPDATE webhook_deliveries SET status = 'pending', next_attempt = $2, updated_at = $2 WHERE id = $1 \
                     RETURNING {DELIVERY_COLUMNS}"
                ),
                &[&id, &to_micros(&now)],
                delivery_raw,
                delivery_row,
            )
        })?;
        replayed.into_iter().next().ok_or_else(|| StateError::NotFound { table: T, id: id.to_string() })
    }

    fn insert_dead_letters(&self, batch: &[NewDeadLetter]) -> Result<DeadLetterInsert, StateError> {
        for (i, d) in batch.iter().enumerate() {
            check_dead_letter(d, i, batch.len())?;
        }
        if batch.is_empty() {
            return Ok(DeadLetterInsert::default());
        }
        let limit = self.options.dead_letter_max_rows;
        let (ids, pruned) = self.write("insert dead letters", "dead_letters", |db| {
            let mut ids = Vec::with_capacity(batch.len());
            for chunk in batch.chunks(CHUNK) {
                let received: Vec<i64> = chunk.iter().map(|d| to_micros(&d.received_at)).collect();
                let channels: Vec<&str> = chunk.iter().map(|d| d.channel.as_str()).collect();
                let origins: Vec<String> = chunk.iter().map(|d| lenient_text(&d.origin)).collect();
                let lines: Vec<Option<i64>> = chunk.iter().map(|d| d.line.map(|l| l as i64)).collect();
                let fields: Vec<Option<String>> = chunk.iter().map(|d| d.field.as_deref().map(lenient_text)).collect();
                let reasons: Vec<String> = chunk.iter().map(|d| lenient_text(&d.reason)).collect();
                let raws: Vec<&[u8]> = chunk.iter().map(|d| d.raw.as_bytes()).collect();
                // Rows go in batch order, so their ids ascend as the batch goes.
                let mut chunk_ids: Vec<i64> = db.column(
                    "INSERT INTO dead_letters (received_at, channel, origin, line, field, reason, raw) \
                     SELECT r, c, o, l, f, e, w FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], \
                     $5::text[], $6::text[], $7::bytea[]) WITH ORDINALITY AS u (r, c, o, l, f, e, w, n) \
                     ORDER BY n RETURNING id",
                    &[&received, &channels, &origins, &lines, &fields, &reasons, &raws],
                )?;
                chunk_ids.sort_unstable();
                ids.extend(chunk_ids);
            }
            let pruned = prune_dead_letters_in(db, limit)?;
            Ok((ids, pruned))
        })?;
        if pruned > 0 {
            debug!(pruned, limit, "Oldest dead letters pruned to stay within the limit.");
        }
        Ok(DeadLetterInsert { ids, pruned })
    }

    fn list_dead_letters(&self, filter: &DeadLetterFilter, page: &PageRequest) -> Result<Page<DeadLetter>, StateError> {
        let limit = page_limit("dead_letters", page)?;
        let before = page.after.as_deref().map(|c| decode_number_cursor("dead_letters", "dl", c)).transpose()?;
        let mut p = Params::default();
        let filter_sql = dead_letter_where(&mut p, filter, before);
        let sql = format!(
            "SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters {filter_sql} ORDER BY id DESC LIMIT {}",
            p.add(fetch_limit(limit))
        );
        let items = self.read("list dead letters", "dead_letters", |db| db.rows(&sql, &p.refs(), dead_letter_raw, pg_dead_letter_row))?;
        Ok(paginate(items, limit, "dl", |d| d.id.to_string()))
    }

    fn dead_letter(&self, id: i64) -> Result<Option<DeadLetter>, StateError> {
        self.read("read a dead letter", "dead_letters", |db| {
            Ok(db
                .rows(&format!("SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE id = $1"), &[&id], dead_letter_raw, pg_dead_letter_row)?
                .pop())
        })
    }

    fn mark_resubmitted(&self, ids: &[i64], at: DateTime<Utc>) -> Result<usize, StateError> {
        let mut unique = ids.to_vec();
        unique.sort_unstable();
        unique.dedup();
        if unique.is_empty() {
            return Ok(0);
        }
        self.write("mark dead letters re-submitted", "dead_letters", |db| {
            let marked: HashSet<i64> = db
                .column("UPDATE dead_letters SET resubmitted_at = $1 WHERE id = ANY($2) RETURNING id", &[&to_micros(&at), &unique])?
                .into_iter()
                .collect();
            // The first id that is not stored, as a one-by-one update in id order finds it;
            // returning the error rolls the others back.
            if let Some(missing) = unique.iter().find(|id| !marked.contains(id)) {
                return Err(StateError::NotFound { table: "dead_letters", id: missing.to_string() });
            }
            Ok(unique.len())
        })
    }

    fn count_dead_letters(&self, filter: &DeadLetterFilter) -> Result<u64, StateError> {
        let mut p = Params::default();
        let sql = format!("SELECT COUNT(*) FROM dead_letters {}", dead_letter_where(&mut p, filter, None));
        let n: Option<i64> = self.read("count dead letters", "dead_letters", |db| db.value(&sql, &p.refs()))?;
        Ok(n.unwrap_or(0) as u64)
    }

    fn prune_dead_letters(&self, keep: u64) -> Result<u64, StateError> {
        let pruned = self.write("prune", "dead_letters", |db| prune_dead_letters_in(db, keep))?;
        if pruned > 0 {
            debug!(pruned, keep, "Dead letters pruned.");
        }
        Ok(pruned)
    }

    fn dead_letter_limit(&self) -> u64 {
        self.options.dead_letter_max_rows
    }

    fn create_user(&self, username: &str, password_hash: &str, role: &str, unit: Option<&str>) -> Result<UserRow, StateError> {
        check_user(username, password_hash, role, unit)?;
        let created_at = stored_time(Utc::now());
        let n = self.write("create a user", "users", |db| {
            db.execute(
                "INSERT INTO users (username, password_hash, role, unit, created_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (username) DO NOTHING",
                &[&username, &password_hash, &role, &unit, &to_micros(&created_at)],
            )
        })?;
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
        self.read("read a user", "users", |db| {
            Ok(db.rows(&format!("SELECT {USER_COLUMNS} FROM users WHERE username = $1"), &[&username], user_raw, user_row)?.pop())
        })
    }

    fn list_users(&self) -> Result<Vec<UserRow>, StateError> {
        self.read("list users", "users", |db| {
            db.rows(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY username"), &[], user_raw, user_row)
        })
    }

    fn create_session(&self, token_hash: &str, username: &str, expires_at: DateTime<Utc>) -> Result<(), StateError> {
        check_token_hash(token_hash)?;
        self.write("create a session", "users", |db| {
            // The user's row is held (as the foreign key would) so it cannot go meanwhile.
            let exists: Option<i32> = db.value("SELECT 1 FROM users WHERE username = $1 FOR KEY SHARE", &[&username])?;
            if exists.is_none() {
                return Err(StateError::NotFound { table: "users", id: username.into() });
            }
            db.table = "sessions";
            let n = db.execute(
                "INSERT INTO sessions (token_hash, username, created_at, expires_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (token_hash) DO NOTHING",
                &[&token_hash, &username, &to_micros(&Utc::now()), &to_micros(&expires_at)],
            )?;
            if n == 0 {
                return Err(StateError::Conflict {
                    table: "sessions",
                    id: hash_prefix(token_hash),
                    reason: "is already in use; generate a new random token".into(),
                });
            }
            Ok(())
        })
    }

    fn session(&self, token_hash: &str, now: DateTime<Utc>) -> Result<Option<UserRow>, StateError> {
        self.read("read a session", "sessions", |db| {
            Ok(db
                .rows(
                    "SELECT u.username, u.password_hash, u.role, u.unit, u.created_at, u.supervisor \
                     FROM sessions s JOIN users u ON u.username = s.username \
                     WHERE s.token_hash = $1 AND s.expires_at > $2",
                    &[&token_hash, &to_micros(&now)],
                    user_raw,
                    user_row,
                )?
                .pop())
        })
    }

    fn delete_session(&self, token_hash: &str) -> Result<bool, StateError> {
        let n = self.write("delete a session", "sessions", |db| db.execute("DELETE FROM sessions WHERE token_hash = $1", &[&token_hash]))?;
        Ok(n > 0)
    }

    fn purge_expired_sessions(&self, now: DateTime<Utc>) -> Result<u64, StateError> {
        let n = self.write("purge expired sessions", "sessions", |db| {
            db.execute("DELETE FROM sessions WHERE expires_at <= $1", &[&to_micros(&now)])
        })?;
        if n > 0 {
            debug!(purged = n, "Expired sessions purged.");
        }
        Ok(n)
    }

    fn list_sessions(&self, username: &str) -> Result<Vec<SessionRow>, StateError> {
        self.read("list sessions", "sessions", |db| {
            db.rows(
                "SELECT token_hash, username, created_at, expires_at FROM sessions WHERE username = $1 \
                 ORDER BY created_at DESC, token_hash",
                &[&username],
                session_raw,
                session_row,
            )
        })
    }

    fn append_audit(&self, entry: &NewAuditEntry, at: DateTime<Utc>) -> Result<AuditEntry, StateError> {
        self.write("append to the audit log", "audit_log", |db| append_audit_in(db, entry, at))
    }

    fn list_audit(&self, actor: Option<&str>, action: Option<&str>, page: &PageRequest) -> Result<Page<AuditEntry>, StateError> {
        const T: &str = "audit_log";
        let limit = page_limit(T, page)?;
        let mut p = Params::default();
        let mut clauses = Vec::new();
        if let Some(cursor) = page.after.as_deref() {
            clauses.push(format!("seq < {}", p.add(decode_number_cursor(T, "aud", cursor)?)));
        }
        if let Some(a) = actor {
            clauses.push(format!("actor = {}", p.add(a.to_string())));
        }
        if let Some(a) = action {
            clauses.push(format!("starts_with(action, {})", p.add(a.to_string())));
        }
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log {} ORDER BY seq DESC LIMIT {}",
            where_clause(&clauses),
            p.add(fetch_limit(limit))
        );
        let items = self.read("read the audit log", T, |db| db.rows(&sql, &p.refs(), audit_raw, audit_row))?;
        Ok(paginate(items, limit, "aud", |e| e.seq.to_string()))
    }

    fn audit_after(&self, after: i64, limit: usize) -> Result<Vec<AuditEntry>, StateError> {
        self.read("read the audit log", "audit_log", |db| {
            db.rows(
                &format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"),
                &[&after, &sql_count(limit)],
                audit_raw,
                audit_row,
            )
        })
    }

    fn prune_audit(&self, before: DateTime<Utc>, actor: &str, at: DateTime<Utc>) -> Result<Option<AuditStart>, StateError> {
        self.write("prune the audit log", "audit_log", |db| {
            db.lock("audit_log")?;
            // Read under the lock: another process may have pruned just before.
            let earlier: Option<String> = db.value("SELECT value FROM meta WHERE key = $1", &[&AUDIT_START_KEY])?;
            let earlier: Option<AuditStart> = earlier
                .map(|text| {
                    serde_json::from_str(&text).map_err(|e| StateError::Corrupt {
                        table: "meta",
                        id: AUDIT_START_KEY.into(),
                        column: "value",
                        reason: format!("the recorded start of the audit log is not an audit start ({e})"),
                    })
                })
                .transpose()?;
            // The last entry written before `before`, short of the newest (which the next
            // entry chains to).
            let last_doomed = db
                .rows(
                    "SELECT seq, hash FROM audit_log WHERE at < $1 AND seq < (SELECT MAX(seq) FROM audit_log) \
                     ORDER BY seq DESC LIMIT 1",
                    &[&to_micros(&before)],
                    |r| Ok((r.try_get::<_, i64>(0)?, r.try_get::<_, String>(1)?)),
                    Ok,
                )?
                .pop();
            let Some((last_seq, last_hash)) = last_doomed else { return Ok(None) };
            let deleted = db.execute("DELETE FROM audit_log WHERE seq <= $1", &[&last_seq])?;
            let start = AuditStart {
                seq: last_seq + 1,
                prev_hash: last_hash,
                deleted: earlier.map_or(0, |s| s.deleted) + deleted,
                before,
            };
            db.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&AUDIT_START_KEY, &audit_start_text(&start)],
            )?;
            append_audit_in(db, &prune_record(actor, &start, deleted), at)?;
            Ok(Some(start))
        })
    }

    fn prune_alerts(&self, before: DateTime<Utc>, statuses: &[&str]) -> Result<u64, StateError> {
        self.write("prune", "alerts", |db| {
            let doomed: Vec<String> = db.column(
                "DELETE FROM alerts WHERE updated_at < $1 AND status = ANY($2) RETURNING id",
                &[&to_micros(&before), &statuses],
            )?;
            if !doomed.is_empty() {
                // The alert's scope rows and finished webhook deliveries go with it.
                db.table = "alert_scopes";
                db.execute("DELETE FROM alert_scopes WHERE alert = ANY($1)", &[&doomed])?;
                db.table = "webhook_deliveries";
                db.execute("DELETE FROM webhook_deliveries WHERE status <> 'pending' AND alert = ANY($1)", &[&doomed])?;
            }
            Ok(doomed.len() as u64)
        })
    }

    fn set_supervisor(&self, username: &str, supervisor: bool) -> Result<(), StateError> {
        let n = self.write("mark a supervisor", "users", |db| {
            db.execute("UPDATE users SET supervisor = $2 WHERE username = $1", &[&username, &supervisor])
        })?;
        if n == 0 {
            return Err(StateError::NotFound { table: "users", id: username.into() });
        }
        Ok(())
    }

    fn add_search_approval(&self, approval: &SearchApproval) -> Result<(), StateError> {
        const T: &str = "search_approvals";
        check_id(T, "a search approval", "id", &approval.id)?;
        let body = approval_body(approval)?;
        let n = self.write("store a search approval request", T, |db| {
            db.execute(
                "INSERT INTO search_approvals (id, requested_by, status, requested_at, body) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (id) DO NOTHING",
                &[&approval.id, &approval.requested_by, &approval.status, &to_micros(&approval.requested_at), &body],
            )
        })?;
        if n == 0 {
            return Err(StateError::Conflict { table: T, id: approval.id.clone(), reason: "already exists".into() });
        }
        Ok(())
    }

    fn search_approval(&self, id: &str) -> Result<Option<SearchApproval>, StateError> {
        self.read("read a search approval request", "search_approvals", |db| {
            Ok(db.rows("SELECT id, body FROM search_approvals WHERE id = $1", &[&id], pair_raw, approval_row)?.pop())
        })
    }

    fn list_search_approvals(&self, status: Option<&str>, requested_by: Option<&str>, page: &PageRequest) -> Result<Page<SearchApproval>, StateError> {
        const T: &str = "search_approvals";
        let limit = page_limit(T, page)?;
        let mut p = Params::default();
        let mut clauses = Vec::new();
        if let Some(cursor) = page.after.as_deref() {
            let (at, id) = decode_approval_cursor(cursor)?;
            let (at, id) = (p.add(at), p.add(id));
            clauses.push(format!("(requested_at < {at} OR (requested_at = {at} AND id > {id}))"));
        }
        if let Some(s) = status {
            clauses.push(format!("status = {}", p.add(s.to_string())));
        }
        if let Some(u) = requested_by {
            clauses.push(format!("requested_by = {}", p.add(u.to_string())));
        }
        let sql = format!(
            "SELECT id, body FROM search_approvals {} ORDER BY requested_at DESC, id LIMIT {}",
            where_clause(&clauses),
            p.add(fetch_limit(limit))
        );
        let items = self.read("list search approval requests", T, |db| db.rows(&sql, &p.refs(), pair_raw, approval_row))?;
        Ok(paginate(items, limit, "sa", approval_cursor_key))
    }

    fn decide_search_approval(&self, id: &str, status: &str, decided_by: &str, at: DateTime<Utc>, note: &str) -> Result<SearchApproval, StateError> {
        const T: &str = "search_approvals";
        check_decision(id, status)?;
        self.write("decide a search approval request", T, |db| {
            let body: Option<String> = db.value("SELECT body FROM search_approvals WHERE id = $1 FOR UPDATE", &[&id])?;
            let Some(body) = body else {
                return Err(StateError::NotFound { table: T, id: id.into() });
            };
            let approval = apply_decision(approval_row((id.to_string(), body))?, status, decided_by, at, note)?;
            db.execute("UPDATE search_approvals SET status = $2, body = $3 WHERE id = $1", &[&id, &status, &approval_body(&approval)?])?;
            Ok(approval)
        })
    }
}
