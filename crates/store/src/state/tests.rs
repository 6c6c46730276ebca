//! Tests of the state store: the conformance suite over [`SqliteState`] in memory and on
//! files, and what only SQLite has (files, pragmas, migrations, persistence).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use serde_json::json;

use super::*;
use crate::Status;

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_795_000_000 + secs, 0).unwrap()
}

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

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

#[test]
fn state_conformance_in_memory() {
    conformance_suite(&|options| Box::new(SqliteState::in_memory_with(options).unwrap()));
}

#[test]
fn state_conformance_on_files() {
    let dir = tempfile::tempdir().unwrap();
    let n = AtomicUsize::new(0);
    conformance_suite(&|options| {
        let path = dir
            .path()
            .join(format!("state-{}.db", n.fetch_add(1, Ordering::Relaxed)));
        Box::new(SqliteState::open_with(path, options).unwrap())
    });
}

fn read_pragma(path: &Path, name: &str) -> String {
    let conn = Connection::open(path).unwrap();
    conn.pragma_query_value(None, name, |r| r.get::<_, rusqlite::types::Value>(0))
        .map(|v| match v {
            rusqlite::types::Value::Text(s) => s,
            rusqlite::types::Value::Integer(i) => i.to_string(),
            other => format!("{other:?}"),
        })
        .unwrap()
}

#[test]
fn state_file_uses_wal_and_normal_sync() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = SqliteState::open(&path).unwrap();
    assert_eq!(store.path(), Some(path.as_path()));
    assert_eq!(
        read_pragma(&path, "journal_mode"),
        "wal",
        "WAL is a property of the file"
    );
    let conn = store.conn_for_tests();
    let sync: i64 = conn
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .unwrap();
    assert_eq!(sync, 1, "synchronous=NORMAL");
    let fk: i64 = conn
        .pragma_query_value(None, "foreign_keys", |r| r.get(0))
        .unwrap();
    assert_eq!(fk, 1, "foreign keys on");
}

#[test]
fn state_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let rows: Vec<DeviceRow> = (0..500).map(|i| device(&format!("d-{i:03}"), i)).collect();
    let region = FeatureRow {
        layer: Layer::Regions,
        id: "r-1".into(),
        properties: json!({ "name": "North", "level": "district" }),
        geometry: json!({
            "type": "Polygon",
            "coordinates": [[[121, 31], [122, 31], [122, 32], [121, 31]]],
        }),
    };
    let unit = UnitRow {
        id: "u-1".into(),
        name: "North station".into(),
        kind: "police".into(),
        region: Some("r-1".into()),
        parent_unit: None,
    };
    let alert = AlertRow {
        id: "a-1".into(),
        rule: "r".into(),
        key: "k".into(),
        status: "new".into(),
        severity: "low".into(),
        category: "c".into(),
        time: t(5),
        grid: None,
        body: json!({ "evidence": ["e1"] }),
        updated_at: t(6),
        scopes: vec!["unit:u-1".into()],
        class: "incident".into(),
        incident: None,
    };
    let letter = NewDeadLetter {
        received_at: t(7),
        channel: DeadLetterChannel::File,
        origin: "events.ndjson".into(),
        line: Some(42),
        field: Some("lon".into()),
        reason: "`lon` must be a number".into(),
        raw: "{\"lon\":\"east\"}".into(),
    };
    let (rule, user, dead_id) = {
        let store = SqliteState::open(&path).unwrap();
        store.meta_set("node.id", "n-1").unwrap();
        store.upsert_devices(&rows).unwrap();
        store
            .replace_layer(Layer::Regions, std::slice::from_ref(&region))
            .unwrap();
        store.replace_units(std::slice::from_ref(&unit)).unwrap();
        let rule = store
            .put_rule(&RulePut {
                id: "r".into(),
                body: "kind: match".into(),
                enabled: true,
                updated_by: "admin".into(),
                expected_version: None,
            })
            .unwrap();
        store.insert_alert(&alert).unwrap();
        let dead_id = store
            .insert_dead_letters(std::slice::from_ref(&letter))
            .unwrap()
            .ids[0];
        let user = store.create_user("admin", HASH, "admin", None).unwrap();
        store.create_session("tok", "admin", t(1_000)).unwrap();
        (rule, user, dead_id)
    };

    let store = SqliteState::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), SqliteState::SCHEMA_VERSION);
    assert_eq!(store.meta_get("node.id").unwrap().as_deref(), Some("n-1"));
    assert_eq!(store.device_count().unwrap(), 500);
    assert_eq!(store.device("d-123").unwrap().as_ref(), Some(&rows[123]));
    assert_eq!(store.list_layer(Layer::Regions).unwrap(), vec![region]);
    assert_eq!(store.list_units().unwrap(), vec![unit]);
    assert_eq!(store.rule("r").unwrap(), Some(rule));
    assert_eq!(store.alert("a-1").unwrap(), Some(alert));
    let dead = store.dead_letter(dead_id).unwrap().unwrap();
    assert_eq!(
        (dead.origin.as_str(), dead.line, dead.raw.as_str()),
        ("events.ndjson", Some(42), letter.raw.as_str())
    );
    assert_eq!(store.user("admin").unwrap(), Some(user.clone()));
    assert_eq!(store.session("tok", t(0)).unwrap(), Some(user));
}

#[test]
fn state_migration_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    drop(SqliteState::open(&path).unwrap());
    let objects = |path: &Path| -> Vec<String> {
        let conn = Connection::open(path).unwrap();
        let mut stmt = conn
            .prepare("SELECT type || ' ' || name FROM sqlite_master ORDER BY type, name")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let before = objects(&path);
    assert!(
        before.iter().any(|o| o == "table devices"),
        "schema created: {before:?}"
    );

    for _ in 0..3 {
        let store = SqliteState::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SqliteState::SCHEMA_VERSION);
    }
    // Running the migrator again on an open connection is a no-op as well.
    let mut conn = Connection::open(&path).unwrap();
    assert_eq!(
        sqlite::migrate(&mut conn, &path).unwrap(),
        SqliteState::SCHEMA_VERSION
    );
    assert_eq!(
        sqlite::migrate(&mut conn, &path).unwrap(),
        SqliteState::SCHEMA_VERSION
    );
    drop(conn);
    assert_eq!(objects(&path), before, "no object added or dropped");
}

#[test]
fn state_migrates_an_empty_file_and_an_unversioned_meta() {
    let dir = tempfile::tempdir().unwrap();
    // An empty file is a valid, empty SQLite database at version 0.
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    assert_eq!(
        SqliteState::open(&empty).unwrap().schema_version().unwrap(),
        SqliteState::SCHEMA_VERSION
    );

    // A `meta` table without `schema_version` (as left by a crash before the first step
    // committed) is also version 0.
    let bare = dir.path().join("bare.db");
    Connection::open(&bare)
        .unwrap()
        .execute_batch(
            "CREATE TABLE meta (key TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
             INSERT INTO meta VALUES ('node.id', 'n-7');",
        )
        .unwrap();
    let store = SqliteState::open(&bare).unwrap();
    assert_eq!(store.schema_version().unwrap(), SqliteState::SCHEMA_VERSION);
    assert_eq!(
        store.meta_get("node.id").unwrap().as_deref(),
        Some("n-7"),
        "existing meta kept"
    );
}

#[test]
fn state_migrates_a_version_4_file_to_an_index_on_alert_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let alert = |id: &str, written: i64| AlertRow {
        id: id.into(),
        rule: "r".into(),
        key: "k".into(),
        status: "new".into(),
        severity: "low".into(),
        category: "traffic.hazmat".into(),
        time: t(0),
        grid: None,
        body: json!({}),
        updated_at: t(written),
        scopes: vec![],
        class: "incident".into(),
        incident: None,
    };
    SqliteState::open(&path).unwrap().write_alerts(&[alert("a-1", 10), alert("a-2", 20)], &[]).unwrap();
    // The file as version 4 left it.
    Connection::open(&path)
        .unwrap()
        .execute_batch("DROP INDEX alerts_updated_at; UPDATE meta SET value = '4' WHERE key = 'schema_version'")
        .unwrap();
    let store = SqliteState::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), 5);
    let indexes: i64 = Connection::open(&path)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'alerts_updated_at'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(indexes, 1, "step 5 adds the index");
    let changed = AlertFilter { updated_since: Some(t(15)), ..AlertFilter::default() };
    let page = store.list_alerts(&changed, &PageRequest::first(10)).unwrap();
    assert_eq!(page.items, [alert("a-2", 20)], "the alerts are kept");
}

#[test]
fn state_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    drop(SqliteState::open(&path).unwrap());
    Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE meta SET value = '999' WHERE key = 'schema_version'",
            [],
        )
        .unwrap();
    let e = SqliteState::open(&path).unwrap_err();
    assert!(
        matches!(
            e,
            StateError::SchemaTooNew {
                found: 999,
                supported: SqliteState::SCHEMA_VERSION,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.status(), Status::Unavailable);
    let message = e.to_string();
    assert!(
        message.contains("999") && message.contains("state.db"),
        "{message}"
    );

    Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE meta SET value = 'two' WHERE key = 'schema_version'",
            [],
        )
        .unwrap();
    let e = SqliteState::open(&path).unwrap_err();
    assert_eq!(e.status(), Status::Internal, "{e}");
    assert!(e.to_string().contains("two"), "{e}");
}

#[test]
fn state_open_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-dir").join("state.db");
    let e = SqliteState::open(&path).unwrap_err();
    assert_eq!(e.status(), Status::Unavailable);
    assert!(e.to_string().contains("missing-dir"), "{e}");

    let not_db = dir.path().join("notes.txt");
    std::fs::write(
        &not_db,
        "this is not a database, but it is long enough to have a header",
    )
    .unwrap();
    let e = SqliteState::open(&not_db).unwrap_err();
    assert!(e.to_string().contains("notes.txt"), "{e}");

    let e = SqliteState::in_memory_with(StateOptions {
        dead_letter_max_rows: 0,
    })
    .unwrap_err();
    assert_eq!(e.status(), Status::InvalidInput);
    assert!(e.to_string().contains("dead_letter_max_rows"), "{e}");
}

#[test]
fn state_reports_corrupt_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = SqliteState::open(&path).unwrap();
    store.upsert_devices(&[device("d-1", 1)]).unwrap();
    Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE devices SET attrs = '{not json' WHERE id = 'd-1'",
            [],
        )
        .unwrap();
    let e = store.device("d-1").unwrap_err();
    assert!(
        matches!(
            e,
            StateError::Corrupt {
                table: "devices",
                column: "attrs",
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.status(), Status::Internal);
    assert!(e.to_string().contains("d-1"), "{e}");
}

#[test]
fn state_bulk_upsert_of_20000_devices() {
    // Correctness is checked by the conformance suite; this prints the time so that a
    // regression is visible in test output. Benchmarks, not tests, hold the numbers.
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteState::open(dir.path().join("state.db")).unwrap();
    let rows: Vec<DeviceRow> = (0..20_000)
        .map(|i| device(&format!("dev-{i:05}"), i))
        .collect();
    let start = Instant::now();
    assert_eq!(store.upsert_devices(&rows).unwrap(), 20_000);
    let insert = start.elapsed();
    let start = Instant::now();
    store.upsert_devices(&rows).unwrap();
    let update = start.elapsed();
    eprintln!("20000-device upsert: insert {insert:?}, update {update:?}");
    assert_eq!(store.device_count().unwrap(), 20_000);
}

#[test]
fn state_store_is_object_safe_and_shareable() {
    fn assert_send_sync<T: Send + Sync + ?Sized>() {}
    assert_send_sync::<dyn StateStore>();
    assert_send_sync::<SqliteState>();
    let shared: std::sync::Arc<dyn StateStore> =
        std::sync::Arc::new(SqliteState::in_memory().unwrap());
    assert_eq!(shared.device_count().unwrap(), 0);
}

#[test]
fn state_errors_map_to_statuses() {
    let e = StateError::NotFound {
        table: "devices",
        id: "cam-9".into(),
    };
    assert_eq!(e.status(), Status::NotFound);
    assert_eq!(e.status().http_status(), 404);
    assert_eq!(
        e.to_string(),
        "no `cam-9` in devices; check the id, or list devices to see which exist"
    );
    let e = StateError::Conflict {
        table: "rules",
        id: "r".into(),
        reason: "x".into(),
    };
    assert_eq!(e.status(), Status::Conflict);
    let e = StateError::Unavailable {
        op: "read",
        table: "meta",
        source: "busy".into(),
    };
    assert_eq!(e.status(), Status::Unavailable);
}

#[test]
fn state_cursors_round_trip() {
    for key in ["", "dev-1", "a/b:c", "街道 7", "1795000000000000/a-01"] {
        let cursor = encode_cursor("dev", key);
        assert!(cursor.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(decode_cursor("devices", "dev", &cursor).unwrap(), key);
        assert!(decode_cursor("alerts", "alr", &cursor).is_err());
    }
    assert!(decode_cursor("devices", "dev", "0g").is_err());
}

#[test]
fn state_rows_serialize_as_documented() {
    let letter = DeadLetter {
        id: 7,
        received_at: t(0),
        channel: DeadLetterChannel::Mqtt,
        origin: "city/sensors/smoke".into(),
        line: None,
        field: Some("attrs.ppm".into()),
        reason: "not a number".into(),
        raw: "{}".into(),
        resubmitted_at: None,
    };
    let v = serde_json::to_value(&letter).unwrap();
    assert_eq!(v["channel"], "mqtt");
    assert_eq!(v["received_at"], "2026-11-18T11:06:40Z");
    let back: DeadLetter = serde_json::from_value(v).unwrap();
    assert_eq!(back, letter);

    let page = Page {
        items: vec![1, 2],
        next: None,
    };
    assert_eq!(
        serde_json::to_value(&page).unwrap(),
        json!({ "items": [1, 2], "next": null })
    );
    assert_eq!(serde_json::to_value(Layer::Zones).unwrap(), "zones");
    assert_eq!(
        "mqtt".parse::<DeadLetterChannel>().unwrap(),
        DeadLetterChannel::Mqtt
    );
    assert_eq!(
        "nats".parse::<DeadLetterChannel>().unwrap_err().status(),
        Status::InvalidInput
    );
}

/// Tampering with the audit log in the database file itself — the way someone with access
/// to the disk would — is found by the chain check, whatever the kind of change.
#[test]
fn audit_chain_finds_entries_edited_removed_or_reordered_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.sqlite3");
    let fresh = |name: &str| {
        let copy = dir.path().join(name);
        let store = SqliteState::open(&copy).unwrap();
        for n in 1..=5 {
            let entry = NewAuditEntry { actor: "ana".into(), action: "search".into(), target: "events".into(), detail: json!({"results": n}) };
            store.append_audit(&entry, t(n)).unwrap();
        }
        drop(store);
        copy
    };
    let verdict = |file: &Path| verify_audit(&SqliteState::open(file).unwrap(), None).unwrap();
    let tamper = |file: &Path, sql: &str| Connection::open(file).unwrap().execute_batch(sql).unwrap();

    let intact = fresh("state.sqlite3");
    assert_eq!(intact, path);
    let clean = verdict(&intact);
    assert_eq!((clean.entries, clean.broken), (5, None));

    let edited = fresh("edited.sqlite3");
    tamper(&edited, r#"UPDATE audit_log SET detail = '{"results":0}' WHERE seq = 3"#);
    let broken = verdict(&edited).broken.expect("an edited entry is found");
    assert_eq!(broken.seq, 3);
    assert!(broken.reason.contains("edited"), "{}", broken.reason);

    let removed = fresh("removed.sqlite3");
    tamper(&removed, "DELETE FROM audit_log WHERE seq = 2");
    let broken = verdict(&removed).broken.expect("a removed entry is found");
    assert_eq!(broken.seq, 2);
    assert!(broken.reason.contains("removed"), "{}", broken.reason);

    // Removing an entry and renumbering the rest to hide the gap still breaks the chain.
    let renumbered = fresh("renumbered.sqlite3");
    tamper(&renumbered, "DELETE FROM audit_log WHERE seq = 2; UPDATE audit_log SET seq = seq - 1 WHERE seq > 2");
    assert_eq!(verdict(&renumbered).broken.expect("found").seq, 2);

    // Two entries swapped (their positions exchanged).
    let swapped = fresh("swapped.sqlite3");
    tamper(&swapped, "UPDATE audit_log SET seq = -1 WHERE seq = 2; UPDATE audit_log SET seq = 2 WHERE seq = 4; UPDATE audit_log SET seq = 4 WHERE seq = -1");
    assert_eq!(verdict(&swapped).broken.expect("found").seq, 2);

    // The last entry cut off: only the anchored head tells.
    let cut = fresh("cut.sqlite3");
    let head = clean.head.clone().unwrap();
    tamper(&cut, "DELETE FROM audit_log WHERE seq = 5");
    assert_eq!(verdict(&cut).broken, None, "a shorter chain is consistent in itself");
    let store = SqliteState::open(&cut).unwrap();
    let broken = verify_audit(&store, Some(&head)).unwrap().broken.expect("the anchor finds the cut");
    assert!(broken.reason.contains("cut from its end"), "{}", broken.reason);
}
