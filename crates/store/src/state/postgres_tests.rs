//! Tests of [`PgState`]: the conformance suite, each store in a fresh schema of the test
//! database, and what only PostgreSQL has (a server shared by several stores, migrations
//! of a schema, reconnecting, text without NUL).
//!
//! The server is `postgresql://postgres@127.0.0.1:5432/test` unless `CITYWARD_TEST_POSTGRES`
//! names another. When it cannot be reached the tests print why and pass, unless
//! `CITYWARD_REQUIRE_SERVICES` is set (as `.ci/run` does), which makes that a failure.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use serde_json::json;

use super::postgres::off_runtime;
use super::{
    conformance_suite, verify_audit, AlertFilter, AlertRow, DeadLetterChannel, DeadLetterFilter, DeviceRow, NewAuditEntry,
    NewDeadLetter, PageRequest, PgState, StateError, StateOptions, StateStore,
};
use crate::Status;

const DEFAULT_URL: &str = "postgresql://postgres@127.0.0.1:5432/test";

fn url() -> String {
    std::env::var("CITYWARD_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// A client to the test server for setting up and inspecting, or `None` (after saying
/// why) when the server cannot be reached and CI did not ask for it.
fn admin() -> Option<::postgres::Client> {
    let url = url();
    match ::postgres::Client::connect(&url, ::postgres::NoTls) {
        Ok(client) => Some(client),
        Err(e) => {
            if std::env::var("CITYWARD_REQUIRE_SERVICES").is_ok() {
                panic!(
                    "PostgreSQL is not reachable at {url} ({e}); start it (e.g. `pg_ctlcluster 15 main start`, \
                     with a database `test` that user postgres may use), or set CITYWARD_TEST_POSTGRES to a \
                     server that runs"
                );
            }
            eprintln!("skipped: PostgreSQL is not reachable at {url} ({e}); set CITYWARD_TEST_POSTGRES or start it");
            None
        }
    }
}

/// Fresh schemas for one test, dropped with everything in them when the test ends (also
/// when it fails). Its client, like the store's, may be made and dropped in async tests.
struct Schemas {
    /// `None` only once dropped.
    admin: Mutex<Option<::postgres::Client>>,
    made: Mutex<Vec<String>>,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Schemas {
    fn new() -> Option<Schemas> {
        Some(Schemas { admin: Mutex::new(Some(off_runtime(admin)?)), made: Mutex::new(Vec::new()) })
    }

    /// Runs `f` with the client for setting up and inspecting (off the runtime, in an
    /// async test).
    fn admin<T: Send>(&self, f: impl FnOnce(&mut ::postgres::Client) -> T + Send) -> T {
        let mut admin = self.admin.lock().unwrap();
        let client = admin.as_mut().expect("the client lives as long as the schemas");
        off_runtime(|| f(client))
    }

    /// A schema name no other test or process uses.
    fn fresh(&self) -> String {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let name = format!("cw_test_{}_{}_{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        self.made.lock().unwrap().push(name.clone());
        name
    }

    /// A store in a fresh schema.
    fn store(&self, options: StateOptions) -> PgState {
        PgState::connect(&url(), &self.fresh(), options).unwrap()
    }

    /// Runs SQL on the test server as an operator would (in `schema`).
    fn sql(&self, schema: &str, sql: &str) {
        self.admin(|c| c.batch_execute(&format!(r#"SET search_path TO "{schema}"; {sql}; RESET search_path"#)))
            .unwrap();
    }

    fn names(&self, sql: &str, schema: &str) -> Vec<String> {
        let rows = self.admin(|c| c.query(sql, &[&schema])).unwrap();
        rows.iter().map(|r| r.get(0)).collect()
    }
}

impl Drop for Schemas {
    fn drop(&mut self) {
        off_runtime(|| {
            let Some(mut admin) = self.admin.get_mut().unwrap_or_else(|p| p.into_inner()).take() else { return };
            for schema in self.made.get_mut().unwrap_or_else(|p| p.into_inner()).drain(..) {
                if let Err(e) = admin.batch_execute(&format!(r#"DROP SCHEMA IF EXISTS "{schema}" CASCADE"#)) {
                    eprintln!("could not drop test schema {schema}: {e}");
                }
            }
            // Dropped here, so that it also closes off the runtime.
            drop(admin);
        });
    }
}

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_795_000_000 + secs, 0).unwrap()
}

fn device(id: &str, i: usize) -> DeviceRow {
    DeviceRow {
        id: id.into(),
        kind: "camera".into(),
        lon: 121.0 + i as f64 * 1e-5,
        lat: 31.0,
        grid: Some("g-1".into()),
        owner_unit: None,
        attrs: json!({ "i": i }),
        registered_at: t(i as i64),
    }
}

/// An alert last written at `t(written)`.
fn alert(id: &str, written: i64) -> AlertRow {
    AlertRow {
        id: id.into(),
        rule: "r".into(),
        key: "k".into(),
        status: "new".into(),
        severity: "high".into(),
        category: "traffic.hazmat".into(),
        time: t(0),
        grid: None,
        body: json!({}),
        updated_at: t(written),
        scopes: vec!["region:c-1".into()],
        class: "incident".into(),
        incident: None,
    }
}

#[test]
fn pg_state_conformance() {
    let Some(schemas) = Schemas::new() else { return };
    let start = Instant::now();
    conformance_suite(&|options| Box::new(schemas.store(options)));
    eprintln!("PostgreSQL conformance suite: {:?}", start.elapsed());
}

#[test]
fn pg_state_is_shared_between_connections() {
    let Some(schemas) = Schemas::new() else { return };
    let schema = schemas.fresh();
    let first = PgState::connect(&url(), &schema, StateOptions::default()).unwrap();
    // A second connect to the same schema is another process sharing the state.
    let second = PgState::connect(&url(), &schema, StateOptions::default()).unwrap();
    first.upsert_devices(&[device("d-1", 1), device("d-2", 2)]).unwrap();
    first.meta_set("node.name", "district-7").unwrap();
    assert_eq!(second.device("d-1").unwrap(), Some(device("d-1", 1)));
    assert_eq!(second.device_count().unwrap(), 2);
    assert_eq!(second.meta_get("node.name").unwrap().as_deref(), Some("district-7"));
    second.delete_device("d-2").unwrap();
    assert_eq!(first.device("d-2").unwrap(), None);

    // Ids from two stores never collide, and each store's ids ascend.
    let letter = |n: usize| NewDeadLetter {
        received_at: t(n as i64),
        channel: DeadLetterChannel::Http,
        origin: format!("req-{n}"),
        line: None,
        field: None,
        reason: "bad".into(),
        raw: "{}".into(),
    };
    let a = first.insert_dead_letters(&[letter(1), letter(2)]).unwrap().ids;
    let b = second.insert_dead_letters(&[letter(3)]).unwrap().ids;
    assert!(b[0] > a[1], "{a:?} then {b:?}");
    assert_eq!(first.count_dead_letters(&DeadLetterFilter::default()).unwrap(), 3);
}

#[test]
fn pg_audit_appends_from_two_stores_stay_one_chain() {
    let Some(schemas) = Schemas::new() else { return };
    let schema = schemas.fresh();
    let stores = [
        PgState::connect(&url(), &schema, StateOptions::default()).unwrap(),
        PgState::connect(&url(), &schema, StateOptions::default()).unwrap(),
    ];
    const PER_THREAD: usize = 25;
    std::thread::scope(|scope| {
        for (n, store) in stores.iter().enumerate() {
            for thread in 0..2 {
                scope.spawn(move || {
                    for i in 0..PER_THREAD {
                        let entry = NewAuditEntry {
                            actor: format!("node-{n}"),
                            action: "alert.ack".into(),
                            target: format!("a-{thread}-{i}"),
                            detail: json!({ "i": i }),
                        };
                        store.append_audit(&entry, Utc::now()).unwrap();
                    }
                });
            }
        }
    });
    let verdict = verify_audit(&stores[1], None).unwrap();
    assert_eq!(verdict.broken, None);
    assert_eq!(verdict.entries, 4 * PER_THREAD as u64);
    assert_eq!(verdict.head.unwrap().seq, 4 * PER_THREAD as i64);
}

#[test]
fn pg_migration_is_idempotent() {
    let Some(schemas) = Schemas::new() else { return };
    let schema = schemas.fresh();
    let objects_sql = "SELECT c.relkind::text || ' ' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                       WHERE n.nspname = $1 ORDER BY 1";
    drop(PgState::connect(&url(), &schema, StateOptions::default()).unwrap());
    let before = schemas.names(objects_sql, &schema);
    assert!(before.iter().any(|o| o == "r devices"), "schema created: {before:?}");
    for _ in 0..3 {
        let store = PgState::connect(&url(), &schema, StateOptions::default()).unwrap();
        assert_eq!(store.schema_version().unwrap(), PgState::SCHEMA_VERSION);
        assert_eq!(store.schema(), schema);
    }
    assert_eq!(schemas.names(objects_sql, &schema), before, "no object added or dropped");
    assert_eq!(PgState::SCHEMA_VERSION, super::SqliteState::SCHEMA_VERSION, "both backends number versions alike");

    // Stores starting together on a new schema migrate it once.
    let together = schemas.fresh();
    std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| PgState::connect(&url(), &together, StateOptions::default()).unwrap());
        }
    });
    assert_eq!(schemas.names(objects_sql, &together), before);
}

#[test]
fn pg_migrates_a_version_4_schema_to_an_index_on_alert_writes() {
    let Some(schemas) = Schemas::new() else { return };
    let schema = schemas.fresh();
    let indexes = "SELECT indexname::text FROM pg_indexes WHERE schemaname = $1 AND indexname = 'alerts_updated_at'";
    let store = PgState::connect(&url(), &schema, StateOptions::default()).unwrap();
    assert_eq!(schemas.names(indexes, &schema), ["alerts_updated_at"]);
    store.write_alerts(&[alert("a-1", 10), alert("a-2", 20)], &[]).unwrap();
    drop(store);
    // The schema as version 4 left it.
    schemas.sql(&schema, "DROP INDEX alerts_updated_at; UPDATE meta SET value = '4' WHERE key = 'schema_version'");
    assert!(schemas.names(indexes, &schema).is_empty());
    let store = PgState::connect(&url(), &schema, StateOptions::default()).unwrap();
    assert_eq!(store.schema_version().unwrap(), 5);
    assert_eq!(schemas.names(indexes, &schema), ["alerts_updated_at"], "step 5 adds the index");
    let changed = AlertFilter { updated_since: Some(t(15)), ..AlertFilter::default() };
    assert_eq!(store.list_alerts(&changed, &PageRequest::first(10)).unwrap().items, [alert("a-2", 20)], "the alerts are kept");
}

#[test]
fn pg_refuses_a_newer_schema_and_reports_corrupt_rows() {
    let Some(schemas) = Schemas::new() else { return };
    let schema = schemas.fresh();
    let store = PgState::connect(&url(), &schema, StateOptions::default()).unwrap();
    store.upsert_devices(&[device("d-1", 1)]).unwrap();
    schemas.sql(&schema, "UPDATE devices SET attrs = '{not json' WHERE id = 'd-1'");
    let e = store.device("d-1").unwrap_err();
    assert!(matches!(e, StateError::Corrupt { table: "devices", column: "attrs", .. }), "{e}");
    assert!(e.to_string().contains("d-1"), "{e}");

    schemas.sql(&schema, "UPDATE meta SET value = '999' WHERE key = 'schema_version'");
    let e = PgState::connect(&url(), &schema, StateOptions::default()).unwrap_err();
    assert!(matches!(e, StateError::SchemaTooNew { found: 999, supported: PgState::SCHEMA_VERSION, .. }), "{e}");
    assert_eq!(e.status(), Status::Unavailable);
    assert!(e.to_string().contains(&schema) && e.to_string().contains("999"), "{e}");
}

#[test]
fn pg_connect_errors_say_what_to_do() {
    // Nothing listens on port 1: refused at once, whether or not PostgreSQL runs here.
    let e = PgState::connect("postgresql://postgres:s3cret@127.0.0.1:1/test", "cityward", StateOptions::default()).unwrap_err();
    assert_eq!(e.status(), Status::Unavailable);
    let message = e.to_string();
    assert!(message.contains("postgresql://postgres@127.0.0.1:1/test"), "names the server: {message}");
    assert!(message.contains("is PostgreSQL running at 127.0.0.1:1"), "says what to check: {message}");
    assert!(message.contains("refused"), "gives the cause: {message}");
    assert!(message.contains("[state] url"), "says what to set: {message}");
    assert!(!message.contains("s3cret"), "never shows the password: {message}");

    let e = PgState::connect("postgresql://postgres:s3cret@127.0.0.1:notaport/test", "cityward", StateOptions::default()).unwrap_err();
    assert!(!e.to_string().contains("s3cret") && e.to_string().contains("postgresql://"), "{e}");

    for bad in ["", "Cityward", "city-ward", "pg_state", "1st", &"x".repeat(64)] {
        let e = PgState::connect(DEFAULT_URL, bad, StateOptions::default()).unwrap_err();
        assert_eq!(e.status(), Status::InvalidInput, "{bad}: {e}");
    }
    let e = PgState::connect(DEFAULT_URL, "cityward", StateOptions { dead_letter_max_rows: 0 }).unwrap_err();
    assert!(e.to_string().contains("dead_letter_max_rows"), "{e}");

    let Some(_schemas) = Schemas::new() else { return };
    let missing = url().rsplit_once('/').map(|(server, _)| format!("{server}/cw_no_such_database")).unwrap();
    let e = PgState::connect(&missing, "cityward", StateOptions::default()).unwrap_err();
    assert!(e.to_string().contains("createdb cw_no_such_database"), "{e}");
}

#[test]
fn pg_reconnects_after_its_connections_are_cut() {
    let Some(schemas) = Schemas::new() else { return };
    let schema = schemas.fresh();
    let app = format!("cw_cut_{}", std::process::id());
    let url = format!("{}?application_name={app}", url());
    let store = PgState::connect(&url, &schema, StateOptions::default()).unwrap();
    store.upsert_devices(&[device("d-1", 1)]).unwrap();
    // Use several pooled connections at once, so that more than one is cut.
    std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| store.list_devices(&PageRequest::first(10)).unwrap());
        }
    });
    let cut: Vec<bool> = schemas
        .admin(|c| c.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", &[&app]))
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!cut.is_empty() && cut.iter().all(|c| *c), "connections cut: {cut:?}");
    assert_eq!(store.device_count().unwrap(), 1, "a read goes on over a new connection");
    store.upsert_devices(&[device("d-2", 2)]).unwrap();
    assert_eq!(store.device_count().unwrap(), 2, "so does a write");
}

#[test]
fn pg_text_without_nul() {
    let Some(schemas) = Schemas::new() else { return };
    let store = schemas.store(StateOptions::default());
    // A rejected record is kept whatever it holds; a NUL in its reason becomes U+FFFD.
    let letter = NewDeadLetter {
        received_at: t(0),
        channel: DeadLetterChannel::Mqtt,
        origin: "city/sensors".into(),
        line: Some(1),
        field: Some("attrs".into()),
        reason: "`attrs` holds \0".into(),
        raw: "{\"attrs\":\"\0\u{1}\"}".into(),
    };
    let id = store.insert_dead_letters(std::slice::from_ref(&letter)).unwrap().ids[0];
    let got = store.dead_letter(id).unwrap().unwrap();
    assert_eq!(got.raw, letter.raw, "the raw record round-trips byte for byte");
    assert_eq!(got.reason, "`attrs` holds \u{fffd}");
    // JSON escapes NUL, so bodies keep it.
    store.meta_set("k", "plain").unwrap();
    let e = store.meta_set("k", "a\0b").unwrap_err();
    assert_eq!(e.status(), Status::InvalidInput, "{e}");
    assert!(e.to_string().contains("NUL"), "{e}");
    assert_eq!(store.meta_get("k").unwrap().as_deref(), Some("plain"));
}

#[test]
fn pg_bulk_upsert_of_20000_devices() {
    // Correctness is checked by the conformance suite; this prints the time so that a
    // regression is visible in test output.
    let Some(schemas) = Schemas::new() else { return };
    let store = schemas.store(StateOptions::default());
    let rows: Vec<DeviceRow> = (0..20_000).map(|i| device(&format!("dev-{i:05}"), i)).collect();
    let start = Instant::now();
    assert_eq!(store.upsert_devices(&rows).unwrap(), 20_000);
    let insert = start.elapsed();
    let start = Instant::now();
    store.upsert_devices(&rows).unwrap();
    let update = start.elapsed();
    eprintln!("PostgreSQL 20000-device upsert: insert {insert:?}, update {update:?}");
    assert_eq!(store.device_count().unwrap(), 20_000);
}

/// What the tests below do with a store from async code: connect, a few reads and writes
/// of each kind, and reads and writes after the server cut the pool's connections (a
/// broken connection is closed and replaced, which blocks too), then drop the store.
fn use_from_async(schemas: &Schemas, tag: &str) {
    let app = format!("cw_async_{tag}_{}", std::process::id());
    let store = PgState::connect(&format!("{}?application_name={app}", url()), &schemas.fresh(), StateOptions::default()).unwrap();
    store.meta_set("node.name", tag).unwrap();
    assert_eq!(store.meta_get("node.name").unwrap().as_deref(), Some(tag));
    store.upsert_devices(&[device("d-1", 1), device("d-2", 2)]).unwrap();
    assert_eq!(store.device("d-1").unwrap(), Some(device("d-1", 1)));
    store.write_alerts(&[alert("a-1", 10), alert("a-2", 20)], &[]).unwrap();
    let changed = AlertFilter { updated_since: Some(t(15)), ..AlertFilter::default() };
    let page = store.list_alerts(&changed, &PageRequest::first(10)).unwrap();
    assert_eq!(page.items.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), ["a-2"]);

    let cut = schemas
        .admin(|c| c.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", &[&app]))
        .unwrap();
    assert!(!cut.is_empty(), "a connection was cut");
    assert_eq!(store.device_count().unwrap(), 2, "a read goes on over a new connection");
    store.upsert_devices(&[device("d-3", 3)]).unwrap();
    assert_eq!(store.device_count().unwrap(), 3, "so does a write");
    drop(store);
}

/// The server calls some store methods straight from its handlers. On a multi-thread
/// runtime they block in place, whether called from `block_on` (this test's body) or from
/// a task on a worker thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_state_is_safe_to_call_on_a_multi_thread_runtime() {
    let Some(schemas) = Schemas::new() else { return };
    use_from_async(&schemas, "mt");
    let store = Arc::new(schemas.store(StateOptions::default()));
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store.upsert_devices(&[device(&format!("w-{i}"), i)]).unwrap();
                tokio::task::yield_now().await;
                store.device(&format!("w-{i}")).unwrap().is_some()
            })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap());
    }
    assert_eq!(store.device_count().unwrap(), 6);
    let from_blocking = store.clone();
    let n = tokio::task::spawn_blocking(move || from_blocking.device_count().unwrap()).await.unwrap();
    assert_eq!(n, 6, "spawn_blocking, the way the trait recommends, works as before");
}

/// On a current-thread runtime nothing may block in place: the work runs on a thread of its
/// own, from the test's body and from a task alike.
#[tokio::test]
async fn pg_state_is_safe_to_call_on_a_current_thread_runtime() {
    let Some(schemas) = Schemas::new() else { return };
    use_from_async(&schemas, "ct");
    let store = Arc::new(schemas.store(StateOptions::default()));
    let task = {
        let store = store.clone();
        tokio::spawn(async move {
            store.upsert_devices(&[device("w-1", 1)]).unwrap();
            store.device_count().unwrap()
        })
    };
    assert_eq!(task.await.unwrap(), 1);
    let from_blocking = store.clone();
    let n = tokio::task::spawn_blocking(move || from_blocking.device_count().unwrap()).await.unwrap();
    assert_eq!(n, 1);
    // A store dropped in a task closes its connections off the runtime too.
    tokio::spawn(async move { drop(store) }).await.unwrap();
}
